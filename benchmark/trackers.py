"""Experiment trackers: ``clbench run --log tensorboard|mlflow|wandb``.

Logging happens in the driver, from a run's finished record, right after the record is stored
(:func:`benchmark.sweep.run_sweep`), so it works with every executor and never slows training.
Only runs done now are logged: a failed run, or a run skipped because a previous sweep finished
it, is not. Each tool is an optional extra, imported only when its tracker opens.

What is logged, the same for every tool (:func:`scalars`):

- the configuration: the record's ``config`` flattened to ``key.sub=value``, with ``run_id``,
  ``strategy``, ``scenario`` and ``seed``;
- ``acc/task_<j>`` at step ``i``: ``acc_matrix[i][j]``, the accuracy on task j after training
  task i, and ``acc/average`` at step ``i``: the mean over the tasks seen so far;
- ``metrics/<name>``: the final metrics (``acc``, ``bwt``, ...; those that are not finite
  numbers are left out), at step ``T - 1``;
- with ``train.eval_every``: ``curve/task_<j>`` and ``curve/seen`` (their mean) at step =
  training iteration, one point per continual evaluation.

A tracker that fails (a bad URI, an exception while logging) prints one line on stderr naming
itself and the reason, and is off for the rest of the sweep; the sweep, its records and its
exit status do not change.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

TOOLS = ("tensorboard", "mlflow", "wandb")
#: the module each tool needs, and the extra of clbench that installs it
_NEEDS = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}


@dataclass(frozen=True)
class Scalar:
    """One logged value: ``tag`` at ``step``; ``axis`` says what the step counts (``task`` or
    ``iteration``)."""

    tag: str
    value: float
    step: int
    axis: str


class Tracker(Protocol):
    """One experiment tracker: :meth:`log_run` logs one finished run's record; :meth:`close`
    flushes and releases whatever it holds."""

    name: str

    def log_run(self, record: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


def flat_config(record: dict[str, Any]) -> dict[str, str]:
    """The record's configuration as flat ``key.sub -> text`` parameters, with the run's
    identity (``run_id``, ``strategy``, ``scenario``, ``seed``)."""
    out: dict[str, str] = {k: str(record.get(k)) for k in ("run_id", "strategy", "scenario", "seed")}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            out[f"config.{prefix}" if prefix else "config"] = (
                json.dumps(value) if isinstance(value, (list, dict, bool)) or value is None else str(value))

    walk("", record.get("config") or {})
    return out


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def scalars(record: dict[str, Any]) -> list[Scalar]:
    """Every value a tracker logs for ``record`` (module docstring)."""
    out: list[Scalar] = []
    rows = record.get("acc_matrix") or []
    for i, row in enumerate(rows):
        for j, a in enumerate(row):
            if _number(a) is not None:
                out.append(Scalar(f"acc/task_{j}", float(a), i, "task"))
        seen = [float(a) for a in row[: i + 1] if _number(a) is not None]
        if seen:
            out.append(Scalar("acc/average", sum(seen) / len(seen), i, "task"))
    last = max(len(rows) - 1, 0)
    for name, v in (record.get("metrics") or {}).items():
        if _number(v) is not None:
            out.append(Scalar(f"metrics/{name}", float(v), last, "task"))
    curves = record.get("curves") or {}
    for it, accs in zip(curves.get("iterations") or [], curves.get("acc") or []):
        vals = [float(a) for a in accs if _number(a) is not None]
        for j, a in enumerate(accs):
            if _number(a) is not None:
                out.append(Scalar(f"curve/task_{j}", float(a), int(it), "iteration"))
        if vals:
            out.append(Scalar("curve/seen", sum(vals) / len(vals), int(it), "iteration"))
    return out


class TensorBoardTracker:
    """Event files in ``<out>/<run_id>/tensorboard/``: one scalar series per tag, the config
    as text (tag ``config``)."""

    name = "tensorboard"

    def __init__(self, *, out: Path):
        self.out = Path(out)
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401 (fails here when tensorboard is missing)

    def log_run(self, record: dict[str, Any]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=str(self.out / record["run_id"] / "tensorboard"))
        try:
            params = flat_config(record)
            writer.add_text("config", "\n".join(f"    {k} = {v}" for k, v in params.items()), 0)
            for s in scalars(record):
                writer.add_scalar(s.tag, s.value, s.step)
        finally:
            writer.close()

    def close(self) -> None:
        pass


class MlflowTracker:
    """One MLflow run per clbench run (run name = run_id) in the experiment named after the
    config; params = the flat config, metrics with their steps. Default store: the SQLite file
    ``<out>/mlflow.db`` (MLflow 3 refuses a plain folder store unless told otherwise)."""

    name = "mlflow"

    def __init__(self, *, out: Path, experiment: str, uri: str | None = None):
        import logging

        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # a server that is not there: one try
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        from mlflow.tracking import MlflowClient

        logging.getLogger("mlflow").setLevel(logging.WARNING)
        logging.getLogger("alembic").setLevel(logging.WARNING)
        self.uri = uri or default_mlflow_uri(out)
        self.client = MlflowClient(tracking_uri=self.uri)
        found = self.client.get_experiment_by_name(experiment)
        if found is None:
            try:
                self.experiment_id = self.client.create_experiment(experiment)
                return
            except Exception:  # another clbench run on the folder created it meanwhile
                found = self.client.get_experiment_by_name(experiment)
                if found is None:
                    raise
        self.experiment_id = found.experiment_id

    def log_run(self, record: dict[str, Any]) -> None:
        from mlflow.entities import Metric, Param

        run = self.client.create_run(self.experiment_id, run_name=record["run_id"],
                                     tags={"clbench.run_id": record["run_id"]})
        rid = run.info.run_id
        try:
            params = [Param(k, v[:6000]) for k, v in flat_config(record).items()]
            stamp = int(run.info.start_time or 0)
            metrics = [Metric(s.tag, s.value, stamp, s.step) for s in scalars(record)]
            for i in range(0, max(len(params), 1), 100):
                self.client.log_batch(rid, params=params[i:i + 100])
            for i in range(0, len(metrics), 1000):
                self.client.log_batch(rid, metrics=metrics[i:i + 1000])
        except BaseException:
            try:
                self.client.set_terminated(rid, status="FAILED")
            except Exception:  # noqa: BLE001 (the first error is the one to tell)
                pass
            raise
        self.client.set_terminated(rid)

    def close(self) -> None:
        pass


def default_mlflow_uri(out: Path) -> str:
    return f"sqlite:///{Path(out).resolve() / 'mlflow.db'}"


class WandbTracker:
    """One offline W&B run per clbench run (its name = run_id) under ``<out>/wandb/``;
    the flat config as its config; ``acc/*`` and ``metrics/*`` against the step metric
    ``task``, ``curve/*`` against ``iteration``; the final metrics also in the run's summary."""

    name = "wandb"

    def __init__(self, *, out: Path, experiment: str):
        import wandb  # noqa: F401

        self.out, self.project = Path(out), experiment

    def log_run(self, record: dict[str, Any]) -> None:
        import wandb

        run = wandb.init(mode="offline", dir=str(self.out), project=self.project, name=record["run_id"],
                         config=flat_config(record), reinit="create_new",
                         settings=wandb.Settings(silent=True, console="off", x_disable_stats=True))
        try:
            run.define_metric("task")
            run.define_metric("iteration")
            run.define_metric("acc/*", step_metric="task")
            run.define_metric("metrics/*", step_metric="task")
            run.define_metric("curve/*", step_metric="iteration")
            rows: dict[tuple[str, int], dict[str, float]] = {}
            for s in scalars(record):
                rows.setdefault((s.axis, s.step), {})[s.tag] = s.value
            for (axis, step), values in sorted(rows.items(), key=lambda kv: (kv[0][0] != "task", kv[0][1])):
                run.log({axis: step, **values})
            run.summary.update({s.tag: s.value for s in scalars(record) if s.tag.startswith("metrics/")})
        finally:
            run.finish()

    def close(self) -> None:
        pass


class MissingTool(Exception):
    """A tool named in ``--log`` is not installed."""


def check_installed(tools: Iterable[str]) -> None:
    """Raise :class:`MissingTool` (one line naming the extra) for the first tool not installed."""
    import importlib

    for tool in tools:
        if tool not in TOOLS:
            raise MissingTool(f"--log {tool!r}: not a tracker; one of {', '.join(TOOLS)}")
        try:
            importlib.import_module(_NEEDS[tool])
        except ImportError as exc:
            raise MissingTool(f"--log {tool} needs {_NEEDS[tool]}, which cannot be imported ({exc}): "
                              f"pip install 'clbench[{tool}]'") from None


class Trackers:
    """The trackers of one sweep, opened on the first run to log. A tracker that fails says so
    in one line (``clbench: tracker NAME off: reason``) and is off for the rest of the sweep."""

    def __init__(self, tools: Sequence[str], *, out: str | Path, experiment: str, uri: str | None = None,
                 say: Callable[[str], None] | None = None):
        self.tools = list(dict.fromkeys(tools))
        self.out, self.experiment, self.uri = Path(out), experiment, uri
        self.say = say or (lambda text: print(text, file=sys.stderr, flush=True))
        self.open: dict[str, Tracker] | None = None
        self.off: dict[str, str] = {}
        self.logged: dict[str, int] = {tool: 0 for tool in self.tools}

    def _open(self) -> dict[str, Tracker]:
        if self.open is None:
            self.open = {}
            for tool in self.tools:
                try:
                    self.open[tool] = self._make(tool)
                except BaseException as exc:  # noqa: BLE001 (a tracker never stops the sweep)
                    if isinstance(exc, KeyboardInterrupt):
                        raise
                    self._fail(tool, exc)
        return self.open

    def _make(self, tool: str) -> Tracker:
        if tool == "tensorboard":
            return TensorBoardTracker(out=self.out)
        if tool == "mlflow":
            return MlflowTracker(out=self.out, experiment=self.experiment, uri=self.uri)
        if tool == "wandb":
            return WandbTracker(out=self.out, experiment=self.experiment)
        raise MissingTool(f"not a tracker: {tool!r}")

    def _fail(self, tool: str, exc: BaseException) -> None:
        from benchmark.messages import first_line

        reason = first_line(exc) or type(exc).__name__
        reason = "".join(c if c.isprintable() else " " for c in reason)[:300]
        self.off[tool] = reason
        self.say(f"clbench: tracker {tool} off for the rest of the sweep: {type(exc).__name__}: {reason}")

    def log_run(self, record: dict[str, Any]) -> None:
        """Log a run's stored record to every tracker still on; only done runs."""
        if not self.tools or record.get("status") != "done":
            return
        trackers = self._open()
        for tool in list(trackers):
            try:
                trackers[tool].log_run(record)
                self.logged[tool] += 1
            except BaseException as exc:  # noqa: BLE001
                if isinstance(exc, KeyboardInterrupt):
                    raise
                del trackers[tool]
                self._fail(tool, exc)

    def where(self, tool: str) -> str:
        """Where ``tool`` logs, in words."""
        if tool == "tensorboard":
            return f"{self.out}/<run_id>/tensorboard/"
        if tool == "mlflow":
            return self.uri or default_mlflow_uri(self.out)
        return f"{self.out}/wandb/ (offline)"

    def summary(self) -> str:
        """One line: how many runs each tracker logged, and where."""
        return "Logged: " + "; ".join(
            f"{tool}: {self.logged[tool]} runs to {self.where(tool)}" + (" (then off)" if tool in self.off else "")
            for tool in self.tools)

    def close(self) -> None:
        for tool, tracker in list((self.open or {}).items()):
            try:
                tracker.close()
            except Exception as exc:  # noqa: BLE001
                self._fail(tool, exc)
        self.open = {} if self.open is not None else None
