"""One run: build the stream and model from the seed, train task by task, evaluate after
each task, and return the run record of DESIGN.md.

With a ``checkpoint_dir``, the run writes ``checkpoint_dir/checkpoint.pt`` atomically after
every finished task but the last (weights, strategy state, accuracy rows, timings, the global
generators) and, when started again after a crash or a ``kill -9``, continues from the task
after the last one saved, with the same results as an uninterrupted run (bit for bit on the
CPU). The record's ``checkpoint`` entry says what happened; a checkpoint that is unreadable,
of another run, or that does not fit the strategy is ignored with a warning there, and the
run starts from task 0. Strategies whose state cannot be saved exactly are not checkpointed
(the entry says why). The checkpoint is removed when the run is done.
"""

from __future__ import annotations

import io
import math
import os
import platform
import random
import resource
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

import scenarios
import strategies
from benchmark import metrics
from benchmark.config import RunSpec
from benchmark.evaluation import eval_sets, evaluate
from benchmark.models import build_model
from benchmark.store import write_atomic
from strategies import checkpoint as strategy_checkpoint
from strategies import contract as strategy_contract

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
    from importlib.metadata import PackageNotFoundError, version

    import avalanche

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


CHECKPOINT_FILE = "checkpoint.pt"
CHECKPOINT_FORMAT = 1


class Checkpoints:
    """The checkpoint of one run, ``folder/checkpoint.pt``, and what happened to it (``info``,
    the record's ``checkpoint`` entry)."""

    def __init__(self, folder: str | Path, run_id: str):
        self.path = Path(folder) / CHECKPOINT_FILE
        self.run_id = run_id
        self.enabled = True
        # the file's name only: a record holds no absolute machine paths (it lies in the run's folder)
        self.info: dict[str, Any] = {"path": CHECKPOINT_FILE, "enabled": True, "resumed_from_task": None,
                                     "saved": 0, "save_s": 0.0, "warnings": []}

    def warn(self, text: str) -> None:
        self.info["warnings"].append(text)

    def disable(self, reason: str) -> None:
        self.enabled = False
        self.info["enabled"] = False
        self.info["disabled_reason"] = reason

    def load(self, n_tasks: int) -> dict[str, Any] | None:
        """The saved state of this run, or None (with a warning when a file was there but
        cannot be used). Only tensors and plain data are read (``weights_only``): a file
        that holds anything else is refused without running any of it."""
        if not self.path.exists():
            return None
        try:
            data = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 (truncated, damaged, or not plain data)
            self.warn(f"checkpoint ignored, starting from task 0: it cannot be read ({_one_line(exc)})")
            self.remove()
            return None
        problem = _checkpoint_problem(data, self.run_id, n_tasks)
        if problem:
            self.warn(f"checkpoint ignored, starting from task 0: {problem}")
            return None
        return data

    def save(self, payload: dict[str, Any]) -> None:
        t0 = time.perf_counter()
        buf = io.BytesIO()
        torch.save(payload, buf)
        write_atomic(self.path, buf.getvalue())
        self.info["saved"] += 1
        self.info["save_s"] += time.perf_counter() - t0

    def remove(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"[:300]


def _checkpoint_problem(data: Any, run_id: str, n_tasks: int) -> str | None:
    """Why ``data`` is not a usable checkpoint of ``run_id`` (None when it is)."""
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        return "not a checkpoint of this format"
    if data.get("run_id") != run_id:
        return f"it belongs to run {str(data.get('run_id'))[:120]!r}, not {run_id!r}"
    nxt, rows, init = data.get("next_task"), data.get("rows"), data.get("random_init_acc")
    if data.get("n_tasks") != n_tasks or not isinstance(nxt, int) or not 1 <= nxt <= n_tasks:
        return f"its task counts ({data.get('n_tasks')}, next {nxt}) do not fit a stream of {n_tasks} tasks"

    def floats(row):
        return isinstance(row, list) and len(row) == n_tasks and all(isinstance(a, float) for a in row)

    if not isinstance(rows, list) or len(rows) != nxt or not all(floats(r) for r in rows) or not floats(init):
        return "its accuracy rows are malformed"
    timing = data.get("timing")
    if not isinstance(timing, dict) or not all(isinstance(timing.get(k), float) for k in ("train_s", "eval_s")):
        return "its timings are malformed"
    if not isinstance(data.get("model"), dict) or not isinstance(data.get("strategy_state"), dict) \
            or not isinstance(data.get("rng"), dict):
        return "its model, strategy or generator state is missing"
    return None


def run_one(spec: RunSpec, *, progress: Progress | None = None,
            checkpoint_dir: Path | None = None) -> dict[str, Any]:
    """Train and evaluate one spec. Never raises for a failing run: the record says
    ``status: failed`` with the error and its traceback.

    ``checkpoint_dir`` (the run's folder): checkpoint after every task and resume from a
    checkpoint found there (module docstring); it is removed once the run is done, and kept
    when the run fails (running it again resumes from it)."""
    record: dict[str, Any] = {
        "run_id": spec.run_id, "status": "running", "strategy": spec.strategy, "scenario": spec.scenario,
        "seed": spec.seed, "config": spec.to_dict(), "versions": versions(), "machine": machine(),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    ckpt = Checkpoints(checkpoint_dir, spec.run_id) if checkpoint_dir is not None else None
    try:
        with warnings.catch_warnings():
            # Avalanche 0.6 warns about its own deprecated internals on every call, forcing
            # its warnings to "always"; none of them is about the run, so none is shown
            warnings.showwarning = _drop_warning
            record.update(_train_and_evaluate(spec, progress, ckpt))
        record["status"] = "done"
        if ckpt is not None:
            ckpt.remove()
    except Exception as exc:  # noqa: BLE001 (the sweep goes on; the record keeps the reason)
        record["status"] = "failed"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        memory = " (out of memory)" if _out_of_memory(exc) else ""
        record["error"] = f"{type(exc).__name__}: {first}{memory}\n{traceback.format_exc()}"
    if ckpt is not None:
        record["checkpoint"] = ckpt.info
    record["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return record


def _out_of_memory(exc: Exception) -> bool:
    """An allocation that failed: Python's MemoryError, or torch's allocator refusing (CPU, CUDA)."""
    text = str(exc)
    return isinstance(exc, MemoryError) or "can't allocate memory" in text or "out of memory" in text.lower()


def _train_and_evaluate(spec: RunSpec, progress: Progress | None, ckpt: Checkpoints | None = None, *,
                        resume: bool = True) -> dict[str, Any]:
    device = resolve_device(spec.train["device"])
    seed_everything(spec.seed)
    stream = scenarios.build(spec.scenario, seed=spec.seed, **spec.scenario_params)
    backbone = stream.default_backbone if spec.model["name"] == "auto" else spec.model["name"]
    seed_everything(spec.seed)  # the model's init does not depend on how the data were drawn
    model = build_model(backbone, input_shape=stream.input_shape, n_classes=stream.n_classes,
                        hidden=tuple(spec.model["hidden"]), init=spec.model.get("init", "torch")).to(device)
    tests = eval_sets(stream, masked=stream.task_labels)
    eval_bs = spec.train["eval_batch_size"]
    n_tasks = stream.n_tasks
    saved = ckpt.load(n_tasks) if ckpt is not None and resume else None
    if saved is not None:  # measured before the crash
        random_init, eval_s = list(saved["random_init_acc"]), 0.0
    else:
        t0 = time.perf_counter()
        random_init = evaluate(model, tests, batch_size=eval_bs, device=device)
        eval_s = time.perf_counter() - t0

    monitor = _monitor_plugin()
    context = strategies.StrategyContext(
        device=device, batch_size=spec.train["batch_size"], epochs=spec.train["epochs"], eval_batch_size=eval_bs,
        n_classes=stream.n_classes, input_shape=stream.input_shape, task_labels=stream.task_labels,
        classes_per_task=stream.classes_per_task, seed=spec.seed, plugins=(monitor,),
        mask_training=spec.train.get("task_mask", True),
    )
    strategy = strategies.build(spec.strategy, model=model, context=context, **spec.hparams)
    model = strategy.model  # a strategy may wrap or replace the model
    rows: list[list[float]] = []
    train_s = 0.0
    whole_stream = strategy_contract.trains_on_whole_stream(strategy)
    if ckpt is not None and ckpt.enabled:
        reason = ("it trains once on the whole stream: there is nothing to save between tasks" if whole_stream
                  else strategy_checkpoint.unsupported(strategy))
        if reason:
            ckpt.disable(f"strategy '{spec.strategy}' is not checkpointed: {reason}")
    start = 0
    if saved is not None:
        try:
            if whole_stream:
                raise strategy_checkpoint.NotCheckpointable("the strategy trains once on the whole stream")
            model.load_state_dict(saved["model"])
            strategy_checkpoint.restore(strategy, saved["strategy_state"])
            strategy_checkpoint.set_global_rng_state(saved["rng"])
        except Exception as exc:  # noqa: BLE001 (whatever does not fit, the run starts over)
            ckpt.warn(f"checkpoint ignored, starting from task 0: it does not fit the strategy ({_one_line(exc)})")
            ckpt.remove()
            return _train_and_evaluate(spec, progress, ckpt, resume=False)
        start = saved["next_task"]
        rows = [list(r) for r in saved["rows"]]
        train_s, eval_s = saved["timing"]["train_s"], saved["timing"]["eval_s"] + eval_s
        ckpt.info["resumed_from_task"] = start
    if progress:
        progress(start, n_tasks)
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
            if i < start:
                continue
            t0 = time.perf_counter()
            strategy.train(exp)
            train_s += time.perf_counter() - t0
            _check_weights(model, i)
            t0 = time.perf_counter()
            rows.append(evaluate(model, tests, batch_size=eval_bs, device=device))
            eval_s += time.perf_counter() - t0
            if ckpt is not None and ckpt.enabled and i + 1 < n_tasks:
                _save_checkpoint(ckpt, spec, strategy, n_tasks, rows, random_init, train_s, eval_s)
            if progress:
                progress(i + 1, n_tasks)

    found = metrics.all_metrics(rows, random_init)
    if whole_stream:  # one training on everything: there is no "just after task j"
        found.update(la=math.nan, bwt=math.nan, fwt=math.nan, forgetting=math.nan)
    report = strategy_contract.report_of(strategy)
    found.update({f"strategy_{k}": v for k, v in report.extra_metrics.items()})
    timing = {"train_s": train_s, "eval_s": eval_s, "eval_share": eval_s / max(train_s + eval_s, 1e-12),
              "iterations": monitor.iterations, "inner_steps": report.inner_steps,
              "meta_losses": report.meta_losses}
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
        "backend": report.backend,
    }


def _save_checkpoint(ckpt: Checkpoints, spec: RunSpec, strategy, n_tasks: int, rows: list[list[float]],
                     random_init: list[float], train_s: float, eval_s: float) -> None:
    """Everything needed to continue after task ``len(rows) - 1`` exactly. A strategy whose
    state turns out not to be saveable is not checkpointed any further (the last checkpoint,
    of an earlier task, stays valid)."""
    try:
        payload = {
            "format": CHECKPOINT_FORMAT, "run_id": spec.run_id, "strategy": spec.strategy, "n_tasks": n_tasks,
            "next_task": len(rows), "rows": [[float(a) for a in r] for r in rows],
            "random_init_acc": [float(a) for a in random_init],
            "timing": {"train_s": float(train_s), "eval_s": float(eval_s)},
            "model": {k: v.detach().cpu().clone() for k, v in strategy.model.state_dict().items()},
            "strategy_state": strategy_checkpoint.capture(strategy),
            "rng": strategy_checkpoint.global_rng_state(),
            "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        ckpt.save(payload)
    except strategy_checkpoint.NotCheckpointable as exc:
        ckpt.disable(f"strategy '{spec.strategy}' is not checkpointed after task {len(rows) - 1}: {exc}")
    except Exception as exc:  # noqa: BLE001 (a checkpoint that cannot be written must not fail the run)
        ckpt.disable(f"checkpointing stopped after task {len(rows) - 1}: {_one_line(exc)}")
