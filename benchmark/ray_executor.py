"""Runs as Ray tasks, on a local Ray instance or on a cluster whose nodes share no disk with the driver.

On a cluster (``address``) a worker never reads or writes a path of the driver. What it needs
travels with the job:

- in Ray's runtime environment, set when this module opens the connection (``ray.init``): the
  suite's own packages (``py_modules``: workers run the driver's code of the suite; torch,
  Avalanche and the other dependencies must be installed on every node), the ``--plugin`` files
  and the ``npz`` data files that the config names by a relative path below the driver's
  working folder (``working_dir``: a worker's working folder is Ray's copy of it, so the same
  relative path finds the copy; a relative path leaving the folder is refused), and
  ``CLBENCH_FAULT`` when set (the fault-injection tests);
- in each task's arguments: the run's resolved spec (the config, nothing read from a file)
  and the run's last checkpoint, when the driver holds one.

What comes back, streamed as the run goes (one Ray generator task per run): progress after every
task, each checkpoint as the run saves it (the driver writes it in the run's folder, where the
local executor's runs write theirs), and the record. The run itself checkpoints into a
temporary folder of its own worker (removed when the task ends, or by the next task on that
node when its worker was killed). So a run whose worker dies (killed, out of memory, its node
lost) is started again once from the last checkpoint the driver received, and a sweep
interrupted and run again resumes its runs the same way. A task that fails before its run can
(a plugin that does not load on the worker, a missing package) is recorded failed with its
error. A run on ``cuda`` (or ``auto`` on a cluster with GPUs) asks Ray for a GPU of its own.

Not shipped: data that a worker reads from its own disk (torchvision sources under its own
``CLBENCH_DATA_ROOT``, an ``npz`` file named by an absolute path, files a plugin stream's
builder opens), and a plugin file's neighbours (a plugin that imports a module next to it needs
that module installed on the workers).

A local instance (no ``address``) and a Ray connection opened by the caller (``ray.init``
before the sweep, used as it is, ``address`` ignored) run on this machine's disk: their
workers load the plugin files from their absolute paths and read data as local workers do.

Ray 2.60 and authentication (its ``authentication_token_setup.py``): ``ray start --head``
turns token authentication on when a token exists on the head's machine (``~/.ray/auth_token``,
``RAY_AUTH_TOKEN`` or ``RAY_AUTH_TOKEN_PATH``; a local ``ray.init()`` writes one) and
``RAY_AUTH_MODE`` is unset; a driver connecting to an address never turns it on by itself, so
it sets ``RAY_AUTH_MODE=token`` and finds the cluster's token in one of those places. A refused
connection is one line saying so (:func:`connect`).
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import shutil
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from benchmark import faults
from benchmark.config import RunSpec
from benchmark.executors import (
    ATTEMPTS,
    OnProgress,
    OnResult,
    Source,
    _died,
    _failed,
    _run_one,
    _source,
    prepare_worker,
)
from benchmark.messages import first_line
from benchmark.store import pid_alive, write_atomic
from benchmark.usage import UsageError

PACKAGES = ("benchmark", "scenarios", "strategies")  # the suite's own code, shipped to every worker
EXCLUDES = ["__pycache__", "*.pyc", "*.nbi", "*.nbc"]  # caches (numba's are megabytes): rebuilt where they run
PLUGINS_FOLDER = "clbench-plugins"
SCRATCH = "clbench-run-"  # a run's temporary folder on its worker: clbench-run-<pid>-<random>
SHIPPED_ENV = (faults.ENV,)  # the suite's settings that a worker reads from its environment
AUTH_HINT = ("set RAY_AUTH_MODE=token and give the cluster's token (in ~/.ray/auth_token, RAY_AUTH_TOKEN or "
             "RAY_AUTH_TOKEN_PATH), or start the cluster with RAY_AUTH_MODE=disabled on a trusted network")


def _death_errors(ray: Any) -> tuple[type[BaseException], ...]:
    """Ray's errors for a task whose worker or node went away (or the object it had made)."""
    e = ray.exceptions
    return (e.WorkerCrashedError, e.NodeDiedError, e.ObjectLostError, e.OutOfMemoryError)


class RayConnectionError(UsageError):
    """The Ray cluster at ``--address`` could not be reached or refused the connection."""


def shipped_data_files(specs: Iterable[RunSpec], *, cwd: Path | None = None) -> list[str]:
    """The ``npz`` files of ``specs`` that travel with a job to a cluster: those named by a
    relative path below ``cwd`` (the driver's working folder), as written in the config (a
    symbolic link there is followed). A relative path that leaves ``cwd`` (``../x.npz``) is
    refused in one line: a worker would look for it next to Ray's copy of the folder. An
    absolute path is read by each worker on its own disk."""
    root = cwd or Path.cwd()
    found = []
    for spec in specs:
        path = spec.scenario_params.get("path")
        if spec.scenario_params.get("source") != "npz" or not isinstance(path, str) or not path:
            continue
        p = Path(path)
        if p.is_absolute() or path.startswith("~"):
            continue
        if ".." in p.parts:
            raise UsageError(f"npz path {path!r} leaves the folder clbench runs in: a Ray cluster's workers get the "
                             "files below it; move the file below it, or give an absolute path that every node has")
        if (root / p).is_file() and path not in found:
            found.append(path)
    return found


def stage(folder: Path, *, plugin_files: Iterable[str], data_files: Iterable[str],
          cwd: Path | None = None) -> tuple[str, ...]:
    """Copy what travels in the job's working folder into ``folder``: each plugin file as
    ``clbench-plugins/<i>/<its name>`` (its name kept, so that messages name the file the user
    knows), each data file at its relative path. Returns the plugin files' paths there."""
    root = cwd or Path.cwd()
    names = []
    for i, f in enumerate(plugin_files):
        name = PurePosixPath(PLUGINS_FOLDER, str(i), Path(f).name)
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, folder / name)
        names.append(str(name))
    for rel in data_files:
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / rel, folder / rel)
    return tuple(names)


def runtime_env(folder: Path) -> dict[str, Any]:
    """The job's runtime environment: ``folder`` as its working folder, the suite's packages,
    the suite's settings from this process's environment."""
    import importlib

    modules = [str(Path(importlib.import_module(p).__file__).parent) for p in PACKAGES]
    env = {k: os.environ[k] for k in SHIPPED_ENV if k in os.environ}
    return {"working_dir": str(folder), "py_modules": modules, "excludes": list(EXCLUDES), "env_vars": env}


def connect(*, address: str, env: dict[str, Any]) -> None:
    """``ray.init`` on the cluster at ``address`` with the job's runtime environment ``env``.
    Ray's own lines are kept off the terminal meanwhile (Ray repeats a refused connection's
    warning every second for about 20 s) and a refusal is one line: :class:`RayConnectionError`
    naming the address, and what to set when the cluster asked for an authentication token."""
    import ray

    with _stderr_kept() as said:
        try:
            ray.init(log_to_driver=False, runtime_env=env, address=address)
        except Exception as exc:  # noqa: BLE001 (ConnectionError, RuntimeError, AuthenticationError: all one line)
            text = " ".join(str(e) for e in _chain(exc)) + said()
            if "InvalidAuthToken" in text or "AuthenticationError" in text or "authentication token" in text.lower():
                raise RayConnectionError(f"the Ray cluster at {address} refused the connection: its authentication "
                                         f"token is missing or incorrect; {AUTH_HINT}") from None
            if isinstance(exc, ConnectionError):
                raise RayConnectionError(f"cannot connect to the Ray cluster at {address}: {first_line(exc)}; start "
                                         "one with `ray start --head` or leave out --address for a local Ray "
                                         "instance") from None
            raise RayConnectionError(f"the Ray cluster at {address} did not take the job: {_plain(first_line(exc))}"
                                     ) from None


def _plain(text: str) -> str:
    """``text`` without terminal colour codes (Ray colours the names in its messages)."""
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


@contextlib.contextmanager
def _stderr_kept() -> Iterator[Callable[[], str]]:
    """Send what is written on file descriptor 2 (Python's and Ray's C++ logging alike) to a
    temporary file for the block; yields a function returning what was written there."""
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all: nothing to keep off it
        yield lambda: ""
        return
    with tempfile.TemporaryFile() as caught:
        try:
            sys.stderr.flush()
            os.dup2(caught.fileno(), 2)

            def said() -> str:
                caught.seek(0)
                return caught.read().decode("utf-8", "replace")

            yield said
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def run_ray(specs: Source | Iterable[RunSpec], *, address: str | None, plugin_files: Iterable[str],
            on_result: OnResult, on_progress: OnProgress | None = None, num_cpus: int | None = None,
            checkpoint_dir: Callable[[RunSpec], Path | None] | None = None,
            data_files: Iterable[str] = ()) -> None:
    """One Ray task per run, on the cluster at ``address`` or on a local Ray instance; as many
    in flight as the cluster has CPUs. ``checkpoint_dir(spec)``: the run's folder on this
    machine, where the driver keeps the run's last checkpoint; ``data_files``: the relative
    paths of :func:`shipped_data_files`. A run whose worker dies is started once more, from its
    last checkpoint, then recorded as failed."""
    try:
        import ray
    except ImportError:
        raise RuntimeError("the ray executor needs Ray: pip install 'clbench[ray]'") from None
    from benchmark.run_checkpoint import CHECKPOINT_FILE

    source = _source(specs)
    where = checkpoint_dir or (lambda spec: None)
    with _session(address=address, plugin_files=tuple(plugin_files), data_files=tuple(data_files),
                  num_cpus=num_cpus) as plugins:
        # backpressure of one object: the task's generator waits at each item until the driver took
        # it, so that a checkpoint handed over is the driver's before the run goes on
        task = ray.remote(num_cpus=1, max_retries=0, _generator_backpressure_num_objects=1)(_ray_task)
        resources = ray.cluster_resources()
        width = max(1, int(resources.get("CPU", 1)))
        has_gpu = resources.get("GPU", 0) > 0
        deaths: Counter[str] = Counter()
        retry: list[RunSpec] = []
        running: dict[Any, RunSpec] = {}

        def submit(spec: RunSpec) -> None:
            folder = where(spec)
            saved = folder / CHECKPOINT_FILE if folder is not None else None
            checkpoint = saved.read_bytes() if saved is not None and saved.is_file() else None
            # a run on cuda (or auto, where the cluster has GPUs) holds a GPU of its own, as Ray schedules them
            device = spec.train.get("device")
            gpus = 1 if device == "cuda" or (device == "auto" and has_gpu) else 0
            running[task.options(num_gpus=gpus).remote(spec, plugins, folder is not None, checkpoint)] = spec

        try:
            while True:
                while len(running) < width:
                    spec = retry.pop() if retry else source.take(wait=not running)
                    if spec is None:
                        break
                    submit(spec)
                if not running:
                    break
                ready, _ = ray.wait(list(running), num_returns=1)
                for stream in ready:
                    spec = running[stream]
                    try:
                        kind, *item = ray.get(next(stream))
                    except StopIteration:  # the task ended without its record
                        del running[stream]
                        on_result(_failed(spec, RuntimeError("its Ray task ended without returning the run's record")))
                        continue
                    except _death_errors(ray) as exc:
                        del running[stream]
                        deaths[spec.run_id] += 1
                        if deaths[spec.run_id] < ATTEMPTS:
                            retry.append(spec)
                        else:
                            on_result(_died(spec, exc, attempts=ATTEMPTS,
                                            cause="its Ray worker process exited unexpectedly"))
                        continue
                    except ray.exceptions.RayTaskError as exc:  # raised before its run could start (a plugin
                        del running[stream]  # failing to load there, a package missing): the record says what
                        cause = exc.cause if isinstance(exc.cause, BaseException) else RuntimeError(_plain(str(exc)))
                        on_result(_failed(spec, cause, what="its Ray task failed"))
                        continue
                    except Exception as exc:  # noqa: BLE001 (the task could not run or return)
                        del running[stream]
                        on_result(_failed(spec, exc))
                        continue
                    if kind == "progress" and on_progress is not None:
                        on_progress(spec, *item)
                    elif kind == "checkpoint":
                        write_atomic(where(spec) / CHECKPOINT_FILE, item[0])
                    elif kind == "record":
                        del running[stream]
                        record = item[0]
                        folder = where(spec)
                        if folder is not None and record.get("status") == "done":
                            (folder / CHECKPOINT_FILE).unlink(missing_ok=True)
                        on_result(record)
        finally:  # stopped by an error or an interrupt: the runs in flight are abandoned, not left
            for stream in running:  # running on a connection that outlives this sweep (the caller's)
                try:
                    ray.cancel(stream, force=True)
                except Exception:  # noqa: BLE001 (it ended meanwhile; an error on its way is not hidden)
                    pass


@contextlib.contextmanager
def _session(*, address: str | None, plugin_files: tuple[str, ...], data_files: tuple[str, ...],
             num_cpus: int | None) -> Iterator[tuple[str, ...]]:
    """A Ray connection for the sweep; yields the plugin files' paths as the workers see them.
    Only a cluster at ``address`` gets the staged job folder and the suite's packages; a local
    instance's workers, like the caller's connection's, load the plugin files from this disk."""
    import ray

    here = tuple(str(Path(f).resolve()) for f in plugin_files)  # for workers that see this machine's disk
    if ray.is_initialized():  # the caller's connection, with the caller's runtime environment
        yield here
        return
    if not address:  # a local instance: its workers start in this folder and see this disk, as local workers do
        # (started with the terminal as it is: its processes would keep a redirected stderr for their lifetime)
        ray.init(log_to_driver=False, num_cpus=num_cpus or os.cpu_count(), include_dashboard=False)
        try:
            yield here
        finally:
            ray.shutdown()
        return
    with tempfile.TemporaryDirectory(prefix="clbench-ray-job-") as folder:
        plugins = stage(Path(folder), plugin_files=plugin_files, data_files=data_files)
        connect(address=address, env=runtime_env(Path(folder)))
        try:
            yield plugins
        finally:
            ray.shutdown()


def _ray_task(spec: RunSpec, plugin_files: tuple[str, ...], checkpointing: bool,
              checkpoint: bytes | None) -> Iterator[tuple]:
    """The Ray task of one run (a generator: Ray streams what it yields to the driver):
    ``("progress", done, total)`` after every task, ``("checkpoint", bytes)`` after every
    checkpoint the run saved, and last ``("record", record)``. With ``checkpointing``, the run
    checkpoints into a temporary folder of this worker, starting from ``checkpoint`` if given."""
    from benchmark.run_checkpoint import CHECKPOINT_FILE

    prepare_worker(plugin_files, 1)
    _remove_dead_scratch()
    with tempfile.TemporaryDirectory(prefix=f"{SCRATCH}{os.getpid()}-") as scratch:
        folder = Path(scratch) if checkpointing else None
        if folder is not None and checkpoint is not None:
            (folder / CHECKPOINT_FILE).write_bytes(checkpoint)
        said: queue.SimpleQueue = queue.SimpleQueue()
        last = [_stamp(folder / CHECKPOINT_FILE) if folder is not None else None]

        def progress(done: int, total: int) -> None:
            if folder is not None and (stamp := _stamp(folder / CHECKPOINT_FILE)) not in (None, last[0]):
                last[0] = stamp
                handed = threading.Event()
                said.put(("checkpoint", (folder / CHECKPOINT_FILE).read_bytes(), handed))
                handed.wait()  # the driver has it: a worker killed from here on loses nothing saved
            said.put(("progress", done, total, None))
            if done:
                faults.reach("task-done")

        def train() -> None:
            try:
                record = _run_one(spec, progress, folder)
            except BaseException as exc:  # noqa: BLE001 (KeyboardInterrupt in a worker thread: still a record)
                record = _failed(spec, exc, what="run ended abnormally")
            said.put(("record", record, None))

        # the run trains in a thread so that this generator hands over what it says as it says it
        thread = threading.Thread(target=train, name=f"clbench-{spec.run_id}", daemon=True)
        thread.start()
        while True:
            *item, handed = said.get()
            yield tuple(item)  # returns once the driver took it (backpressure of one object, run_ray)
            if handed is not None:
                handed.set()
            if item[0] == "record":
                break
        thread.join()


def _remove_dead_scratch() -> None:
    """Remove the scratch folders (and the checkpoints in them) of this node's workers that were
    killed while training: their folder names their process, which is gone."""
    for entry in Path(tempfile.gettempdir()).glob(f"{SCRATCH}*"):
        pid = entry.name[len(SCRATCH):].split("-", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)


def _stamp(path: Path) -> tuple[int, int, int] | None:
    """What tells one saved checkpoint file from the next (each save renames a new file in)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)
