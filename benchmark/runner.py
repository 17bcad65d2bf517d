"""One run: build the stream and model from the seed, train task by task, evaluate after
each task, and return the run record of DESIGN.md."""

from __future__ import annotations

import math
import os
import platform
import random
import resource
import sys
import time
import traceback
import warnings
from datetime import datetime, timezone
from typing import Any, Callable

import numpy as np
import torch

import scenarios
import strategies
from benchmark import metrics
from benchmark.config import RunSpec
from benchmark.evaluation import evaluate, eval_sets
from benchmark.models import build_model

Progress = Callable[[int, int], None]  # (tasks done, tasks in all)


class DivergenceError(RuntimeError):
    """The loss or the weights of a run became NaN or infinite."""


def seed_everything(seed: int) -> None:
    """Fix Python's, NumPy's and torch's generators (data order, init, memory sampling)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is cuda but no CUDA device is available")
    return torch.device(name)


def versions() -> dict[str, str]:
    import avalanche

    from importlib.metadata import PackageNotFoundError, version

    try:
        own = version("clbench")
    except PackageNotFoundError:
        own = "unknown"
    return {"clbench": own, "python": platform.python_version(), "torch": torch.__version__,
            "avalanche": getattr(avalanche, "__version__", "unknown"), "numpy": np.__version__}


def machine() -> dict[str, object]:
    """Where a run ran: CPU model, cores, torch threads, GPU if any."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    info: dict[str, object] = {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                               "platform": platform.platform(terse=True)}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _monitor_plugin():
    """Counts training iterations and stops a run whose loss is not finite."""
    from avalanche.core import SupervisedPlugin

    class RunMonitor(SupervisedPlugin):
        def __init__(self):
            super().__init__()
            self.iterations = 0

        def after_training_iteration(self, strategy, **kwargs):
            self.iterations += 1
            loss = getattr(strategy, "loss", None)
            if isinstance(loss, torch.Tensor) and loss.numel() and not bool(torch.isfinite(loss.detach()).all()):
                raise DivergenceError(f"loss became {float(loss.detach().reshape(-1)[0])} at iteration {self.iterations}")

    return RunMonitor()


def _check_weights(model: torch.nn.Module, task: int) -> None:
    for name, p in model.named_parameters():
        if not bool(torch.isfinite(p.detach()).all()):
            raise DivergenceError(f"parameter '{name}' is not finite after task {task}")


def _peak_rss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024.0 if sys.platform != "darwin" else rss / 2**20


def _finite_or_none(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else x


def _drop_warning(*args, **kwargs) -> None:
    return None


def run_one(spec: RunSpec, *, progress: Progress | None = None) -> dict[str, Any]:
    """Train and evaluate one spec. Never raises for a failing run: the record says
    ``status: failed`` with the error and its traceback."""
    record: dict[str, Any] = {
        "run_id": spec.run_id, "status": "running", "strategy": spec.strategy, "scenario": spec.scenario,
        "seed": spec.seed, "config": spec.to_dict(), "versions": versions(), "machine": machine(),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    try:
        with warnings.catch_warnings():
            # Avalanche 0.6 warns about its own deprecated internals on every call, forcing
            # its warnings to "always"; none of them is about the run, so none is shown
            warnings.showwarning = _drop_warning
            record.update(_train_and_evaluate(spec, progress))
        record["status"] = "done"
    except Exception as exc:  # the sweep goes on; the record keeps the reason
        record["status"] = "failed"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        record["error"] = f"{type(exc).__name__}: {first}\n{traceback.format_exc()}"
    record["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return record


def _train_and_evaluate(spec: RunSpec, progress: Progress | None) -> dict[str, Any]:
    device = resolve_device(spec.train["device"])
    seed_everything(spec.seed)
    stream = scenarios.build(spec.scenario, seed=spec.seed, **spec.scenario_params)
    backbone = stream.default_backbone if spec.model["name"] == "auto" else spec.model["name"]
    seed_everything(spec.seed)  # the model's init does not depend on how the data were drawn
    model = build_model(backbone, input_shape=stream.input_shape, n_classes=stream.n_classes,
                        hidden=tuple(spec.model["hidden"])).to(device)
    tests = eval_sets(stream, masked=stream.task_labels)
    eval_bs = spec.train["eval_batch_size"]
    t0 = time.perf_counter()
    random_init = evaluate(model, tests, batch_size=eval_bs, device=device)
    eval_s = time.perf_counter() - t0

    monitor = _monitor_plugin()
    context = strategies.StrategyContext(
        device=device, batch_size=spec.train["batch_size"], epochs=spec.train["epochs"], eval_batch_size=eval_bs,
        n_classes=stream.n_classes, input_shape=stream.input_shape, task_labels=stream.task_labels,
        classes_per_task=stream.classes_per_task, seed=spec.seed, plugins=(monitor,),
    )
    strategy = strategies.build(spec.strategy, model=model, context=context, **spec.hparams)
    model = strategy.model  # a strategy may wrap or replace the model
    n_tasks = stream.n_tasks
    rows: list[list[float]] = []
    train_s = 0.0
    whole_stream = bool(getattr(strategy, "trains_on_whole_stream", False))
    if progress:
        progress(0, n_tasks)
    if whole_stream:
        t0 = time.perf_counter()
        strategy.train(stream.benchmark.train_stream)
        train_s += time.perf_counter() - t0
        _check_weights(model, n_tasks - 1)
        t0 = time.perf_counter()
        row = evaluate(model, tests, batch_size=eval_bs, device=device)
        eval_s += time.perf_counter() - t0
        rows = [list(row) for _ in range(n_tasks)]
        if progress:
            progress(n_tasks, n_tasks)
    else:
        for i, exp in enumerate(stream.benchmark.train_stream):
            t0 = time.perf_counter()
            strategy.train(exp)
            train_s += time.perf_counter() - t0
            _check_weights(model, i)
            t0 = time.perf_counter()
            rows.append(evaluate(model, tests, batch_size=eval_bs, device=device))
            eval_s += time.perf_counter() - t0
            if progress:
                progress(i + 1, n_tasks)

    found = metrics.all_metrics(rows, random_init)
    if whole_stream:  # one training on everything: there is no "just after task j"
        found.update(la=math.nan, bwt=math.nan, fwt=math.nan, forgetting=math.nan)
    found.update({f"strategy_{k}": v for k, v in (getattr(strategy, "extra_metrics", None) or {}).items()})
    inner = getattr(strategy, "inner_steps", None)
    timing = {"train_s": train_s, "eval_s": eval_s, "eval_share": eval_s / max(train_s + eval_s, 1e-12),
              "iterations": monitor.iterations, "inner_steps": int(inner) if inner is not None else None}
    return {
        "acc_matrix": rows,
        "random_init_acc": random_init,
        "average_accuracy": metrics.average_accuracy_curve(rows),
        "metrics": {k: _finite_or_none(v) for k, v in found.items()},
        "timing": timing,
        "peak_rss_mb": _peak_rss_mb(),
        "device": str(device),
        "n_tasks": n_tasks,
        "joint_training": whole_stream,
    }
