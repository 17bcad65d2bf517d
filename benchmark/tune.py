"""``clbench tune``: hyperparameters chosen on held-out tasks, never on a test set.

The protocol of Chaudhry et al. (2019, "Efficient Lifelong Learning with A-GEM", ICLR,
Section 5): each strategy entry of the config gets the same budget of trials; a trial trains
the entry, with the trial's hyperparameters, on the first ``tune.first_tasks`` tasks of the
stream and is scored (``tune.objective``, ACC by default) on a validation split held out of
those tasks' training examples (``tune.val_fraction``). The tuning stream is the config's
stream with ``task_range: [0, k]`` and ``val_fraction: f`` (:mod:`scenarios.selection`): its
source's test split is dropped before the tasks are built, so neither a test example nor a
test label can reach a score. The chosen settings go into ``best.yaml``, whose stream is
``task_range: [k, T]`` (``report_on: remaining``: the tasks of the choice are neither trained
on nor measured) or the whole stream (``report_on: all``, which the report says plainly).

Trials are run specs like any sweep's: they go through the executors of ``clbench run``
(local workers, ``--jobs``, Ray), and their records land in the output folder as
``<run_id>/run.json`` (``clbench report OUT`` shows every trial's validation scores). Optuna
(TPE by default, random search, or a seeded grid) chooses them; its study lives in
``OUT/study.sqlite``, one study per strategy entry, named by a digest of everything that
defines it. A killed tune resumes where it stopped: trials that had finished are kept and not
run again, the trials that were running are marked failed (``interrupted``, not counted in the
budget) and their runs, where they had finished, are reused.

Determinism: the sampler of the n-th trial of a study is seeded by ``(tune.seed, n)``, n
counting every trial but the interrupted ones, so with ``--jobs 1`` a study gives the same
trials whether it ran in one go or was killed and resumed; with several jobs, the order in
which trials finish (and so what the sampler has seen) may vary.

The folder: ``study.sqlite``, ``best.yaml``, ``summary.csv``, the run folders, and
``.locks/tune.lock``, held while a tune runs there (one at a time).
"""

from __future__ import annotations

import copy
import math
import os
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

import scenarios
import strategies
from benchmark.config import Experiment, RunSpec
from benchmark.executors import run_local
from benchmark.groups import digest
from benchmark.locks import RunLocks
from benchmark.messages import first_line
from benchmark.ownership import BEST_MARK
from benchmark.ray_executor import run_ray, shipped_data_files
from benchmark.spec_keys import scenario_identity, train_identity
from benchmark.store import RunStore, write_atomic
from benchmark.sweep import plain, refuse_unportable_scenarios, refuse_unportable_strategies, store_record
from benchmark.tune_config import PROTOCOL, Space, TuneSettings

STUDY_FILE = "study.sqlite"
BEST_FILE = "best.yaml"
LOCK = "tune"  # .locks/tune.lock in the output folder
INTERRUPTED = "interrupted"  # user attribute of a trial that was running when its tune was killed


class TuneBusy(RuntimeError):
    """Another ``clbench tune`` holds the output folder; the message is one line."""


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Entry:
    """One strategy entry of the config, as it is tuned: its place in the config, its resolved
    hyperparameters, its space and its study's name."""

    index: int
    strategy: str
    hparams: dict[str, Any]
    space: Space
    study_name: str

    @property
    def label(self) -> str:
        return f"strategies[{self.index}] {self.strategy}"


def tuning_stream(experiment: Experiment, settings: TuneSettings) -> tuple[str, dict[str, Any]]:
    """The stream the choice is made on: the first ``first_tasks`` tasks, evaluated on the
    validation split held out of their training examples."""
    name, params = experiment.scenarios[0]
    return name, {**params, "task_range": [0, settings.first_tasks], "val_fraction": settings.val_fraction}


def entries(experiment: Experiment, settings: TuneSettings) -> list[Entry]:
    """Every strategy entry of the config with its space, in config order. A study's name is a
    digest of all that defines its trials (stream, train and model settings, the entry's fixed
    hyperparameters, which give its first trial, the space, objective, protocol, seeds,
    sampler; not the budget), so a
    changed config tunes in a study of its own and the same config resumes its own."""
    scenario, params = tuning_stream(experiment, settings)
    out = []
    for i, (name, hparams) in enumerate(experiment.strategies):
        space = settings.spaces[name]
        key = {"scenario": scenario, "params": scenario_identity(params), "train": train_identity(experiment.train),
               "model": experiment.model, "strategy": name, "hparams": hparams, "space": space.to_yaml(),
               "objective": settings.objective, "seeds": list(settings.seeds), "sampler": settings.sampler,
               "seed": settings.seed}
        out.append(Entry(i, name, dict(hparams), space, f"{name}--{digest(key)}"))
    return out


def _distributions(space: Space) -> dict[str, Any]:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out = {}
    for d in space.dimensions:
        if d.kind == "choice":
            out[d.name] = CategoricalDistribution(list(d.choices))
        else:
            kind = IntDistribution if d.integer else FloatDistribution
            out[d.name] = kind(d.low, d.high, log=d.kind == "log_uniform")
    return out


def _seed(base: int, n: int) -> int:
    import numpy as np

    return int(np.random.SeedSequence([base, n]).generate_state(1)[0])


def grid_order(space: Space, seed: int) -> list[dict[str, Any]]:
    """Every point of a grid of choice lists, in the order the seed shuffles them into."""
    import itertools

    import numpy as np

    points = [dict(zip(space.names, values)) for values in itertools.product(*(d.choices for d in space.dimensions))]
    order = np.random.default_rng(seed).permutation(len(points))
    return [points[i] for i in order]


@dataclass
class StudyState:
    """One entry's study as this tune sees it: the trials counted in its budget, those in
    flight, and how to ask for the next."""

    entry: Entry
    study: Any
    settings: TuneSettings
    finished: int = 0
    inflight: int = 0
    grid: list[dict[str, Any]] = field(default_factory=list)

    @property
    def budget(self) -> int:
        """The trials this entry gets: ``tune.trials`` (a grid smaller than that: its points)."""
        return min(self.settings.trials, len(self.grid)) if self.settings.sampler == "grid" else self.settings.trials

    def can_ask(self) -> bool:
        if self.finished + self.inflight >= self.budget:
            return False
        return self.settings.sampler != "grid" or self._next_grid_point() is not None

    def _trials(self, states=None) -> list[Any]:
        return self.study.get_trials(deepcopy=False, states=states)

    def _next_grid_point(self) -> dict[str, Any] | None:
        from optuna.trial import TrialState

        seen = [t.params for t in self._trials((TrialState.COMPLETE, TrialState.FAIL, TrialState.RUNNING))
                if not t.user_attrs.get(INTERRUPTED)]
        return next((p for p in self.grid if p not in seen), None)

    def ask(self) -> Any:
        """A new trial of this study, its sampler seeded by ``(tune.seed, n)``."""
        from optuna.samplers import RandomSampler, TPESampler
        from optuna.trial import TrialState

        n = sum(1 for t in self._trials() if t.state != TrialState.WAITING and not t.user_attrs.get(INTERRUPTED))
        seed = _seed(self.settings.seed, n)
        self.study.sampler = TPESampler(seed=seed) if self.settings.sampler == "tpe" else RandomSampler(seed=seed)
        if self.settings.sampler == "grid" and not self._trials((TrialState.WAITING,)):
            self.study.enqueue_trial(self._next_grid_point())
        trial = self.study.ask(_distributions(self.entry.space))
        self.inflight += 1
        return trial

    def tell(self, trial: Any, value: float | None, attrs: dict[str, Any]) -> None:
        from optuna.trial import TrialState

        for k, v in attrs.items():
            trial.set_user_attr(k, v)
        if value is None:
            self.study.tell(trial, state=TrialState.FAIL)
        else:
            self.study.tell(trial, value)
        self.inflight -= 1
        self.finished += 1

    def counted(self) -> list[Any]:
        """The finished trials that count in the budget (not the interrupted ones), first
        ``budget`` of them by number: the best is chosen among these."""
        from optuna.trial import TrialState

        done = [t for t in self._trials((TrialState.COMPLETE, TrialState.FAIL)) if not t.user_attrs.get(INTERRUPTED)]
        return sorted(done, key=lambda t: t.number)[:self.budget]


def open_study(entry: Entry, settings: TuneSettings, storage: Any, *, say: Callable[[str], None]) -> StudyState:
    """Create the entry's study in ``storage``, or load it: trials left running by a killed
    tune are marked failed and ``interrupted`` (not counted); a new study under TPE or random
    search evaluates the entry's own settings first where the space holds them."""
    import optuna
    from optuna.trial import TrialState

    direction = "maximize" if settings.maximize else "minimize"
    study = optuna.create_study(storage=storage, study_name=entry.study_name, direction=direction,
                                load_if_exists=True)
    study_id = storage.get_study_id_from_name(entry.study_name)
    trials = study.get_trials(deepcopy=False)
    for t in trials:
        if t.state == TrialState.RUNNING:
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
            storage.set_trial_user_attr(trial_id, INTERRUPTED, True)
            storage.set_trial_state_values(trial_id, TrialState.FAIL)
            say(f"clbench: {entry.label}: trial {t.number} was running when the last tune stopped; it is not "
                "counted, a new trial takes its place")
    if not trials:
        study.set_user_attr("strategy", entry.strategy)
        study.set_user_attr("entry", entry.index)
        study.set_user_attr("space", entry.space.to_yaml())
        own = {d.name: entry.hparams[d.name] for d in entry.space.dimensions}
        if settings.sampler != "grid" and all(d.contains(own[d.name]) for d in entry.space.dimensions):
            study.enqueue_trial(own)  # the config's own settings are the first trial
    state = StudyState(entry, study, settings)
    state.finished = len([t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL))
                          if not t.user_attrs.get(INTERRUPTED)])
    if settings.sampler == "grid":
        state.grid = grid_order(entry.space, settings.seed)
    return state


@dataclass
class _Pending:
    """A trial in flight: its study, its optuna trial, and its runs (run id -> record or None)."""

    state: StudyState
    trial: Any
    runs: dict[str, dict[str, Any] | None]
    started: float


class Trials:
    """The executors' :class:`~benchmark.executors.Source` of a tune: asks each study for
    trials while its budget lasts (the entries one after the other), hands out their runs,
    and tells each study its trial's score when the trial's runs are recorded."""

    def __init__(self, states: Sequence[StudyState], *, experiment: Experiment, settings: TuneSettings,
                 store: RunStore, say: Callable[[str], None] = _say):
        self.states, self.experiment, self.settings, self.store, self.say = list(states), experiment, settings, store, say
        self.queue: deque[RunSpec] = deque()
        self.waiting: dict[str, list[_Pending]] = {}  # run id -> trials waiting for its record

    def take(self, *, wait: bool) -> RunSpec | None:
        while not self.queue:
            state = next((s for s in self.states if s.can_ask()), None)
            if state is None:
                return None
            self._start(state)
        return self.queue.popleft()

    def specs(self, entry: Entry, params: dict[str, Any]) -> list[RunSpec]:
        """The runs of one trial: the entry with the trial's hyperparameters on the tuning
        stream, one per tuning seed."""
        name, hparams = strategies.resolve(entry.strategy, {**entry.hparams, **params})
        scenario, stream = tuning_stream(self.experiment, self.settings)
        return [RunSpec(scenario, dict(stream), name, dict(hparams), seed, dict(self.experiment.train),
                        dict(self.experiment.model)) for seed in self.settings.seeds]

    def _start(self, state: StudyState) -> None:
        trial = state.ask()
        try:
            specs = self.specs(state.entry, trial.params)
        except strategies.StrategyError as exc:  # a combination the strategy refuses (replay batch > memory)
            state.tell(trial, None, {"error": first_line(exc)})
            self._said(state, trial.number, None, f"refused: {first_line(exc)}")
            return
        pending = _Pending(state, trial, {s.run_id: None for s in specs}, time.perf_counter())
        for spec in specs:
            record = self.store.load(spec.run_id)
            if isinstance(record, dict) and record.get("status") == "done":  # run by an earlier trial or tune
                pending.runs[spec.run_id] = record
            elif spec.run_id in self.waiting:  # the same run in flight for another trial
                self.waiting[spec.run_id].append(pending)
            else:
                self.waiting[spec.run_id] = [pending]
                self.queue.append(spec)
        self._finish_if_done(pending)

    def on_result(self, record: dict[str, Any]) -> None:
        """Store a run's record; tell the study of each trial it completes."""
        record = store_record(self.store, record)
        for pending in self.waiting.pop(record["run_id"], []):
            pending.runs[record["run_id"]] = record
            self._finish_if_done(pending)

    def _finish_if_done(self, pending: _Pending) -> None:
        if any(r is None for r in pending.runs.values()):
            return
        records = list(pending.runs.values())
        failed = [r for r in records if r.get("status") != "done"]
        objective = self.settings.objective
        values = [(r.get("metrics") or {}).get(objective) for r in records]
        attrs: dict[str, Any] = {"run_ids": list(pending.runs), "seconds": time.perf_counter() - pending.started,
                                 "train_seconds": sum((r.get("timing") or {}).get("train_s") or 0.0 for r in records)}
        value = None
        if failed:
            attrs["error"] = first_line(failed[0].get("error")) or "the run failed"
        elif any(v is None or not math.isfinite(v) for v in values):
            attrs["error"] = f"a run has no {objective}"
        else:
            value = sum(values) / len(values)
            attrs["values"] = values
        pending.state.tell(pending.trial, value, attrs)
        self._said(pending.state, pending.trial.number, value, attrs.get("error"))

    def _said(self, state: StudyState, number: int, value: float | None, error: str | None) -> None:
        best = best_trial(state)
        score = (f"{self.settings.objective} {value:.4f}" if value is not None else f"failed: {error}")
        tail = f" (best {best.value:.4f}, trial {best.number})" if best is not None else ""
        self.say(f"clbench tune: {state.entry.label}: trial {number} ({state.finished}/{state.budget}) {score}{tail}")


def best_trial(state: StudyState) -> Any | None:
    """The best complete trial among those counted in the budget (ties: the earliest)."""
    from optuna.trial import TrialState

    done = [t for t in state.counted() if t.state == TrialState.COMPLETE]
    if not done:
        return None
    sign = -1.0 if state.settings.maximize else 1.0
    return min(done, key=lambda t: (sign * t.value, t.number))


@dataclass(frozen=True)
class EntryResult:
    """What the tune of one entry gave: its best trial (None if no trial completed), the
    trials counted and how many failed, the wall seconds from its first trial to its last, and
    the training seconds of their runs."""

    entry: Entry
    trials: int
    complete: int
    failed: int
    best_number: int | None
    best_value: float | None
    chosen: dict[str, Any]
    wall_seconds: float
    train_seconds: float


def result(state: StudyState) -> EntryResult:
    from optuna.trial import TrialState

    counted = state.counted()
    best = best_trial(state)
    return EntryResult(
        state.entry, state.budget, sum(t.state == TrialState.COMPLETE for t in counted),
        sum(t.state == TrialState.FAIL for t in counted), None if best is None else best.number,
        None if best is None else float(best.value), {} if best is None else dict(best.params),
        _span(counted), sum(float(t.user_attrs.get("train_seconds") or 0.0) for t in counted))


def _span(trials: Sequence[Any]) -> float:
    """Seconds from the start of the first trial to the end of the last (the wall time of an
    entry's tuning, the pause of a killed tune included)."""
    starts = [t.datetime_start for t in trials if t.datetime_start is not None]
    ends = [t.datetime_complete for t in trials if t.datetime_complete is not None]
    return (max(ends) - min(starts)).total_seconds() if starts and ends else 0.0


@dataclass(frozen=True)
class TuneOutcome:
    """A finished tune: each entry's result, best.yaml, the study file, and the seconds this
    invocation took."""

    results: tuple[EntryResult, ...]
    best: Path
    study: Path
    seconds: float

    @property
    def ok(self) -> bool:
        return all(r.best_number is not None for r in self.results)


def best_config(experiment: Experiment, settings: TuneSettings, results: Sequence[EntryResult], *,
                study: str, source: str | None) -> dict[str, Any]:
    """best.yaml: the config as given (``tune:`` and reproduction targets left out: the
    targets are figures of the untuned protocol), named ``tuned-<name>``, the chosen
    hyperparameters written into each entry, the stream cut to the remaining tasks where
    ``report_on`` is ``remaining``, and a ``tuned:`` block recording the protocol, the budget,
    the study and each entry's best validation score."""
    raw = copy.deepcopy(experiment.source)
    for key in ("tune", "targets", "tuned"):
        raw.pop(key, None)
    raw["name"] = f"tuned-{experiment.name}"
    scenario, params = experiment.scenarios[0]
    given = raw["scenarios"][0]
    given = {"name": given} if isinstance(given, str) else dict(given)
    n_tasks = scenarios.task_count(scenario, **params)
    if settings.report_on == "remaining":
        given["task_range"] = [settings.first_tasks, n_tasks]
    raw["scenarios"] = [given]
    raw["strategies"] = [({"name": e} if isinstance(e, str) else dict(e)) for e in raw["strategies"]]
    tuned = []
    for r in results:
        entry = raw["strategies"][r.entry.index]
        entry.update(r.chosen)
        tuned.append({
            "name": r.entry.strategy, "entry": r.entry.index, "study": r.entry.study_name,
            "space": r.entry.space.to_yaml(), "space_from": "declared ranges" if r.entry.space.derived else "config",
            "trials": r.trials, "complete": r.complete, "failed": r.failed, "best_trial": r.best_number,
            "best_value": r.best_value, "chosen": dict(r.chosen),
            "hparams": {k: v for k, v in entry.items() if k != "name"},
            "wall_seconds": round(r.wall_seconds, 1), "train_seconds": round(r.train_seconds, 1)})
    raw["tuned"] = {
        "protocol": PROTOCOL, "scenario": scenario, "n_tasks": n_tasks, "first_tasks": settings.first_tasks,
        "val_fraction": settings.val_fraction, "report_on": settings.report_on, "objective": settings.objective,
        "sampler": settings.sampler, "seed": settings.seed, "seeds": list(settings.seeds), "study": study,
        **({"source": source} if source else {}), "strategies": tuned}
    return raw


def best_yaml_text(config: dict[str, Any]) -> str:
    return BEST_MARK + "\n" + yaml.safe_dump(plain(config), sort_keys=False, allow_unicode=True, width=120)


def open_storage(path: Path) -> Any:
    """Optuna's SQLite storage in ``path``. A new file is made whole first, under a temporary
    name, and renamed into place: a reader that opens the study the moment it appears (Optuna's
    own ``load_study``, which creates the tables of an empty file) finds Optuna's schema there,
    instead of racing the tune to create it (sqlite creates the file on connecting, before any
    table: the tune then failed on alembic_version's unique key)."""
    import optuna

    def storage(file: Path) -> Any:
        return optuna.storages.RDBStorage(f"sqlite:///{file.resolve()}", engine_kwargs={"connect_args": {"timeout": 60}})

    if not path.exists():
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # as every file of the results folder (benchmark.store.write_atomic)
        try:
            storage(Path(tmp)).engine.dispose()
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return storage(path)


def run_tune(experiment: Experiment, *, out: str | Path, settings: TuneSettings | None = None, jobs: int = 1,
             executor: str = "local", address: str | None = None, plugin_files: Sequence[str] | None = None,
             in_process: bool = False, source: str | None = None, say: Callable[[str], None] = _say) -> TuneOutcome:
    """Tune every strategy entry of ``experiment`` (its ``tune:`` settings, or ``settings``)
    into ``out`` and write ``out/best.yaml`` (see the module docstring). ``source``: the
    config file's path, recorded in best.yaml."""
    import optuna

    settings = settings or experiment.tune
    if settings is None:
        raise ValueError("the experiment has no tune: settings")
    if plugin_files is None:
        plugin_files = [str(p) for p in strategies.REGISTRY.plugin_files()]
    if not in_process:
        refuse_unportable_strategies(experiment)
        refuse_unportable_scenarios(experiment, plugin_files=plugin_files)
    t0 = time.perf_counter()
    store = RunStore(out)
    store.root.mkdir(parents=True, exist_ok=True)
    locks = RunLocks(store.root)
    if not locks.try_acquire(LOCK):
        holder = locks.holder(LOCK)
        raise TuneBusy(f"another clbench tune{f' (pid {holder})' if holder else ''} is running on {store.root}; wait "
                       "for it or give another --out")
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        store.remove_stale_temps()
        study_path = store.root / STUDY_FILE
        storage = open_storage(study_path)
        states = [open_study(e, settings, storage, say=say) for e in entries(experiment, settings)]
        trials = Trials(states, experiment=experiment, settings=settings, store=store, say=say)
        finished = False
        try:
            if executor == "ray":
                run_ray(trials, address=address, plugin_files=plugin_files, on_result=trials.on_result,
                        data_files=shipped_data_files(experiment.specs()) if address else ())
            else:
                run_local(trials, jobs=jobs, plugin_files=plugin_files, on_result=trials.on_result,
                          in_process=in_process)
            finished = True
        finally:
            try:
                store.write_summary()
            except Exception:  # noqa: BLE001 (an error or an interrupt on its way is not hidden)
                if finished:
                    raise
        results = tuple(result(s) for s in states)
        best = store.root / BEST_FILE
        config = best_config(experiment, settings, results, study=str(Path(out) / STUDY_FILE), source=source)
        write_atomic(best, best_yaml_text(config))
        return TuneOutcome(results, best, study_path, time.perf_counter() - t0)
    finally:
        optuna.logging.set_verbosity(verbosity)
        locks.release_all()

