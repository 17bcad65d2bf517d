"""The results store: one folder per run with an atomically written ``run.json``, and a
``summary.csv`` rebuilt from those folders alone."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

METRICS = ("acc", "la", "bwt", "fwt", "forgetting")
TIMINGS = ("train_s", "eval_s", "eval_share", "iterations", "inner_steps")
SUMMARY_COLUMNS = ("run_id", "scenario", "strategy", "seed", "status", *METRICS, *TIMINGS, "peak_rss_mb", "error")


def _clean(obj: Any) -> Any:
    """NaN and infinities become null: missing values stay missing, and the file stays JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write ``data`` (text is UTF-8) to ``path`` through a temporary file in the same folder,
    flushed to disk, then renamed over ``path``: a reader sees the old file or the whole new
    one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


@dataclass(frozen=True)
class BadRecord:
    """A run folder whose run.json cannot be read."""

    path: Path
    reason: str


class RunStore:
    """Run records under one output folder: ``<root>/<run_id>/run.json``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, run_id: str) -> Path:
        if not run_id or "/" in run_id or "\\" in run_id or run_id.startswith(".") or "\0" in run_id:
            raise ValueError(f"unsafe run id {run_id!r}")
        return self.root / run_id / "run.json"

    def read(self, run_id: str) -> dict[str, Any] | None:
        """The record of ``run_id``, or None when there is none or it is unreadable."""
        rec = _load(self.path(run_id))
        return rec if isinstance(rec, dict) else None

    def is_done(self, run_id: str) -> bool:
        rec = self.read(run_id)
        return bool(rec) and rec.get("status") == "done"

    def write(self, record: dict[str, Any]) -> Path:
        path = self.path(record["run_id"])
        write_atomic(path, json.dumps(_clean(record), indent=1, allow_nan=False) + "\n")
        return path

    def scan(self) -> tuple[list[dict[str, Any]], list[BadRecord]]:
        """Every readable record, and the run folders whose run.json is not."""
        good, bad = [], []
        if not self.root.is_dir():
            return good, bad
        for d in sorted(self.root.iterdir()):
            p = d / "run.json"
            if not d.is_dir() or d.name.startswith("."):
                continue
            if not p.exists():
                continue
            rec = _load(p)
            if isinstance(rec, BadRecord):
                bad.append(rec)
            elif not isinstance(rec, dict) or "status" not in rec or "run_id" not in rec:
                bad.append(BadRecord(p, "not a run record (no status or run_id)"))
            else:
                good.append(rec)
        return good, bad

    def records(self) -> Iterator[dict[str, Any]]:
        yield from self.scan()[0]

    def write_summary(self) -> Path:
        """Rebuild ``summary.csv``: one row per run, from the run folders alone."""
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=SUMMARY_COLUMNS, lineterminator="\n")
        w.writeheader()
        for rec in self.records():
            w.writerow(summary_row(rec))
        path = self.root / "summary.csv"
        write_atomic(path, buf.getvalue())
        return path


def summary_row(rec: dict[str, Any]) -> dict[str, Any]:
    """The summary.csv row of one record (empty cells where a value is missing)."""
    m = rec.get("metrics") or {}
    t = rec.get("timing") or {}
    row = {k: rec.get(k) for k in ("run_id", "scenario", "strategy", "seed", "status")}
    row.update({k: m.get(k) for k in METRICS})
    row.update({k: t.get(k) for k in TIMINGS})
    row["peak_rss_mb"] = rec.get("peak_rss_mb")
    row["error"] = (rec.get("error") or "").split("\n")[0]
    return {k: ("" if v is None else v) for k, v in row.items()}


def _load(path: Path) -> dict[str, Any] | BadRecord | None:
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return BadRecord(path, f"{type(exc).__name__}: {exc}")
