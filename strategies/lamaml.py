"""Look-ahead MAML and continual MAML (Gupta, Yadav and Paull 2020, "La-MAML: Look-ahead
Meta Learning for Continual Learning", NeurIPS), written with ``torch.func.functional_call``
on a dict of fast weights.

For every incoming minibatch, ``glances`` times (official ``model/lamaml.py``):

1. shuffle the minibatch; draw ``replay_batch`` examples from the reservoir memory and form
   the meta-batch B = memory examples + the whole minibatch;
2. inner loop, one example (x_i, y_i) at a time from the current weights theta:
   ``theta_{i+1} = theta_i - relu(alpha) * grad L(x_i, y_i; theta_i)`` (Eq. 6; C-MAML uses the
   fixed rate ``alpha_init``); on the first glance the example enters the reservoir memory;
   after each inner step the meta-loss ``L(B; theta_{i+1})`` is taken;
3. meta-loss = mean of those B-losses (the official code accumulates one per inner step;
   ``meta_loss="final"`` takes only the one after the last inner step, as the paper's
   Algorithm 1 writes it, ``L_t(theta_k, b_m)``). Avalanche 0.6's lamaml_v2 is in between:
   it cuts the minibatch into ``n_inner_updates`` chunks, takes one inner step per chunk (on
   the chunk's mean loss) and a meta-loss after each, and averages them; with
   ``n_inner_updates`` equal to the batch size it takes the same inner steps and meta-losses
   as ``every-step`` here;
   its gradients reach theta and alpha through the fast weights (first order: the inner
   gradients are constants; ``second_order``: differentiated too);
4. both meta-gradients are clipped to norm ``grad_clip_norm`` (the official code's effective
   clipping; its per-tensor clamp of the inner gradients discards its result, so we do not
   clamp them either);
5. learned rates (``learn_lr``): ``alpha <- alpha - opt_lr * grad_alpha`` (Eq. 7), first;
6. weights: asynchronous ``theta <- theta - relu(alpha) * grad_theta`` with the updated alpha
   (Eq. 8, La-MAML), or synchronous ``theta <- theta - opt_wt * grad_theta`` (C-MAML,
   Sync-La-MAML).

La-MAML's CIFAR code (``model/lamaml_cifar.py``) differs from the MNIST code in three ways,
each a parameter here (the MNIST form is the default): ``inner_rate: alpha`` takes the inner
steps with alpha itself instead of relu(alpha); ``clamp_inner: true`` clamps each inner gradient
elementwise to ``grad_clip_norm`` (the CIFAR code uses the clamp's result; the MNIST code
discards it); ``inner_chunks: n`` cuts the minibatch into n chunks of ceil(batch / n) examples,
one inner step and one meta-loss per chunk (the official ``cifar_batches``). Its run scripts
also take second-order meta-gradients and clip at 1.0 (``second_order``, ``grad_clip_norm``).
The CIFAR code can replay from old tasks only (``--use_old_task_memory``), but none of the
official commands sets that flag, so the reservoir is replayed whole there as here.

Deviations from the official code, none of which changes the algorithm: memory examples of a
meta-batch are drawn without replacement (the official code reshuffles per draw, which can
repeat one); the reservoir uses Vitter's Algorithm R exactly (the official
``random.randint(0, age)`` is off by one). In task-incremental streams each example's loss is
taken over the classes of its own task.

Two implementations, one algorithm: the reference path (:func:`look_ahead_meta_loss`,
``torch.func.functional_call`` on any ``nn.Module``, any device, first and second order) and,
for first-order meta-gradients of ReLU MLPs in float32 on the CPU (``fast_path``), the compiled
backend :class:`strategies.lamaml_numba.CompiledLaMAML`. Both give the same meta-loss and
meta-gradients to float rounding (tested one minibatch at a time from the same state: two float
runs part for good after a ReLU input rounds to opposite sides of zero); the run record says which
ran (``backend``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.func import functional_call

from strategies.functional import (
    OutputsWithoutGraph,
    SingleThreadedExperiences,
    clip_joint_norm_,
    masked_cross_entropy,
    same_parameters,
    trainable,
)
from strategies.contract import StrategyReport
from strategies.lamaml_numba import CompiledLaMAML
from strategies.memory import ReservoirMemory
from strategies.mer import _meta_template


class LookAheadMAML(SingleThreadedExperiences, OutputsWithoutGraph, _meta_template()):
    """La-MAML (``learn_lr=True, sync_update=False``), Sync-La-MAML (``True, True``) and
    C-MAML (``False, True``) as an Avalanche meta-learning strategy.

    ``alphas`` holds one learning-rate tensor per parameter; ``inner_steps`` counts the
    single-example inner SGD steps. Each experience trains with torch and BLAS on one thread.
    """

    def __init__(self, *, model: torch.nn.Module, alpha_init: float, opt_lr: float, opt_wt: float,
                 learn_lr: bool, sync_update: bool, glances: int, mem_size: int, replay_batch: int,
                 second_order: bool = False, grad_clip_norm: float = 2.0, seed: int = 0,
                 class_mask: torch.Tensor | None = None, fast_path: bool = True, meta_loss: str = "every-step",
                 inner_rate: str = "relu", clamp_inner: bool = False, inner_chunks: int = 0,
                 **template_kwargs: Any):
        if meta_loss not in ("every-step", "final"):
            raise ValueError(f"meta_loss must be 'every-step' or 'final', got {meta_loss!r}")
        if inner_rate not in ("relu", "alpha"):
            raise ValueError(f"inner_rate must be 'relu' or 'alpha', got {inner_rate!r}")
        super().__init__(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=opt_wt), **template_kwargs)
        self.alpha_init, self.opt_lr, self.opt_wt = alpha_init, opt_lr, opt_wt
        self.learn_lr, self.sync_update, self.glances = learn_lr, sync_update, glances
        self.replay_batch, self.second_order, self.grad_clip_norm = replay_batch, second_order, grad_clip_norm
        self.memory = ReservoirMemory(size=mem_size, seed=seed, device=self.device)
        self.inner_steps = 0
        self.meta_losses = 0  # meta-loss evaluations, L(B; theta_{i+1}), for the speed benchmark's equal work
        self.meta_examples = 0  # the examples of those evaluations, sum of |B|
        self._order = torch.Generator().manual_seed(seed)
        self._mask = class_mask
        self._names, self._params = trainable(self.model)
        self.alphas = [torch.full_like(p, alpha_init, requires_grad=True) for p in self._params]
        self.fast_path = fast_path
        self.final_meta_loss = meta_loss == "final"
        self.inner_rate, self.clamp_inner, self.inner_chunks = inner_rate, clamp_inner, inner_chunks
        self._backend: CompiledLaMAML | None = None  # the compiled backend where it applies
        self.backend_used: str | None = None  # which implementation ran the last glance

    def report(self) -> StrategyReport:
        """Inner steps, meta-loss evaluations, the backend of the last glance, and the mean
        learned rate relu(alpha) for the run record; with the compiled backend, which bypasses
        torch, also the examples backpropagated (inner examples plus meta-loss examples)."""
        with torch.no_grad():
            n = sum(a.numel() for a in self.alphas)
            mean_alpha = float(sum(torch.relu(a).sum() for a in self.alphas) / max(n, 1))
        compiled = self.backend_used not in (None, "reference")  # single-example inner steps, outside torch
        return StrategyReport(inner_steps=int(self.inner_steps), meta_losses=int(self.meta_losses),
                              meta_examples=int(self.meta_examples),
                              gradient_examples=int(self.inner_steps + self.meta_examples) if compiled else None,
                              backend=self.backend_used, extra_metrics={"mean_alpha": mean_alpha})

    # -- checkpoints (strategies.checkpoint) -------------------------------------------
    def checkpoint_state(self) -> dict:
        """What decides the rest of a run besides the weights: the learned rates, the reservoir
        memory and its generator, the shuffling generator and the work counters."""
        return {"alphas": [a.detach().cpu().clone() for a in self.alphas], "memory": self.memory.checkpoint_state(),
                "order": self._order.get_state(), "inner_steps": int(self.inner_steps),
                "meta_losses": int(self.meta_losses), "meta_examples": int(self.meta_examples)}

    def load_checkpoint_state(self, state: dict) -> None:
        alphas = state["alphas"]
        if [tuple(a.shape) for a in alphas] != [tuple(a.shape) for a in self.alphas]:
            raise ValueError("the checkpoint's learned rates do not fit this model")
        with torch.no_grad():
            for a, saved in zip(self.alphas, alphas):
                a.copy_(saved)
        self.memory.load_checkpoint_state(state["memory"])
        self._order.set_state(state["order"])
        self.inner_steps = int(state["inner_steps"])
        self.meta_losses, self.meta_examples = int(state["meta_losses"]), int(state["meta_examples"])

    def _before_training_exp(self, **kwargs):
        super()._before_training_exp(**kwargs)
        self._names, self._params = same_parameters(self.model, self._params, owner="La-MAML")
        example = self.experience.dataset[0][0]
        self._backend = (CompiledLaMAML.for_model(self.model, self._params, tuple(example.shape), self._mask)
                         if self.fast_path and self._mnist_form and example.dtype == torch.float32 else None)

    @property
    def _mnist_form(self) -> bool:
        """The official MNIST code's glance (first order, relu rates, unclamped single-example
        steps): the one the compiled backend runs."""
        return not self.second_order and self.inner_rate == "relu" and not self.clamp_inner and not self.inner_chunks

    def _inner_updates(self, **kwargs):
        losses = []
        first_epoch = self.clock.train_exp_epochs == 0
        x, y, t = self.mb_x, self.mb_y, self.mb_task_id
        for glance in range(self.glances):
            order = torch.randperm(len(y), generator=self._order).to(y.device)
            x, y, t = x[order], y[order], t[order]
            losses.append(self._glance(x, y, t, remember=first_epoch and glance == 0))
        self.loss = torch.stack(losses).mean()

    def _outer_update(self, **kwargs):
        """Nothing left: each glance ends with its own meta-update (official code)."""

    # -- one glance ------------------------------------------------------------------
    def _glance(self, x, y, t, *, remember: bool) -> torch.Tensor:
        bx, by, bt = self.memory.joined(x, y, t, self.replay_batch, memory_first=True)
        chunk = -(-len(y) // self.inner_chunks) if self.inner_chunks else 1  # ceil(batch / cifar_batches)
        evaluations = 1 if self.final_meta_loss else len(range(0, len(y), chunk))
        self.meta_losses += evaluations
        self.meta_examples += evaluations * len(by)

        def after_inner_step(rows: slice) -> None:
            self.inner_steps += 1
            if remember:
                self.memory.add(x[rows], y[rows], t[rows])

        self.backend_used = self._backend.name if self._backend is not None else "reference"
        if self._backend is not None:  # first order on a ReLU MLP, compiled (CPU, float32): glance and update
            meta_loss = self._backend.meta_step(
                self._params, self.alphas, alpha_init=self.alpha_init, incoming=(x, y, t), meta_batch=(bx, by, bt),
                learn_lr=self.learn_lr, sync_update=self.sync_update, opt_lr=self.opt_lr, opt_wt=self.opt_wt,
                max_norm=self.grad_clip_norm, final_only=self.final_meta_loss)
            self.inner_steps += len(y)
            if remember:  # the memory is not read again in this glance: one call, same draws, same order
                self.memory.add(x, y, t)
            return torch.tensor(meta_loss)
        if not (self.learn_lr or not self.sync_update):
            rates = [self.alpha_init] * len(self.alphas)
        else:
            rates = [torch.relu(a) for a in self.alphas] if self.inner_rate == "relu" else list(self.alphas)
        meta_loss = look_ahead_meta_loss(self.model, self._names, self._params, rates, (x, y, t), (bx, by, bt),
                                         mask=self._mask, second_order=self.second_order,
                                         after_inner_step=after_inner_step, final_only=self.final_meta_loss,
                                         chunk=chunk, clamp=self.grad_clip_norm if self.clamp_inner else None)
        wrt = self._params + (self.alphas if self.learn_lr else [])
        grads = torch.autograd.grad(meta_loss, wrt, allow_unused=True)
        grads = [torch.zeros_like(w) if g is None else g for w, g in zip(wrt, grads)]
        g_theta, g_alpha = grads[:len(self._params)], grads[len(self._params):]
        clip_joint_norm_(g_theta, self.grad_clip_norm)
        with torch.no_grad():
            if self.learn_lr:
                clip_joint_norm_(g_alpha, self.grad_clip_norm)
                torch._foreach_add_(self.alphas, g_alpha, alpha=-self.opt_lr)
            if self.sync_update:
                torch._foreach_add_(self._params, g_theta, alpha=-self.opt_wt)
            else:
                torch._foreach_add_(self._params, [g * torch.relu(a) for g, a in zip(g_theta, self.alphas)],
                                    alpha=-1.0)
        return meta_loss.detach()


def look_ahead_meta_loss(model: torch.nn.Module, names: list[str], params: list[torch.Tensor], rates: list,
                         incoming: tuple, meta_batch: tuple, *, mask: torch.Tensor | None = None,
                         second_order: bool = False, after_inner_step=None, final_only: bool = False,
                         chunk: int = 1, clamp: float | None = None) -> torch.Tensor:
    """The La-MAML/C-MAML meta-loss of one glance as a differentiable function of ``params``
    and ``rates`` (Gupta et al. 2020, Alg. 1 and Eq. 5-6):

    ``theta_0 = params``; ``theta_{i+1} = theta_i - rates * grad L(c_i; theta_i)`` over the
    incoming examples cut into consecutive chunks ``c_i`` of ``chunk`` examples (one at a time by
    default, as the MNIST code; the CIFAR code and VR-MCL take chunks); returns
    ``mean_i L(meta_batch; theta_{i+1})``.

    With ``second_order`` the inner gradients are part of the graph (exact meta-gradient);
    otherwise they are constants (first-order approximation). ``clamp``: each inner gradient
    clamped elementwise to [-clamp, clamp] before its step (La-MAML's CIFAR code, VR-MCL).
    ``final_only``: the meta-loss is ``L(meta_batch; theta_n)`` alone (the paper's Algorithm 1).
    ``after_inner_step(rows)`` is called after each step with the slice of the incoming
    examples it took.
    """
    x, y, t = incoming
    bx, by, bt = meta_batch

    def loss_at(weights, xs, ys, ts):
        return masked_cross_entropy(functional_call(model, dict(zip(names, weights)), (xs,)), ys, ts, mask)

    fast = list(params)
    meta_losses = []
    starts = range(0, len(y), chunk)
    for start in starts:
        rows = slice(start, start + chunk)
        loss = loss_at(fast, x[rows], y[rows], t[rows])
        grads = torch.autograd.grad(loss, fast, create_graph=second_order)
        if clamp is not None:
            grads = [g.clamp(-clamp, clamp) for g in grads]
        fast = [w - g * r for w, g, r in zip(fast, grads, rates)]
        if after_inner_step is not None:
            after_inner_step(rows)
        if not final_only or start == starts[-1]:
            meta_losses.append(loss_at(fast, bx, by, bt))
    return torch.stack(meta_losses).mean()
