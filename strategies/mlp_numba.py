"""Compiled (numba) building blocks of the CPU backends for ReLU MLPs, shared by MER
(:mod:`strategies.mer_numba`) and La-MAML (:mod:`strategies.lamaml_numba`): the network's
recognition and transposed weights, the sparse forward pass, the one softmax/cross-entropy
kernel and the one backpropagation kernel.

For ``Linear -> ReLU -> ... -> Linear`` and one example, with ``a_0 = x``,
``a_l = relu(W_l a_{l-1} + b_l)`` and ``p = softmax(logits + mask)``:
``d_L = w (p - onehot(y))`` (:func:`output_delta`), ``grad W_l = d_l a_{l-1}^T``,
``grad b_l = d_l`` and ``d_{l-1} = (W_l^T d_l) * [a_{l-1} > 0]`` (:func:`hidden_delta`).
Weights are held transposed (``W_l^T``, row-major ``(in, out)``), so the row of an input unit is
contiguous: the forward pass adds ``a_{l-1}[j] * W_l^T[j]`` for the units with
``a_{l-1}[j] != 0`` only, and an update touches only those rows. Rows of zero inputs have a zero
gradient, so skipping them is exact: on MNIST about 80% of the pixels and about half of the
hidden units are zero. Summation order differs from BLAS (float rounding only).
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit
from torch import nn

# reassociation lets the dot products use SIMD; NaN and inf keep their IEEE meaning (divergence checks)
FAST = {"reassoc", "contract"}


@njit(cache=True, fastmath=FAST)
def nonzero(inp, idx):
    """Write the positions of the nonzero entries of ``inp`` to ``idx`` (branch-free); their count."""
    k = 0
    for j in range(inp.shape[0]):
        idx[k] = j
        k += inp[j] != 0.0
    return k


@njit(cache=True, fastmath=FAST)
def forward(wt, b, inp, idx, k, out, relu):
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


@njit(cache=True, fastmath=FAST)
def forward_all(wts, bs, zs, ids, ks, x):
    """Every layer's output for input ``x`` into ``zs``; ``ids[l]``/``ks[l]`` list the nonzero
    inputs of layer l (used again by the backward pass)."""
    last = len(wts) - 1
    ks[0] = nonzero(x, ids[0])
    forward(wts[0], bs[0], x, ids[0], ks[0], zs[0], last > 0)
    for layer in range(1, last + 1):
        ks[layer] = nonzero(zs[layer - 1], ids[layer])
        forward(wts[layer], bs[layer], zs[layer - 1], ids[layer], ks[layer], zs[layer], layer < last)


@njit(cache=True, fastmath=FAST)
def output_delta(logits, d, y, mask_row, use_mask, weight):
    """d <- weight * (softmax(logits + mask) - onehot(y)); returns weight * cross-entropy."""
    n = logits.shape[0]
    top = -np.inf
    for o in range(n):
        top = max(top, logits[o] + (mask_row[o] if use_mask else np.float32(0.0)))
    total = 0.0
    for o in range(n):
        e = np.exp(logits[o] + (mask_row[o] if use_mask else np.float32(0.0)) - top)
        d[o] = e
        total += e
    for o in range(n):
        d[o] = d[o] / total * weight
    d[y] -= weight
    return (top + np.log(total) - logits[y] - (mask_row[y] if use_mask else np.float32(0.0))) * weight


@njit(cache=True, fastmath=FAST)
def hidden_delta(wt, inp, idx, k, d, d_prev):
    """d_prev <- (W^T d) * [inp > 0], from the rows of the nonzero (positive) inputs."""
    d_prev[:] = np.float32(0.0)
    for q in range(k):
        j = idx[q]
        s = np.float32(0.0)
        for o in range(d.shape[0]):
            s += wt[j, o] * d[o]
        d_prev[j] = s


def linear_relu_layers(model: nn.Module, input_shape: tuple[int, ...]) -> list[nn.Linear] | None:
    """The Linear layers of ``model`` when it computes ``Linear(ReLU(... Linear(flatten(x))))``
    exactly, else None."""
    leaves = [m for m in model.modules() if not list(m.children())]
    kinds = [type(m) for m in leaves]
    if kinds and kinds[0] is nn.Flatten:
        leaves, kinds = leaves[1:], kinds[1:]
    if not kinds or len(kinds) % 2 == 0:
        return None
    if any(k is not (nn.Linear if i % 2 == 0 else nn.ReLU) for i, k in enumerate(kinds)):
        return None
    layers = [m for m in leaves if isinstance(m, nn.Linear)]
    if any(p.requires_grad is False for p in model.parameters()) or sum(1 for _ in model.parameters()) != sum(
            1 + (lay.bias is not None) for lay in layers):
        return None
    try:
        probe = torch.rand((2, *input_shape), generator=torch.Generator().manual_seed(0)).to(
            layers[0].weight.device, layers[0].weight.dtype)
        with torch.no_grad():
            expected = model(probe)
            h = probe.reshape(2, -1)
            for i, lay in enumerate(layers):
                h = nn.functional.linear(h, lay.weight, lay.bias)
                if i < len(layers) - 1:
                    h = h.clamp(min=0)
        if expected.shape != h.shape or not torch.allclose(expected, h, atol=1e-5):
            return None
    except Exception:
        return None
    return layers


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
