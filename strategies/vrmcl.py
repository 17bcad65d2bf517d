"""VR-MCL: Wu, Huang, Li et al. 2024, "Meta Continual Learning Revisited: Implicitly Enhancing
Online Hessian Approximation via Variance Reduction", ICLR; as the official code runs it
(WuYichen-97/Meta-Continual-Learning-Revisited-ICLR2024, ``models/vrmcl.py``, ``observe`` and
``outer_loop`` with the README's ``--asyn_update``), written with
:func:`strategies.lamaml.look_ahead_meta_loss`.

State: the weights theta_t, a copy theta_{t-1} of the weights before the last meta-update
(the code's ``ema``/``last_step`` network: a one-step-lagged copy, not a moving average), one
learned inner rate alpha per parameter, a momentum v of the meta-gradient and a reservoir memory.

For every incoming minibatch, ``meta_update_per_batch`` times:

1. support = the minibatch shuffled; query Q = the minibatch plus ``replay_batch`` memory
   examples (a fresh draw each time; none while the memory is empty);
2. the La-MAML inner loop from theta_t over the support in chunks of ``inner_batch_size``:
   ``phi <- phi - alpha * clamp(grad L(chunk; phi), -c, c)`` with alpha itself (no relu) and
   the elementwise clamp c = ``grad_clip_norm``; after every chunk the query loss L(Q; phi);
   ``L_t`` = their mean (first or ``second_order``). The same from theta_{t-1} with the same
   chunks, query and alpha gives ``L~_t``;
3. ``g_t = clip(grad_theta L_t)``, ``g~_t = clip(grad_theta_{t-1} L~_t)`` and
   ``g_alpha = clip(clip(grad_alpha L_t) + grad_alpha L~_t)``, each ``clip`` a joint-norm clip to
   ``grad_clip_norm`` (``clip_grad_norm_``);
4. ``theta_{t-1} <- theta_t``; ``alpha <- alpha - lr * g_alpha``;
5. the variance-reduced (STORM, Cutkosky and Orabona 2019) meta-gradient, the paper's Eq. 9:
   ``v_1 = g_1``, ``v_t = g_t + s_momentum * (v_{t-1} - g~_t)``; then
   ``theta_{t+1} = theta_t - s_lr * v_t``.

After those updates the minibatch enters the memory, example by example (Algorithm R). At the
start of every experience theta_{t-1} is set to theta_t (the code's ``begin_task``), so the
first update of a task has ``g~ = g`` on its batch; v is never reset.

Deviations from the official code, each noted: the losses are the harness's (mean
cross-entropy; each example over its own task's classes in task-incremental streams), where the
code masks its inner losses to the current task's logits, scores query examples of the current
task over the logits from the task's first class on and down-weights replayed ones by 0.5 (its
class-incremental CIFAR setting); memory examples are drawn without replacement by our
reservoir. ``inner_steps`` and ``meta_losses`` count both paths (theta_t and theta_{t-1}): the
work done.

Two implementations, one algorithm: the reference path below (:func:`look_ahead_meta_loss`
on any ``nn.Module``, any device, first and second order, any ``inner_batch_size``) and, for
first-order meta-gradients with one example per inner step (``inner_batch_size: 1``, the MNIST
configs) on ReLU MLPs in float32 on the CPU (``fast_path``), the compiled backend
:class:`strategies.vrmcl_numba.CompiledVRMCL` (La-MAML's glance kernel with the clamp, twice,
then the clips, Eq. 9 and the updates in one kernel). Both make the same random draws in the same
order and give the same weights, rates, momentum and lagged weights to float rounding (tested
one minibatch at a time from the same state, as in :mod:`strategies.lamaml`); the run record says
which ran (``backend``: ``numba`` or ``reference``).

Defaults are the README's CIFAR-100 command (lr 0.25, alpha_init 0.1, s_momentum 0.15, s_lr
0.35, grad_clip_norm 1, inner_batch_size 8, one meta-update per batch, second order, buffer 1000,
replay batch 32). The code has no MNIST settings (its MNIST backbone cannot run VR-MCL); the
MNIST configs of this suite set their own and say so.
"""

from __future__ import annotations

from typing import Any

import torch

from strategies.contract import StrategyReport
from strategies.functional import (
    OutputsWithoutGraph,
    SingleThreadedExperiences,
    clip_joint_norm_,
    copy_into,
    same_parameters,
    trainable,
)
from strategies.lamaml import look_ahead_meta_loss
from strategies.memory import ReservoirMemory
from strategies.mer import _meta_template
from strategies.vrmcl_numba import CompiledVRMCL


class VarianceReducedMCL(SingleThreadedExperiences, OutputsWithoutGraph, _meta_template()):
    """VR-MCL (module docstring) as an Avalanche meta-learning strategy; ``alphas`` are the learned
    inner rates, ``lagged`` the weights before the last meta-update, ``momentum`` v;
    ``fast_path``: the compiled backend where it applies (module docstring), else the reference."""

    def __init__(self, *, model: torch.nn.Module, lr: float, alpha_init: float, s_momentum: float, s_lr: float,
                 inner_batch_size: int, meta_update_per_batch: int, mem_size: int, replay_batch: int,
                 second_order: bool = True, grad_clip_norm: float = 1.0, seed: int = 0,
                 class_mask: torch.Tensor | None = None, fast_path: bool = True, **template_kwargs: Any):
        super().__init__(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=s_lr), **template_kwargs)
        self.lr, self.s_momentum, self.s_lr = lr, s_momentum, s_lr
        self.inner_batch_size, self.passes = inner_batch_size, meta_update_per_batch
        self.replay_batch, self.second_order, self.grad_clip_norm = replay_batch, second_order, grad_clip_norm
        self.memory = ReservoirMemory(size=mem_size, seed=seed, device=self.device)
        self._order = torch.Generator().manual_seed(seed)
        self._mask = class_mask
        self._names, self._params = trainable(self.model)
        self.alphas = [torch.full_like(p, alpha_init, requires_grad=True) for p in self._params]
        self.lagged = [p.detach().clone() for p in self._params]
        self.momentum: list[torch.Tensor] | None = None
        self.inner_steps = self.meta_losses = self.meta_examples = 0
        self.fast_path = fast_path
        self._backend: CompiledVRMCL | None = None  # the compiled backend where it applies
        self.backend_used: str | None = None  # which implementation ran the last meta-update

    def _before_training_exp(self, **kwargs):
        super()._before_training_exp(**kwargs)
        self._names, self._params = same_parameters(self.model, self._params, owner="VR-MCL")
        copy_into(self.lagged, [p.detach() for p in self._params])  # begin_task: theta_{t-1} <- theta_t
        example = self.experience.dataset[0][0]
        self._backend = (CompiledVRMCL.for_model(self.model, self._params, tuple(example.shape), self._mask,
                                                 second_order=self.second_order,
                                                 inner_batch_size=self.inner_batch_size)
                         if self.fast_path and example.dtype == torch.float32 else None)

    def _inner_updates(self, **kwargs):
        x, y, t = self.mb_x, self.mb_y, self.mb_task_id
        losses = [self._meta_update(x, y, t) for _ in range(self.passes)]
        self.memory.add(x, y, t)
        self.loss = torch.stack(losses).mean()

    def _outer_update(self, **kwargs):
        """Nothing left: each pass of ``_inner_updates`` ends with its own meta-update."""

    def _meta_update(self, x, y, t) -> torch.Tensor:
        order = torch.randperm(len(y), generator=self._order).to(y.device)
        support = (x[order], y[order], t[order])
        query = self.memory.joined(x, y, t, self.replay_batch, memory_first=False)
        chunks = -(-len(y) // self.inner_batch_size)
        self.inner_steps += 2 * chunks
        self.meta_losses += 2 * chunks
        self.meta_examples += 2 * chunks * len(query[1])
        self.backend_used = self._backend.name if self._backend is not None else "reference"
        if self._backend is not None:
            return self._compiled_meta_update(support, query)
        n = len(self._params)

        def meta_loss(weights):
            return look_ahead_meta_loss(self.model, self._names, weights, self.alphas, support, query, mask=self._mask,
                                        second_order=self.second_order, chunk=self.inner_batch_size,
                                        clamp=self.grad_clip_norm)

        loss = meta_loss(self._params)
        grads = torch.autograd.grad(loss, self._params + self.alphas)
        g_theta, g_alpha = list(grads[:n]), list(grads[n:])
        clip_joint_norm_(g_theta, self.grad_clip_norm)
        clip_joint_norm_(g_alpha, self.grad_clip_norm)
        lagged = [w.detach().clone().requires_grad_() for w in self.lagged]
        lagged_grads = torch.autograd.grad(meta_loss(lagged), lagged + self.alphas)
        g_tilde = list(lagged_grads[:n])
        clip_joint_norm_(g_tilde, self.grad_clip_norm)
        g_alpha = [a + b for a, b in zip(g_alpha, lagged_grads[n:])]
        clip_joint_norm_(g_alpha, self.grad_clip_norm)
        with torch.no_grad():
            copy_into(self.lagged, self._params)
            torch._foreach_add_(self.alphas, g_alpha, alpha=-self.lr)
            if self.momentum is None:
                self.momentum = [g.clone() for g in g_theta]
            else:  # v_t = g_t + s_momentum * (v_{t-1} - g~_t)
                self.momentum = [g + self.s_momentum * (v - gt) for g, v, gt in zip(g_theta, self.momentum, g_tilde)]
            torch._foreach_add_(self._params, self.momentum, alpha=-self.s_lr)
        return loss.detach()

    def _compiled_meta_update(self, support, query) -> torch.Tensor:
        """Steps 2-5 of the module docstring in one call of the compiled backend, in place on the
        weights, rates, lagged weights and momentum (made here on the first update: v_1 = g_1)."""
        first = self.momentum is None
        if first:
            self.momentum = [torch.zeros_like(p) for p in self._params]
        loss = self._backend.meta_step(self._params, self.lagged, self.alphas, self.momentum, support=support,
                                       query=query, lr=self.lr, s_momentum=self.s_momentum, s_lr=self.s_lr,
                                       clip=self.grad_clip_norm, first=first)
        return torch.tensor(loss)

    def report(self) -> StrategyReport:
        """Inner steps and meta-losses of both paths, the backend of the last meta-update, and the
        mean learned rate alpha; with the compiled backend, which bypasses torch, also the
        examples backpropagated (its inner steps take one example each, plus the meta-losses')."""
        with torch.no_grad():
            count = sum(a.numel() for a in self.alphas)
            mean_alpha = float(sum(a.sum() for a in self.alphas) / max(count, 1))
        compiled = self.backend_used not in (None, "reference")
        return StrategyReport(inner_steps=int(self.inner_steps), meta_losses=int(self.meta_losses),
                              meta_examples=int(self.meta_examples), backend=self.backend_used,
                              gradient_examples=int(self.inner_steps + self.meta_examples) if compiled else None,
                              extra_metrics={"mean_alpha": mean_alpha})

    # -- checkpoints (strategies.checkpoint) -------------------------------------------
    def checkpoint_state(self) -> dict:
        """What decides the rest of a run besides the weights: rates, lagged weights, momentum,
        memory, the shuffling generator and the work counters."""
        return {"alphas": [a.detach().cpu().clone() for a in self.alphas],
                "lagged": [w.cpu().clone() for w in self.lagged],
                "momentum": None if self.momentum is None else [v.cpu().clone() for v in self.momentum],
                "memory": self.memory.checkpoint_state(), "order": self._order.get_state(),
                "counts": [int(self.inner_steps), int(self.meta_losses), int(self.meta_examples)]}

    def load_checkpoint_state(self, state: dict) -> None:
        if [tuple(a.shape) for a in state["alphas"]] != [tuple(a.shape) for a in self.alphas]:
            raise ValueError("the checkpoint's learned rates do not fit this model")
        with torch.no_grad():
            copy_into(self.alphas, [a.to(self.device) for a in state["alphas"]])
            copy_into(self.lagged, [w.to(self.device) for w in state["lagged"]])
        # copies: the compiled backend writes the momentum in place
        self.momentum = None if state["momentum"] is None else [v.to(self.device).clone() for v in state["momentum"]]
        self.memory.load_checkpoint_state(state["memory"])
        self._order.set_state(state["order"])
        self.inner_steps, self.meta_losses, self.meta_examples = state["counts"]
