"""A sweep: every run of an experiment that is not done yet, recorded in the store.

Crash safety: each record is written atomically (a reader sees a whole record or none); a
run is taken under its own lock (:mod:`benchmark.locks`), so several sweeps on one folder
share the work and never run one run twice at the same time; a malformed ``run.json`` is set
aside as evidence and its run redone; a full disk stops the sweep with one line, keeping
every finished run. Running the same command again finishes what is left.
"""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
import sys
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

import scenarios
import strategies
from benchmark import faults
from benchmark.config import Experiment, RunSpec
from benchmark.executors import run_local
from benchmark.locks import RunLocks
from benchmark.names import safe_name
from benchmark.ownership import CONFIG_MARK
from benchmark.ray_executor import run_ray, shipped_data_files
from benchmark.store import (
    CONFIGS_FOLDER,
    BadRecord,
    RunStore,
    StoreWriteError,
    remove_stale_temps,
    write_atomic,
    write_if_changed,
)
from benchmark.trackers import Trackers


@dataclass
class SweepOutcome:
    """What a sweep did: runs skipped because done, runs finished now, runs that failed, and
    runs that another ``clbench run`` on the same folder finished meanwhile."""

    total: int
    skipped: int = 0
    done: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    elsewhere: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class Claims:
    """The pending runs of a sweep, handed to an executor one at a time, each under its lock.

    A run locked by another process is put off and taken later; when nothing else is left,
    :meth:`take` (with ``wait``) waits for that process to finish it. A run whose record
    another process wrote during this sweep is not run again.
    """

    def __init__(self, pending: Sequence[RunSpec], *, store: RunStore, locks: RunLocks, outcome: SweepOutcome,
                 checkpoint: bool = False, on_elsewhere: Callable[[str], None] | None = None,
                 say: Callable[[str], None] = _say):
        self.store, self.locks, self.outcome, self.checkpoint = store, locks, outcome, checkpoint
        self.queue: deque[RunSpec] = deque(pending)
        self.busy: deque[RunSpec] = deque()
        self.seen = {s.run_id: _stamp(store.path(s.run_id)) for s in pending}
        self.on_elsewhere, self.say = on_elsewhere, say

    def take(self, *, wait: bool) -> RunSpec | None:
        while True:
            if self.queue:
                spec = self.queue.popleft()
            elif self.busy and wait:
                spec = self.busy.popleft()
                holder = self.locks.holder(spec.run_id)
                self.say(f"clbench: {spec.run_id} is running in another clbench run"
                         f"{f' (pid {holder})' if holder else ''}; waiting for it")
                self.locks.wait(spec.run_id)
            else:
                return None
            if not self.locks.try_acquire(spec.run_id):
                self.busy.append(spec)
                continue
            rec = self.store.load(spec.run_id)
            if isinstance(rec, dict) and (rec.get("status") == "done"
                                          or _stamp(self.store.path(spec.run_id)) != self.seen[spec.run_id]):
                self.locks.release(spec.run_id)  # done, or just recorded by another process
                self.outcome.elsewhere.append(spec.run_id)
                if self.on_elsewhere:
                    self.on_elsewhere(spec.run_id)
                continue
            if isinstance(rec, BadRecord):
                aside = self.store.set_aside(spec.run_id)
                self.say(f"clbench: unreadable {rec.path}: {rec.reason}; kept as {aside.name}, the run is redone")
            folder = self.store.path(spec.run_id).parent
            remove_stale_temps(folder)
            if self.checkpoint:
                self.store.folder(spec.run_id)
            return spec


def _stamp(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


def run_sweep(experiment: Experiment, *, out: str | Path, jobs: int = 1, executor: str = "local",
              address: str | None = None, plugin_files: Sequence[str] | None = None, show_progress: bool | None = None,
              checkpoint_every_task: bool = False, in_process: bool = False,
              trackers: Trackers | None = None) -> SweepOutcome:
    """Run every spec of ``experiment`` whose record in ``out`` is not ``done``. With
    ``checkpoint_every_task``, each run gets its folder in the store as ``checkpoint_dir``.
    Runs execute in child processes (:func:`benchmark.executors.run_local`), or with
    ``in_process`` here, one after the other (a run that kills its process then ends the
    sweep). Workers load ``plugin_files`` (default: every plugin file this process loaded); a
    strategy registered by code in this process alone (a notebook cell) cannot reach them, and
    is refused up front with one line unless ``in_process``.

    The config is kept twice: ``out/experiment.yaml`` (as given, overrides applied; the last
    invocation's, as always) and ``out/configs/<name>.yaml`` (resolved, every default filled
    in; one file per distinct config, never overwritten: see :func:`save_config`).

    ``trackers`` (:class:`benchmark.trackers.Trackers`) log each run done now, here in the
    driver, right after its record is stored; a tracker that fails is off with one line, and
    never changes the sweep."""
    if plugin_files is None:
        plugin_files = [str(p) for p in strategies.REGISTRY.plugin_files()]
    if not in_process:
        refuse_unportable_strategies(experiment)
        refuse_unportable_scenarios(experiment, plugin_files=plugin_files)
    store = RunStore(out)
    store.root.mkdir(parents=True, exist_ok=True)
    text = CONFIG_MARK + "\n" + yaml.safe_dump(plain(experiment.source), sort_keys=False, allow_unicode=True)
    write_if_changed(store.root / "experiment.yaml", text)  # a finished sweep rerun writes nothing
    save_config(store.root, experiment)
    store.remove_stale_temps()
    specs = experiment.specs()
    ids = {s.run_id for s in specs}
    for bad in store.scan()[1]:
        if bad.run_id not in ids:
            _say(f"clbench: skipping unreadable {bad.path}: {bad.reason}")
    pending = [s for s in specs if not store.is_done(s.run_id)]
    outcome = SweepOutcome(total=len(specs), skipped=len(specs) - len(pending))
    if show_progress is None:
        show_progress = sys.stderr.isatty()
    bar = _progress_bar(len(specs), outcome.skipped, show_progress)
    locks = RunLocks(store.root)
    faults.reach("sweep-start")

    def on_result(record: dict[str, Any]) -> None:
        record = store_record(store, record)
        locks.release(record["run_id"])
        faults.reach("after-record")
        if trackers is not None:
            trackers.log_run(record)
        (outcome.done if record["status"] == "done" else outcome.failed).append(record["run_id"])
        if bar is not None:
            bar.update(1)
            bar.set_postfix_str(f"{record['strategy']} on {record['scenario']}: {record['status']}")

    def on_elsewhere(run_id: str) -> None:
        if bar is not None:
            bar.update(1)

    def on_progress(spec, done, total):
        if bar is not None:
            bar.set_postfix_str(f"{spec.strategy} on {spec.scenario} seed {spec.seed}: task {done}/{total}")

    claims = Claims(pending, store=store, locks=locks, outcome=outcome, checkpoint=checkpoint_every_task,
                    on_elsewhere=on_elsewhere)
    where = (lambda spec: store.folder(spec.run_id)) if checkpoint_every_task else None
    summary, interrupted = True, True
    try:
        if executor == "ray":
            run_ray(claims, address=address, plugin_files=plugin_files, on_result=on_result,
                    on_progress=on_progress if bar is not None else None, checkpoint_dir=where,
                    data_files=shipped_data_files(pending) if address else ())
        else:
            run_local(claims, jobs=jobs, plugin_files=plugin_files, on_result=on_result,
                      on_progress=on_progress if bar is not None else None, checkpoint_dir=where,
                      in_process=in_process)
        interrupted = False
    except StoreWriteError:
        summary = False  # the disk is full or read-only: writing more would fail the same way
        raise
    finally:
        locks.release_all()
        if trackers is not None:
            trackers.close()
        if bar is not None:
            bar.close()
        if summary:
            _write_summary(store, interrupted=interrupted)
    return outcome


def store_record(store: RunStore, record: dict[str, Any]) -> dict[str, Any]:
    """Write a run's record; a record that cannot be stored as JSON (a strategy's metrics of
    its own that are not) is stored as a failed run saying why. Returns what was stored."""
    try:
        store.write(record)
    except (TypeError, ValueError) as exc:
        record = {k: record.get(k) for k in ("run_id", "strategy", "scenario", "seed", "config", "versions")}
        record.update(status="failed", error=f"{type(exc).__name__}: the run's record cannot be stored as JSON "
                                             f"({exc})")
        store.write(record)
    return record


def refuse_unportable_strategies(experiment: Experiment) -> None:
    """Refuse, in one line, a strategy registered by code in this process alone: worker
    processes cannot register it."""
    for name in dict.fromkeys(name for name, _ in experiment.strategies):
        d = strategies.REGISTRY.get(name)
        if not d.portable:
            raise strategies.StrategyError(
                f"strategy '{d.name}' is registered by {d.origin}, in this process only: worker processes cannot "
                "register it; put it in a plugin file (--plugin FILE.py, or plugin_files=[...]) or an installed "
                "entry point, or run in this process (--in-process, or in_process=True)")


def refuse_unportable_scenarios(experiment: Experiment, *, plugin_files: Sequence[str]) -> None:
    """Refuse, in one line, a plugin stream registered by code in this process alone (not in one
    of ``plugin_files``, nor an entry point): worker processes cannot register it."""
    for name in dict.fromkeys(name for name, _ in experiment.scenarios):
        d = scenarios.definition(name)
        if d.plugin is not None and not d.plugin.portable(plugin_files):
            raise scenarios.ScenarioError(
                f"scenario '{d.name}' is registered by {d.plugin.origin}, in this process only: worker processes "
                "cannot register it; put it in a plugin file (--plugin FILE.py, or plugin_files=[...]) or an "
                "installed entry point, or run in this process (--in-process, or in_process=True)")


def resolved_config(experiment: Experiment) -> dict[str, Any]:
    """The experiment as a config file with every default filled in: loading it again
    (:func:`benchmark.config.load_experiment`) gives the same runs, whatever the defaults of a
    later version are."""
    out: dict[str, Any] = {"name": experiment.name}
    if isinstance(experiment.source, dict) and experiment.source.get("description") is not None:
        out["description"] = experiment.source["description"]
    out.update(seeds=list(experiment.seeds), train=dict(experiment.train), model=dict(experiment.model),
               scenarios=[{"name": name, **params} for name, params in experiment.scenarios],
               strategies=[{"name": name, **hparams} for name, hparams in experiment.strategies])
    if experiment.targets:
        out["targets"] = [{"scenario": t.scenario, "strategy": t.strategy, **({"hparams": t.hparams} if t.hparams else {}),
                           "metric": t.metric, "value": t.value, "source": t.source} for t in experiment.targets]
    if experiment.tune is not None:
        out["tune"] = experiment.tune.to_yaml()
    if experiment.tuned is not None:  # how the hyperparameters were chosen: the report marks those strategies
        out["tuned"] = experiment.tuned
    return plain(out)


def save_config(root: str | Path, experiment: Experiment) -> Path:
    """Keep this invocation's resolved config in ``root/configs/`` (the config history of the
    folder): ``<name>.yaml``, or ``<name>--<digest8>.yaml`` when ``<name>.yaml`` already holds
    another content (the same config after ``--set``, say). A file of the history is never
    overwritten: it is created only where none is (atomically, whole or not at all), so two
    sweeps starting at once on one folder keep both their configs. Returns the file that holds
    this config."""
    text = yaml.safe_dump(resolved_config(experiment), sort_keys=False, allow_unicode=True, default_flow_style=None,
                          width=120)
    folder = Path(root) / CONFIGS_FOLDER
    stem = config_file_stem(experiment.name)
    first = folder / f"{stem}.yaml"
    for path in (first, folder / f"{stem}--{hashlib.sha256(text.encode()).hexdigest()[:8]}.yaml"):
        if _create_or_same(path, text):
            return path
    raise StoreWriteError(errno.EEXIST, f"cannot keep the config {experiment.name!r}: {first} and its digest-named "
                                        "twin hold other contents")


def _create_or_same(path: Path, text: str) -> bool:
    """Create ``path`` holding ``text`` unless it exists; True when it holds ``text`` now (or
    the same YAML mapping with its keys in another order)."""
    def same() -> bool | None:  # the same config, whatever the order of its keys
        try:
            found = path.read_text(encoding="utf-8")
            return found == text or yaml.safe_load(found) == yaml.safe_load(text)
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            return False

    found = same()
    if found is not None:
        return found
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        write_atomic(tmp, text)
        try:
            os.link(tmp, path)  # fails where a file is: never overwrites one
        except FileExistsError:
            return bool(same())
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK, errno.ENOSYS):
                raise StoreWriteError(exc.errno, f"cannot write {path}: {exc.strerror or exc}") from exc
            if path.exists():  # a file system without hard links: a rename, after one more look
                return bool(same())
            try:
                os.replace(tmp, path)
            except OSError as err:
                raise StoreWriteError(err.errno, f"cannot write {path}: {err.strerror or err}") from err
        return True
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def config_file_stem(name: str) -> str:
    """The file-name-safe form of a config's name, for ``configs/<stem>.yaml``."""
    return safe_name(name, fallback="experiment")


def _write_summary(store: RunStore, *, interrupted: bool) -> None:
    """Rebuild summary.csv; while an error or an interrupt is on its way, never hide it."""
    faults.reach("before-summary")
    try:
        store.write_summary()
    except Exception:
        if not interrupted:
            raise
    faults.reach("after-summary")


def _progress_bar(total: int, initial: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="run", dynamic_ncols=True, file=sys.stderr)


def plain(obj: Any) -> Any:
    """``obj`` with tuples as lists and keys as strings: what ``yaml.safe_dump`` writes plainly."""
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    return obj
