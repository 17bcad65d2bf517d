"""``clbench speed``: our meta strategies and Avalanche's, side by side in one process.

Every strategy trains on the same stream (permuted MNIST from mnist5k, two tasks so that
Avalanche's memories, filled at the end of a task, are used in the second), the same model
initialisation (MLP 784-100-100-10), the same seed and the same replay settings. For each we
print microseconds per inner SGD step, examples per second, peak memory, and the
ours-vs-Avalanche ratios (Avalanche's time over ours: above 1 means ours is faster).

Inner steps are counted the same way on both sides: one inner step is one single-example
SGD step (MER) or one single-example fast-weight update (La-MAML, C-MAML). Ours count them
as they take them; Avalanche's are counted by a plugin from what each minibatch feeds its
inner loop (MER: ``n_inner_steps * (minibatch + min(batch_size_mem, memory))``; lamaml_v2:
one per non-empty chunk of the minibatch). Meta-loss evaluations (one forward pass of the
meta-batch at the fast weights) are counted on both sides too: ours by the strategy, lamaml_v2's
as the number of meta-losses it averages per minibatch; a ratio is at equal work when both
sides take the same inner steps and meta-losses.

The hardware floor of one single-example SGD step on the MLP is computed from its FLOPs and
the bytes of weights it touches, against this CPU's measured single-thread matmul rate and
copy bandwidth.
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

        def after_inner_updates(self, strategy, **kwargs):
            if hasattr(strategy, "meta_losses"):  # lamaml_v2: one meta-loss per chunk, all averaged
                self.meta_losses += len(strategy.meta_losses)

        def before_inner_updates(self, strategy, **kwargs):
            n = len(strategy.mb_y)
            if hasattr(strategy, "n_inner_steps"):  # MER: each inner batch = minibatch + memory
                mem = len(strategy.buffer)
                self.inner_steps += strategy.n_inner_steps * (n + min(strategy.buffer.batch_size_mem, mem))
            else:  # lamaml_v2: the minibatch cut into n_inner_updates chunks, one update each
                size = math.ceil(n / strategy.n_inner_updates)
                self.inner_steps += len(range(0, n, size))

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
        "avalanche-la-maml": ("avalanche-la-maml", {"n_inner_updates": 10, "second_order": False,
                                                    "grad_clip_norm": 2.0, "learn_lr": True, "lr_alpha": 0.3,
                                                    "alpha_init": 0.15, "mem_size": 200, "replay_batch": 10}),
    }


def measure(label: str, name: str, hparams: dict[str, Any], *, stream, seed: int, glances: int) -> dict[str, Any]:
    import strategies
    from benchmark.models import build_model
    from benchmark.runner import seed_everything

    seed_everything(seed)
    model = build_model("mlp", input_shape=stream.input_shape, n_classes=stream.n_classes)
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
    return {"us_per_step": elapsed / max(steps, 1) * 1e6, "examples_per_s": examples / elapsed,
            "peak_rss_mb": rss.peak, "inner_steps": int(steps), "meta_losses": int(meta), "seconds": elapsed,
            "examples": examples, "backend": report.backend or "avalanche"}


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


def work_floor_us(*, inner_steps: int, meta_losses: int, meta_batch: int, step_compute_us: float,
                  step_memory_us: float) -> float:
    """A lower bound on the time of all the work a run did, in microseconds.

    Each inner step is one single-example SGD step: at least the larger of its compute and of
    touching its weights (``step_compute_us``, ``step_memory_us``). Each meta-loss is a forward
    and backward pass of ``meta_batch`` examples, which can share one pass over the weights: at
    least the larger of ``meta_batch`` steps' compute and one step's weight traffic. MER and ER
    take no meta-losses; La-MAML and C-MAML take one per inner step (``every-step``) or one per
    glance (``final``), each over the memory draws plus the incoming minibatch."""
    inner = inner_steps * max(step_compute_us, step_memory_us)
    meta = meta_losses * max(meta_batch * step_compute_us, step_memory_us)
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


def run(*, size: str = "small", seed: int = 0, glances: int = 1, only: list[str] | None = None,
        repeat: int = 1) -> dict[str, Any]:
    import warnings

    import scenarios
    from strategies.functional import single_threaded

    stream = scenarios.build("permuted-mnist", seed=seed, n_tasks=2, per_task=SIZES[size])
    figures: dict[str, Any] = {}
    t0 = time.perf_counter()
    from strategies.lamaml_numba import warm_up as warm_up_lamaml  # compile or load the kernels now,
    from strategies.mer_numba import warm_up as warm_up_mer  # not inside the timed training

    warm_up_mer()
    warm_up_lamaml()
    jit_s = time.perf_counter() - t0
    with single_threaded(), warnings.catch_warnings():  # every side on one core, as the targets are stated
        warnings.showwarning = lambda *a, **k: None  # Avalanche's deprecation noise, every iteration
        chosen = {label: spec for label, spec in configurations(glances=glances).items() if not only or label in only}
        runs: dict[str, list[dict[str, Any]]] = {label: [] for label in chosen}
        for _ in range(repeat):  # round-robin, so that drift in the machine's load hits every side alike
            for label, (name, hp) in chosen.items():
                runs[label].append(measure(label, name, hp, stream=stream, seed=seed, glances=glances))
        figures = {label: _median_run(r) for label, r in runs.items()}
        rates = cpu_rates()
        floor = mlp_floor(rates=rates)
        density = _input_density(stream)
        sparse = mlp_floor(rates=rates, input_density=density)
        floor.update(input_density=density, sparse_floor_us=sparse["floor_us"],
                     sparse_compute_us=sparse["compute_us"], sparse_memory_us=sparse["cache_memory_us"],
                     sparse_bytes_per_step=sparse["bytes_per_step"], sparse_flops_per_step=sparse["flops_per_step"])
    ratios, equal = {}, {}
    pairs = [("mer", "avalanche-mer")] + [(ours, "avalanche-la-maml") for ours in
                                          ("la-maml", "c-maml", "la-maml-final", "c-maml-final")]
    for ours, theirs in pairs:
        if ours in figures and theirs in figures:
            key = "us_per_step" if ours == "mer" else "examples_per_s"
            a, b = figures[theirs][key], figures[ours][key]
            ratios[f"{ours}_vs_{theirs}"] = a / b if key == "us_per_step" else b / a
            equal[f"{ours}_vs_{theirs}"] = (figures[ours]["inner_steps"] == figures[theirs]["inner_steps"]
                                            and figures[ours]["meta_losses"] == figures[theirs]["meta_losses"])
    for label, f in figures.items():
        hp = chosen[label][1]
        meta_batch = hp.get("replay_batch", 0) + BATCH  # memory draws + the incoming minibatch
        f["floor_us"] = work_floor_us(inner_steps=f["inner_steps"], meta_losses=f["meta_losses"],
                                      meta_batch=meta_batch, step_compute_us=floor["sparse_compute_us"],
                                      step_memory_us=floor["sparse_memory_us"])
        f["times_floor"] = f["seconds"] * 1e6 / f["floor_us"]
    return {"machine": {**machine(), "threads_used": 1}, "size": size, "examples_per_task": SIZES[size],
            "glances": glances, "repeat": repeat, "jit_load_s": jit_s, "counting": __doc__.split("\n\n")[2].replace("\n", " "), "floor": floor,
            "strategies": figures, "ratios": ratios, "equal_work": equal}


def render(result: dict[str, Any]) -> str:
    m, f = result["machine"], result["floor"]
    lines = [f"machine: {m.get('cpu')} | {m.get('cores')} cores, 1 thread used | torch {m.get('torch')} | "
             f"python {m.get('python')}",
             f"stream: permuted-mnist (mnist5k), 2 tasks x {result['examples_per_task']} examples, batch {BATCH}, "
             f"glances {result['glances']}; median of {result['repeat']} round-robin runs per strategy",
             "inner step = one single-example SGD step or fast-weight update, counted alike on both sides",
             f"compiled kernels loaded before timing in {result['jit_load_s']:.2f} s (once per process)", "",
             f"{'strategy':<20}{'us/step':>10}{'examples/s':>12}{'peak MiB':>10}{'inner steps':>13}"
             f"{'meta-losses':>13}{'x floor':>9}"]
    for label, s in result["strategies"].items():
        meta = f"{s['meta_losses']:>13d}" if s.get("meta_losses") else f"{'-':>13}"
        lines.append(f"{label:<20}{s['us_per_step']:>10.1f}{s['examples_per_s']:>12.1f}{s['peak_rss_mb']:>10.0f}"
                     f"{s['inner_steps']:>13d}{meta}{s['times_floor']:>9.1f}")
    lines += ["", "ratios (Avalanche's time over ours; > 1 = ours faster):"]
    work = result.get("equal_work", {})
    lines += [f"  {k}: {v:.1f}x" + ("  (per inner step)" if k.startswith("mer") else "  (per incoming example)")
              + ("" if k.startswith("mer") else "  (equal work: same inner steps and meta-losses)" if work.get(k)
                 else "  (unequal work: see the inner steps and meta-losses)")
              for k, v in result["ratios"].items()]
    lines += ["", f"hardware floor of one SGD step on MLP 784-100-100-10: {f['flops_per_step'] / 1e3:.0f} kFLOP, "
              f"{f['bytes_per_step'] / 1e3:.0f} kB of weights touched; at {f['matmul_gflops']:.1f} GFLOP/s and "
              f"{f['cache_gbs']:.1f} GB/s (cache) that is {f['compute_us']:.1f} us compute, "
              f"{f['cache_memory_us']:.1f} us memory: floor {f['floor_us']:.1f} us/step",
              f"counting only the weights of nonzero inputs ({100 * f['input_density']:.0f}% of the pixels here; "
              f"exact, their gradient is zero): {f['sparse_bytes_per_step'] / 1e3:.0f} kB, floor "
              f"{f['sparse_floor_us']:.1f} us/step",
              "x floor: a row's time over a lower bound of all the work it did, from that sparse step: each "
              "inner step max(compute, weight traffic) of one step; each meta-loss (a forward and backward pass "
              "of replay_batch + batch examples) max(that many steps' compute, one step's weight traffic)"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from benchmark.messages import closest
    from benchmark.usage import Parser, UsageError

    p = Parser(prog="clbench speed", description=__doc__.split("\n\n")[0])
    p.add_argument("--size", choices=sorted(SIZES, key=SIZES.get), default="small",
                   help="examples per task (tiny 50, small 300, medium 1000, large 3000)")
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
    result = run(size=args.size, glances=args.glances, only=args.only, repeat=args.repeat)
    print(render(result))
    if args.out:
        from pathlib import Path

        from benchmark.store import write_atomic

        write_atomic(Path(args.out), json.dumps(result, indent=1) + "\n")
        print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
