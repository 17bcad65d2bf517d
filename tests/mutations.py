"""Mutation check: deliberate bugs in the meta strategies and the harness's measurements must make
the tests fail.

    .venv/bin/python tests/mutations.py                 # every mutation
    .venv/bin/python tests/mutations.py --only NAME ... # some (names or shell patterns)
    .venv/bin/python tests/mutations.py --list          # names, files and test selections
    .venv/bin/python tests/mutations.py --check         # only that every target is found once

For each mutation: the git-tracked files of the working tree (``git ls-files``; commit new test
files first) are copied into a temporary folder, one exact string of one source file is
replaced there (the script stops with an error when the string is not found exactly once, so
it notices when the code moves on), and the mutation's pytest selection runs in the copy with
this interpreter (``python -m pytest -q -x -p no:cacheprovider <tests>``, PYTHONPATH = the
copy). clbench is installed in editable mode pointing at the repository; its finder comes
after PYTHONPATH on the import path, and a guard plugin checks at the start of each run that
``strategies``, ``scenarios`` and ``benchmark`` are imported from the copy (it stops the run
otherwise). Numba's on-disk caches of unchanged kernel files are copied along (with their
source stamps) so that only a mutated kernel is compiled again; the caches of kernels that
import a mutated kernel file are left behind, since numba does not notice changed callees.

Prints a table (mutation, file, caught, first failing test) and exits with status 1 when a
mutation survives or a run goes wrong, 2 when a target string is missing.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable

EXACT = "tests/strategies/test_exact_updates.py"
MER = [f"{EXACT}::test_mer_updates_equal_the_papers_equations", "tests/strategies/test_mer.py"]
LAMAML = [f"{EXACT}::test_lamaml_family_updates_equal_the_papers_equations", "tests/strategies/test_lamaml.py"]
ER = ["tests/strategies/test_er.py"]
VRMCL = [f"{EXACT}::test_vrmcl_updates_equal_the_papers_equations"]
VRMCL_COMPILED = [VRMCL[0], "tests/strategies/test_vrmcl.py"]  # the equations, then compiled = reference
LAMAML_CIFAR = [f"{EXACT}::test_lamaml_cifar_form_equals_the_official_cifar_code"]
REPTILE = [f"{EXACT}::test_reptile_updates_equal_the_papers_equations"]
MASK = ["tests/strategies/test_task_mask.py"]
MEMORY = [f"{EXACT}::test_reservoir_memory_is_algorithm_r", "tests/strategies/test_memory.py", MER[0], LAMAML[0]]
STREAM = ["tests/benchmark/test_stream_metrics.py"]  # continual evaluation and compute (issue 15)
CONTINUAL = ["tests/benchmark/test_continual_eval.py"]
COMPUTE = ["tests/benchmark/test_compute.py"]
# kernel files, and the kernel files whose numba caches go stale when they change (their callers)
KERNEL_DEPENDENTS = {"strategies/mlp_numba.py": ("mlp_numba", "mer_numba", "lamaml_numba", "vrmcl_numba"),
                     "strategies/mer_numba.py": ("mer_numba",),
                     "strategies/lamaml_numba.py": ("lamaml_numba", "vrmcl_numba"),
                     "strategies/vrmcl_numba.py": ("vrmcl_numba",)}


@dataclass(frozen=True)
class Mutation:
    name: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]
    what: str


def m(name, file, old, new, tests, what):
    return Mutation(name, file, old, new, tuple(tests), what)


MUTATIONS = [
    # -- La-MAML family, strategies/lamaml.py (both paths) --------------------------------------
    m("lamaml-alpha-update-sign", "strategies/lamaml.py",
      "torch._foreach_add_(self.alphas, g_alpha, alpha=-self.opt_lr)",
      "torch._foreach_add_(self.alphas, g_alpha, alpha=self.opt_lr)", LAMAML,
      "learned rates climb the meta-gradient (alpha += opt_lr g)"),
    m("lamaml-async-without-relu", "strategies/lamaml.py",
      "[g * torch.relu(a) for g, a in zip(g_theta, self.alphas)]",
      "[g * a for g, a in zip(g_theta, self.alphas)]", LAMAML,
      "asynchronous weight update with alpha instead of relu(alpha)"),
    m("lamaml-no-clipping", "strategies/functional.py",
      "factor = torch.clamp(max_norm / (norm + 1e-6), max=1.0)",
      "factor = torch.ones(())", LAMAML,
      "meta-gradients not clipped"),
    m("lamaml-clip-not-capped", "strategies/functional.py",
      "factor = torch.clamp(max_norm / (norm + 1e-6), max=1.0)",
      "factor = max_norm / (norm + 1e-6)", LAMAML,
      "meta-gradients always scaled to the clipping norm (factor not capped at 1)"),
    m("lamaml-weight-clip-removed", "strategies/lamaml.py",
      "        clip_joint_norm_(g_theta, self.grad_clip_norm)\n",
      "", LAMAML,
      "weight meta-gradient not clipped (alpha's still is)"),
    m("lamaml-alpha-clip-removed", "strategies/lamaml.py",
      "                clip_joint_norm_(g_alpha, self.grad_clip_norm)\n",
      "", LAMAML,
      "alpha meta-gradient not clipped (the weights' still is)"),
    m("lamaml-meta-batch-without-memory", "strategies/lamaml.py",
      "bx, by, bt = self.memory.joined(x, y, t, self.replay_batch, memory_first=True)",
      "self.memory.joined(x, y, t, self.replay_batch, memory_first=True)\n        bx, by, bt = x, y, t", LAMAML,
      "meta-loss on the incoming minibatch only (memory drawn but not used)"),
    m("lamaml-alpha-after-weights", "strategies/lamaml.py",
      """            if self.learn_lr:
                clip_joint_norm_(g_alpha, self.grad_clip_norm)
                torch._foreach_add_(self.alphas, g_alpha, alpha=-self.opt_lr)
            if self.sync_update:
                torch._foreach_add_(self._params, g_theta, alpha=-self.opt_wt)
            else:
                torch._foreach_add_(self._params, [g * torch.relu(a) for g, a in zip(g_theta, self.alphas)],
                                    alpha=-1.0)
""", """            if self.sync_update:
                torch._foreach_add_(self._params, g_theta, alpha=-self.opt_wt)
            else:
                torch._foreach_add_(self._params, [g * torch.relu(a) for g, a in zip(g_theta, self.alphas)],
                                    alpha=-1.0)
            if self.learn_lr:
                clip_joint_norm_(g_alpha, self.grad_clip_norm)
                torch._foreach_add_(self.alphas, g_alpha, alpha=-self.opt_lr)
""", LAMAML, "alpha updated after the weights (the weights use the old rates)"),
    m("lamaml-memory-before-steps", "strategies/lamaml.py",
      "    def _glance(self, x, y, t, *, remember: bool) -> torch.Tensor:\n",
      "    def _glance(self, x, y, t, *, remember: bool) -> torch.Tensor:\n"
      "        if remember:\n            self.memory.add(x, y, t)\n            remember = False\n", LAMAML,
      "the minibatch enters the memory before the glance's meta-batch is drawn"),
    m("lamaml-push-every-glance", "strategies/lamaml.py",
      "remember=first_epoch and glance == 0",
      "remember=first_epoch", LAMAML,
      "the minibatch is offered to the memory on every glance"),
    m("lamaml-no-shuffle", "strategies/lamaml.py",
      "            x, y, t = x[order], y[order], t[order]\n",
      "", LAMAML,
      "glances do not shuffle the minibatch (the generator still draws)"),
    m("cmaml-learns-its-rate", "strategies/meta_strategies.py",
      "opt_lr=0.0, opt_wt=opt_wt, learn_lr=False,",
      "opt_lr=opt_wt, opt_wt=opt_wt, learn_lr=True,", LAMAML,
      "C-MAML's inner rate is learned instead of fixed at alpha_init"),
    m("cmaml-asynchronous", "strategies/meta_strategies.py",
      "learn_lr=False,\n                       sync_update=True,",
      "learn_lr=False,\n                       sync_update=False,", LAMAML,
      "C-MAML updates the weights with its inner rate instead of opt_wt"),
    # -- La-MAML compiled backend, strategies/lamaml_numba.py -----------------------------------
    m("kernel-lamaml-hidden-rate-gradient-sign", "strategies/lamaml_numba.py",
      "accr[j, o] -= grad[j, o] * sw[j, o]",
      "accr[j, o] += grad[j, o] * sw[j, o]", LAMAML,
      "compiled glance: rate gradient of the hidden layers' weights with the wrong sign"),
    m("kernel-lamaml-first-layer-rate-gradient-sign", "strategies/lamaml_numba.py",
      "grw[j, o] -= c * dk[o] * rows[q, o]",
      "grw[j, o] += c * dk[o] * rows[q, o]", LAMAML,
      "compiled glance: rate gradient of the first layer's weights with the wrong sign"),
    m("kernel-lamaml-bias-rate-gradient-sign", "strategies/lamaml_numba.py",
      "accrb[o] -= col * sb[o]",
      "accrb[o] += col * sb[o]", LAMAML,
      "compiled glance: rate gradient of the biases with the wrong sign"),
    m("kernel-lamaml-sum-not-mean", "strategies/lamaml_numba.py",
      "inv = np.float32(1.0 / taken)",
      "inv = np.float32(1.0)", LAMAML,
      "compiled glance: meta-gradients summed over the inner steps instead of averaged"),
    m("kernel-lamaml-inner-step-without-rate", "strategies/lamaml_numba.py",
      "wt[j, o] -= rw[j, o] * (a * g[o])",
      "wt[j, o] -= a * g[o]", LAMAML,
      "compiled glance: inner steps on the weights ignore the rates (rate 1)"),
    m("kernel-lamaml-meta-batch-first-dropped", "strategies/lamaml_numba.py",
      "    for b in range(m):\n        total += output_delta(",
      "    for b in range(1, m):\n        total += output_delta(", LAMAML,
      "compiled glance: the first example of the meta-batch (a memory draw) left out of the meta-loss"),
    m("kernel-lamaml-first-layer-suffix-not-cumulative", "strategies/lamaml_numba.py",
      "                    suffix[b, o] += meta_deltas[k, b, o]",
      "                    suffix[b, o] = meta_deltas[k, b, o]", LAMAML,
      "compiled glance: first-layer rate gradient from D_k alone instead of the suffix sum E_k"),
    m("kernel-lamaml-update-clip-ignored", "strategies/lamaml_numba.py",
      "    f_theta = clip_factor(gw, gb, gw, gb, False, max_norm)",
      "    f_theta = 1.0", LAMAML,
      "compiled meta-update: the weights' meta-gradient not clipped (_apply)"),
    m("kernel-lamaml-update-alpha-sign", "strategies/lamaml_numba.py",
      "                        a[o, j] -= np.float32(opt_lr * f_rate) * g[j, o]",
      "                        a[o, j] += np.float32(opt_lr * f_rate) * g[j, o]", LAMAML,
      "compiled meta-update: the learned rates moved up the gradient (_apply, Eq. 7)"),
    m("kernel-lamaml-update-rate-mask-dropped", "strategies/lamaml_numba.py",
      "                    if r[j, o] > 0.0:\n",
      "                    if True:\n", LAMAML,
      "compiled meta-update: rates with relu(alpha) = 0 still updated (relu' ignored; _apply)"),
    m("kernel-lamaml-meta-relu-mask-dropped", "strategies/lamaml_numba.py",
      "d_prev[b, j] = back[b, j] if below[b, j] > 0.0 else np.float32(0.0)",
      "d_prev[b, j] = back[b, j]", LAMAML,
      "compiled glance: meta-batch deltas passed through dead ReLU units (batched backprop)"),
    m("kernel-lamaml-pre-activation-bias-rate", "strategies/lamaml_numba.py",
      "            p[o] -= (acc[o] + rb[o]) * d[o]",
      "            p[o] -= (acc[o] + 1.0) * d[o]", LAMAML,
      "compiled glance: meta examples' first-layer pre-activations moved with bias rate 1"),
    # -- MER, strategies/mer.py and strategies/functional.py -------------------------------------
    m("mer-beta-swapped", "strategies/mer.py",
      "reptile(self._params, self._before_batch, beta)",
      "reptile(self._params, self._before_batch, 1 - beta)", MER,
      "reference path: within-batch Reptile with 1 - beta"),
    m("mer-gamma-swapped", "strategies/mer.py",
      "reptile(self._params, self._before_example, gamma)",
      "reptile(self._params, self._before_example, 1 - gamma)", MER,
      "reference path: across-batch Reptile with 1 - gamma (Algorithms 1, 6, 7)"),
    m("mer-alg7-gamma-swapped", "strategies/mer.py",
      "return 1.0, self.gamma  # the paper's Algorithm 6 (and Algorithm 7: one batch)",
      "return 1.0, 1 - self.gamma", MER,
      "Algorithms 6 (paper form) and 7 with the Reptile rate 1 - gamma (both paths)"),
    m("mer-rates-swapped", "strategies/mer.py",
      "return self.beta, self.gamma",
      "return 1 - self.beta, 1 - self.gamma", MER,
      "Algorithm 1 with beta <-> 1 - beta and gamma <-> 1 - gamma (both paths)"),
    m("mer-reptile-lerp-flipped", "strategies/functional.py",
      "torch._foreach_lerp_(list(params), list(before), 1.0 - rate)",
      "torch._foreach_lerp_(list(params), list(before), rate)", MER,
      "reference path: every Reptile step with 1 - rate"),
    m("mer-incoming-not-in-batch", "strategies/mer.py",
      "return self.memory.joined(x, y, t, self.replay_batch, memory_first=self.incoming_last)",
      "return self.memory.sample(self.replay_batch) if self.replay_batch and len(self.memory) else (x, y, t)", MER,
      "reference path: the incoming example left out of its batches"),
    m("mer-incoming-not-in-plan", "strategies/mer.py",
      "row = np.concatenate([drawn, [INCOMING]] if self.incoming_last else [[INCOMING], drawn]).astype(np.int64)",
      "row = np.concatenate([drawn, []]).astype(np.int64)", MER,
      "compiled path: the incoming example left out of its batches"),
    m("mer-memory-before-steps", "strategies/mer.py",
      "            losses.append(self._observe(xi, yi, ti))\n            self.memory.add(xi, yi, ti)\n",
      "            self.memory.add(xi, yi, ti)\n            losses.append(self._observe(xi, yi, ti))\n", MER,
      "reference path: the example enters the memory before its steps"),
    m("mer-alg7-not-shuffled", "strategies/mer.py",
      "total += self._sgd_through(bx[order], by[order], bt[order], weight[order])",
      "total += self._sgd_through(bx, by, bt, weight)", MER,
      "reference path: Algorithm 7's batch in draw order (incoming first), the permutation unused"),
    m("mer-alg7-plan-not-shuffled", "strategies/mer.py",
      "                    row, w = row[order], w[order]\n",
      "", MER,
      "compiled path: Algorithm 7's batch in draw order (incoming first), the permutation unused"),
    m("mer-alg7-weight-not-applied", "strategies/mer.py",
      "weight[0] = float(self.batches_per_example)",
      "weight[0] = 1.0", MER,
      "reference path: Algorithm 7 without the weight s on the incoming example"),
    m("mer-alg7-plan-weight-not-applied", "strategies/mer.py",
      "w[0] = float(self.batches_per_example)",
      "w[0] = 1.0", MER,
      "compiled path: Algorithm 7 without the weight s on the incoming example"),
    m("mer-alg6-official-incoming-first", "strategies/mer.py",
      'self.incoming_last = algorithm == 6 and alg6_form == "official"',
      "self.incoming_last = False", MER,
      "official Algorithm 6 with the incoming example first"),
    # -- MER compiled backend, strategies/mer_numba.py, and the shared kernels of mlp_numba.py ----
    m("kernel-reptile-flipped", "strategies/mer_numba.py",
      "r = np.float32(rate)",
      "r = np.float32(1.0 - rate)", MER,
      "compiled path: every Reptile step with 1 - rate (_reptile)"),
    m("kernel-mer-beta-swapped", "strategies/mer_numba.py",
      "_reptile(wts, bs, snap_b_w, snap_b_b, beta)",
      "_reptile(wts, bs, snap_b_w, snap_b_b, 1.0 - beta)", MER,
      "compiled path: within-batch Reptile with 1 - beta (mer_minibatch)"),
    m("kernel-mer-gamma-swapped", "strategies/mer_numba.py",
      "_reptile(wts, bs, snap_a_w, snap_a_b, gamma)",
      "_reptile(wts, bs, snap_a_w, snap_a_b, 1.0 - gamma)", MER,
      "compiled path: across-batch Reptile with 1 - gamma (mer_minibatch)"),
    m("kernel-mer-incoming-skipped", "strategies/mer_numba.py",
      "                if src == SKIP:\n",
      "                if src == SKIP or src == INCOMING:\n", MER,
      "compiled path: the incoming example skipped in its batches (mer_minibatch)"),
    m("kernel-mer-memory-before-steps", "strategies/mer_numba.py",
      "    for i in range(xs.shape[0]):\n        if gamma != 1.0:\n",
      "    for i in range(xs.shape[0]):\n        if slots[i] >= 0:\n            mem_x[slots[i]] = xs[i]\n"
      "            mem_y[slots[i]] = ys[i]\n            mem_t[slots[i]] = ts[i]\n        if gamma != 1.0:\n", MER,
      "compiled path: the example written to the memory before its steps (mer_minibatch)"),
    m("kernel-mer-weight-ignored", "strategies/mlp_numba.py",
      "        d[o] = d[o] / total * weight\n    d[y] -= weight\n",
      "        d[o] = d[o] / total\n    d[y] -= 1.0\n", MER,
      "compiled path: the loss weight ignored in the gradient (Algorithm 7's s; output_delta)"),
    m("kernel-shared-backprop-without-relu-mask", "strategies/mlp_numba.py",
      "    d_prev[:] = np.float32(0.0)\n    for q in range(k):",
      "    d_prev[:] = np.float32(0.0)\n    k = d_prev.shape[0]\n    for q in range(k):\n        idx[q] = q", MER + LAMAML,
      "shared backprop kernel: the delta passed to dead (zero) hidden units too (hidden_delta)"),
    m("kernel-shared-softmax-without-mask", "strategies/mlp_numba.py",
      "        e = np.exp(logits[o] + (mask_row[o] if use_mask else np.float32(0.0)) - top)",
      "        e = np.exp(logits[o] - top)", MER + LAMAML + MASK,
      "shared softmax/cross-entropy kernel: the task mask left out of the softmax (output_delta)"),
    # -- the reservoir, strategies/memory.py -----------------------------------------------------
    m("reservoir-keeps-last-n", "strategies/memory.py",
      "        slot = int(self._rng.integers(0, i + 1))\n        return slot if slot < self.size else -1\n",
      "        return i % self.size\n", MEMORY,
      "the memory keeps the last N examples instead of a reservoir sample"),
    m("reservoir-off-by-one", "strategies/memory.py",
      "slot = int(self._rng.integers(0, i + 1))",
      "slot = int(self._rng.integers(0, i))", MEMORY,
      "Algorithm R's slot drawn in [0, i - 1] instead of [0, i]"),
    m("reservoir-draws-with-replacement", "strategies/memory.py",
      "return self._rng.choice(n, size=min(k, n), replace=False)",
      "return self._rng.choice(n, size=min(k, n), replace=True)", MEMORY,
      "replay draws may repeat an example"),
    # -- per-example ER (strategies/er.py) and the task-IL training mask ------------------------
    m("er-memory-before-step", "strategies/er.py",
      "            bx, by, bt = self.memory.joined(xi, yi, ti, self.replay_batch, memory_first=True)",
      """            self.memory.add(xi, yi, ti)
            bx, by, bt = self.memory.joined(xi, yi, ti, self.replay_batch, memory_first=True)""", ER,
      "the example enters the memory before its step (it can be replayed with itself)"),
    m("er-example-not-in-batch", "strategies/er.py",
      "bx, by, bt = self.memory.joined(xi, yi, ti, self.replay_batch, memory_first=True)",
      "bx, by, bt = self.memory.sample(self.replay_batch) if self.replay_batch and len(self.memory) else (xi, yi, ti)", ER,
      "the step is taken on the memory draws only"),
    m("er-sign", "strategies/er.py",
      "torch._foreach_add_(self._params, grads, alpha=-self.lr)",
      "torch._foreach_add_(self._params, grads, alpha=self.lr)", ER,
      "gradient ascent"),
    m("task-mask-criterion-unmasked", "strategies/functional.py",
      "return F.cross_entropy(logits + self.by_label.to(logits.device)[y], y)",
      "return F.cross_entropy(logits, y)", MASK,
      "Avalanche templates train over all classes on task-IL streams"),
    m("task-mask-not-given-to-ours", "strategies/context.py",
      "        if not self.masks_training:\n            return None",
      "        return None", MASK,
      "our strategies train over all classes on task-IL streams"),
    # -- continual Reptile, strategies/reptile.py --------------------------------------------------
    m("reptile-epsilon-swapped", "strategies/reptile.py",
      "reptile(self._params, self._before, self.epsilon)",
      "reptile(self._params, self._before, 1 - self.epsilon)", REPTILE,
      "the outer step moves theta_0 + (1 - epsilon)(theta_k - theta_0)"),
    m("reptile-memory-before-steps", "strategies/reptile.py",
      "        copy_into(self._before, self._params)\n",
      "        copy_into(self._before, self._params)\n        self.memory.add(x, y, t)\n", REPTILE,
      "the minibatch enters the memory before the steps (it can be replayed with itself)"),
    m("reptile-no-fresh-draw", "strategies/reptile.py",
      "        for _ in range(self.k):\n            bx, by, bt = self.memory.joined(x, y, t, self.replay_batch, memory_first=False)",
      "        drawn = self.memory.joined(x, y, t, self.replay_batch, memory_first=False)\n        for _ in range(self.k):\n            bx, by, bt = drawn", REPTILE,
      "memory examples replayed in the first step only"),
    # -- VR-MCL, strategies/vrmcl.py -------------------------------------------------------------
    m("vrmcl-momentum-sign", "strategies/vrmcl.py",
      "self.s_momentum * (v - gt)", "self.s_momentum * (gt - v)", VRMCL,
      "the correction subtracts the wrong way: v_t = g_t + s_momentum (g~_t - v_{t-1})"),
    m("vrmcl-lagged-after-update", "strategies/vrmcl.py",
      "            copy_into(self.lagged, self._params)\n",
      "", VRMCL, "theta_{t-1} never moves (the lagged copy stays at the experience's start)"),
    m("vrmcl-alpha-main-path-only", "strategies/vrmcl.py",
      "g_alpha = [a + b for a, b in zip(g_alpha, lagged_grads[n:])]",
      "g_alpha = list(g_alpha)", VRMCL, "the rates learn from the theta_t path alone"),
    m("vrmcl-relu-rates", "strategies/vrmcl.py",
      "look_ahead_meta_loss(self.model, self._names, weights, self.alphas,",
      "look_ahead_meta_loss(self.model, self._names, weights, [torch.relu(a) for a in self.alphas],", VRMCL,
      "inner steps with relu(alpha) (La-MAML's MNIST rule) instead of alpha"),
    m("vrmcl-no-inner-clamp", "strategies/vrmcl.py",
      "                                        clamp=self.grad_clip_norm)",
      "                                        clamp=None)", VRMCL, "inner gradients not clamped"),
    m("vrmcl-plain-momentum", "strategies/vrmcl.py",
      "torch._foreach_add_(self._params, self.momentum, alpha=-self.s_lr)",
      "torch._foreach_add_(self._params, g_theta, alpha=-self.s_lr)", VRMCL,
      "the weights step along g_t, not the variance-reduced v_t"),
    # -- VR-MCL compiled backend: the glance kernel's clamp (lamaml_numba.py), vrmcl_numba.py ------
    m("kernel-clamp-inner-step-unclamped", "strategies/lamaml_numba.py",
      "        c = min(max(a * g[o], -clamp), clamp)\n",
      "        c = a * g[o]\n", VRMCL_COMPILED,
      "clamped glance: the weights' inner steps and sums S take the gradient unclamped (_clamped_row_step)"),
    m("kernel-clamp-sums-unclamped", "strategies/lamaml_numba.py",
      "            sw_row[o] += c\n",
      "            sw_row[o] += a * g[o]\n", VRMCL_COMPILED,
      "clamped glance: the hidden layers' sums S (rate gradients) of the unclamped gradient"),
    m("kernel-clamp-bias-unclamped", "strategies/lamaml_numba.py",
      "                g[o] = min(max(g[o], -clamp), clamp)\n",
      "                g[o] = g[o]\n", VRMCL_COMPILED,
      "clamped glance: the biases' inner steps and sums unclamped"),
    m("kernel-clamp-pre-activation-unclamped", "strategies/lamaml_numba.py",
      "moved[q, o] = rw[j, o] * min(max(v * d[o], -clamp), clamp)",
      "moved[q, o] = rw[j, o] * (v * d[o])", VRMCL_COMPILED,
      "clamped glance: meta examples' first-layer pre-activations moved by the unclamped step"),
    m("kernel-clamp-pre-activation-bias-unclamped", "strategies/lamaml_numba.py",
      "p[o] -= acc[o] + rb[o] * min(max(d[o], -clamp), clamp)",
      "p[o] -= acc[o] + rb[o] * d[o]", VRMCL_COMPILED,
      "clamped glance: the first bias's step on the pre-activations unclamped"),
    m("kernel-clamp-first-layer-rate-gradient-unclamped", "strategies/lamaml_numba.py",
      "grw[j, o] -= min(max(c * dk[o], -clamp), clamp) * rows[q, o]",
      "grw[j, o] -= c * dk[o] * rows[q, o]", VRMCL_COMPILED,
      "clamped glance: the first layer's rate gradient from the unclamped sums (_first_layer)"),
    m("kernel-vrmcl-relu-rates", "strategies/vrmcl_numba.py",
      "rws, rbs = tuple(np.ascontiguousarray(a.T) for a in alphas_w), alphas_b",
      "rws, rbs = tuple(np.maximum(a.T, 0).copy() for a in alphas_w), tuple(np.maximum(a, 0) for a in alphas_b)",
      VRMCL_COMPILED, "compiled VR-MCL: inner steps with relu(alpha) instead of alpha"),
    m("kernel-vrmcl-no-inner-clamp", "strategies/vrmcl_numba.py",
      """                                                   with_rates=True, final_only=False, clamp=clip)
        _, gtw""", """                                                   with_rates=True, final_only=False)
        _, gtw""", VRMCL_COMPILED, "compiled VR-MCL: the theta_t path's inner gradients not clamped"),
    m("kernel-vrmcl-lagged-path-from-theta", "strategies/vrmcl_numba.py",
      "self._lagged.run(*_kernel_layout(lagged_w, lagged_b)",
      "self._lagged.run(*_kernel_layout(weights, biases)", VRMCL_COMPILED,
      "compiled VR-MCL: the second glance from theta_t instead of theta_{t-1} (g~ = g)"),
    m("kernel-vrmcl-g-clip-ignored", "strategies/vrmcl_numba.py",
      "    f_g = _norm_factor(gw, gb, max_norm)\n",
      "    f_g = np.float32(1.0)\n", VRMCL_COMPILED,
      "compiled VR-MCL: g_t not clipped"),
    m("kernel-vrmcl-gtilde-clip-ignored", "strategies/vrmcl_numba.py",
      "    f_gt = _norm_factor(gtw, gtb, max_norm)\n",
      "    f_gt = np.float32(1.0)\n", VRMCL_COMPILED,
      "compiled VR-MCL: g~_t not clipped"),
    m("kernel-vrmcl-main-alpha-clip-ignored", "strategies/vrmcl_numba.py",
      "_scale_and_add(gaw, gab, _norm_factor(gaw, gab, max_norm), gatw, gatb)",
      "_scale_and_add(gaw, gab, np.float32(1.0), gatw, gatb)", VRMCL_COMPILED,
      "compiled VR-MCL: the theta_t path's alpha gradient not clipped before the sum"),
    m("kernel-vrmcl-alpha-clip-ignored", "strategies/vrmcl_numba.py",
      "    f_alpha = _norm_factor(gaw, gab, max_norm)\n",
      "    f_alpha = np.float32(1.0)\n", VRMCL_COMPILED,
      "compiled VR-MCL: the summed alpha gradient not clipped"),
    m("kernel-vrmcl-alpha-main-path-only", "strategies/vrmcl_numba.py",
      "                d[j, o] = factor * d[j, o] + s[j, o]\n",
      "                d[j, o] = factor * d[j, o]\n", VRMCL_COMPILED,
      "compiled VR-MCL: the rates' weights learn from the theta_t path alone"),
    m("kernel-vrmcl-alpha-sign", "strategies/vrmcl_numba.py",
      "                a[o, j] -= step * g[j, o]\n",
      "                a[o, j] += step * g[j, o]\n", VRMCL_COMPILED,
      "compiled VR-MCL: the learned rates of the weights climb the meta-gradient"),
    m("kernel-vrmcl-lagged-not-moved", "strategies/vrmcl_numba.py",
      "        lagged_w[layer][:, :] = weights[layer]\n",
      "        pass\n", VRMCL_COMPILED,
      "compiled VR-MCL: theta_{t-1} of the weights never moves within a task"),
    m("kernel-vrmcl-momentum-sign", "strategies/vrmcl_numba.py",
      "s_momentum * (v[o, j] - f_gt * gt[j, o])",
      "s_momentum * (f_gt * gt[j, o] - v[o, j])", VRMCL_COMPILED,
      "compiled VR-MCL: Eq. 9's correction the wrong way round (weights)"),
    m("kernel-vrmcl-bias-plain-momentum", "strategies/vrmcl_numba.py",
      "new = f_g * g_b[o] if first else f_g * g_b[o] + s_momentum * (vb[o] - f_gt * gt_b[o])",
      "new = f_g * g_b[o]", VRMCL_COMPILED,
      "compiled VR-MCL: the biases step along g_t, not the variance-reduced v_t"),
    m("kernel-vrmcl-theta-step-along-g", "strategies/vrmcl_numba.py",
      "                w[o, j] -= s_lr * new\n",
      "                w[o, j] -= s_lr * f_g * g[j, o]\n", VRMCL_COMPILED,
      "compiled VR-MCL: the weights step along g_t, not v_t (v still kept)"),
    m("vrmcl-compiled-momentum-restarts", "strategies/vrmcl.py",
      "        first = self.momentum is None\n",
      "        first = True\n", VRMCL_COMPILED,
      "compiled VR-MCL: v_t = g_t at every update (the momentum is never carried)"),
    # -- La-MAML's CIFAR form, strategies/lamaml.py ------------------------------------------------
    m("lamaml-cifar-chunk-size", "strategies/lamaml.py",
      "chunk = -(-len(y) // self.inner_chunks) if self.inner_chunks else 1",
      "chunk = self.inner_chunks if self.inner_chunks else 1", LAMAML_CIFAR,
      "cifar_batches read as the chunk size instead of the number of chunks"),
    m("lamaml-cifar-clamp-ignored", "strategies/lamaml.py",
      "clamp=self.grad_clip_norm if self.clamp_inner else None)", "clamp=None)", LAMAML_CIFAR,
      "the inner clamp discarded, as in the MNIST code"),
    m("lamaml-cifar-relu-rates", "strategies/lamaml.py",
      'if self.inner_rate == "relu" else list(self.alphas)', 'if True else list(self.alphas)', LAMAML_CIFAR,
      "inner steps with relu(alpha) in the CIFAR form"),
    m("memory-joined-order-ignored", "strategies/memory.py",
      "parts = ((mx, x), (my, y), (mt, t)) if memory_first else ((x, mx), (y, my), (t, mt))",
      "parts = ((x, mx), (y, my), (t, mt))", MER,
      "replay joined after the batch whatever is asked (MER's official Algorithm 6 puts the incoming example last)"),
    m("mer-clip-ignored", "strategies/mer.py",
      "            if self.grad_clip_norm:\n                clip_joint_norm_(grads, self.grad_clip_norm)\n",
      "", [f"{EXACT}::test_mer_clips_each_step_as_la_mamls_cifar_mer"], "grad_clip_norm accepted but not applied"),
    m("lamaml-scratch-not-zeroed", "strategies/lamaml_numba.py",
      "            for a in self._scratch[1]:\n                a.fill(0.0)\n", "            pass\n", LAMAML,
      "the reused gradient arrays keep the previous glance's sums"),
    # -- continual evaluation and compute (issue 15) --------------------------------------------
    m("minacc-includes-own-end", "benchmark/stream_metrics.py",
      "c.points(c.task_ends[i], c.task_ends[k])",
      "c.points(c.task_ends[i] - 1, c.task_ends[k])", STREAM,
      "min-ACC counts an old task's point at its own end"),
    m("wcacc-weights-swapped", "benchmark/stream_metrics.py",
      "current / (k + 1) + (1 - 1 / (k + 1)) * worst",
      "worst / (k + 1) + (1 - 1 / (k + 1)) * current", STREAM,
      "WC-ACC weighs min-ACC by 1/k and the current task by 1 - 1/k"),
    m("aaa-without-current-task", "benchmark/stream_metrics.py",
      "_mean(row[:c.task_of(i) + 1])",
      "_mean(row[:max(c.task_of(i), 1)])", STREAM,
      "AAA leaves out the task training now"),
    m("gap-depth-not-clipped", "benchmark/stream_metrics.py",
      "depth = max(0.0, level - low)",
      "depth = level - low", STREAM,
      "a rise after a switch counted as a negative gap"),
    m("gap-recovery-before-trough", "benchmark/stream_metrics.py",
      "if d >= trough and v >= level", "if v >= level", STREAM,
      "recovery found before the trough"),
    m("gap-level-after-switch", "benchmark/stream_metrics.py",
      "before = c.at(switch)", "before = c.at(c.points(switch, c.task_ends[k])[0][0]) if c.points(switch, c.task_ends[k]) else None", STREAM,
      "pre-switch level taken at the first point after the switch"),
    m("online-scores-replayed-rows", "benchmark/continual_eval.py",
      "n = min(len(strategy.mb_y), strategy.train_mb_size, self._not_drawn)",
      "n = len(strategy.mb_y)", CONTINUAL,
      "online accuracy scores the replay rows a replay loader adds"),
    m("evaluation-draws-random-numbers", "benchmark/continual_eval.py",
      "            start = time.perf_counter()\n            self.recorded.iterations.append(it)",
      "            start = time.perf_counter()\n            torch.rand(1)\n            self.recorded.iterations.append(it)", CONTINUAL,
      "continual evaluation consumes the global generator (shuffling changes)"),
    m("eval-point-before-plugins-finish", "benchmark/continual_eval.py",
      "            if self.recorded.iteration % self.every == 0:\n                self._pending = True",
      "            if self.recorded.iteration % self.every == 0:\n                self._pending = True\n                self._take_pending()", CONTINUAL,
      "points taken inside the iteration (before the other plugins' after-iteration work)"),
    m("counter-counts-forwards", "benchmark/compute.py",
      "            output.register_hook(partial(self._on_backward, int(output.shape[0]) if output.dim() else 1))",
      "            self.examples += int(output.shape[0]) if output.dim() else 1", COMPUTE,
      "forwards with a graph counted whether backpropagated or not"),
    m("lamaml-compiled-count-without-meta", "strategies/lamaml.py",
      "gradient_examples=int(self.inner_steps + self.meta_examples) if compiled else None",
      "gradient_examples=int(self.inner_steps) if compiled else None", COMPUTE,
      "compiled La-MAML reports its inner examples only"),
    m("subsample-differs-per-task-seed", "benchmark/continual_eval.py",
      "np.random.default_rng([SUBSAMPLE_SEED, task])",
      "np.random.default_rng()", CONTINUAL,
      "subsample positions not fixed (differ run to run)"),
]


# -- running --------------------------------------------------------------------------------
GUARD = '''"""pytest plugin of tests/mutations.py: the suite's packages must come from the copy."""
import os
import pytest


def pytest_sessionstart(session):
    import benchmark, scenarios, strategies
    root = os.path.realpath(os.environ["CLBENCH_MUTATION_ROOT"])
    where = {m.__name__: os.path.realpath(m.__file__) for m in (strategies, scenarios, benchmark)}
    with open(os.environ["CLBENCH_MUTATION_IMPORTS"], "w") as f:
        f.write(where["strategies"])
    wrong = {k: v for k, v in where.items() if not v.startswith(root + os.sep)}
    if wrong:
        pytest.exit(f"imported from outside the mutated copy {root}: {wrong}", returncode=3)
'''


def tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True).stdout
    return [p for p in out.decode().split("\0") if p]


def check_editable_install() -> str:
    """Where the installed clbench points: an editable install of this repository is expected
    (its import finder comes after PYTHONPATH, so the copy's packages are imported first)."""
    code = "import importlib.metadata as md; print(md.distribution('clbench').read_text('direct_url.json') or '')"
    out = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, cwd="/").stdout.strip()
    try:
        info = json.loads(out)
    except ValueError:
        return f"clbench installed without direct_url.json ({out!r}); the guard plugin checks the imports"
    if not info.get("dir_info", {}).get("editable"):
        return f"clbench is installed, not editable ({info.get('url')}); the guard plugin checks the imports"
    if info.get("url") != ROOT.as_uri():
        return f"editable clbench points at {info.get('url')}, not {ROOT.as_uri()}; the guard plugin checks the imports"
    return f"clbench is an editable install of {ROOT}: the copy goes first on PYTHONPATH (checked by the guard plugin)"


def make_copy(files: list[str], mutated_file: str | None) -> Path:
    dest = Path(tempfile.mkdtemp(prefix="clbench-mutation-"))
    for rel in files:
        src = ROOT / rel
        if not src.is_file():  # deleted in the working tree
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / rel)
    stale = KERNEL_DEPENDENTS.get(mutated_file, ())
    cache = ROOT / "strategies" / "__pycache__"
    if cache.is_dir():
        (dest / "strategies" / "__pycache__").mkdir(exist_ok=True)
        for f in cache.iterdir():
            if f.suffix in (".nbi", ".nbc") and f.name.split(".")[0] not in stale:
                shutil.copy2(f, dest / "strategies" / "__pycache__" / f.name)
    return dest


def apply(mutation: Mutation, root: Path) -> None:
    path = root / mutation.file
    text = path.read_text()
    found = text.count(mutation.old)
    if found != 1:
        raise LookupError(f"mutation {mutation.name}: the target string is found {found} times in "
                          f"{mutation.file} (expected once); the code changed, update tests/mutations.py:\n"
                          f"{mutation.old}")
    path.write_text(text.replace(mutation.old, mutation.new))


def run_tests(root: Path, tests, guard_dir: Path, timeout: float) -> dict:
    imports = root / ".mutation-imports"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), str(guard_dir)]),
               CLBENCH_MUTATION_ROOT=str(root), CLBENCH_MUTATION_IMPORTS=str(imports), PYTHONDONTWRITEBYTECODE="1")
    start = time.monotonic()
    try:
        proc = subprocess.run([PYTHON, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-p", "clbench_mutation_guard",
                               *tests], cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
        code, output = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as exc:
        code, output = None, f"timed out after {timeout:.0f} s\n{exc.stdout or ''}"
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", output, re.M)
    return {"code": code, "output": output, "first": failed[0] if failed else "",
            "imported": imports.read_text() if imports.exists() else "", "seconds": time.monotonic() - start}


def verdict(result: dict) -> str:
    if result["code"] == 1 and result["first"]:
        return "yes"
    if result["code"] == 0:
        return "NO"
    if result["code"] is None:
        return "error (timed out)"
    if result["code"] < 0:
        return f"error (pytest killed by signal {-result['code']})"
    return f"error (pytest exit {result['code']})"


def run_one(mutation: Mutation | None, tests, files, guard_dir: Path, timeout: float, keep: bool) -> dict:
    root = make_copy(files, mutation.file if mutation else None)
    try:
        if mutation is not None:
            apply(mutation, root)
        result = run_tests(root, tests, guard_dir, timeout)
        result["root"] = str(root)
        return result
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


def table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="+", metavar="NAME", help="mutation names or shell patterns")
    ap.add_argument("--list", action="store_true", help="list the mutations and exit")
    ap.add_argument("--check", action="store_true", help="only check that every target string is found once")
    ap.add_argument("--jobs", type=int, default=1, help="mutations run at the same time (default 1)")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per pytest run")
    ap.add_argument("--keep", action="store_true", help="keep the temporary copies")
    ap.add_argument("--no-baseline", action="store_true", help="skip the run of the selections without mutation")
    args = ap.parse_args(argv)

    chosen = MUTATIONS
    if args.only:
        chosen = [mu for mu in MUTATIONS if any(fnmatch.fnmatchcase(mu.name, p) for p in args.only)]
        if not chosen:
            print(f"no mutation matches {args.only}; names: {', '.join(mu.name for mu in MUTATIONS)}", file=sys.stderr)
            return 2
    if args.list:
        for mu in chosen:
            print(f"{mu.name}\n    {mu.file}: {mu.what}\n    tests: {' '.join(mu.tests)}")
        return 0
    missing = []
    for mu in chosen:
        found = (ROOT / mu.file).read_text().count(mu.old)
        if found != 1:
            missing.append(f"{mu.name}: target found {found} times in {mu.file} (expected once):\n{mu.old}")
    if missing:
        print("\n".join(missing), file=sys.stderr)
        return 2
    if args.check:
        print(f"all {len(chosen)} targets found exactly once")
        return 0

    print(check_editable_install(), flush=True)
    files = tracked_files()
    untracked_tests = [t.split("::")[0] for mu in chosen for t in mu.tests if t.split("::")[0] not in files]
    if untracked_tests:
        print(f"not tracked by git (commit them first): {sorted(set(untracked_tests))}", file=sys.stderr)
        return 2
    guard_dir = Path(tempfile.mkdtemp(prefix="clbench-mutation-guard-"))
    (guard_dir / "clbench_mutation_guard.py").write_text(GUARD)
    try:
        if not args.no_baseline:
            selection = list(dict.fromkeys(t for mu in chosen for t in mu.tests))
            base = run_one(None, selection, files, guard_dir, args.timeout, args.keep)
            print(f"baseline (no mutation), imports from {base['imported'] or '?'}: pytest exit {base['code']} "
                  f"in {base['seconds']:.0f} s", flush=True)
            if base["code"] != 0:
                print(base["output"][-4000:], file=sys.stderr)
                print("the tests fail without any mutation: fix them first", file=sys.stderr)
                return 1

        def job(mu):
            result = run_one(mu, mu.tests, files, guard_dir, args.timeout, args.keep)
            print(f"{mu.name}: caught {verdict(result)} in {result['seconds']:.0f} s {result['first']}"
                  f" (imports from {result['imported'] or '?'})", flush=True)
            return result

        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            results = list(pool.map(job, chosen))
    finally:
        shutil.rmtree(guard_dir, ignore_errors=True)

    rows = [(mu.name, mu.file, verdict(r), r["first"] or "-") for mu, r in zip(chosen, results)]
    print()
    print(table(rows, ("mutation", "file", "caught", "first failing test")))
    bad = [(mu, r) for mu, r in zip(chosen, results) if verdict(r) != "yes"]
    for mu, r in bad:
        print(f"\n{mu.name} ({mu.what}): {verdict(r)}\n{r['output'][-3000:]}", file=sys.stderr)
    caught = len(chosen) - len(bad)
    print(f"\n{caught} of {len(chosen)} mutations caught")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
