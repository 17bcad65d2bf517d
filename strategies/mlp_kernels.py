"""Compiled (numba) kernels for MER's single-example SGD steps on ReLU MLPs on the CPU.

One call runs MER (Riemer et al. 2019, Algorithm 1; Algorithms 6 and 7 through its plan) on a
whole minibatch: every single-example SGD step, the within-batch and across-batch Reptile
interpolations and the reservoir writes, with no Python between steps. The randomness (memory
draws, reservoir slots, Algorithm 7's order) is drawn in Python beforehand, in the order the
plain path draws it, so both paths see the same batches.

The closed form of one step is the one in :mod:`strategies.fast_mlp`: with ``a_0 = x``,
``a_l = relu(W_l a_{l-1} + b_l)``, ``p = softmax(logits + mask)``, ``d_L = w (p - onehot(y))``,
``grad W_l = d_l a_{l-1}^T``, ``grad b_l = d_l``, ``d_{l-1} = (W_l^T d_l) * [a_{l-1} > 0]``.
Weights are held transposed (``W_l^T``, row-major ``(in, out)``), so the row of an input unit is
contiguous: the forward pass adds ``a_{l-1}[j] * W_l^T[j]`` for the units with ``a_{l-1}[j] != 0``
only, and the update ``W_l^T[j] -= lr * a_{l-1}[j] * d_l`` touches only those rows. Rows of zero
inputs have a zero gradient, so skipping them is exact: on MNIST about 80% of the pixels and
about half of the hidden units are zero. Summation order differs from BLAS (float rounding only).
"""

from __future__ import annotations

import numpy as np
from numba import njit

# reassociation lets the dot products use SIMD; NaN and inf keep their IEEE meaning (divergence checks)
_FAST = {"reassoc", "contract"}
INCOMING = -1  # plan entry: the incoming example
SKIP = -2  # plan entry: padding


@njit(cache=True, fastmath=_FAST)
def _nonzero(inp, idx):
    """Write the positions of the nonzero entries of ``inp`` to ``idx`` (branch-free); their count."""
    k = 0
    for j in range(inp.shape[0]):
        idx[k] = j
        k += inp[j] != 0.0
    return k


@njit(cache=True, fastmath=_FAST)
def _forward(wt, b, inp, idx, k, out, relu):
    """out <- W inp + b (then ReLU) from the rows of the ``k`` nonzero inputs listed in ``idx``.
    The sum is built in a fresh local buffer, which aliases nothing (so it vectorises)."""
    n = out.shape[0]
    acc = b.copy()
    for q in range(k):
        j = idx[q]
        v = inp[j]
        for o in range(n):
            acc[o] += v * wt[j, o]
    for o in range(n):
        out[o] = max(acc[o], np.float32(0.0)) if relu else acc[o]


@njit(cache=True, fastmath=_FAST)
def _backward(wt, b, inp, idx, k, d, d_prev, want_prev, lr):
    """d_prev <- (W^T d) * [inp > 0] (when ``want_prev``), then W -= lr d inp^T and b -= lr d,
    touching only the rows of the ``k`` nonzero inputs (zero rows have a zero gradient)."""
    n = d.shape[0]
    g = d.copy()
    if want_prev:
        d_prev[:] = np.float32(0.0)
    for q in range(k):
        j = idx[q]
        if want_prev:
            s = np.float32(0.0)
            for o in range(n):
                s += wt[j, o] * g[o]
            d_prev[j] = s  # inp[j] > 0 (a ReLU output): the mask is 1
        a = np.float32(-lr * inp[j])
        for o in range(n):
            wt[j, o] += a * g[o]
    step = np.float32(lr)
    for o in range(n):
        b[o] -= step * g[o]


@njit(cache=True, fastmath=_FAST)
def _forward_all(wts, bs, zs, ids, ks, x):
    """Every layer's output for input ``x`` into ``zs``; ``ids[l]``/``ks[l]`` list the nonzero
    inputs of layer l (used again by the backward pass)."""
    last = len(wts) - 1
    ks[0] = _nonzero(x, ids[0])
    _forward(wts[0], bs[0], x, ids[0], ks[0], zs[0], last > 0)
    for layer in range(1, last + 1):
        ks[layer] = _nonzero(zs[layer - 1], ids[layer])
        _forward(wts[layer], bs[layer], zs[layer - 1], ids[layer], ks[layer], zs[layer], layer < last)


@njit(cache=True, fastmath=_FAST)
def _step(wts, bs, zs, ds, ids, ks, x, y, mask_row, use_mask, weight, lr):
    """One SGD step on one example, in place on ``wts``/``bs``; returns the weighted loss.
    ``ids[l]``/``ks[l]``: scratch for the nonzero inputs of layer l."""
    last = len(wts) - 1
    _forward_all(wts, bs, zs, ids, ks, x)
    logits = zs[last]
    n_out = logits.shape[0]
    top = -np.inf
    for o in range(n_out):
        v = logits[o] + (mask_row[o] if use_mask else np.float32(0.0))
        top = max(top, v)
    total = 0.0
    d = ds[last]
    for o in range(n_out):
        e = np.exp(logits[o] + (mask_row[o] if use_mask else np.float32(0.0)) - top)
        d[o] = e
        total += e
    loss = (top + np.log(total) - logits[y] - (mask_row[y] if use_mask else np.float32(0.0))) * weight
    for o in range(n_out):
        d[o] = d[o] / total * weight
    d[y] -= weight
    for layer in range(last, 0, -1):
        _backward(wts[layer], bs[layer], zs[layer - 1], ids[layer], ks[layer], ds[layer], ds[layer - 1], True, lr)
    _backward(wts[0], bs[0], x, ids[0], ks[0], ds[0], ds[0], False, lr)
    return loss


@njit(cache=True, fastmath=_FAST)
def _copy(dst_w, dst_b, wts, bs):
    for i in range(len(wts)):
        dst, src = dst_w[i].ravel(), wts[i].ravel()
        for j in range(dst.shape[0]):
            dst[j] = src[j]
        dst_b[i][:] = bs[i]


@njit(cache=True, fastmath=_FAST)
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


@njit(cache=True, fastmath=_FAST)
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


@njit(cache=True, fastmath=_FAST)
def sgd_steps(wts, bs, zs, ds, ids, ks, xs, ys, ts, weights, masks, use_mask, lr):
    """Plain single-example SGD through ``xs`` in order (used by tests and the speed floor)."""
    losses = np.zeros(xs.shape[0])
    for i in range(xs.shape[0]):
        losses[i] = _step(wts, bs, zs, ds, ids, ks, xs[i], ys[i], masks[ts[i] if use_mask else 0], use_mask, weights[i], lr)
    return losses


class TransposedMLP:
    """The weights of a ReLU MLP as contiguous ``W^T`` float32 arrays plus scratch space,
    loaded from and stored back into the torch layers (once per minibatch).
    ``scratch`` is what the kernels take after the weights: (zs, ds, ids, ks)."""

    def __init__(self, layers, n_tasks: int):
        self.layers = layers
        self.wts = tuple(np.ascontiguousarray(lay.weight.detach().numpy().T) for lay in layers)
        self.bs = tuple(lay.bias.detach().numpy().copy() for lay in layers)
        self.snap_a = (tuple(np.empty_like(w) for w in self.wts), tuple(np.empty_like(b) for b in self.bs))
        self.snap_b = (tuple(np.empty_like(w) for w in self.wts), tuple(np.empty_like(b) for b in self.bs))
        self.zs = tuple(np.empty(len(b), dtype=np.float32) for b in self.bs)
        self.ds = tuple(np.empty(len(b), dtype=np.float32) for b in self.bs)
        self.ids = tuple(np.empty(len(w), dtype=np.int64) for w in self.wts)
        self.ks = np.zeros(len(self.wts), dtype=np.int64)
        self.no_mask = np.zeros((max(n_tasks, 1), len(self.bs[-1])), dtype=np.float32)

    @property
    def scratch(self):
        return self.zs, self.ds, self.ids, self.ks

    @staticmethod
    def usable(layers) -> bool:
        import torch

        return all(lay.bias is not None for lay in layers) and all(
            p.device.type == "cpu" and p.dtype == torch.float32 for lay in layers for p in lay.parameters())

    def load(self) -> None:
        """Take the current values of the torch parameters (they may have been changed outside)."""
        for lay, wt, b in zip(self.layers, self.wts, self.bs):
            wt[...] = lay.weight.detach().numpy().T
            b[...] = lay.bias.detach().numpy()

    def store(self) -> None:
        """Write the arrays back into the torch parameters."""
        for lay, wt, b in zip(self.layers, self.wts, self.bs):
            lay.weight.detach().numpy()[...] = wt.T
            lay.bias.detach().numpy()[...] = b


def warm_up() -> None:
    """Compile (or load from numba's cache) every kernel on a tiny network, so that timings
    that follow measure steady-state steps. Training does not need it: the first call
    compiles."""
    wts = (np.zeros((3, 2), np.float32), np.zeros((2, 2), np.float32))
    bs = (np.zeros(2, np.float32), np.zeros(2, np.float32))
    snaps = tuple(tuple(a.copy() for a in group) for group in (wts, bs, wts, bs))
    scratch = (tuple(np.zeros(2, np.float32) for _ in bs), tuple(np.zeros(2, np.float32) for _ in bs),
               tuple(np.zeros(len(w), np.int64) for w in wts), np.zeros(2, np.int64))
    xs, ys, ts = np.ones((1, 3), np.float32), np.zeros(1, np.int64), np.zeros(1, np.int64)
    masks = np.zeros((1, 2), np.float32)
    plan, weights = np.full((1, 1, 1), INCOMING, np.int64), np.ones((1, 1, 1), np.float32)
    mer_minibatch(wts, bs, *snaps, *scratch, xs, ys, ts, plan, weights, np.full(1, -1, np.int64),
                  xs.copy(), ys.copy(), ts.copy(), masks, False, 0.1, 0.5, 0.5)
    sgd_steps(wts, bs, *scratch, xs, ys, ts, np.ones(1, np.float32), masks, False, 0.1)
