"""Continual Reptile: Reptile (Nichol, Achiam and Schulman 2018, "On First-Order
Meta-Learning Algorithms", Algorithm 1) run online over a stream, the plain first-order
baseline of the MER family.

For every incoming minibatch B_in:

1. ``theta_0 = theta``;
2. ``inner_steps`` = k plain SGD steps, ``theta_{i+1} = theta_i - lr * grad L(B_i; theta_i)``
   with ``B_i`` = B_in plus ``replay_batch`` examples drawn afresh for each step from a
   reservoir memory (none with ``replay_batch: 0`` or while the memory is empty); ``L`` the mean
   cross-entropy (each example over its own task's classes in task-incremental streams);
3. the Reptile step ``theta <- theta_0 + epsilon * (theta_k - theta_0)`` (Algorithm 1's
   ``phi <- phi + epsilon (W - phi)``);
4. the incoming examples enter the reservoir memory (Algorithm R), after the steps.

How it differs from MER (Riemer et al. 2019, Algorithm 1, :mod:`strategies.mer`): MER steps
one example at a time through each batch of one incoming example plus its replay draws, and
interpolates twice, within each batch (beta) and across the ``batches_per_example`` batches
(gamma), for every incoming example. Here each step is on the whole minibatch at once (its
gradient is the batch mean, so no within-batch interpolation exists to take) and there is one
interpolation per incoming minibatch. With ``inner_steps: 1`` and ``epsilon: 1`` it is the
minibatch experience replay of Chaudhry et al. (2019); with ``epsilon: 1`` alone it is k SGD
steps per minibatch. MER's gradient alignment term comes from its single-example steps; with
batch steps Reptile keeps only the expected-gradient and within-task alignment terms of the
Reptile analysis (Nichol et al. 2018, Sec. 5), over the replayed and incoming examples together.

Defaults are ours (the Reptile paper has no continual-learning settings): lr 0.1 as our ER,
k = 5 steps, epsilon 0.2 (so a minibatch moves the weights about as far as one ER step would
where the gradients agree), memory 200 and replay 10 as the MNIST protocols of the field.
"""

from __future__ import annotations

from typing import Any

import torch

from strategies.contract import StrategyReport
from strategies.functional import (
    OutputsWithoutGraph,
    SingleThreadedExperiences,
    copy_into,
    masked_cross_entropy,
    reptile,
    trainable,
)
from strategies.memory import ReservoirMemory
from strategies.mer import _meta_template


class ContinualReptile(SingleThreadedExperiences, OutputsWithoutGraph, _meta_template()):
    """Continual Reptile (module docstring) as an Avalanche meta-learning strategy; ``inner_steps``
    counts its minibatch SGD steps."""

    def __init__(self, *, model: torch.nn.Module, lr: float, inner_steps: int, epsilon: float, mem_size: int,
                 replay_batch: int, seed: int = 0, class_mask: torch.Tensor | None = None, **template_kwargs: Any):
        super().__init__(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=lr), **template_kwargs)
        self.lr, self.k, self.epsilon, self.replay_batch = lr, inner_steps, epsilon, replay_batch
        self.memory = ReservoirMemory(size=mem_size, seed=seed, device=self.device)
        self.inner_steps = 0
        self._mask = class_mask
        self._params: list[torch.nn.Parameter] = []

    def _before_training_exp(self, **kwargs):
        super()._before_training_exp(**kwargs)
        _, self._params = trainable(self.model)  # Avalanche may have adapted the model
        self._before = [torch.empty_like(p) for p in self._params]

    def _inner_updates(self, **kwargs):
        x, y, t = self.mb_x, self.mb_y, self.mb_task_id
        copy_into(self._before, self._params)
        losses = []
        for _ in range(self.k):
            bx, by, bt = self.memory.joined(x, y, t, self.replay_batch, memory_first=False)
            loss = masked_cross_entropy(self.model(bx), by, bt, self._mask)
            grads = torch.autograd.grad(loss, self._params)
            with torch.no_grad():
                torch._foreach_add_(self._params, grads, alpha=-self.lr)
            self.inner_steps += 1
            losses.append(loss.detach())
        reptile(self._params, self._before, self.epsilon)
        self.memory.add(x, y, t)
        self.loss = torch.stack(losses).mean()

    def _outer_update(self, **kwargs):
        """Nothing left: the Reptile step ends ``_inner_updates``."""

    def report(self) -> StrategyReport:
        return StrategyReport(inner_steps=int(self.inner_steps), backend="reference")

    # -- checkpoints (strategies.checkpoint) -------------------------------------------
    def checkpoint_state(self) -> dict:
        """The reservoir memory (with its generator) and the step counter."""
        return {"memory": self.memory.checkpoint_state(), "inner_steps": int(self.inner_steps)}

    def load_checkpoint_state(self, state: dict) -> None:
        self.memory.load_checkpoint_state(state["memory"])
        self.inner_steps = int(state["inner_steps"])
