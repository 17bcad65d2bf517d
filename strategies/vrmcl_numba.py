"""The compiled CPU backend of VR-MCL (Wu et al. 2024) for ReLU MLPs, first order, one example
per inner step: :class:`CompiledVRMCL` is what :class:`strategies.vrmcl.VarianceReducedMCL` calls;
the reference path is the strategy's own meta-update on
:func:`strategies.lamaml.look_ahead_meta_loss` (torch.func, autograd), and tests check that both
give the same weights, rates, momentum, lagged weights and memory after a stream.

One meta-update (steps 2-5 of :mod:`strategies.vrmcl`):

- two first-order glances of :class:`strategies.lamaml_numba.GlanceKernel` (La-MAML's kernel),
  from theta_t and from theta_{t-1}, over the same support and query, with the rates alpha
  itself (no relu) and every inner gradient entry clamped to [-clip, clip]: the meta-losses
  ``L_t`` and ``L~_t`` and their gradients wrt the weights (``g_t``, ``g~_t``) and wrt alpha;
- :func:`storm_update`, in place on the torch tensors' memory: the joint-norm clips of
  ``g_t``, ``g~_t``, the alpha gradient of each path and of their sum exactly as the reference
  takes them; ``theta_{t-1} <- theta_t``; ``alpha <- alpha - lr * g_alpha``; the STORM momentum
  of the paper's Eq. 9, ``v_t = g_t + s_momentum (v_{t-1} - g~_t)`` (``v_1 = g_1``); and
  ``theta_{t+1} = theta_t - s_lr v_t``.

The random draws (the support's shuffle, the query's memory examples, the reservoir) stay with
the strategy, made in the same order on both paths. Where the backend does not apply
(:meth:`CompiledVRMCL.for_model` returns None) the reference runs: second-order meta-gradients,
``inner_batch_size`` above 1 (a chunk's mean gradient is no longer one outer product per layer,
which the kernel's factored first layer relies on, and the clamp of a sum of them does not
factor), models other than a ReLU MLP with biases, anything but float32 on the CPU.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit

from strategies.lamaml_numba import GlanceKernel, clip_factor, kernels_apply
from strategies.mlp_numba import FAST


@njit(cache=True, fastmath=FAST)
def _norm_factor(gw, gb, max_norm):
    """``clip_grad_norm_``'s factor for the joint norm of ``gw``/``gb``, as float32."""
    return np.float32(clip_factor(gw, gb, gw, gb, False, max_norm))


@njit(cache=True, fastmath=FAST)
def _scale_and_add(dst_w, dst_b, factor, src_w, src_b):
    """dst <- factor * dst + src (the alpha gradient: clip(grad_alpha L_t) + grad_alpha L~_t)."""
    for layer in range(len(dst_w)):
        d, s = dst_w[layer], src_w[layer]
        for j in range(d.shape[0]):
            for o in range(d.shape[1]):
                d[j, o] = factor * d[j, o] + s[j, o]
        db, sb = dst_b[layer], src_b[layer]
        for o in range(db.shape[0]):
            db[o] = factor * db[o] + sb[o]


@njit(cache=True, fastmath=FAST)
def _descend(alphas_w, alphas_b, gw, gb, step):
    """alpha <- alpha - step * g (alpha in torch's (out, in) layout, g in the kernel's (in, out))."""
    for layer in range(len(gw)):
        a, g = alphas_w[layer], gw[layer]
        for j in range(g.shape[0]):
            for o in range(g.shape[1]):
                a[o, j] -= step * g[j, o]
        ab, g_b = alphas_b[layer], gb[layer]
        for o in range(g_b.shape[0]):
            ab[o] -= step * g_b[o]


@njit(cache=True, fastmath=FAST)
def _storm_step(weights, biases, mom_w, mom_b, gw, gb, f_g, gtw, gtb, f_gt, first, s_momentum, s_lr):
    """The paper's Eq. 9 with the clipped gradients ``f_g * g_t`` and ``f_gt * g~_t``:
    ``v_t = g_t + s_momentum (v_{t-1} - g~_t)`` (``v_1 = g_1`` when ``first``), then
    ``theta <- theta - s_lr v_t``; v and theta in torch's layout, g and g~ in the kernel's."""
    for layer in range(len(gw)):
        w, v, g, gt = weights[layer], mom_w[layer], gw[layer], gtw[layer]
        for j in range(g.shape[0]):
            for o in range(g.shape[1]):
                new = f_g * g[j, o] if first else f_g * g[j, o] + s_momentum * (v[o, j] - f_gt * gt[j, o])
                v[o, j] = new
                w[o, j] -= s_lr * new
        b, vb, g_b, gt_b = biases[layer], mom_b[layer], gb[layer], gtb[layer]
        for o in range(g_b.shape[0]):
            new = f_g * g_b[o] if first else f_g * g_b[o] + s_momentum * (vb[o] - f_gt * gt_b[o])
            vb[o] = new
            b[o] -= s_lr * new


@njit(cache=True, fastmath=FAST)
def storm_update(weights, biases, lagged_w, lagged_b, alphas_w, alphas_b, mom_w, mom_b, gw, gb, gaw, gab,
                 gtw, gtb, gatw, gatb, first, lr, s_momentum, s_lr, max_norm):
    """VR-MCL's meta-update after the two glances (steps 3-5 of :mod:`strategies.vrmcl`), in
    place: ``g``/``ga`` the gradients of L_t wrt theta_t and alpha, ``gt``/``gat`` those of L~_t
    wrt theta_{t-1} and alpha (kernel layout; ``ga`` is overwritten with g_alpha). The clips
    follow the reference: ``g_t = clip(g)``, ``g~_t = clip(gt)``,
    ``g_alpha = clip(clip(ga) + gat)``; then theta_{t-1} <- theta_t, alpha -= lr g_alpha, Eq. 9
    and theta -= s_lr v_t (:func:`_storm_step`)."""
    f_g = _norm_factor(gw, gb, max_norm)
    f_gt = _norm_factor(gtw, gtb, max_norm)
    _scale_and_add(gaw, gab, _norm_factor(gaw, gab, max_norm), gatw, gatb)
    f_alpha = _norm_factor(gaw, gab, max_norm)
    for layer in range(len(weights)):  # theta_{t-1} <- theta_t, before theta moves
        lagged_w[layer][:, :] = weights[layer]
        lagged_b[layer][:] = biases[layer]
    _descend(alphas_w, alphas_b, gaw, gab, np.float32(lr) * f_alpha)
    _storm_step(weights, biases, mom_w, mom_b, gw, gb, f_g, gtw, gtb, f_gt, first, np.float32(s_momentum),
                np.float32(s_lr))


def _views(tensors: list[torch.Tensor]) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
    """(weights, biases) of ``[W1, b1, W2, b2, ...]`` as numpy views of the tensors' memory."""
    arrays = [t.detach().numpy() for t in tensors]
    return tuple(arrays[0::2]), tuple(arrays[1::2])


def _kernel_layout(weights, biases) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
    """Copies of weights transposed to the kernel's (in, out) layout, and of the biases."""
    return tuple(np.ascontiguousarray(w.T) for w in weights), tuple(b.copy() for b in biases)


class CompiledVRMCL:
    """VR-MCL's first-order meta-update on torch parameters ``[W1, b1, W2, b2, ...]`` of a ReLU
    MLP (float32, CPU) with one example per inner step: two glances, then :func:`storm_update`."""

    name = "numba"

    def __init__(self, *, n_classes: int, mask: torch.Tensor | None):
        # one kernel per path: the theta_t path's gradients are kept while the theta_{t-1} path runs
        self._current = GlanceKernel(n_classes=n_classes, mask=mask)
        self._lagged = GlanceKernel(n_classes=n_classes, mask=mask)

    @classmethod
    def for_model(cls, model: torch.nn.Module, params: list[torch.Tensor], input_shape: tuple[int, ...],
                  mask: torch.Tensor | None, *, second_order: bool, inner_batch_size: int) -> CompiledVRMCL | None:
        """The backend for ``model`` whose trainable parameters are ``params``, or None where it
        does not apply: second order, ``inner_batch_size`` other than 1, or a model the glance
        kernels cannot run (:func:`strategies.lamaml_numba.kernels_apply`)."""
        if second_order or inner_batch_size != 1 or not kernels_apply(model, params, input_shape, mask):
            return None
        return cls(n_classes=params[-1].shape[0], mask=mask)

    def meta_step(self, params, lagged, alphas, momentum, *, support, query, lr: float, s_momentum: float,
                  s_lr: float, clip: float, first: bool) -> float:
        """One meta-update in place on the torch CPU float32 tensors ``params`` (theta_t),
        ``lagged`` (theta_{t-1}), ``alphas`` and ``momentum`` (v; its values are ignored when
        ``first``): both glances over ``support`` (x, y, t, one inner step per example) and
        ``query`` (x, y, t), with the inner clamp and every clip at ``clip``. Returns L_t."""
        weights, biases = _views(params)
        lagged_w, lagged_b = _views(lagged)
        alphas_w, alphas_b = _views(alphas)
        mom_w, mom_b = _views(momentum)
        rws, rbs = tuple(np.ascontiguousarray(a.T) for a in alphas_w), alphas_b  # alpha itself: no relu
        loss, gw, gb, gaw, gab = self._current.run(*_kernel_layout(weights, biases), rws, rbs, support, query,
                                                   with_rates=True, final_only=False, clamp=clip)
        _, gtw, gtb, gatw, gatb = self._lagged.run(*_kernel_layout(lagged_w, lagged_b), rws, rbs, support, query,
                                                   with_rates=True, final_only=False, clamp=clip)
        storm_update(weights, biases, lagged_w, lagged_b, alphas_w, alphas_b, mom_w, mom_b, gw, gb, gaw, gab,
                     gtw, gtb, gatw, gatb, first, lr, s_momentum, s_lr, clip)
        return float(loss)


def warm_up(depths: tuple[int, ...] = (2, 3)) -> None:
    """Compile (or load from numba's cache) the clamped glance and :func:`storm_update` on tiny
    networks of each number of linear layers in ``depths`` (numba specialises a kernel per tuple
    length; the suite's MLP has 3), so that timings that follow measure steady-state work."""
    x, y, t = torch.ones(1, 3), torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.long)
    for depth in depths:
        params = [torch.zeros(2, 3), torch.zeros(2)] + [torch.zeros(2, 2), torch.zeros(2)] * (depth - 1)
        lagged = [p.clone() for p in params]
        alphas = [torch.full_like(p, 0.1) for p in params]
        momentum = [torch.zeros_like(p) for p in params]
        for first in (True, False):
            CompiledVRMCL(n_classes=2, mask=None).meta_step(params, lagged, alphas, momentum, support=(x, y, t),
                                                            query=(x, y, t), lr=0.1, s_momentum=0.1, s_lr=0.1,
                                                            clip=1.0, first=first)
