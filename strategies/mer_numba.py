"""The compiled CPU backend of MER (Riemer et al. 2019) for ReLU MLPs: one numba call runs MER
(Algorithm 1; Algorithms 6 and 7 through its plan) on a whole minibatch, every single-example
SGD step, the within-batch and across-batch Reptile interpolations and the reservoir writes
included, with no Python between steps. :class:`CompiledMER` is what :class:`strategies.mer.MER`
calls; the reference path is MER's own autograd code, and a test checks both equal.

The randomness (memory draws, reservoir slots, Algorithm 7's order) is drawn in Python
beforehand, in the order the reference path draws it, so both paths see the same batches.
A single-example step is the forward pass, :func:`strategies.mlp_numba.output_delta` and
:func:`strategies.mlp_numba.hidden_delta` of the shared kernels, then the SGD update of the
rows of the nonzero inputs only (exact: the other rows' gradients are zero).
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit

from strategies.mlp_numba import FAST, TransposedMLP, forward_all, hidden_delta, linear_relu_layers, output_delta

INCOMING = -1  # plan entry: the incoming example
SKIP = -2  # plan entry: padding


@njit(cache=True, fastmath=FAST)
def _update_rows(wt, b, inp, idx, k, d, lr):
    """W -= lr d inp^T and b -= lr d, touching only the rows of the ``k`` nonzero inputs."""
    n = d.shape[0]
    for q in range(k):
        j = idx[q]
        a = np.float32(-lr * inp[j])
        for o in range(n):
            wt[j, o] += a * d[o]
    step = np.float32(lr)
    for o in range(n):
        b[o] -= step * d[o]


@njit(cache=True, fastmath=FAST)
def _step(wts, bs, zs, ds, ids, ks, x, y, mask_row, use_mask, weight, lr):
    """One SGD step on one example, in place on ``wts``/``bs``; returns the weighted loss.
    ``ids[l]``/``ks[l]``: scratch for the nonzero inputs of layer l."""
    last = len(wts) - 1
    forward_all(wts, bs, zs, ids, ks, x)
    loss = output_delta(zs[last], ds[last], y, mask_row, use_mask, weight)
    for layer in range(last, -1, -1):
        inp = x if layer == 0 else zs[layer - 1]
        if layer > 0:  # from the weights before this layer's update
            hidden_delta(wts[layer], inp, ids[layer], ks[layer], ds[layer], ds[layer - 1])
        _update_rows(wts[layer], bs[layer], inp, ids[layer], ks[layer], ds[layer], lr)
    return loss


@njit(cache=True, fastmath=FAST)
def _copy(dst_w, dst_b, wts, bs):
    for i in range(len(wts)):
        dst, src = dst_w[i].ravel(), wts[i].ravel()
        for j in range(dst.shape[0]):
            dst[j] = src[j]
        dst_b[i][:] = bs[i]


@njit(cache=True, fastmath=FAST)
def _reptile(wts, bs, before_w, before_b, rate):
    """theta <- before + rate * (theta - before), in place (MER Alg. 1 lines 11 and 13)."""
    r = np.float32(rate)
    for i in range(len(wts)):
        w, w0 = wts[i].ravel(), before_w[i].ravel()
        for j in range(w.shape[0]):
            w[j] = w0[j] + r * (w[j] - w0[j])
        b, b0 = bs[i], before_b[i]
        for o in range(b.shape[0]):
            b[o] = b0[o] + r * (b[o] - b0[o])


@njit(cache=True, fastmath=FAST)
def mer_minibatch(wts, bs, snap_a_w, snap_a_b, snap_b_w, snap_b_b, zs, ds, ids, ks, xs, ys, ts, plan, weights,
                  slots, mem_x, mem_y, mem_t, masks, use_mask, lr, beta, gamma):
    """MER on every example of a minibatch, in order; returns each example's summed loss.

    ``plan[i, b, k]``: the k-th example of batch b for incoming example i: ``INCOMING``, a
    memory slot, or ``SKIP``; ``weights[i, b, k]`` its loss weight. ``slots[i]``: the reservoir
    slot example i is written to after its update (-1: not stored)."""
    losses = np.zeros(xs.shape[0])
    for i in range(xs.shape[0]):
        if gamma != 1.0:
            _copy(snap_a_w, snap_a_b, wts, bs)
        for b in range(plan.shape[1]):
            if beta != 1.0:
                _copy(snap_b_w, snap_b_b, wts, bs)
            for k in range(plan.shape[2]):
                src = plan[i, b, k]
                if src == SKIP:
                    continue
                if src == INCOMING:
                    x, y, t = xs[i], ys[i], ts[i]
                else:
                    x, y, t = mem_x[src], mem_y[src], mem_t[src]
                losses[i] += _step(wts, bs, zs, ds, ids, ks, x, y, masks[t if use_mask else 0], use_mask, weights[i, b, k], lr)
            if beta != 1.0:
                _reptile(wts, bs, snap_b_w, snap_b_b, beta)
        if gamma != 1.0:
            _reptile(wts, bs, snap_a_w, snap_a_b, gamma)
        slot = slots[i]
        if slot >= 0:
            mem_x[slot] = xs[i]
            mem_y[slot] = ys[i]
            mem_t[slot] = ts[i]
    return losses


@njit(cache=True, fastmath=FAST)
def sgd_steps(wts, bs, zs, ds, ids, ks, xs, ys, ts, weights, masks, use_mask, lr):
    """Plain single-example SGD through ``xs`` in order (used by tests and the speed floor)."""
    losses = np.zeros(xs.shape[0])
    for i in range(xs.shape[0]):
        losses[i] = _step(wts, bs, zs, ds, ids, ks, xs[i], ys[i], masks[ts[i] if use_mask else 0], use_mask, weights[i], lr)
    return losses


class CompiledMER:
    """MER on a minibatch through :func:`mer_minibatch`, on the torch layers of a ReLU MLP
    (float32, CPU): the weights are loaded into transposed arrays and stored back per call."""

    name = "numba"

    def __init__(self, layers, mask: torch.Tensor | None):
        self.net = TransposedMLP(layers, n_tasks=1 if mask is None else len(mask))
        self.masks = self.net.no_mask if mask is None else np.ascontiguousarray(mask.numpy(), dtype=np.float32)
        self.use_mask = mask is not None

    @classmethod
    def for_model(cls, model: torch.nn.Module, input_shape: tuple[int, ...],
                  mask: torch.Tensor | None) -> CompiledMER | None:
        """The backend for ``model``, or None where it does not apply (not a ReLU MLP with
        biases, not float32 on the CPU)."""
        layers = linear_relu_layers(model, input_shape)
        if layers is None or not TransposedMLP.usable(layers) or (mask is not None and mask.device.type != "cpu"):
            return None
        return cls(layers, mask)

    def minibatch(self, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, *, plan: np.ndarray,
                  weights: np.ndarray, slots: np.ndarray, memory, lr: float, beta: float,
                  gamma: float) -> np.ndarray:
        """Run MER on the minibatch (x, y, t) with the batches of ``plan``; the reservoir
        ``memory`` (its storage) receives the examples at ``slots``. Returns each example's loss."""
        n = len(y)
        net = self.net
        net.load()
        losses = mer_minibatch(net.wts, net.bs, *net.snap_a, *net.snap_b, *net.scratch,
                               x.reshape(n, -1).float().contiguous().numpy(), y.numpy(), t.numpy(), plan, weights,
                               slots, memory.x.reshape(memory.size, -1).numpy(), memory.y.numpy(), memory.t.numpy(),
                               self.masks, self.use_mask, lr, beta, gamma)
        net.store()
        return losses


def warm_up(depths: tuple[int, ...] = (2, 3)) -> None:
    """Compile (or load from numba's cache) every kernel on tiny networks of each number of
    linear layers in ``depths`` (numba specialises a kernel per tuple length; the suite's MLP
    has 3), so that timings that follow measure steady-state steps. Training does not need it:
    the first call compiles."""
    for depth in depths:
        wts = (np.zeros((3, 2), np.float32),) + tuple(np.zeros((2, 2), np.float32) for _ in range(depth - 1))
        bs = tuple(np.zeros(2, np.float32) for _ in range(depth))
        snaps = tuple(tuple(a.copy() for a in group) for group in (wts, bs, wts, bs))
        scratch = (tuple(np.zeros(2, np.float32) for _ in bs), tuple(np.zeros(2, np.float32) for _ in bs),
                   tuple(np.zeros(len(w), np.int64) for w in wts), np.zeros(depth, np.int64))
        xs, ys, ts = np.ones((1, 3), np.float32), np.zeros(1, np.int64), np.zeros(1, np.int64)
        masks = np.zeros((1, 2), np.float32)
        plan, weights = np.full((1, 1, 1), INCOMING, np.int64), np.ones((1, 1, 1), np.float32)
        mer_minibatch(wts, bs, *snaps, *scratch, xs, ys, ts, plan, weights, np.full(1, -1, np.int64),
                      xs.copy(), ys.copy(), ts.copy(), masks, False, 0.1, 0.5, 0.5)
        sgd_steps(wts, bs, *scratch, xs, ys, ts, np.ones(1, np.float32), masks, False, 0.1)
