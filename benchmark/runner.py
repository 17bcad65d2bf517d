"""One run: build the stream and model from the seed, train task by task, evaluate after
each task, and return the run record of DESIGN.md.

With a ``checkpoint_dir``, the run checkpoints after every task and resumes from a checkpoint
found there (:mod:`benchmark.run_checkpoint`); what the record says about where it ran comes
from :mod:`benchmark.provenance`.
"""

from __future__ import annotations

import math
import random
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
from benchmark.compute import GradientCounter, per_incoming
from benchmark.config import RunSpec
from benchmark.continual_eval import make_continual_evaluation, subsample
from benchmark.evaluation import (
    class_means,
    eval_sets,
    evaluate,
    joined_accuracy,
    ncm_examples,
    nearest_prototype,
    penultimate,
)
from benchmark.messages import error_line
from benchmark.metric_names import METRICS
from benchmark.models import build_model
from benchmark.provenance import machine, numerics, peak_rss_mb, versions
from benchmark.run_checkpoint import Checkpoints, one_line, save_checkpoint
from benchmark.stream_metrics import Curves, curve_metrics, stability_gaps
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


def _finite_or_none(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else x


def _drop_warning(*args, **kwargs) -> None:
    return None


def run_one(spec: RunSpec, *, progress: Progress | None = None,
            checkpoint_dir: Path | None = None) -> dict[str, Any]:
    """Train and evaluate one spec. Never raises for a failing run: the record says
    ``status: failed`` with the error and its traceback.

    ``checkpoint_dir`` (the run's folder): checkpoint after every task and resume from a
    checkpoint found there (:mod:`benchmark.run_checkpoint`); it is removed once the run is
    done, and kept when the run fails (running it again resumes from it)."""
    record: dict[str, Any] = {
        "run_id": spec.run_id, "status": "running", "strategy": spec.strategy, "scenario": spec.scenario,
        "seed": spec.seed, "config": spec.to_dict(), "versions": versions(), "machine": machine(),
        "numerics": numerics(),
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
        memory = " (out of memory)" if _out_of_memory(exc) else ""
        record["error"] = f"{error_line(exc)}{memory}\n{traceback.format_exc()}"
    if ckpt is not None:
        record["checkpoint"] = ckpt.info
    record["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return record


def _out_of_memory(exc: Exception) -> bool:
    """An allocation that failed: Python's MemoryError, or torch's allocator refusing (CPU, CUDA)."""
    text = str(exc)
    return isinstance(exc, MemoryError) or "can't allocate memory" in text or "out of memory" in text.lower()


def _scorer(strategy, model, head: str, ncm_data, *, n_classes: int, batch_size: int, device):
    """How the run's predictions are scored now (benchmark.evaluation): logits (None), the
    strategy's own prototypes, or the nearest class mean of its representation."""
    own = isinstance(strategy, strategy_contract.Prototypes)
    if head == "ncm":
        embed = strategy.embed if own else penultimate(model)
        return nearest_prototype(embed, class_means(embed, *ncm_data, batch_size=batch_size, device=device), n_classes)
    return nearest_prototype(strategy.embed, strategy.prototypes(), n_classes) if own else None


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
    head = spec.train.get("eval_head", "logits")
    ncm_data = ncm_examples(stream) if head == "ncm" else None
    n_tasks = stream.n_tasks
    saved = ckpt.load(n_tasks) if ckpt is not None and resume else None

    monitor = _monitor_plugin()
    every = spec.train.get("eval_every", 0)
    kept = subsample(tests, spec.train.get("eval_subsample", 200)) if every else None
    continual = make_continual_evaluation(every=every, tests=kept.sets, n_classes=stream.n_classes) if every else None
    context = strategies.StrategyContext(
        device=device, batch_size=spec.train["batch_size"], epochs=spec.train["epochs"], eval_batch_size=eval_bs,
        n_classes=stream.n_classes, input_shape=stream.input_shape, task_labels=stream.task_labels,
        classes_per_task=stream.classes_per_task, seed=spec.seed,
        plugins=(monitor,) if continual is None else (monitor, continual),
        mask_training=spec.train.get("task_mask", True),
    )
    counter = GradientCounter(model=model)
    strategy = strategies.build(spec.strategy, model=model, context=context, **spec.hparams)
    model = strategy.model  # a strategy may wrap or replace the model

    def scorer():
        return _scorer(strategy, model, head, ncm_data, n_classes=stream.n_classes, batch_size=eval_bs, device=device)

    def measure() -> list[float]:
        """One row of the accuracy matrix, by the run's head (benchmark.evaluation)."""
        return evaluate(model, tests, batch_size=eval_bs, device=device, scorer=scorer())

    if continual is not None:
        continual.attach(lambda joined: joined_accuracy(model, joined, batch_size=eval_bs, device=device,
                                                        scorer=scorer()))

    if saved is not None:  # measured before the crash
        random_init, eval_s = list(saved["random_init_acc"]), 0.0
    else:
        t0 = time.perf_counter()
        random_init = measure()
        eval_s = time.perf_counter() - t0
    rows: list[list[float]] = []
    train_s = 0.0
    whole_stream = strategy_contract.trains_on_whole_stream(strategy)
    if whole_stream:  # one training on everything: no task switch to follow
        continual = None
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
            ckpt.warn(f"checkpoint ignored, starting from task 0: it does not fit the strategy ({one_line(exc)})")
            ckpt.remove()
            return _train_and_evaluate(spec, progress, ckpt, resume=False)
        start = saved["next_task"]
        rows = [list(r) for r in saved["rows"]]
        counter.examples = int((saved.get("measured") or {}).get("gradient_examples", 0))
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
        row = measure()
        eval_s += time.perf_counter() - t0
        rows = [list(row) for _ in range(n_tasks)]
        if progress:
            progress(n_tasks, n_tasks)
    else:
        for i, exp in enumerate(stream.benchmark.train_stream):
            if i < start:
                continue
            t0 = time.perf_counter()
            during = continual.recorded.seconds if continual is not None else 0.0
            if continual is not None:
                continual.start_task(i)
            strategy.train(exp)
            if continual is not None:
                continual.end_task()
            spent = time.perf_counter() - t0
            measuring = (continual.recorded.seconds - during) if continual is not None else 0.0
            train_s += spent - measuring
            eval_s += measuring
            _check_weights(model, i)
            t0 = time.perf_counter()
            rows.append(measure())
            eval_s += time.perf_counter() - t0
            if ckpt is not None and ckpt.enabled and i + 1 < n_tasks:
                save_checkpoint(ckpt, spec, strategy, n_tasks, rows, random_init, train_s, eval_s,
                                {"gradient_examples": counter.examples})
            if progress:
                progress(i + 1, n_tasks)

    counter.close()
    found = metrics.all_metrics(rows, random_init)
    if whole_stream:  # one training on everything: there is no "just after task j", only ACC is defined
        found.update({k: math.nan for k in METRICS if k != "acc"})
    report = strategy_contract.report_of(strategy)
    curves = None
    if continual is not None:
        measured = continual.recorded.to_dict()
        curves = {"eval_every": every, "subsample": [len(t.y) for t in kept.sets], "subsample_digest": kept.digest,
                  **{k: measured[k] for k in ("iterations", "acc", "task_ends", "online")}}
        parsed = Curves.from_record(curves)
        found.update(curve_metrics(parsed, curves["online"]))
        curves["gaps"] = [vars(g) for g in stability_gaps(parsed)]
    found.update({f"strategy_{k}": v for k, v in report.extra_metrics.items()})
    incoming = sum(len(exp.dataset) for exp in stream.benchmark.train_stream) * spec.train["epochs"]
    gradient_examples = counter.examples if report.gradient_examples is None else report.gradient_examples
    timing = {"train_s": train_s, "eval_s": eval_s, "eval_share": eval_s / max(train_s + eval_s, 1e-12),
              "iterations": monitor.iterations, "inner_steps": report.inner_steps,
              "meta_losses": report.meta_losses, "meta_examples": report.meta_examples,
              "incoming_examples": incoming, "gradient_examples": gradient_examples,
              "grad_per_example": per_incoming(gradient_examples, incoming),
              "curve_eval_s": continual.recorded.seconds if continual is not None else None}
    return {
        "acc_matrix": rows,
        "random_init_acc": random_init,
        "average_accuracy": metrics.average_accuracy_curve(rows),
        "metrics": {k: _finite_or_none(v) for k, v in found.items()},
        "timing": timing,
        "peak_rss_mb": peak_rss_mb(),
        "device": str(device),
        "n_tasks": n_tasks,
        "joint_training": whole_stream,
        "backend": report.backend,
        "gradients_counted_by": "hooks" if report.gradient_examples is None else "strategy",
        "curves": curves,
    }
