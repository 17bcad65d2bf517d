"""The compiled CPU backend of La-MAML / C-MAML (Gupta et al. 2020) for ReLU MLPs: one numba
call runs a first-order glance. :class:`CompiledLaMAML` is what
:class:`strategies.lamaml.LookAheadMAML` calls; the reference path is
:func:`strategies.lamaml.look_ahead_meta_loss` (torch.func, autograd), and a test checks that
both give the same meta-loss and meta-gradients.

It computes the first-order meta-gradients of Alg. 1 and Eq. 5-8, with every single-example
step written out with the shared kernels of :mod:`strategies.mlp_numba`:

- inner loop, one incoming example at a time: ``g_i = grad L(x_i; theta_i)``,
  ``theta_{i+1} = theta_i - r * g_i``, ``S_{i+1} = S_i + g_i``;
- after every inner step (or only the last, ``final_only``), over the meta-batch B:
  ``G_theta += grad L(B; theta_{i+1})`` and ``G_r -= grad L(B; theta_{i+1}) * S_{i+1}``;
- both divided by the number of meta-losses taken.

With ``clamp`` (La-MAML's CIFAR code, VR-MCL: :mod:`strategies.vrmcl_numba`) every inner
gradient entry is clamped to [-clamp, clamp] before its step, and S sums the clamped gradients.
The rates are whatever the caller passes: relu(alpha) for La-MAML's MNIST code (the caller takes
the relu), alpha itself for VR-MCL.

The inner steps are single-example steps over the rows of nonzero inputs only (exact: the
other rows' gradients are zero). ``L(B; .)`` is the mean over B; its pass runs over the whole
meta-batch at once with matrix products above the first layer (:func:`_meta_pass`), while the
first layer's pre-activations are moved incrementally after each inner step and its weight
gradients are kept in factored form (:func:`_first_layer`). Weights, rates and gradients are
held transposed (``W^T``, row-major ``(in, out)``).
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit

from strategies.mlp_numba import FAST, forward, forward_all, hidden_delta, linear_relu_layers, nonzero, output_delta


@njit(cache=True, fastmath=FAST)
def _inner_step(wts, bs, rws, rbs, s_w, s_b, zs, ds, ids, ks, x, y, mask_row, use_mask, with_sums, clamp):
    """theta <- theta - r * grad L(x; theta) in place; S += grad (when ``with_sums``). With
    ``clamp`` > 0 each gradient entry is clamped to [-clamp, clamp] first (La-MAML's CIFAR code,
    VR-MCL): the step and S take the clamped gradient."""
    last = len(wts) - 1
    forward_all(wts, bs, zs, ids, ks, x)
    loss = output_delta(zs[last], ds[last], y, mask_row, use_mask, np.float32(1.0))
    for layer in range(last, -1, -1):
        wt, rw, d = wts[layer], rws[layer], ds[layer]
        inp = x if layer == 0 else zs[layer - 1]
        if layer > 0:  # from the weights before this layer's update
            hidden_delta(wt, inp, ids[layer], ks[layer], d, ds[layer - 1])
        g = d.copy()
        for q in range(ks[layer]):
            j = ids[layer][q]
            a = inp[j]
            if clamp > 0.0:
                _clamped_row_step(wt[j], rw[j], s_w[layer][j], a, g, clamp, with_sums and layer > 0)
                continue
            for o in range(g.shape[0]):
                wt[j, o] -= rw[j, o] * (a * g[o])
            if with_sums and layer > 0:  # the first layer's sums are kept in factored form
                sw = s_w[layer]
                for o in range(g.shape[0]):
                    sw[j, o] += a * g[o]
        if clamp > 0.0:  # the bias gradient is d itself; the rows above took d unclamped
            for o in range(g.shape[0]):
                g[o] = min(max(g[o], -clamp), clamp)
        b, rb = bs[layer], rbs[layer]
        for o in range(g.shape[0]):
            b[o] -= rb[o] * g[o]
        if with_sums:
            sb = s_b[layer]
            for o in range(g.shape[0]):
                sb[o] += g[o]
    return loss


@njit(cache=True, fastmath=FAST)
def _clamped_row_step(wt_row, rw_row, sw_row, a, g, clamp, with_sum):
    """One row of a weight's inner step with the clamped gradient ``c_o = clamp(a * g_o)``:
    ``wt_row -= rw_row * c``; ``sw_row += c`` (the row's sum S) when ``with_sum``."""
    for o in range(g.shape[0]):
        c = min(max(a * g[o], -clamp), clamp)
        wt_row[o] -= rw_row[o] * c
        if with_sum:
            sw_row[o] += c


@njit(cache=True, fastmath=FAST)
def _meta_pass(wts, bs, s_w, s_b, gw, gb, grw, grb, pre, acts, dels, bys, bts, masks, use_mask, with_rates):
    """The meta-batch at the current fast weights, all its examples at once (matrix products):
    forward from the first layer's pre-activations ``pre`` (m, h1), the deltas scaled by 1/m
    (L(B) is the mean over B), then for every layer above the first ``G_W += A^T D`` and
    ``G_r -= (A^T D) * S``, and for every layer ``G_b += sum_b D``, ``G_rb -= (sum_b D) * S_b``.
    The first layer's scaled deltas are left in ``dels[0]`` for :func:`_first_layer`. Returns
    the meta-batch's mean loss."""
    last = len(wts) - 1
    m = pre.shape[0]
    a0 = acts[0]
    for b in range(m):
        for o in range(a0.shape[1]):
            a0[b, o] = max(pre[b, o], np.float32(0.0)) if last > 0 else pre[b, o]
    for layer in range(1, last + 1):
        z = acts[layer]
        z[:, :] = np.dot(acts[layer - 1], wts[layer])
        bias = bs[layer]
        for b in range(m):
            for o in range(z.shape[1]):
                v = z[b, o] + bias[o]
                z[b, o] = max(v, np.float32(0.0)) if layer < last else v
    total = 0.0
    scale = np.float32(1.0 / m)
    for b in range(m):
        total += output_delta(acts[last][b], dels[last][b], bys[b], masks[bts[b] if use_mask else 0], use_mask,
                              scale)
    for layer in range(last, -1, -1):
        d = dels[layer]
        if layer > 0:
            below = acts[layer - 1]
            grad = np.dot(below.T, d)  # (in, out): sum_b a_b d_b^T
            acc, accr, sw = gw[layer], grw[layer], s_w[layer]
            for j in range(grad.shape[0]):
                for o in range(grad.shape[1]):
                    acc[j, o] += grad[j, o]
            if with_rates:
                for j in range(grad.shape[0]):
                    for o in range(grad.shape[1]):
                        accr[j, o] -= grad[j, o] * sw[j, o]
            back = np.dot(d, wts[layer].T)  # (m, in): W^T d, then the ReLU's mask
            d_prev = dels[layer - 1]
            for b in range(m):
                for j in range(back.shape[1]):
                    d_prev[b, j] = back[b, j] if below[b, j] > 0.0 else np.float32(0.0)
        accb, accrb, sb = gb[layer], grb[layer], s_b[layer]
        for o in range(d.shape[1]):
            col = np.float32(0.0)
            for b in range(m):
                col += d[b, o]
            accb[o] += col
            if with_rates:
                accrb[o] -= col * sb[o]
    return total


@njit(cache=True, fastmath=FAST)
def glance(wts, bs, rws, rbs, s_w, s_b, gw, gb, grw, grb, zs, ds, ids, ks, xs, ys, ts, bxs, bys, bts, masks,
           use_mask, with_rates, final_only, clamp):
    """One first-order glance; the gradients land in gw/gb (theta) and grw/grb (rates);
    ``wts``/``bs`` end as the fast weights. ``clamp`` > 0: every inner gradient entry clamped
    to [-clamp, clamp] (float32; 0: none). Returns the meta-loss."""
    n, m = xs.shape[0], bxs.shape[0]
    width = ds[0].shape[0]
    meta_deltas = np.zeros((1 if final_only else n, m, width), np.float32)  # scaled first-layer deltas
    inner_deltas = np.zeros((n, width), np.float32)
    # first-layer pre-activations of the meta examples, updated after each inner step from the
    # rows it changed: W x_b moves by -sum_j x_b[j] x_i[j] r[j] * d_i, b by -r_b * d_i (exact)
    pre = np.empty((m, width), np.float32)
    acts = [np.empty((m, bs[layer].shape[0]), np.float32) for layer in range(len(bs))]  # each layer's output
    dels = [np.empty((m, bs[layer].shape[0]), np.float32) for layer in range(len(bs))]  # and its deltas
    incremental = not final_only
    moved = np.empty((xs.shape[1] if clamp > 0.0 else 0, width), np.float32)  # clamped first-layer step rows
    if incremental:
        for b in range(m):
            k = nonzero(bxs[b], ids[0])
            forward(wts[0], bs[0], bxs[b], ids[0], k, pre[b], False)
    total, taken = 0.0, 0
    for i in range(n):
        _inner_step(wts, bs, rws, rbs, s_w, s_b, zs, ds, ids, ks, xs[i], ys[i],
                    masks[ts[i] if use_mask else 0], use_mask, with_rates, clamp)
        inner_deltas[i] = ds[0]
        if incremental:  # ids[0][:ks[0]] still lists the nonzero inputs of x_i
            _move_pre_activations(pre, bxs, xs[i], ids[0], ks[0], rws[0], rbs[0], ds[0], clamp, moved)
        if final_only and i < n - 1:
            continue
        if not incremental:  # the first layer's pre-activations at the final fast weights
            pre[:, :] = np.dot(bxs, wts[0])
            for b in range(m):
                for o in range(width):
                    pre[b, o] += bs[0][o]
        total += _meta_pass(wts, bs, s_w, s_b, gw, gb, grw, grb, pre, acts, dels, bys, bts, masks, use_mask,
                            with_rates)
        meta_deltas[taken] = dels[0]
        taken += 1
    _first_layer(gw[0], grw[0], xs, bxs, ids[0], meta_deltas, inner_deltas, with_rates, final_only, clamp)
    inv = np.float32(1.0 / taken)
    for layer in range(len(gw)):
        _scale(gw[layer].ravel(), inv)
        _scale(gb[layer], inv)
        if with_rates:
            _scale(grw[layer].ravel(), inv)
            _scale(grb[layer], inv)
    return total / taken


@njit(cache=True, fastmath=FAST)
def _move_pre_activations(pre, bxs, x, idx, k, rw, rb, d, clamp, moved):
    """pre[b] += the change of W x_b + b made by the inner step on ``x`` (delta ``d``, rates rw/rb).
    Unclamped the step is rank one, ``-(r * x d^T)``, so its effect on W x_b is
    ``-(sum_j x_b[j] x[j] r[j]) * d``; clamped (``clamp`` > 0) it is not: its rows
    ``r[j] * clamp(x[j] d)`` are written to ``moved`` first and applied from there."""
    width = d.shape[0]
    if clamp > 0.0:
        _move_clamped(pre, bxs, x, idx, k, rw, rb, d, clamp, moved)
        return
    acc = np.empty(width, np.float32)  # sum_j x_b[j] x[j] r[j], in a fresh local buffer (it vectorises)
    for b in range(bxs.shape[0]):
        xb, p = bxs[b], pre[b]
        acc[:] = np.float32(0.0)
        for q in range(k):
            j = idx[q]
            v = xb[j]
            if v != 0.0:
                c = v * x[j]
                for o in range(width):
                    acc[o] += c * rw[j, o]
        for o in range(width):
            p[o] -= (acc[o] + rb[o]) * d[o]


@njit(cache=True, fastmath=FAST)
def _move_clamped(pre, bxs, x, idx, k, rw, rb, d, clamp, moved):
    """:func:`_move_pre_activations` of a clamped inner step: ``moved[q] = r[j] * clamp(x[j] d)``
    for the ``k`` nonzero inputs j = idx[q] of ``x``, then ``pre[b] -= sum_q x_b[j] moved[q] +
    rb * clamp(d)``."""
    width = d.shape[0]
    for q in range(k):
        j = idx[q]
        v = x[j]
        for o in range(width):
            moved[q, o] = rw[j, o] * min(max(v * d[o], -clamp), clamp)
    acc = np.empty(width, np.float32)
    for b in range(bxs.shape[0]):
        xb, p = bxs[b], pre[b]
        acc[:] = np.float32(0.0)
        for q in range(k):
            v = xb[idx[q]]
            if v != 0.0:
                for o in range(width):
                    acc[o] += v * moved[q, o]
        for o in range(width):
            p[o] -= acc[o] + rb[o] * min(max(d[o], -clamp), clamp)


@njit(cache=True, fastmath=FAST)
def _first_layer(gw, grw, xs, bxs, idx, meta_deltas, inner_deltas, with_rates, final_only, clamp):
    """The first layer's weight gradients from its deltas, in factored form (the inputs are
    the same at every step). With D_i[b] the scaled delta of meta example b after inner step i,
    d_k the delta of inner step k and S_{i+1} = sum_{k<=i} d_k x_k^T:

    ``G_W += sum_b (sum_i D_i[b]) x_b^T`` and
    ``G_r -= sum_i (sum_b D_i[b] x_b^T) * S_{i+1} = sum_k (x_k d_k^T) * Q_k`` with
    ``Q_k = sum_b x_b E_k[b]^T`` and ``E_k[b] = sum_{i>=k} D_i[b]`` (in W^T layout: row j gets
    ``x_k[j] d_k * Q_k[j]``, and only the rows of x_k's nonzero inputs are touched, so ``Q_k`` is
    needed there only: one matrix product of those rows of the x_b with E_k).
    Final-only: one D, taken after the last inner step, so ``E_k[b] = D[b]``. Clamped inner
    steps (``clamp`` > 0) summed ``clamp(x_k d_k^T)`` into S: row j gets
    ``clamp(x_k[j] d_k) * Q_k[j]``, on the same rows (the clamp keeps zeros zero)."""
    n, m, width = inner_deltas.shape[0], bxs.shape[0], inner_deltas.shape[1]
    summed = np.zeros(width, np.float32)
    for b in range(m):
        xb = bxs[b]
        summed[:] = np.float32(0.0)
        for i in range(meta_deltas.shape[0]):
            for o in range(width):
                summed[o] += meta_deltas[i, b, o]
        k_b = nonzero(xb, idx)
        for q in range(k_b):
            j = idx[q]
            v = xb[j]
            for o in range(width):
                gw[j, o] += v * summed[o]
    if not with_rates:
        return
    # G_r -= sum_k (x_k * Q_k) (d_k) with Q_k[j] = sum_b x_b[j] E_k[b], for the rows j of the
    # nonzero inputs of x_k only: Q_k on those rows is one matrix product (their x_b, gathered)
    suffix = np.zeros((m, width), np.float32)  # E_k[b] = sum_{i>=k} D_i[b]
    gathered = np.empty((bxs.shape[1], m), np.float32)
    dk = np.empty(width, np.float32)
    for k in range(n - 1, -1, -1):
        if final_only:
            if k == n - 1:
                suffix[:, :] = meta_deltas[0]
        else:
            for b in range(m):
                for o in range(width):
                    suffix[b, o] += meta_deltas[k, b, o]
        xk = xs[k]
        for o in range(width):
            dk[o] = inner_deltas[k, o]
        k_k = nonzero(xk, idx)
        for q in range(k_k):
            for b in range(m):
                gathered[q, b] = bxs[b, idx[q]]
        rows = np.dot(gathered[:k_k], suffix)  # (k_k, width): Q_k on the rows of x_k's nonzero inputs
        for q in range(k_k):
            j = idx[q]
            c = xk[j]
            if clamp > 0.0:
                for o in range(width):
                    grw[j, o] -= min(max(c * dk[o], -clamp), clamp) * rows[q, o]
                continue
            for o in range(width):
                grw[j, o] -= c * dk[o] * rows[q, o]


@njit(cache=True, fastmath=FAST)
def _scale(a, factor):
    for i in range(a.shape[0]):
        a[i] *= factor


@njit(cache=True, fastmath=FAST)
def clip_factor(gw, gb, mask_w, mask_b, use_mask, max_norm):
    """``clip_grad_norm_``'s factor for the joint L2 norm of all gradients (times the masks
    relu'(alpha) when ``use_mask``): min(1, max_norm / (norm + 1e-6))."""
    total = 0.0
    for layer in range(len(gw)):
        g, mw = gw[layer].ravel(), mask_w[layer].ravel()
        for i in range(g.shape[0]):
            v = g[i] * (mw[i] > 0.0) if use_mask else g[i]
            total += v * v
        g, mb = gb[layer], mask_b[layer]
        for i in range(g.shape[0]):
            v = g[i] * (mb[i] > 0.0) if use_mask else g[i]
            total += v * v
    return min(1.0, max_norm / (np.sqrt(total) + 1e-6))


@njit(cache=True, fastmath=FAST)
def _apply(weights, biases, alphas_w, alphas_b, gw, gb, grw, grb, rws, rbs, learn_lr, sync_update, opt_lr,
           opt_wt, max_norm):
    """The meta-update after a glance (Gupta et al. 2020, Eq. 7-8, as the official code runs
    it), in place on the torch tensors' memory (``weights[l]`` and ``alphas_w[l]`` in torch's
    (out, in) layout; gradients and rates ``rws`` = relu(alpha) in the kernel's (in, out)):
    both meta-gradients clipped to ``max_norm``; ``alpha <- alpha - opt_lr * clip(g_r *
    relu'(alpha))`` first (``learn_lr``); then ``theta <- theta - opt_wt * clip(g)`` (synchronous)
    or ``theta <- theta - relu(alpha) * clip(g)`` with the updated alpha."""
    f_theta = clip_factor(gw, gb, gw, gb, False, max_norm)
    if learn_lr:
        f_rate = clip_factor(grw, grb, rws, rbs, True, max_norm)
        for layer in range(len(gw)):
            a, g, r = alphas_w[layer], grw[layer], rws[layer]
            for j in range(g.shape[0]):
                for o in range(g.shape[1]):
                    if r[j, o] > 0.0:
                        a[o, j] -= np.float32(opt_lr * f_rate) * g[j, o]
            ab, gbr, rb = alphas_b[layer], grb[layer], rbs[layer]
            for o in range(gbr.shape[0]):
                if rb[o] > 0.0:
                    ab[o] -= np.float32(opt_lr * f_rate) * gbr[o]
    for layer in range(len(gw)):
        w, g = weights[layer], gw[layer]
        b, g_b = biases[layer], gb[layer]
        if sync_update:
            step = np.float32(opt_wt * f_theta)
            for j in range(g.shape[0]):
                for o in range(g.shape[1]):
                    w[o, j] -= step * g[j, o]
            for o in range(g_b.shape[0]):
                b[o] -= step * g_b[o]
        else:
            a, ab = alphas_w[layer], alphas_b[layer]
            f = np.float32(f_theta)
            for j in range(g.shape[0]):
                for o in range(g.shape[1]):
                    w[o, j] -= max(a[o, j], np.float32(0.0)) * (f * g[j, o])
            for o in range(g_b.shape[0]):
                b[o] -= max(ab[o], np.float32(0.0)) * (f * g_b[o])


def kernels_apply(model: torch.nn.Module, params: list[torch.Tensor], input_shape: tuple[int, ...],
                  mask: torch.Tensor | None) -> bool:
    """Whether the glance kernels can run ``model`` whose trainable parameters are ``params``: a
    ReLU MLP with biases whose parameters are [W1, b1, W2, b2, ...], float32 on the CPU (and its
    task mask on the CPU)."""
    layers = linear_relu_layers(model, input_shape)
    if layers is None or any(lay.bias is None for lay in layers):
        return False
    if [id(p) for p in params] != [id(p) for lay in layers for p in (lay.weight, lay.bias)]:
        return False
    return all(p.device.type == "cpu" and p.dtype == torch.float32 for p in params) and (
        mask is None or mask.device.type == "cpu")


class GlanceKernel:
    """:func:`glance` on kernel-layout arrays (weights and rates transposed, ``(in, out)``) with
    scratch and gradient arrays of its own, zeroed and reused call to call. (Fresh arrays each
    glance cost more than the kernel's own work: large ``np.zeros`` come from ``mmap`` and fault
    their pages in anew, about 60 us per glance per array of 784x100.)"""

    def __init__(self, *, n_classes: int, mask: torch.Tensor | None):
        self.masks = (np.zeros((1, n_classes), np.float32) if mask is None
                      else np.ascontiguousarray(mask.detach().cpu().numpy(), dtype=np.float32))
        self.use_mask = mask is not None
        self._scratch: tuple | None = None  # kernel scratch and gradient arrays, reused glance to glance

    def run(self, wts, bs, rws, rbs, incoming, meta_batch, *, with_rates: bool, final_only: bool,
            clamp: float | None = None):
        """One glance (``wts``/``bs`` end as the fast weights); (meta-loss, gw, gb, grw, grb), the
        gradients in the kernel's layout. ``clamp``: the inner gradients clamped elementwise to
        [-clamp, clamp]. The gradient arrays are this kernel's, overwritten by the next call: a
        caller copies what it keeps."""
        shapes = tuple(w.shape for w in wts)
        if self._scratch is None or self._scratch[0] != shapes:
            zeros = lambda arrays: tuple(np.zeros_like(a) for a in arrays)  # noqa: E731
            self._scratch = (shapes, (*zeros(wts), *zeros(bs), *zeros(wts), *zeros(bs), *zeros(wts), *zeros(bs),
                                      *zeros(bs), *zeros(bs)))
        else:
            for a in self._scratch[1]:
                a.fill(0.0)
        n = len(wts)
        s_w, s_b, gw, gb, grw, grb, zs, ds = (self._scratch[1][k * n:(k + 1) * n] for k in range(8))
        ids = tuple(np.empty(w.shape[0], np.int64) for w in wts)
        ks = np.zeros(len(wts), np.int64)
        x, y, t = incoming
        bx, by, bt = meta_batch
        loss = glance(wts, bs, rws, rbs, s_w, s_b, gw, gb, grw, grb, zs, ds, ids, ks,
                      _rows(x), y.numpy(), t.numpy(), _rows(bx), by.numpy(), bt.numpy(), self.masks,
                      self.use_mask, with_rates, final_only, np.float32(0.0 if clamp is None else clamp))
        return loss, gw, gb, grw, grb


class CompiledLaMAML:
    """The glance of :func:`glance` on torch parameters ``[W1, b1, W2, b2, ...]`` of a ReLU
    MLP: transposes in, runs the kernel, transposes the gradients out (float32, CPU)."""

    def __init__(self, *, n_classes: int, mask: torch.Tensor | None):
        self._kernel = GlanceKernel(n_classes=n_classes, mask=mask)
        self._fixed_rates: tuple | None = None  # (rate, rws, rbs) of C-MAML's fixed rate

    name = "numba"

    @classmethod
    def for_model(cls, model: torch.nn.Module, params: list[torch.Tensor], input_shape: tuple[int, ...],
                  mask: torch.Tensor | None) -> CompiledLaMAML | None:
        """The backend for ``model`` whose trainable parameters are ``params``, or None where it
        does not apply (:func:`kernels_apply`)."""
        if not kernels_apply(model, params, input_shape, mask):
            return None
        return cls(n_classes=params[-1].shape[0], mask=mask)

    def glance(self, params, rates, incoming, meta_batch, *, with_rates: bool, final_only: bool,
               clamp: float | None = None):
        """(meta-loss, grad wrt params, grad wrt rates or None) of one first-order glance:
        ``params`` [W1, b1, ...], ``rates`` the matching step sizes (tensors, or one float
        repeated: C-MAML), ``incoming`` the (x, y, t) of the inner loop, ``meta_batch`` the
        (x, y, t) of the meta-loss; ``final_only``: one meta-loss after the last inner step;
        ``clamp``: the inner gradients clamped elementwise to [-clamp, clamp]."""
        wts = tuple(np.ascontiguousarray(w.detach().numpy().T) for w in params[0::2])
        bs = tuple(b.detach().numpy().copy() for b in params[1::2])
        if torch.is_tensor(rates[0]):
            rws = tuple(np.ascontiguousarray(r.detach().numpy().T) for r in rates[0::2])
            rbs = tuple(np.ascontiguousarray(r.detach().numpy()) for r in rates[1::2])
        else:  # one fixed rate (C-MAML)
            rws, rbs = self._fixed(wts, bs, rates[0])
        loss, gw, gb, grw, grb = self._kernel.run(wts, bs, rws, rbs, incoming, meta_batch, with_rates=with_rates,
                                                  final_only=final_only, clamp=clamp)
        g_theta = [torch.from_numpy(a.copy()) for pair in zip((g.T for g in gw), gb) for a in pair]
        g_rate = ([torch.from_numpy(a.copy()) for pair in zip((g.T for g in grw), grb) for a in pair]
                  if with_rates else None)
        return torch.tensor(loss, dtype=torch.float32), g_theta, g_rate

    def meta_step(self, params, alphas, *, alpha_init: float, incoming, meta_batch, learn_lr: bool,
                  sync_update: bool, opt_lr: float, opt_wt: float, max_norm: float, final_only: bool) -> float:
        """One glance and its meta-update, in place on ``params`` and ``alphas`` (torch CPU
        float32 tensors; their memory is written directly): the rates are relu(alpha), or the
        fixed ``alpha_init`` for C-MAML (``not learn_lr and sync_update``). Equals
        :meth:`glance` followed by :class:`strategies.lamaml.LookAheadMAML`'s torch update.
        Returns the meta-loss."""
        weights = tuple(p.detach().numpy() for p in params[0::2])
        biases = tuple(p.detach().numpy() for p in params[1::2])
        wts = tuple(np.ascontiguousarray(w.T) for w in weights)
        bs = tuple(b.copy() for b in biases)
        aws = tuple(a.detach().numpy() for a in alphas[0::2])
        abs_ = tuple(a.detach().numpy() for a in alphas[1::2])
        if learn_lr or not sync_update:
            rws = tuple(np.maximum(np.ascontiguousarray(a.T), np.float32(0.0)) for a in aws)
            rbs = tuple(np.maximum(a, np.float32(0.0)) for a in abs_)
        else:  # one fixed rate (C-MAML)
            rws, rbs = self._fixed(wts, bs, alpha_init)
        loss, gw, gb, grw, grb = self._kernel.run(wts, bs, rws, rbs, incoming, meta_batch, with_rates=learn_lr,
                                                  final_only=final_only)
        _apply(weights, biases, aws, abs_, gw, gb, grw, grb, rws, rbs, learn_lr, sync_update, opt_lr, opt_wt,
               max_norm)
        return float(loss)

    def _fixed(self, wts, bs, rate: float):
        """One fixed rate for every weight and bias (C-MAML), in the kernel's layout; made once
        per rate and shape (the kernel only reads the rates)."""
        key = (float(rate), tuple(w.shape for w in wts))
        if self._fixed_rates is None or self._fixed_rates[0] != key:
            self._fixed_rates = (key, tuple(np.full(w.shape, rate, np.float32) for w in wts),
                                 tuple(np.full(b.shape, rate, np.float32) for b in bs))
        return self._fixed_rates[1], self._fixed_rates[2]


def _rows(x: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.reshape(len(x), -1).numpy(), dtype=np.float32)


def warm_up(depths: tuple[int, ...] = (2, 3)) -> None:
    """Compile (or load from numba's cache) the glance and update kernels on tiny networks of
    each number of linear layers in ``depths`` (numba specialises a kernel per tuple length; the
    suite's MLP has 3), so that timings that follow measure steady-state work."""
    x, y, t = torch.ones(1, 3), torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.long)
    for depth in depths:
        params = [torch.zeros(2, 3), torch.zeros(2)] + [torch.zeros(2, 2), torch.zeros(2)] * (depth - 1)
        for rates in ([torch.zeros_like(p) for p in params], [0.1] * len(params)):
            for with_rates, clamp in ((True, None), (False, None), (True, 1.0)):
                CompiledLaMAML(n_classes=2, mask=None).glance(params, rates, (x, y, t), (x, y, t),
                                                              with_rates=with_rates, final_only=False, clamp=clamp)
        alphas = [torch.full_like(p, 0.1) for p in params]
        for learn_lr, sync_update in ((True, False), (False, True), (True, True)):
            CompiledLaMAML(n_classes=2, mask=None).meta_step(
                params, alphas, alpha_init=0.1, incoming=(x, y, t), meta_batch=(x, y, t), learn_lr=learn_lr,
                sync_update=sync_update, opt_lr=0.1, opt_wt=0.1, max_norm=2.0, final_only=False)
