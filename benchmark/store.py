"""The results store: one folder per run with an atomically written ``run.json``, and a
``summary.csv`` rebuilt from those folders alone.

A record is trusted only when it is whole and well formed (:func:`problem`): a truncated,
hand-edited or half-written ``run.json`` is reported as a :class:`BadRecord`, never read as a
result. Temporary files carry their writer's pid (``.<name>.<pid>.<random>.tmp``), so that the
leftovers of a killed writer can be told from a live writer's and removed
(:func:`remove_stale_temps`).
"""

from __future__ import annotations

import csv
import errno
import io
import json
import math
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from benchmark import faults
from benchmark.metric_names import METRICS, TIMINGS

# section / config: labels of the run's configuration group (benchmark.groups), which tell the
# rows of different settings apart; section_id / config_id: the groups' stable keys
GROUP_COLUMNS = ("section", "config", "section_id", "config_id")
SUMMARY_COLUMNS = ("run_id", "scenario", "strategy", "seed", "status", *GROUP_COLUMNS, *METRICS, *TIMINGS,
                   "peak_rss_mb", "error")
STATUSES = ("done", "failed")
CONFIGS_FOLDER = "configs"  # <root>/configs/<name>.yaml: every config a sweep in the folder ran (benchmark.sweep)
_TEMP = re.compile(r"^\..+\.(\d+)\.[A-Za-z0-9_]+\.tmp$")


class StoreWriteError(OSError):
    """A file of the store could not be written (disk full, no permission): one line that
    names the file."""

    def __str__(self) -> str:
        return str(self.strerror)


def _clean(obj: Any) -> Any:
    """NaN and infinities become null: missing values stay missing, and the file stays JSON.
    NumPy scalars and arrays and torch tensors (a plugin's extra metrics) become plain numbers
    and lists."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if not isinstance(obj, (str, int, float, bool, type(None))) and callable(getattr(obj, "tolist", None)):
        return _clean(obj.tolist())
    return obj


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write ``data`` (text is UTF-8) to ``path`` through a temporary file in the same folder,
    flushed to disk, then renamed over ``path``: a reader sees the old file or the whole new
    one, never a part. A failed write leaves no temporary file and raises
    :class:`StoreWriteError`."""
    path = Path(path)
    blob = data.encode("utf-8") if isinstance(data, str) else data
    tmp = None
    try:
        _reach("before-write", path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; results are meant to be shared like any file
        with os.fdopen(fd, "wb") as f:
            half = len(blob) // 2
            f.write(blob[:half])
            f.flush()
            _reach("mid-write", path)
            f.write(blob[half:])
            f.flush()
            os.fsync(f.fileno())
        _reach("before-rename", path)
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise _write_error(path, exc) from exc
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    _reach("after-rename", path)
    try:
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def write_if_changed(path: Path, data: str | bytes) -> bool:
    """:func:`write_atomic`, unless ``path`` already holds exactly ``data`` (then nothing is
    written, so a rerun that changes nothing also works on a read-only folder). Returns whether
    it wrote."""
    blob = data.encode("utf-8") if isinstance(data, str) else data
    try:
        if path.is_file() and path.stat().st_size == len(blob) and path.read_bytes() == blob:
            return False
    except OSError:
        pass
    write_atomic(path, data)
    return True


def _reach(point: str, path: Path) -> None:
    faults.reach(point)
    faults.reach(f"{point}@{path.name}")


def _write_error(path: Path, exc: OSError) -> StoreWriteError:
    if isinstance(exc, StoreWriteError):
        return exc
    reason = exc.strerror or str(exc) or type(exc).__name__
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        text = (f"disk full while writing {path} ({reason}); free some space and rerun the same command: "
                "finished runs are kept")
    else:
        text = f"cannot write {path}: {reason}"
    return StoreWriteError(exc.errno, text)


def remove_stale_temps(folder: Path) -> list[Path]:
    """Remove the temporary files in ``folder`` left by writers that died (their pid is gone);
    a live writer's are kept. Returns what was removed."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for e in entries:
        m = _TEMP.match(e.name)
        if m and not pid_alive(int(m.group(1))):
            try:
                os.unlink(e.path)
                removed.append(Path(e.path))
            except OSError:
                pass
    return removed


def pid_alive(pid: int) -> bool:
    """Whether the process ``pid`` of this machine still runs (this one does)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


@dataclass(frozen=True)
class BadRecord:
    """A run folder whose run.json cannot be read or is not a whole, well-formed record."""

    path: Path
    reason: str

    @property
    def run_id(self) -> str:
        return self.path.parent.name


def problem(rec: Any, run_id: str | None = None) -> str | None:
    """Why ``rec`` is not a well-formed run record of DESIGN.md (one line), or None. Extra
    fields are allowed; missing or mistyped ones are not, nor a done run without a square
    accuracy matrix of accuracies in [0, 1]."""
    if not isinstance(rec, dict):
        return f"not a run record (a JSON {type(rec).__name__}, not an object)"
    for key in ("run_id", "status", "strategy", "scenario"):
        if not isinstance(rec.get(key), str) or not rec.get(key):
            return f"not a run record (no {key})" if key not in rec else f"'{key}' is not a non-empty string"
    if run_id is not None and rec["run_id"] != run_id:
        return f"run_id {rec['run_id']!r} is not its folder's name {run_id!r}"
    if rec["status"] not in STATUSES:
        return f"status {rec['status']!r} is not one of {', '.join(STATUSES)}"
    if not isinstance(rec.get("seed"), int) or isinstance(rec.get("seed"), bool):
        return "'seed' is not an integer"
    for key in ("config", "metrics", "timing"):
        if key in rec and rec[key] is not None and not isinstance(rec[key], dict):
            return f"'{key}' is not an object"
    for key in METRICS:  # a strategy's own extra metrics may be anything JSON
        value = (rec.get("metrics") or {}).get(key)
        if value is not None and not _number(value):
            return f"metric '{key}' is not a number"
    if rec["status"] == "failed":
        return None if isinstance(rec.get("error"), str) else "a failed run without an 'error' message"
    if not isinstance(rec.get("metrics"), dict):
        return "a done run without 'metrics'"
    m = rec.get("acc_matrix")
    if not isinstance(m, list) or not m:
        return "a done run without an 'acc_matrix'"
    t = len(m)
    if not all(isinstance(row, list) and len(row) == t for row in m):
        lengths = ", ".join(str(len(row)) if isinstance(row, list) else type(row).__name__ for row in m)
        return f"'acc_matrix' is not square: {t} rows of lengths {lengths}"
    if not all(_number(a) and 0.0 <= a <= 1.0 for row in m for a in row):
        return "'acc_matrix' holds a value that is not an accuracy in [0, 1]"
    b = rec.get("random_init_acc")
    if not isinstance(b, list) or len(b) != t or not all(_number(a) and 0.0 <= a <= 1.0 for a in b):
        return f"'random_init_acc' is not a list of {t} accuracies"
    if "n_tasks" in rec and rec["n_tasks"] != t:
        return f"'n_tasks' is {rec['n_tasks']!r} but 'acc_matrix' has {t} rows"
    return _metrics_disagree(rec["metrics"], m, b) or _curves_disagree(rec)


def _curves_disagree(rec: dict[str, Any]) -> str | None:
    """Malformed continual-evaluation curves, or a curve metric that is not what they give (one
    line), or None (also for a record without curves)."""
    curves = rec.get("curves")
    if curves is None:
        return None
    from benchmark.stream_metrics import Curves, curve_metrics

    try:
        parsed = Curves.from_record(curves)
        computed = curve_metrics(parsed, curves.get("online"))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        return f"'curves' is malformed ({exc})"
    if not all(a is None or (_number(a) and 0.0 <= a <= 1.0) for row in parsed.acc for a in row):
        return "'curves' holds a value that is not an accuracy in [0, 1]"
    stored = rec.get("metrics") or {}
    for key, value in computed.items():
        if value is None:
            continue
        if not _number(stored.get(key)) or not math.isclose(stored[key], value, rel_tol=1e-9, abs_tol=1e-12):
            return (f"metric '{key}' is {stored.get(key)!r} but its curves give {value:.6g}; "
                    "the record was edited or damaged")
    return None


def _metrics_disagree(stored: dict[str, Any], acc_matrix: list, random_init: list) -> str | None:
    """A standard metric of a done record that is not what its accuracy matrix gives (one
    line), or None. The report and the summary read the stored metrics, so a hand-edited or
    damaged value (``acc: 1e308``) would be shown as measured; such a record is refused like any
    other malformed one. A metric stored as null stays missing (joint training leaves LA, BWT,
    FWT and forgetting undefined)."""
    from benchmark.metrics import all_metrics

    computed = all_metrics(acc_matrix, random_init)
    for key in METRICS:
        value = stored.get(key)
        if value is None or key not in computed or not math.isfinite(computed[key]):
            continue
        if not math.isclose(value, computed[key], rel_tol=1e-9, abs_tol=1e-12):
            return (f"metric '{key}' is {value!r} but its accuracy matrix gives {computed[key]:.6g}; "
                    "the record was edited or damaged")
    return None


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


class RunStore:
    """Run records under one output folder: ``<root>/<run_id>/run.json``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, run_id: str) -> Path:
        if not run_id or "/" in run_id or "\\" in run_id or run_id.startswith(".") or "\0" in run_id:
            raise ValueError(f"unsafe run id {run_id!r}")
        return self.root / run_id / "run.json"

    def folder(self, run_id: str) -> Path:
        """The folder of ``run_id``, created if needed."""
        folder = self.path(run_id).parent
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def load(self, run_id: str) -> dict[str, Any] | BadRecord | None:
        """The record of ``run_id``; a BadRecord when its run.json is unreadable or malformed;
        None when there is none."""
        return _checked(self.path(run_id))

    def read(self, run_id: str) -> dict[str, Any] | None:
        """The record of ``run_id``, or None when there is none or it is unreadable."""
        rec = self.load(run_id)
        return rec if isinstance(rec, dict) else None

    def is_done(self, run_id: str) -> bool:
        rec = self.read(run_id)
        return bool(rec) and rec.get("status") == "done"

    def write(self, record: dict[str, Any]) -> Path:
        """Store ``record`` atomically. A record that cannot be JSON raises TypeError and
        writes nothing."""
        path = self.path(record["run_id"])
        write_atomic(path, json.dumps(_clean(record), indent=1, allow_nan=False) + "\n")
        return path

    def set_aside(self, run_id: str) -> Path:
        """Rename a bad run.json to ``run.json.corrupt-<UTC time>`` (kept as evidence, never
        read as a record) and return the new path."""
        path = self.path(run_id)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        target = path.with_name(f"{path.name}.corrupt-{stamp}")
        n = 1
        while target.exists():
            n += 1
            target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
        os.replace(path, target)
        return target

    def remove_stale_temps(self) -> list[Path]:
        """Remove temporary files of dead writers in the root and in every run folder."""
        removed = remove_stale_temps(self.root)
        if self.root.is_dir():
            for d in self.root.iterdir():
                if d.is_dir() and not d.name.startswith("."):
                    removed += remove_stale_temps(d)
        return removed

    def scan(self) -> tuple[list[dict[str, Any]], list[BadRecord]]:
        """Every well-formed record, and the run folders whose run.json is not."""
        good, bad = [], []
        if not self.root.is_dir():
            return good, bad
        for d in sorted(self.root.iterdir()):
            if d.name.startswith(".") or not d.is_dir():
                continue
            rec = _checked(d / "run.json")
            if isinstance(rec, BadRecord):
                bad.append(rec)
            elif rec is not None:
                good.append(rec)
        return good, bad

    def records(self) -> Iterator[dict[str, Any]]:
        yield from self.scan()[0]

    def write_summary(self, records: list[dict[str, Any]] | None = None) -> Path:
        """Rebuild ``summary.csv``: one row per run, from the run folders alone (or from
        ``records``, already scanned from them), with the run's configuration group labelled
        against the other runs of the folder."""
        from benchmark.groups import groups

        records = list(self.records() if records is None else records)
        found = groups(records)
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=SUMMARY_COLUMNS, lineterminator="\n")
        w.writeheader()
        for rec in records:
            w.writerow(summary_row(rec, found.get(str(rec.get("run_id")))))
        path = self.root / "summary.csv"
        write_if_changed(path, buf.getvalue())
        return path


def summary_row(rec: dict[str, Any], group: Any = None) -> dict[str, Any]:
    """The summary.csv row of one record (empty cells where a value is missing). ``group`` is
    the record's :class:`benchmark.groups.Group` among the records of its folder; without it,
    the record is labelled on its own."""
    if group is None:
        from benchmark.groups import groups

        group = groups([rec]).get(str(rec.get("run_id")))
    m = rec.get("metrics") or {}
    t = rec.get("timing") or {}
    row = {k: rec.get(k) for k in ("run_id", "scenario", "strategy", "seed", "status")}
    row.update(section=group.section, config=group.config, section_id=group.section_id, config_id=group.config_id)
    row.update({k: m.get(k) for k in METRICS})
    row.update({k: t.get(k) for k in TIMINGS})
    row["peak_rss_mb"] = rec.get("peak_rss_mb")
    row["error"] = (rec.get("error") or "").split("\n")[0]
    return {k: ("" if v is None else v) for k, v in row.items()}


def _checked(path: Path) -> dict[str, Any] | BadRecord | None:
    rec = _load(path)
    if rec is None or isinstance(rec, BadRecord):
        return rec
    why = problem(rec, path.parent.name)
    return BadRecord(path, why) if why else rec


def _load(path: Path) -> Any:
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        return BadRecord(path, "is a folder, not a file")
    except OSError as exc:
        return BadRecord(path, f"{type(exc).__name__}: {exc.strerror or exc}")
    try:
        return json.loads(text.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return BadRecord(path, f"UnicodeDecodeError: {exc}")
    except json.JSONDecodeError as exc:
        what = "empty file" if not text.strip() else f"JSONDecodeError: {exc}"
        return BadRecord(path, what)
