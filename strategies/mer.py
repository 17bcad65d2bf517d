"""Meta-Experience Replay (Riemer et al. 2019, "Learning to Learn without Forgetting by
Maximizing Transfer and Minimizing Interference", ICLR).

Algorithm 1 (default), for every incoming example (x, y), in stream order:

1. ``theta_A0 <- theta``
2. for i in 1 .. s (``batches_per_example``):
   ``theta_Wi0 <- theta``; draw ``replay_batch`` examples from the reservoir memory and put
   (x, y) first (as the official ``meralg1.py`` does); take one plain SGD step per example of
   the batch, one example at a time; then the within-batch Reptile step
   ``theta <- theta_Wi0 + beta * (theta - theta_Wi0)``
3. the across-batch Reptile step ``theta <- theta_A0 + gamma * (theta - theta_A0)``
4. offer (x, y) to the reservoir memory (so replay starts during the first task).

Algorithm 6 (``algorithm: 6``) follows the official ``meralg6.py`` by default
(``alg6_form: official``): for every incoming example, ``batches_per_example`` batches (the
official run scripts pass none, so its default of 1 applies), each made of ``replay_batch``
memory examples followed by the incoming example *last*; plain single-example SGD through the
batch, then a Reptile step ``theta <- theta_Wi0 + gamma * (theta - theta_Wi0)`` after *each*
batch; no across-batch step. That is Algorithm 1 with beta = gamma, across-batch rate 1 and the
incoming example last. The paper's Algorithm 6 ("one big batch", ``alg6_form: paper``) joins
the s batches into one batch of s*k examples (the incoming example first in each original
batch) followed by one Reptile step with ``gamma``: Algorithm 1 with beta = 1. With s = 1 the
two forms differ only in the incoming example's position. Algorithm 7: one batch of the
example and ``replay_batch`` memory examples in random order, the example's loss weighted by
s, one Reptile step with ``gamma``.

Two implementations, one algorithm: the reference path below (autograd on any ``nn.Module``,
any device) and, for ReLU MLPs in float32 on the CPU (``fast_path``), the compiled backend
:class:`strategies.mer_numba.CompiledMER`, which runs a whole minibatch of MER in one call
(Reptile steps and reservoir writes included, zero inputs skipped exactly). Both draw the same
random numbers in the same order and give the same weights to float rounding (tested one
minibatch at a time from the same state, as in :mod:`strategies.lamaml`); the run record says
which ran (``backend``: ``numba`` or ``reference``).

Deviations from the official code, none of which changes the algorithm: memory examples of a
batch are drawn without replacement (the official code reshuffles per draw, which can repeat
one); the reservoir uses Vitter's Algorithm R exactly (the official ``randint(0, age)`` is off
by one); Algorithm 7 also updates on the very first example (the official code skips it).
In task-incremental streams each example's loss is taken over the classes of its own task.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from strategies.functional import (
    OutputsWithoutGraph,
    SingleThreadedExperiences,
    clip_joint_norm_,
    copy_into,
    masked_cross_entropy,
    reptile,
    trainable,
)
from strategies.contract import StrategyReport
from strategies.memory import ReservoirMemory
from strategies.mer_numba import INCOMING, SKIP, CompiledMER

ALGORITHMS = (1, 6, 7)
ALG6_FORMS = ("official", "paper")  # meralg6.py, or the paper's Algorithm 6 (module docstring)


def _meta_template():
    from avalanche.training.templates import SupervisedMetaLearningTemplate

    return SupervisedMetaLearningTemplate


class MER(SingleThreadedExperiences, OutputsWithoutGraph, _meta_template()):
    """MER as an Avalanche meta-learning strategy: ``_inner_updates`` runs the per-example
    algorithm on every example of the minibatch; ``_outer_update`` has nothing left to do.

    ``inner_steps`` counts the single-example SGD steps taken. Each experience trains with
    torch and BLAS on one thread (:class:`SingleThreadedExperiences`).
    """

    def __init__(self, *, model: torch.nn.Module, lr: float, beta: float, gamma: float, mem_size: int,
                 replay_batch: int, batches_per_example: int, algorithm: int = 1, alg6_form: str = "official",
                 grad_clip_norm: float = 0.0,
                 seed: int = 0, class_mask: torch.Tensor | None = None, fast_path: bool = True,
                 **template_kwargs: Any):
        if algorithm not in ALGORITHMS:
            raise ValueError(f"MER algorithm must be one of {ALGORITHMS}, got {algorithm}")
        if alg6_form not in ALG6_FORMS:
            raise ValueError(f"MER alg6_form must be one of {ALG6_FORMS}, got {alg6_form!r}")
        super().__init__(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=lr), **template_kwargs)
        self.lr, self.beta, self.gamma = lr, beta, gamma
        self.replay_batch, self.batches_per_example, self.algorithm = replay_batch, batches_per_example, algorithm
        self.incoming_last = algorithm == 6 and alg6_form == "official"
        self.memory = ReservoirMemory(size=mem_size, seed=seed, device=self.device)
        self.inner_steps = 0
        self.backend_used: str | None = None  # which implementation took the last minibatch
        self._order = torch.Generator().manual_seed(seed)
        self._mask = class_mask
        self.fast_path = fast_path
        self.grad_clip_norm = grad_clip_norm  # 0: none (the MNIST code); La-MAML's CIFAR MER clips each step at 10
        self._track_parameters()

    # -- Avalanche hooks -------------------------------------------------------------
    def _track_parameters(self, example: torch.Tensor | None = None) -> None:
        _, self._params = trainable(self.model)
        self._backend = None  # the compiled backend where it applies, else the reference path
        if self.fast_path and example is not None and not self.grad_clip_norm:  # the kernels do not clip
            self._backend = CompiledMER.for_model(self.model, tuple(example.shape[1:]), self._mask)
        self._before_example = [torch.empty_like(p) for p in self._params]
        self._before_batch = [torch.empty_like(p) for p in self._params]

    def _before_training_exp(self, **kwargs):
        super()._before_training_exp(**kwargs)
        # Avalanche may have adapted (replaced) the model's parameters
        self._track_parameters(self.experience.dataset[0][0].unsqueeze(0))

    def _inner_updates(self, **kwargs):
        if self._backend is not None and self.mb_x.dtype == torch.float32 and self.mb_x.device.type == "cpu":
            self.backend_used = self._backend.name
            return self._compiled_updates()
        self.backend_used = "reference"
        x, y, t = self.mb_x, self.mb_y, self.mb_task_id
        losses = []
        for i in range(len(y)):
            xi, yi, ti = x[i:i + 1], y[i:i + 1], t[i:i + 1]
            losses.append(self._observe(xi, yi, ti))
            self.memory.add(xi, yi, ti)
        self.loss = torch.stack(losses).mean()

    def _compiled_updates(self) -> None:
        """The whole minibatch in one call of the compiled backend; the random draws are made
        here, in the order :meth:`_observe` and ``memory.add`` make them."""
        x, y, t = self.mb_x, self.mb_y, self.mb_task_id
        self.memory.storage(x)
        plan, weights, slots = self._plan(len(y))
        beta, gamma = self._rates()
        losses = self._backend.minibatch(x, y, t, plan=plan, weights=weights, slots=slots, memory=self.memory,
                                         lr=self.lr, beta=beta, gamma=gamma)
        self.inner_steps += int((plan != SKIP).sum())
        self.loss = torch.as_tensor(float(losses.mean()))

    def _plan(self, n: int):
        """For each of ``n`` incoming examples: its batches as rows of memory slots (``INCOMING``
        for itself, ``SKIP`` for padding), the loss weights, and its reservoir slot."""
        rounds = 1 if self.algorithm == 7 else self.batches_per_example
        plan = np.full((n, rounds, 1 + self.replay_batch), SKIP, dtype=np.int64)
        weights = np.ones(plan.shape, dtype=np.float32)
        slots = np.empty(n, dtype=np.int64)
        for i in range(n):
            for b in range(rounds):
                drawn = self.memory.draw(self.replay_batch) if self.replay_batch and len(self.memory) else ()
                row = np.concatenate([drawn, [INCOMING]] if self.incoming_last else [[INCOMING], drawn]).astype(np.int64)
                w = np.ones(len(row), dtype=np.float32)
                if self.algorithm == 7:
                    w[0] = float(self.batches_per_example)
                    order = torch.randperm(len(row), generator=self._order).numpy()
                    row, w = row[order], w[order]
                plan[i, b, :len(row)], weights[i, b, :len(row)] = row, w
            slots[i] = self.memory.reserve()
        return plan, weights, slots

    def _rates(self) -> tuple[float, float]:
        """(within-batch, across-batch) Reptile rates of Algorithms 1, 6 and 7 (module docstring)."""
        if self.algorithm == 1:
            return self.beta, self.gamma
        if self.incoming_last:  # official meralg6.py: gamma after every batch, nothing across
            return self.gamma, 1.0
        return 1.0, self.gamma  # the paper's Algorithm 6 (and Algorithm 7: one batch)

    def _outer_update(self, **kwargs):
        """Nothing: MER's meta-updates are the Reptile steps inside ``_inner_updates``."""

    def report(self) -> StrategyReport:
        """The single-example SGD steps taken, and the backend that took the last ones; with the
        compiled backend, which bypasses torch, also the examples backpropagated (one per step)."""
        compiled = self.backend_used not in (None, "reference")
        return StrategyReport(inner_steps=int(self.inner_steps), backend=self.backend_used,
                              gradient_examples=int(self.inner_steps) if compiled else None)

    # -- checkpoints (strategies.checkpoint) -------------------------------------------
    def checkpoint_state(self) -> dict:
        """What decides the rest of a run besides the weights: the reservoir memory and its
        generator, the order generator (Algorithm 7) and the step counter."""
        return {"memory": self.memory.checkpoint_state(), "order": self._order.get_state(),
                "inner_steps": int(self.inner_steps)}

    def load_checkpoint_state(self, state: dict) -> None:
        self.memory.load_checkpoint_state(state["memory"])
        self._order.set_state(state["order"])
        self.inner_steps = int(state["inner_steps"])

    # -- the algorithm ---------------------------------------------------------------
    def _observe(self, x, y, t) -> torch.Tensor:
        copy_into(self._before_example, self._params)
        total = torch.zeros((), device=self.device)
        beta, gamma = self._rates()
        if self.algorithm == 7:
            bx, by, bt = self._batch(x, y, t)
            order = torch.randperm(len(by), generator=self._order).to(by.device)
            weight = torch.ones(len(by), device=by.device)
            weight[0] = float(self.batches_per_example)
            total += self._sgd_through(bx[order], by[order], bt[order], weight[order])
        else:
            for _ in range(self.batches_per_example):
                copy_into(self._before_batch, self._params)
                total += self._sgd_through(*self._batch(x, y, t))
                reptile(self._params, self._before_batch, beta)
        reptile(self._params, self._before_example, gamma)
        return total.detach()

    def _batch(self, x, y, t):
        """The incoming example first, then ``replay_batch`` distinct memory examples (the
        memory examples first and the incoming one last in the official Algorithm 6)."""
        return self.memory.joined(x, y, t, self.replay_batch, memory_first=self.incoming_last)

    def _sgd_through(self, bx, by, bt, weight=None) -> torch.Tensor:
        """Plain SGD, one example at a time, in batch order; returns the summed loss."""
        total = torch.zeros((), device=self.device)
        for j in range(len(by)):
            logits = self.model(bx[j:j + 1])
            w = None if weight is None else weight[j:j + 1]
            loss = masked_cross_entropy(logits, by[j:j + 1], bt[j:j + 1], self._mask, w)
            grads = list(torch.autograd.grad(loss, self._params))
            if self.grad_clip_norm:
                clip_joint_norm_(grads, self.grad_clip_norm)
            with torch.no_grad():
                torch._foreach_add_(self._params, grads, alpha=-self.lr)
            total += loss.detach()
            self.inner_steps += 1
        return total
