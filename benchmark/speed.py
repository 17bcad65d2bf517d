"""``clbench speed``: our meta strategies and Avalanche's, side by side in one process.

Every strategy trains on the same stream, two tasks so that Avalanche's memories, filled at
the end of a task, are used in the second, from the same model initialisation, seed and replay
settings. Backbones: ``mlp`` (the default), MLP 784-100-100-10 on permuted MNIST (mnist5k);
``cnn``, the La-MAML CIFAR network (:class:`benchmark.models.ConvNet`) on a class-incremental
split of mnist5k digits as 32x32 colour images (each digit padded to 32x32 and copied to three
channels: real images with CIFAR's shape, as no CIFAR file is on this machine). For each we
print microseconds per inner SGD step, examples per second, peak memory, and the
ours-vs-Avalanche ratios (Avalanche's time over ours: above 1 means ours is faster).

Inner steps are counted the same way on both sides: one inner step is one single-example
SGD step (MER) or one single-example fast-weight update (La-MAML, C-MAML). Ours count them
as they take them; Avalanche's are counted by a plugin from what each minibatch feeds its
inner loop (MER: ``n_inner_steps * (minibatch + min(batch_size_mem, memory))``; lamaml_v2:
one per non-empty chunk of the minibatch). Meta-loss evaluations (one forward pass of the
meta-batch at the fast weights) and the examples they forward and backpropagate are counted on
both sides too: ours by the strategy, lamaml_v2's as the number of meta-losses it averages per
minibatch, each over the minibatch plus its buffer draw; a ratio is at equal work when both
sides take the same inner steps, meta-losses and meta-loss examples.

The hardware floor of one single-example SGD step is computed from its FLOPs and the bytes
of weights it touches, against this CPU's measured single-thread matmul rate and copy
bandwidth.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import threading
import time
from typing import Any

import torch

SIZES = {"tiny": 50, "small": 300, "medium": 1000, "large": 3000}  # examples per task
BATCH = 10  # incoming examples per minibatch, on every side
BACKBONES = ("mlp", "cnn")
DEFAULT_SIZE = {"mlp": "small", "cnn": "tiny"}  # a CNN step costs ~100x an MLP step
DEFAULT_ROWS = {"mlp": None, "cnn": ("c-maml", "la-maml", "avalanche-la-maml")}  # None: every configuration


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


class PeakRSS:
    """Samples this process's resident memory every few milliseconds; ``peak`` in MiB."""

    def __init__(self, interval: float = 0.005):
        self.interval, self.peak, self._stop = interval, _rss_mb(), threading.Event()

    def __enter__(self):
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_mb())
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mb())


def _avalanche_step_counter():
    from avalanche.core import SupervisedPlugin

    class CountInnerSteps(SupervisedPlugin):
        def __init__(self):
            super().__init__()
            self.inner_steps = 0
            self.meta_losses = 0
            self.meta_examples = 0
            self._meta_batch = 0

        def after_inner_updates(self, strategy, **kwargs):
            if hasattr(strategy, "meta_losses"):  # lamaml_v2: one meta-loss per chunk, all averaged
                self.meta_losses += len(strategy.meta_losses)
                self.meta_examples += len(strategy.meta_losses) * self._meta_batch

        def before_inner_updates(self, strategy, **kwargs):
            n = len(strategy.mb_y)
            if hasattr(strategy, "n_inner_steps"):  # MER: each inner batch = minibatch + memory
                mem = len(strategy.buffer)
                self.inner_steps += strategy.n_inner_steps * (n + min(strategy.buffer.batch_size_mem, mem))
            else:  # lamaml_v2: the minibatch cut into n_inner_updates chunks, one update each
                size = math.ceil(n / strategy.n_inner_updates)
                self.inner_steps += len(range(0, n, size))
                # its meta-batch: the minibatch, plus a buffer draw from the second experience on
                replay = min(strategy.buffer.buffer_mb_size, len(strategy.buffer))
                self._meta_batch = n + (replay if strategy.clock.train_exp_counter > 0 else 0)

    return CountInnerSteps()


def configurations(*, glances: int) -> dict[str, tuple[str, dict[str, Any]]]:
    """label -> (registered strategy, hyperparameters), equal settings on both sides.

    ``la-maml``/``c-maml`` take a single-example inner step and a meta-loss after each, as the
    official code does; Avalanche's lamaml_v2 takes an inner step and a meta-loss per chunk of
    the minibatch and averages the meta-losses: with ``n_inner_updates`` = batch size (10) its
    chunks are single examples, so both sides take the same 10 inner steps and 10 meta-losses
    per minibatch (equal work). The ``-final`` variants take one meta-loss per glance
    (``meta_loss="final"``, the paper's Algorithm 1): less work than lamaml_v2 here."""
    lamaml = {"mem_size": 200, "replay_batch": 10, "glances": glances}
    return {
        "mer": ("mer", {"lr": 0.03, "beta": 0.03, "gamma": 1.0, "mem_size": 200, "replay_batch": 10,
                        "batches_per_example": 1}),
        "avalanche-mer": ("avalanche-mer", {"lr": 0.03, "beta": 0.03, "gamma": 1.0, "mem_size": 200,
                                            "replay_batch": 10, "n_inner_steps": 1}),
        "er-per-example": ("er", {"lr": 0.1, "mem_size": 200, "replay_batch": 10, "per_example": True}),
        "c-maml": ("c-maml", {"opt_wt": 0.1, "alpha_init": 0.1, **lamaml}),
        "la-maml": ("la-maml", {"opt_lr": 0.3, "alpha_init": 0.15, **lamaml}),
        "c-maml-final": ("c-maml", {"opt_wt": 0.1, "alpha_init": 0.1, "meta_loss": "final", **lamaml}),
        "la-maml-final": ("la-maml", {"opt_lr": 0.3, "alpha_init": 0.15, "meta_loss": "final", **lamaml}),
        # VR-MCL as the paper MNIST configs run it; its meta-updates per minibatch are La-MAML's glances
        "vr-mcl": ("vr-mcl", {"lr": 0.3, "alpha_init": 0.15, "s_momentum": 0.15, "s_lr": 0.35, "inner_batch_size": 1,
                              "meta_update_per_batch": glances, "second_order": False, "grad_clip_norm": 2.0,
                              "mem_size": 200, "replay_batch": 10}),
        "avalanche-la-maml": ("avalanche-la-maml", {"n_inner_updates": 10, "second_order": False,
                                                    "grad_clip_norm": 2.0, "learn_lr": True, "lr_alpha": 0.3,
                                                    "alpha_init": 0.15, "mem_size": 200, "replay_batch": 10}),
    }


def measure(label: str, name: str, hparams: dict[str, Any], *, stream, seed: int, glances: int,
            backbone: str = "mlp") -> dict[str, Any]:
    import strategies
    from benchmark.models import build_model
    from benchmark.runner import seed_everything

    seed_everything(seed)
    model = build_model(backbone, input_shape=stream.input_shape, n_classes=stream.n_classes)
    counter = _avalanche_step_counter() if name.startswith("avalanche-") else None
    ctx = strategies.StrategyContext(batch_size=BATCH, n_classes=stream.n_classes, input_shape=stream.input_shape,
                                     classes_per_task=stream.classes_per_task, seed=seed,
                                     plugins=(counter,) if counter else ())
    strategy = strategies.build(name, model=model, context=ctx, **hparams)
    examples = sum(len(e.dataset) for e in stream.benchmark.train_stream)
    passes = glances if name == "avalanche-la-maml" else 1  # lamaml_v2 has no glances: it takes epochs
    if passes > 1:
        strategy.train_epochs = passes
    with PeakRSS() as rss:
        t0 = time.perf_counter()
        for exp in stream.benchmark.train_stream:
            strategy.train(exp)
        elapsed = time.perf_counter() - t0
    report = strategies.contract.report_of(strategy)
    steps = counter.inner_steps if counter else report.inner_steps
    meta = counter.meta_losses if counter else (report.meta_losses or 0)
    meta_examples = counter.meta_examples if counter else (report.meta_examples or 0)
    return {"us_per_step": elapsed / max(steps, 1) * 1e6, "examples_per_s": examples / elapsed,
            "peak_rss_mb": rss.peak, "inner_steps": int(steps), "meta_losses": int(meta),
            "meta_examples": int(meta_examples), "seconds": elapsed, "examples": examples,
            "backend": report.backend or "avalanche"}


def cpu_rates() -> dict[str, float]:
    """Single-thread float32 matmul rate (GFLOP/s) and copy bandwidth of a 1 MiB buffer
    (cache-resident, like the MLP's weights) and of a 256 MiB one (DRAM), in GB/s."""
    with torch.inference_mode():
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            a, b = torch.rand(512, 512), torch.rand(512, 512)
            for _ in range(3):
                a @ b
            n, t0 = 20, time.perf_counter()
            for _ in range(n):
                a @ b
            gflops = n * 2 * 512**3 / (time.perf_counter() - t0) / 1e9
            rates = {"matmul_gflops": gflops}
            for name, size in (("cache_gbs", 2**18), ("dram_gbs", 2**26)):
                src, dst = torch.rand(size), torch.empty(size)
                reps = max(3, 2**28 // size // 16)
                dst.copy_(src)
                t0 = time.perf_counter()
                for _ in range(reps):
                    dst.copy_(src)
                rates[name] = reps * 2 * 4 * size / (time.perf_counter() - t0) / 1e9
        finally:
            torch.set_num_threads(threads)
    return rates


def _input_density(stream) -> float:
    """Fraction of nonzero input values over the training examples of ``stream``."""
    xs = [exp.dataset[i][0] for exp in stream.benchmark.train_stream for i in range(min(len(exp.dataset), 200))]
    return float(torch.stack(xs).ne(0).float().mean())


def mlp_floor(sizes=(784, 100, 100, 10), rates: dict[str, float] | None = None,
              input_density: float = 1.0) -> dict[str, float]:
    """FLOPs and bytes of one single-example SGD step on an MLP, and the time they imply.

    With ``input_density`` < 1 only that fraction of the first layer's input rows is counted:
    an exact step need not touch the weights of zero inputs (their gradient is zero)."""
    layers = list(zip(sizes[:-1], sizes[1:]))  # noqa: RUF007
    first = [(i * input_density if k == 0 else i, o) for k, (i, o) in enumerate(layers)]
    params = sum(i * o + o for i, o in first)
    flops = sum(2 * i * o for i, o in first)  # forward matrix-vector products
    flops += sum(2 * i * o for i, o in first[1:])  # backward products for the hidden gradients
    flops += sum(2 * i * o for i, o in first)  # rank-1 weight updates (gradient and step fused)
    touched = 4 * (params + sum(i * o for i, o in first[1:]) + 2 * params)  # read fwd, read bwd, read+write update
    rates = rates or cpu_rates()
    compute_us = flops / (rates["matmul_gflops"] * 1e9) * 1e6
    memory_us = touched / (rates["cache_gbs"] * 1e9) * 1e6
    return {"params": params, "flops_per_step": flops, "bytes_per_step": touched, "compute_us": compute_us,
            "cache_memory_us": memory_us, "floor_us": max(compute_us, memory_us), **rates}


def model_floor(model: torch.nn.Module, input_shape: tuple[int, ...],
                rates: dict[str, float] | None = None) -> dict[str, float]:
    """FLOPs and bytes of one single-example SGD step on any stack of ``nn.Linear`` and
    ``nn.Conv2d`` layers, and the time they imply; dense inputs (a convolution does not skip
    zero pixels). Counted as :func:`mlp_floor` counts them: the forward products, the same again
    for the weight gradients (fused with the step), and again for the gradients of every layer's
    input but the first; bytes: the weights read forward, read backward (all but the first
    layer's weight matrix) and read and written by the step. Each layer's output size comes from one forward
    pass of a zero example."""
    layers: list[tuple[float, int, int]] = []  # (forward FLOPs, parameters, weight matrix) per layer, in order

    def count(module, inputs, output):
        params = sum(p.numel() for p in module.parameters(recurse=False))
        if isinstance(module, torch.nn.Linear):
            layers.append((2.0 * module.in_features * module.out_features, params, module.weight.numel()))
        else:
            per_output = 2.0 * module.in_channels // module.groups * math.prod(module.kernel_size)
            layers.append((per_output * output[0].numel(), params, module.weight.numel()))

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape))
    finally:
        for h in hooks:
            h.remove()
    forward = sum(f for f, _, _ in layers)
    flops = 3 * forward - layers[0][0]  # forward, weight gradients, input gradients of all layers but the first
    params = sum(p for _, p, _ in layers)
    touched = 4 * (params + sum(w for _, _, w in layers[1:]) + 2 * params)
    rates = rates or cpu_rates()
    compute_us = flops / (rates["matmul_gflops"] * 1e9) * 1e6
    memory_us = touched / (rates["cache_gbs"] * 1e9) * 1e6
    return {"params": params, "forward_flops": forward, "flops_per_step": flops, "bytes_per_step": touched,
            "compute_us": compute_us, "cache_memory_us": memory_us, "floor_us": max(compute_us, memory_us), **rates}


def work_floor_us(*, inner_steps: int, meta_losses: int, meta_examples: int, step_compute_us: float,
                  step_memory_us: float) -> float:
    """A lower bound on the time of all the work a run did, in microseconds.

    Each inner step is one single-example SGD step: at least the larger of its compute and of
    touching its weights (``step_compute_us``, ``step_memory_us``). Each meta-loss is a forward
    and backward pass of its meta-batch, whose examples can share one pass over the weights: the
    ``meta_examples`` of all meta-losses take at least that many steps' compute, and the
    ``meta_losses`` at least one step's weight traffic each; the larger of the two is counted.
    MER and ER take no meta-losses; La-MAML and C-MAML take one per inner step (``every-step``)
    or one per glance (``final``), each over the memory draws plus the incoming minibatch."""
    inner = inner_steps * max(step_compute_us, step_memory_us)
    meta = max(meta_examples * step_compute_us, meta_losses * step_memory_us)
    return inner + meta


def machine() -> dict[str, Any]:
    from benchmark.provenance import machine as run_machine

    info = run_machine()
    info.update(torch=torch.__version__, python=platform.python_version())
    return info


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures of the run with the median time; every run's time is kept too."""
    ordered = sorted(runs, key=lambda r: r["seconds"])
    chosen = dict(ordered[(len(ordered) - 1) // 2])
    chosen["runs_us_per_step"] = [r["us_per_step"] for r in runs]
    chosen["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs)
    return chosen


def colour_digits(folder) -> str:
    """mnist5k as 32x32 colour images in an .npz file under ``folder``: each digit padded by two
    pixels a side and copied to three channels. Returns the file's path."""
    import numpy as np

    from scenarios.sources import load_source

    data = load_source("mnist5k")
    x = torch.cat([data.x_train, data.x_test]).reshape(-1, 28, 28).numpy()
    y = torch.cat([data.y_train, data.y_test]).numpy()
    x = np.repeat(np.pad(x, ((0, 0), (2, 2), (2, 2)))[:, None], 3, axis=1)
    path = f"{folder}/colour-digits.npz"
    np.savez(path, x=(x * 255).round().astype(np.uint8), y=y)
    return path


def speed_stream(backbone: str, *, size: str, seed: int):
    """The two-task stream each backbone is timed on (module docstring)."""
    import tempfile

    import scenarios

    if backbone == "mlp":
        return scenarios.build("permuted-mnist", seed=seed, n_tasks=2, per_task=SIZES[size])
    with tempfile.TemporaryDirectory() as folder:
        return scenarios.build("split-cifar10", seed=seed, source="npz", path=colour_digits(folder), n_tasks=2,
                               per_task=SIZES[size])


def step_floors(backbone: str, stream, rates: dict[str, float]) -> dict[str, float]:
    """The floor of one single-example step (``step_compute_us``, ``step_memory_us``) and how it
    was found: for the MLP counting only the first-layer weights of nonzero inputs (exact: their
    gradient is zero), for the CNN every weight (its convolutions see every pixel)."""
    from benchmark.models import build_model

    if backbone == "mlp":
        floor = mlp_floor(rates=rates)
        density = _input_density(stream)
        sparse = mlp_floor(rates=rates, input_density=density)
        floor.update(input_density=density, sparse_floor_us=sparse["floor_us"],
                     sparse_compute_us=sparse["compute_us"], sparse_memory_us=sparse["cache_memory_us"],
                     sparse_bytes_per_step=sparse["bytes_per_step"], sparse_flops_per_step=sparse["flops_per_step"])
        return {**floor, "step_compute_us": sparse["compute_us"], "step_memory_us": sparse["cache_memory_us"]}
    floor = model_floor(build_model(backbone, input_shape=stream.input_shape, n_classes=stream.n_classes),
                        stream.input_shape, rates=rates)
    return {**floor, "step_compute_us": floor["compute_us"], "step_memory_us": floor["cache_memory_us"]}


def run(*, size: str | None = None, seed: int = 0, glances: int = 1, only: list[str] | None = None,
        repeat: int = 1, backbone: str = "mlp") -> dict[str, Any]:
    import warnings

    from strategies.functional import single_threaded

    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; allowed: {', '.join(BACKBONES)}")
    size = size or DEFAULT_SIZE[backbone]
    only = only or DEFAULT_ROWS[backbone]
    stream = speed_stream(backbone, size=size, seed=seed)
    figures: dict[str, Any] = {}
    t0 = time.perf_counter()
    from strategies.lamaml_numba import warm_up as warm_up_lamaml  # compile or load the kernels now,
    from strategies.mer_numba import warm_up as warm_up_mer  # not inside the timed training
    from strategies.vrmcl_numba import warm_up as warm_up_vrmcl

    warm_up_mer()
    warm_up_lamaml()
    warm_up_vrmcl()
    jit_s = time.perf_counter() - t0
    with single_threaded(), warnings.catch_warnings():  # every side on one core, as the targets are stated
        warnings.showwarning = lambda *a, **k: None  # Avalanche's deprecation noise, every iteration
        chosen = {label: spec for label, spec in configurations(glances=glances).items() if not only or label in only}
        runs: dict[str, list[dict[str, Any]]] = {label: [] for label in chosen}
        for _ in range(repeat):  # round-robin, so that drift in the machine's load hits every side alike
            for label, (name, hp) in chosen.items():
                runs[label].append(measure(label, name, hp, stream=stream, seed=seed, glances=glances,
                                           backbone=backbone))
        figures = {label: _median_run(r) for label, r in runs.items()}
        floor = step_floors(backbone, stream, cpu_rates())
    ratios, equal = {}, {}
    pairs = [("mer", "avalanche-mer")] + [(ours, "avalanche-la-maml") for ours in
                                          ("la-maml", "c-maml", "la-maml-final", "c-maml-final")]
    for ours, theirs in pairs:
        if ours in figures and theirs in figures:
            key = "us_per_step" if ours == "mer" else "examples_per_s"
            a, b = figures[theirs][key], figures[ours][key]
            ratios[f"{ours}_vs_{theirs}"] = a / b if key == "us_per_step" else b / a
            equal[f"{ours}_vs_{theirs}"] = all(figures[ours][k] == figures[theirs][k]
                                               for k in ("inner_steps", "meta_losses", "meta_examples"))
    for f in figures.values():
        f["floor_us"] = work_floor_us(inner_steps=f["inner_steps"], meta_losses=f["meta_losses"],
                                      meta_examples=f["meta_examples"], step_compute_us=floor["step_compute_us"],
                                      step_memory_us=floor["step_memory_us"])
        f["times_floor"] = f["seconds"] * 1e6 / f["floor_us"]
    return {"machine": {**machine(), "threads_used": 1}, "backbone": backbone, "stream": stream.name,
            "size": size, "examples_per_task": SIZES[size], "glances": glances, "repeat": repeat, "jit_load_s": jit_s,
            "counting": __doc__.split("\n\n")[2].replace("\n", " "), "floor": floor, "strategies": figures,
            "ratios": ratios, "equal_work": equal}


_MODEL = {"mlp": "MLP 784-100-100-10", "cnn": "CNN 3x32x32 (3 conv 160, fc 320-320)"}
_DATA = {"mlp": "permuted-mnist (mnist5k)", "cnn": "split of mnist5k digits as 3x32x32 colour images"}


def render(result: dict[str, Any]) -> str:
    m, f, backbone = result["machine"], result["floor"], result.get("backbone", "mlp")
    lines = [f"machine: {m.get('cpu')} | {m.get('cores')} cores, 1 thread used | torch {m.get('torch')} | "
             f"python {m.get('python')}",
             f"stream: {_DATA[backbone]}, 2 tasks x {result['examples_per_task']} examples, batch {BATCH}, "
             f"glances {result['glances']}; model {_MODEL[backbone]}; median of {result['repeat']} round-robin "
             "runs per strategy",
             "inner step = one single-example SGD step or fast-weight update, counted alike on both sides",
             f"compiled kernels loaded before timing in {result['jit_load_s']:.2f} s (once per process)", "",
             f"{'strategy':<20}{'us/step':>10}{'examples/s':>12}{'peak MiB':>10}{'inner steps':>13}"
             f"{'meta-losses':>13}{'meta-examples':>15}{'x floor':>9}"]
    for label, s in result["strategies"].items():
        meta = f"{s['meta_losses']:>13d}{s['meta_examples']:>15d}" if s.get("meta_losses") else f"{'-':>13}{'-':>15}"
        lines.append(f"{label:<20}{s['us_per_step']:>10.1f}{s['examples_per_s']:>12.1f}{s['peak_rss_mb']:>10.0f}"
                     f"{s['inner_steps']:>13d}{meta}{s['times_floor']:>9.1f}")
    lines += ["", "ratios (Avalanche's time over ours; > 1 = ours faster):"]
    work = result.get("equal_work", {})
    for k, v in result["ratios"].items():
        ours, theirs = k.split("_vs_")
        line = f"  {k}: {v:.1f}x" + ("  (per inner step)" if ours == "mer" else "  (per incoming example)")
        if ours != "mer":
            a, b = result["strategies"][ours], result["strategies"][theirs]
            line += ("  (equal work: same inner steps, meta-losses and meta-loss examples)" if work.get(k) else
                     f"  (unequal work: ours {a['inner_steps'] / max(b['inner_steps'], 1):.2f}x the inner steps, "
                     f"{a['meta_examples'] / max(b['meta_examples'], 1):.2f}x the meta-loss examples)")
        lines.append(line)
    lines.append("")
    if backbone == "mlp":
        lines += [f"hardware floor of one SGD step on {_MODEL[backbone]}: {f['flops_per_step'] / 1e3:.0f} kFLOP, "
                  f"{f['bytes_per_step'] / 1e3:.0f} kB of weights touched; at {f['matmul_gflops']:.1f} GFLOP/s and "
                  f"{f['cache_gbs']:.1f} GB/s (cache) that is {f['compute_us']:.1f} us compute, "
                  f"{f['cache_memory_us']:.1f} us memory: floor {f['floor_us']:.1f} us/step",
                  f"counting only the weights of nonzero inputs ({100 * f['input_density']:.0f}% of the pixels here; "
                  f"exact, their gradient is zero): {f['sparse_bytes_per_step'] / 1e3:.0f} kB, floor "
                  f"{f['sparse_floor_us']:.1f} us/step"]
        step = "that sparse step"
    else:
        lines += [f"hardware floor of one SGD step on {_MODEL[backbone]}: {f['flops_per_step'] / 1e6:.1f} MFLOP "
                  f"(forward {f['forward_flops'] / 1e6:.1f}, weight gradients, input gradients of all layers but "
                  f"the first), {f['bytes_per_step'] / 1e6:.1f} MB of weights touched; at {f['matmul_gflops']:.1f} "
                  f"GFLOP/s (the matmul rate; convolutions reach less) and {f['cache_gbs']:.1f} GB/s that is "
                  f"{f['compute_us']:.0f} us compute, {f['cache_memory_us']:.0f} us memory: floor "
                  f"{f['floor_us']:.0f} us/step"]
        step = "that step"
    lines.append(f"x floor: a row's time over a lower bound of all the work it did, from {step}: each inner step "
                 "max(compute, weight traffic) of one step; the meta-losses max(their examples x one step's "
                 "compute, their count x one step's weight traffic): a meta-batch's examples share one pass over "
                 "the weights")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from benchmark.messages import closest
    from benchmark.usage import Parser, UsageError

    p = Parser(prog="clbench speed", description=__doc__.split("\n\n")[0])
    p.add_argument("--backbone", choices=BACKBONES, default="mlp",
                   help="mlp: MLP on permuted MNIST (every strategy); cnn: the La-MAML CIFAR CNN on 32x32 colour "
                        "digits (c-maml, la-maml, avalanche-la-maml unless --only says otherwise)")
    p.add_argument("--size", choices=sorted(SIZES, key=SIZES.get),
                   help="examples per task (tiny 50, small 300, medium 1000, large 3000); default small for the "
                        "mlp, tiny for the cnn")
    p.add_argument("--glances", type=int, default=1, help="glances of La-MAML/C-MAML (epochs of lamaml_v2)")
    p.add_argument("--repeat", type=int, default=3, help="runs per strategy, round-robin; the median is shown")
    p.add_argument("--only", nargs="*", help="a subset of: " + ", ".join(configurations(glances=1)))
    p.add_argument("--out", help="write the figures as JSON to this file")
    args = p.parse_args(argv)
    if args.repeat < 1:
        p.error(f"--repeat must be >= 1, got {args.repeat}")
    if args.glances < 1:
        p.error(f"--glances must be >= 1, got {args.glances}")
    known = configurations(glances=1)
    if args.only is not None:
        if not args.only:
            raise UsageError(f"speed: --only needs at least one of: {', '.join(known)}")
        for name in args.only:
            if name not in known:
                raise UsageError(f"speed: --only {name!r} is not a strategy of the benchmark{closest(name, known)}; "
                                 f"allowed: {', '.join(known)}")
    result = run(size=args.size, glances=args.glances, only=args.only, repeat=args.repeat, backbone=args.backbone)
    print(render(result))
    if args.out:
        from pathlib import Path

        from benchmark.store import write_atomic

        write_atomic(Path(args.out), json.dumps(result, indent=1) + "\n")
        print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
