"""Per-run locks of a results folder, so that several ``clbench run`` on one folder share the
work and never run one run twice at the same time.

A run is locked by ``flock`` on ``<root>/.locks/<run_id>.lock`` for as long as a process runs
it; the file holds the pid of its holder, for messages. The kernel drops a ``flock`` when its
process dies, ``kill -9`` included, so a lock never outlives a crash. The lock files stay
(removing a lock file that another process may be opening is racy); they are empty of meaning
when unlocked. Where ``fcntl`` does not exist (Windows) every lock is granted at once.
"""

from __future__ import annotations

import os
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover (not POSIX)
    fcntl = None


class RunLocks:
    """The locks this process holds on the runs of one results folder."""

    def __init__(self, root: str | Path):
        self.dir = Path(root) / ".locks"
        self._held: dict[str, int] = {}

    def _open(self, run_id: str) -> int:
        self.dir.mkdir(parents=True, exist_ok=True)
        return os.open(self.dir / f"{run_id}.lock", os.O_RDWR | os.O_CREAT, 0o644)

    def try_acquire(self, run_id: str) -> bool:
        """Lock ``run_id`` if no process holds it; False when another one does."""
        if run_id in self._held:
            return True
        fd = self._open(run_id)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._held[run_id] = fd
        return True

    def wait(self, run_id: str) -> None:
        """Block until no other process holds ``run_id``; does not keep the lock."""
        if run_id in self._held or fcntl is None:
            return
        fd = self._open(run_id)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
        finally:
            os.close(fd)  # closing drops the lock

    def holder(self, run_id: str) -> int | None:
        """The pid written by the last holder of ``run_id`` (None if unknown)."""
        try:
            text = (self.dir / f"{run_id}.lock").read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            return None
        return int(text) if text.isdigit() else None

    def release(self, run_id: str) -> None:
        fd = self._held.pop(run_id, None)
        if fd is not None:
            os.close(fd)

    def release_all(self) -> None:
        for run_id in list(self._held):
            self.release(run_id)
