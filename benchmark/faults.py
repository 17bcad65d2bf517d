"""Opt-in fault injection, for the crash-safety tests: the environment variable
``CLBENCH_FAULT=POINT:COUNT[:ACTION][,...]`` makes a process fail on purpose the COUNT-th
time it reaches the named point (counted per process, from 1).

ACTION is ``kill`` (default: the process sends itself SIGKILL, like ``kill -9`` or the
out-of-memory killer) or ``enospc`` (``OSError(ENOSPC)`` is raised there, like a full disk).
The write points may name one file: ``mid-write@run.json:2`` fires on the second write of a
file called ``run.json`` (``mid-write:2`` on the second write of any file). Example::

    CLBENCH_FAULT=mid-write@run.json:3 clbench run configs/quickstart.yaml   # dies writing run 3

Unset (as always outside tests) :func:`reach` does nothing but read the variable.
"""

from __future__ import annotations

import errno
import os
import signal

ENV = "CLBENCH_FAULT"
POINTS = {
    "sweep-start": "a sweep has begun (experiment.yaml written), before any run",
    "task-done": "a task of a run is trained and evaluated (in the process that trains it)",
    "before-write": "an atomic write starts, before its temporary file exists",
    "mid-write": "the temporary file holds half of the data, before the rest, fsync and rename",
    "before-rename": "the temporary file is complete and on disk, before the rename",
    "after-rename": "the file is in place, before the folder is synced",
    "after-record": "a run's record is stored (between runs)",
    "before-summary": "every run is over, before summary.csv is rebuilt",
    "after-summary": "summary.csv is rebuilt, before the command ends",
    "report-table": "`clbench report` wrote one scenario's tables",
    "report-plot": "`clbench report` wrote one plot",
}
ACTIONS = ("kill", "enospc")
_counts: dict[str, int] = {}


def reach(point: str) -> None:
    """Count one arrival at ``point`` and fail here if ``CLBENCH_FAULT`` asks for it."""
    spec = os.environ.get(ENV, "").strip()
    if not spec:
        return
    _counts[point] = n = _counts.get(point, 0) + 1
    for name, count, action in _parse(spec):
        if name == point and count == n:
            if action == "enospc":
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))


def reset() -> None:
    """Forget the arrivals counted so far (for tests that inject faults in their own process)."""
    _counts.clear()


def _parse(spec: str) -> list[tuple[str, int, str]]:
    found = []
    for entry in filter(None, (e.strip() for e in spec.split(","))):
        name, _, rest = entry.partition(":")
        count, _, action = rest.partition(":")
        action = action or "kill"
        if name.partition("@")[0] not in POINTS or not count.isdigit() or int(count) < 1 or action not in ACTIONS:
            raise ValueError(f"{ENV}: bad entry {entry!r}; use POINT:COUNT[:ACTION] with POINT one of "
                             f"{', '.join(POINTS)} (write points may add @FILENAME), COUNT >= 1, "
                             f"ACTION one of {', '.join(ACTIONS)}")
        found.append((name, int(count), action))
    return found
