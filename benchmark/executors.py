"""Where runs execute: in this process, in local worker processes, or as Ray tasks
(:mod:`benchmark.ray_executor`, which shares this module's contract and run helpers).

Every executor takes its runs from a :class:`Source` one at a time, as it has room for one
(so that another ``clbench run`` on the same folder can take the others), and calls
``on_result(record)`` in the driver process as each run finishes, so the driver alone writes
the store, whichever machine trained the run.

A worker that dies (killed, out of memory, ``os._exit`` in a plugin) costs its own run alone:
local workers run one run at a time each in a pool of their own, and a run is started once
more in a fresh worker (under Ray, from its last checkpoint). A run whose worker dies twice is recorded as failed, with the reason (the signal or the
exit status); the others go on. This holds for ``--jobs 1`` too: the run goes to one child
process unless ``in_process`` asks for the old way (debugging: breakpoints, no pickling).

Local workers start from a fork server (``multiprocessing``'s forkserver method) that has imported
torch, Avalanche and the suite once (:data:`PRELOAD`), so a new worker costs milliseconds, not
the seconds of a fresh interpreter; each worker takes the driver's environment and working
folder as the sweep starts. Workers are reused from run to run (a run handed to a warm worker
costs well under a millisecond), except after a failed run: a run that failed may have left its
process in any state (a lowered memory limit, a plugin's half-done global), so its worker is
retired and the next run gets a fresh one.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import traceback
from collections import Counter, deque
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Protocol

from benchmark import faults
from benchmark.config import RunSpec
from benchmark.messages import first_line

OnResult = Callable[[dict[str, Any]], None]
OnProgress = Callable[[RunSpec, int, int], None]
EXECUTORS = ("local", "ray")
ATTEMPTS = 2  # a run whose worker dies is tried once more, then recorded as failed
# imported once by the fork server that starts local workers, so that a worker starts in
# milliseconds instead of importing torch and Avalanche anew (about 2 s)
PRELOAD = ("torch", "avalanche.training", "strategies", "scenarios", "benchmark.runner")


class Source(Protocol):
    """Where an executor takes its runs from."""

    def take(self, *, wait: bool) -> RunSpec | None:
        """The next run to execute. None: no run is left (with ``wait``), or none can be taken
        now (without ``wait``: ask again when a run in flight has finished)."""


class ListSource:
    """A :class:`Source` over a fixed list of specs."""

    def __init__(self, specs: Iterable[RunSpec]):
        self._specs = deque(specs)

    def take(self, *, wait: bool) -> RunSpec | None:
        return self._specs.popleft() if self._specs else None


def _source(specs: Source | Iterable[RunSpec]) -> Source:
    return specs if hasattr(specs, "take") else ListSource(specs)


class _Worker:
    """What a local worker process keeps from its start: where to send progress reports
    (``(run_id, tasks done, tasks)`` on a queue the driver reads), or None."""

    progress: Any = None


def prepare_worker(plugin_files: tuple[str, ...], threads: int | None, driver: Any = None,
                    progress: Any = None, environ: dict[str, str] | None = None, cwd: str | None = None) -> None:
    """Make a fresh worker ready: the driver's environment and working folder (``environ``,
    ``cwd``: a forkserver's child starts with the server's), torch's thread pool sized, the
    user's plugin files loaded; with ``driver`` (the read end of a pipe whose only write end
    the driver holds), the worker ends when the driver is gone, however it ended (a driver
    killed with -9 leaves no worker behind; its parent's pid cannot say so, since a worker's
    parent is the fork server, which itself waits for its workers); with ``progress`` (a
    multiprocessing queue), each finished task is reported there."""
    import torch

    import strategies

    if environ is not None:
        os.environ.clear()
        os.environ.update(environ)
    if cwd is not None:
        os.chdir(cwd)
    _Worker.progress = progress
    if driver is not None:
        threading.Thread(target=_exit_with_driver, args=(driver,), name="clbench-driver-watch", daemon=True).start()
    if threads:
        torch.set_num_threads(threads)
    for f in plugin_files:
        strategies.load_plugin(f)


def _exit_with_driver(driver: Any) -> None:
    """Wait for end-of-file on the driver's pipe (the driver never writes to it), then end."""
    try:
        driver.recv()
    except (EOFError, OSError):
        pass
    os._exit(1)


def _run_one(spec: RunSpec, progress: Callable[[int, int], None] | None,
             checkpoint_dir: Path | None) -> dict[str, Any]:
    """``run_one``, with ``checkpoint_dir`` passed only when set, and a failed record where
    a strategy or plugin ends the run with something that is not an Exception (sys.exit)."""
    from benchmark.runner import run_one

    kwargs: dict[str, Any] = {"progress": progress}
    if checkpoint_dir is not None:
        kwargs["checkpoint_dir"] = checkpoint_dir
    try:
        return run_one(spec, **kwargs)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 (SystemExit from a plugin must not end the sweep)
        return _failed(spec, exc, what="run ended abnormally")


def _worker_run(spec: RunSpec, checkpoint_dir: Path | None = None) -> dict[str, Any]:
    def progress(done: int, total: int) -> None:
        if done:
            faults.reach("task-done")
        if _Worker.progress is not None:
            _Worker.progress.put((spec.run_id, done, total))

    return _run_one(spec, progress, checkpoint_dir)


def _failed(spec: RunSpec, exc: BaseException, *, what: str = "worker lost") -> dict[str, Any]:
    """The record of a run that could not return a result of its own."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    first = first_line(exc) or "no message"
    return _record(spec, f"{type(exc).__name__}: {what} ({first})\n{text}")


def _died(spec: RunSpec, exc: BaseException, *, attempts: int, cause: str) -> dict[str, Any]:
    """The record of a run whose worker died on every attempt."""
    first = first_line(exc)
    return _record(spec, f"WorkerDied: worker died while running this run ({cause}), on each of {attempts} "
                         f"attempts; the other runs went on\n{type(exc).__name__}: {first}")


def _record(spec: RunSpec, error: str) -> dict[str, Any]:
    return {"run_id": spec.run_id, "status": "failed", "strategy": spec.strategy, "scenario": spec.scenario,
            "seed": spec.seed, "config": spec.to_dict(), "error": error}


def run_local(specs: Source | Iterable[RunSpec], *, jobs: int, plugin_files: Iterable[str], on_result: OnResult,
              on_progress: OnProgress | None = None,
              checkpoint_dir: Callable[[RunSpec], Path | None] | None = None, in_process: bool = False) -> None:
    """Run the specs in ``jobs`` spawned worker processes, one pool of one worker each, so
    that a worker's death is charged to its own run; with ``in_process`` (``jobs`` 1 only),
    here in this process, one after the other."""
    source = _source(specs)
    where = checkpoint_dir or (lambda spec: None)
    if in_process:
        if jobs != 1:
            raise ValueError(f"in_process runs one run at a time; got jobs={jobs}")
        while (spec := source.take(wait=True)) is not None:
            def progress(done, total, s=spec):
                if done:
                    faults.reach("task-done")
                if on_progress:
                    on_progress(s, done, total)

            on_result(_run_one(spec, progress, where(spec)))
        return
    _run_pool(source, jobs=max(1, jobs), plugin_files=tuple(plugin_files), on_result=on_result, where=where,
              on_progress=on_progress)


def start_fork_server() -> None:
    """Start the fork server of the local workers now, without waiting for it: it imports
    :data:`PRELOAD` (seconds) in its own process while this one reads and checks the config."""
    import multiprocessing
    from multiprocessing import forkserver

    if _start_method() != "forkserver":  # no fork server on this platform (Windows): plain spawn
        return
    multiprocessing.get_context("forkserver").set_forkserver_preload(list(PRELOAD))
    forkserver.ensure_running()


def _start_method() -> str:
    import multiprocessing

    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


def _run_pool(source: Source, *, jobs: int, plugin_files: tuple[str, ...], on_result: OnResult,
              where: Callable[[RunSpec], Path | None], on_progress: OnProgress | None = None) -> None:
    import multiprocessing

    threads = max(1, (os.cpu_count() or 1) // jobs)
    start_fork_server()
    ctx = multiprocessing.get_context(_start_method())
    progress = ctx.SimpleQueue() if on_progress else None
    watch, alive = ctx.Pipe(duplex=False)  # closed when this process ends: the workers end with it
    idle: list[ProcessPoolExecutor] = []
    inflight: dict[Future, tuple[RunSpec, ProcessPoolExecutor, list]] = {}
    retry: deque[RunSpec] = deque()
    deaths: Counter[str] = Counter()
    clean = False
    try:
        while True:
            while len(inflight) < jobs:
                spec = retry.popleft() if retry else source.take(wait=not inflight)
                if spec is None:
                    break
                pool = idle.pop() if idle else ProcessPoolExecutor(
                    max_workers=1, mp_context=ctx, initializer=prepare_worker,
                    initargs=(plugin_files, threads, watch, progress, dict(os.environ), os.getcwd()))
                future = pool.submit(_worker_run, spec, where(spec))
                inflight[future] = (spec, pool, _processes(pool))
            if not inflight:
                break
            finished, _ = wait(inflight, timeout=0.25 if progress else None, return_when=FIRST_COMPLETED)
            if progress is not None:
                _relay_progress(progress, {s.run_id: s for s, _, _ in inflight.values()}, on_progress)
            for future in finished:
                spec, pool, procs = inflight.pop(future)
                try:
                    record = future.result()
                except BrokenProcessPool as exc:  # its worker died: killed, out of memory
                    cause = _cause(procs)
                    _stop(pool)
                    deaths[spec.run_id] += 1
                    if deaths[spec.run_id] < ATTEMPTS:
                        retry.append(spec)
                        continue
                    record = _died(spec, exc, attempts=deaths[spec.run_id], cause=cause)
                except Exception as exc:  # noqa: BLE001 (the result could not come back: pickling)
                    record = _failed(spec, exc)
                if record.get("status") == "done":
                    idle.append(pool)
                else:  # the failed run may have left its worker in any state: a fresh one for the next
                    pool.shutdown(wait=False)
                on_result(record)
        clean = True
    finally:
        for pool in idle + [p for _, p, _ in inflight.values()]:
            if clean:
                pool.shutdown(wait=True)
            else:  # an error or an interrupt: the runs in flight are abandoned, not awaited
                _stop(pool)
        alive.close()
        watch.close()


def _relay_progress(queue: Any, running: dict[str, RunSpec], on_progress: OnProgress) -> None:
    """Pass the workers' task reports waiting on ``queue`` to ``on_progress``."""
    while not queue.empty():
        run_id, done, total = queue.get()
        if run_id in running:
            on_progress(running[run_id], done, total)


def _processes(pool: ProcessPoolExecutor) -> list:
    """The worker processes of ``pool`` (private to concurrent.futures: [] if it changes)."""
    return list((getattr(pool, "_processes", None) or {}).values())


def _stop(pool: ProcessPoolExecutor) -> None:
    """Shut ``pool`` down now, killing its workers."""
    procs = _processes(pool)
    pool.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        try:
            p.kill()
        except (OSError, ValueError, AttributeError):
            pass


def _cause(procs: list) -> str:
    """How the worker of a broken one-worker pool ended (it may still be being reaped)."""
    for p in procs:
        try:
            p.join(timeout=2)
        except (OSError, ValueError, AssertionError, AttributeError):
            pass
    code = None
    for _ in range(40):  # the pool's own thread may be reaping it: its exit code shows up a moment later
        code = next((c for c in (getattr(p, "exitcode", None) for p in procs) if c is not None), None)
        if code is not None or not procs:
            break
        time.sleep(0.05)
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name}{', e.g. by the out-of-memory killer' if name == 'SIGKILL' else ''}"
    if code is not None:
        return f"exit status {code}"
    return "killed by a signal or out of memory"
