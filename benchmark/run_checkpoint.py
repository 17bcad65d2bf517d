"""Checkpoints of one run (:func:`benchmark.runner.run_one` with a ``checkpoint_dir``).

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
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from benchmark.config import RunSpec
from benchmark.messages import error_line
from benchmark.store import write_atomic
from strategies import checkpoint as strategy_checkpoint

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
            self.warn(f"checkpoint ignored, starting from task 0: it cannot be read ({one_line(exc)})")
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


def one_line(exc: BaseException) -> str:
    """``exc`` as one line: its type and the first line of its message (300 characters at most)."""
    return error_line(exc)[:300]


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


def save_checkpoint(ckpt: Checkpoints, spec: RunSpec, strategy, n_tasks: int, rows: list[list[float]],
                    random_init: list[float], train_s: float, eval_s: float,
                    measured: dict[str, Any] | None = None) -> None:
    """Everything needed to continue after task ``len(rows) - 1`` exactly (``measured``: what the
    harness counted during training so far, JSON-like). A strategy whose
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
            "measured": measured or {},
            "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        ckpt.save(payload)
    except strategy_checkpoint.NotCheckpointable as exc:
        ckpt.disable(f"strategy '{spec.strategy}' is not checkpointed after task {len(rows) - 1}: {exc}")
    except Exception as exc:  # noqa: BLE001 (a checkpoint that cannot be written must not fail the run)
        ckpt.disable(f"checkpointing stopped after task {len(rows) - 1}: {one_line(exc)}")
