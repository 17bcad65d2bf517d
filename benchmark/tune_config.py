"""The ``tune:`` section of an experiment file, and the ``tuned:`` block that ``clbench tune``
writes into ``best.yaml``.

The protocol is Chaudhry et al.'s (2019, "Efficient Lifelong Learning with A-GEM", ICLR,
Section 5): hyperparameters are chosen on the first ``first_tasks`` tasks of the stream, each
trial scored on a validation split held out of those tasks' training examples
(``val_fraction``), never on a test set; the chosen settings are then trained and reported on
the remaining tasks (``report_on: remaining``) or, said plainly in the report, on all of them
(``report_on: all``). Every strategy entry gets the same budget (``trials``)::

    tune:
      first_tasks: 3
      val_fraction: 0.1
      trials: 20
      spaces:
        mer: {lr: {log_uniform: [0.001, 0.3]}, beta: {uniform: [0.01, 1.0]}, replay_batch: {choice: [5, 10, 25]}}
        la-maml: {opt_lr: {log_uniform: [0.01, 1.0]}, alpha_init: {log_uniform: [0.01, 0.5]}}

A strategy of the config without a space gets one from its declared ranges: every float
hyperparameter whose range is finite (:meth:`strategies.HParam.finite_range`), searched
uniformly; one with none is refused. :func:`parse` validates the section against the config's
resolved entries (one-line :class:`TuneError`); :func:`tuned_entries` and :func:`annotate` read
a ``tuned:`` block back for the report, without importing torch (this module imports nothing
that does at its top).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from benchmark.messages import closest
from benchmark.metric_names import METRICS

DISTRIBUTIONS = ("uniform", "log_uniform", "choice")
PROTOCOL = ("Chaudhry et al. 2019 (A-GEM): chosen on a validation split held out of the training examples of the "
            "first tasks; no test set was used")
SCENARIO_KEYS = ("task_range", "val_fraction")  # stream parameters that clbench tune sets itself


class TuneError(ValueError):
    """A malformed ``tune:`` section; the message is one line."""


@dataclass(frozen=True)
class Dimension:
    """The values one hyperparameter is searched over: ``uniform`` or ``log_uniform`` in
    [low, high] (integers where the hyperparameter is an int), or one of ``choices``."""

    name: str
    kind: str
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] = ()
    integer: bool = False

    def to_yaml(self) -> dict[str, list[Any]]:
        return {self.kind: list(self.choices) if self.kind == "choice" else [self.low, self.high]}

    def contains(self, value: Any) -> bool:
        if self.kind == "choice":
            return value in self.choices
        return isinstance(value, (int, float)) and self.low <= value <= self.high


@dataclass(frozen=True)
class Space:
    """The search space of one strategy; ``derived``: made from its declared ranges."""

    strategy: str
    dimensions: tuple[Dimension, ...]
    derived: bool = False

    def to_yaml(self) -> dict[str, dict[str, list[Any]]]:
        return {d.name: d.to_yaml() for d in self.dimensions}

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.dimensions)


@dataclass(frozen=True)
class TuneSettings:
    """A validated ``tune:`` section (see the module docstring)."""

    first_tasks: int
    val_fraction: float
    trials: int
    objective: str
    sampler: str
    seed: int
    seeds: tuple[int, ...]
    report_on: str
    spaces: Mapping[str, Space] = field(default_factory=dict)

    @property
    def maximize(self) -> bool:
        """Whether a higher objective is better (every metric but forgetting)."""
        return self.objective != "forgetting"

    def with_trials(self, trials: int) -> TuneSettings:
        return replace(self, trials=trials)

    def to_yaml(self) -> dict[str, Any]:
        return {"first_tasks": self.first_tasks, "val_fraction": self.val_fraction, "trials": self.trials,
                "objective": self.objective, "sampler": self.sampler, "seed": self.seed, "seeds": list(self.seeds),
                "report_on": self.report_on,
                "spaces": {name: s.to_yaml() for name, s in self.spaces.items() if not s.derived}}


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse(raw: Any, *, scenarios: Sequence[tuple[str, dict[str, Any]]],
          strategies: Sequence[tuple[str, dict[str, Any]]], seeds: Sequence[int],
          where: str = "config") -> TuneSettings | None:
    """Validate a config's ``tune:`` section against its resolved scenario and strategy
    entries; None when the config has none. Raises :class:`TuneError` naming what is wrong."""
    from benchmark.settings import MAX_SEED, REPORT_ON, SAMPLERS, defaults, keys  # (torch: not for the report)

    if raw is None:
        return None
    allowed = keys("tune")
    at = f"{where}: tune"
    if not isinstance(raw, dict):
        raise TuneError(f"{at} must be a mapping with keys {', '.join(allowed)}")
    for key in raw:
        if key not in allowed:
            raise TuneError(f"{at}: unknown key '{key}'{closest(str(key), allowed)}; allowed: {', '.join(allowed)}")
    given = {**defaults("tune"), **{k: v for k, v in raw.items() if v is not None or k == "seeds"}}
    if len(scenarios) != 1:
        raise TuneError(f"{at}: the config has {len(scenarios)} scenarios; hyperparameters are chosen per stream, so a "
                        "config to tune names one scenario")
    scenario, params = scenarios[0]
    for key in SCENARIO_KEYS:
        if params.get(key) is not None:
            raise TuneError(f"{where}: scenarios[0] sets {key}; clbench tune sets it itself (tune.first_tasks, "
                            "tune.val_fraction, tune.report_on): remove it from a config to tune")
    import scenarios  # torch: validating a tune section needs it, reading a tuned block does not

    n_tasks = scenarios.task_count(scenario, **params)  # a plugin stream's: built once to count them
    first = given["first_tasks"]
    if not _integer(first) or first < 1:
        raise TuneError(f"{at}.first_tasks must be an integer >= 1, got {first!r}")
    if first >= n_tasks:
        raise TuneError(f"{at}.first_tasks={first} is not smaller than the {n_tasks} tasks of {scenario}; the choice "
                        f"is made on the first tasks and reported on the rest: give 1 .. {n_tasks - 1}")
    fraction = given["val_fraction"]
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
        raise TuneError(f"{at}.val_fraction must be a number > 0 and < 1, got {fraction!r}")
    per_task = params.get("per_task")
    if per_task is not None and per_task - max(1, round(fraction * per_task)) < 1:
        raise TuneError(f"{at}.val_fraction={fraction:g} of per_task={per_task} leaves no training example")
    trials = given["trials"]
    if not _integer(trials) or trials < 1:
        raise TuneError(f"{at}.trials must be an integer >= 1 (the budget of each strategy), got {trials!r}")
    objective = given["objective"]
    if objective not in METRICS:
        raise TuneError(f"{at}.objective is {objective!r}; allowed: {', '.join(METRICS)}{closest(str(objective), METRICS)}")
    sampler = given["sampler"]
    if sampler not in SAMPLERS:
        raise TuneError(f"{at}.sampler is {sampler!r}; allowed: {', '.join(SAMPLERS)}{closest(str(sampler), SAMPLERS)}")
    seed = given["seed"]
    if not _integer(seed) or not 0 <= seed <= MAX_SEED:
        raise TuneError(f"{at}.seed must be an integer 0 .. {MAX_SEED}, got {seed!r}")
    run_seeds = given.get("seeds")
    run_seeds = [seeds[0]] if run_seeds is None else [run_seeds] if _integer(run_seeds) else run_seeds
    if (not isinstance(run_seeds, list) or not run_seeds
            or not all(_integer(s) and 0 <= s <= MAX_SEED for s in run_seeds) or len(set(run_seeds)) != len(run_seeds)):
        raise TuneError(f"{at}.seeds must be a non-empty list of distinct integers 0 .. {MAX_SEED}, got {run_seeds!r}")
    report_on = given["report_on"]
    if report_on not in REPORT_ON:
        raise TuneError(f"{at}.report_on is {report_on!r}; allowed: {', '.join(REPORT_ON)}"
                        f"{closest(str(report_on), REPORT_ON)}")
    spaces = _spaces(given["spaces"], strategies, at=f"{at}.spaces")
    if sampler == "grid":
        for name, space in spaces.items():
            ranged = next((d for d in space.dimensions if d.kind != "choice"), None)
            if ranged is not None:
                source = "its space from declared ranges searches" if space.derived else "searches"
                raise TuneError(f"{at}.spaces.{name}.{ranged.name}: the grid sampler takes choice lists, and {name} "
                                f"{source} {ranged.name} over a {ranged.kind} range; give {{choice: [values]}} or "
                                "sampler tpe or random")
    return TuneSettings(first, float(fraction), trials, objective, sampler, seed, tuple(run_seeds), report_on, spaces)


def _spaces(raw: Any, entries: Sequence[tuple[str, dict[str, Any]]], *, at: str) -> dict[str, Space]:
    import strategies

    if not isinstance(raw, dict):
        raise TuneError(f"{at} must be a mapping of strategy names to {{hyperparameter: distribution}}")
    names = list(dict.fromkeys(name for name, _ in entries))
    spaces: dict[str, Space] = {}
    for key, given in raw.items():
        try:
            name = strategies.REGISTRY.get(str(key)).name
        except strategies.StrategyError:
            name = None
        if name not in names:
            raise TuneError(f"{at}: '{key}' is not a strategy of this config{closest(str(key), names)}; present: "
                            f"{', '.join(names)}")
        if name in spaces:
            raise TuneError(f"{at}: '{key}' names the strategy '{name}' a second time")
        spaces[name] = _space(name, given, [hp for n, hp in entries if n == name], at=f"{at}.{key}")
    for name in names:
        if name not in spaces:
            spaces[name] = derived_space(name, at=at)
    return spaces


def _space(name: str, raw: Any, entries: list[dict[str, Any]], *, at: str) -> Space:
    import strategies

    declared = {h.name: h for h in strategies.REGISTRY.get(name).hparams}
    if not isinstance(raw, dict) or not raw:
        raise TuneError(f"{at} must be a non-empty mapping of hyperparameters to {{uniform: [low, high]}}, "
                        "{log_uniform: [low, high]} or {choice: [values]}")
    dims = []
    for hp_name, spec in raw.items():
        hp = declared.get(hp_name)
        if hp is None:
            raise TuneError(f"{at}: unknown hyperparameter '{hp_name}'{closest(str(hp_name), declared)} of strategy "
                            f"'{name}'; allowed: {', '.join(declared)}")
        dim = _dimension(hp, spec, at=f"{at}.{hp_name}", owner=name)
        for hparams in entries:  # each end of a range and each choice with the entry's other settings
            for value in (dim.choices if dim.kind == "choice" else (dim.low, dim.high)):
                try:
                    strategies.resolve(name, {**hparams, hp_name: value})
                except strategies.StrategyError as exc:
                    raise TuneError(f"{at}: {exc}") from None
        dims.append(dim)
    return Space(name, tuple(dims))


def _dimension(hp, spec: Any, *, at: str, owner: str) -> Dimension:
    import strategies

    if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in DISTRIBUTIONS:
        raise TuneError(f"{at} must be one of {{uniform: [low, high]}}, {{log_uniform: [low, high]}}, "
                        f"{{choice: [values]}}, got {spec!r}")
    kind, values = next(iter(spec.items()))

    def checked(value: Any) -> Any:
        try:
            return hp.check(value, owner=owner)
        except strategies.StrategyError as exc:
            raise TuneError(f"{at}: {exc}") from None

    if kind == "choice":
        if not isinstance(values, list) or not values:
            raise TuneError(f"{at}: choice must be a non-empty list of values, got {values!r}")
        choices = [checked(v) for v in values]
        if len(set(map(repr, choices))) != len(choices):
            raise TuneError(f"{at}: choice lists a value twice: {values}")
        return Dimension(hp.name, kind, choices=tuple(choices))
    if hp.type not in (int, float):
        raise TuneError(f"{at}: '{hp.name}' is a {hp.kind} hyperparameter; search it with {{choice: [values]}}")
    integer = hp.type is int
    if (not isinstance(values, list) or len(values) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)):
        raise TuneError(f"{at}: {kind} must be [low, high], two numbers, got {values!r}")
    low, high = values
    if integer and not all(_integer(v) for v in values):
        raise TuneError(f"{at}: '{hp.name}' is an integer hyperparameter; {kind} bounds must be integers, got {values}")
    if not all(math.isfinite(v) for v in values):
        raise TuneError(f"{at}: {kind} bounds must be finite numbers, got {values}")
    if low == high:
        raise TuneError(f"{at}: {kind} range [{low}, {high}] is empty; give low < high (or {{choice: [{low}]}} to "
                        "fix it)")
    if low > high:
        raise TuneError(f"{at}: {kind} range [{low}, {high}] is inverted; give [low, high] with low < high")
    if kind == "log_uniform" and low <= 0:
        raise TuneError(f"{at}: log_uniform needs low > 0, got [{low}, {high}]")
    return Dimension(hp.name, kind, checked(low), checked(high), integer=integer)


def derived_space(name: str, *, at: str = "tune.spaces") -> Space:
    """The space of a strategy the config gives none: each float hyperparameter whose declared
    range is finite, uniformly over it; :class:`TuneError` where there is none."""
    import strategies

    hparams = strategies.REGISTRY.get(name).hparams
    dims = tuple(Dimension(h.name, "uniform", *h.finite_range()) for h in hparams if h.finite_range() is not None)
    if not dims:
        rates = [h.name for h in hparams if h.type is float and h.finite_range() is None]
        why = (f" ({', '.join(rates)}: bounded above only by the cap on rates, or not at all)" if rates else "")
        raise TuneError(f"{at}: no space for '{name}', and none of its declared ranges is finite{why}; give "
                        f"tune.spaces.{name}, e.g. {{{(rates or [h.name for h in hparams] or ['lr'])[0]}: "
                        "{log_uniform: [0.001, 0.3]}}")
    return Space(name, dims, derived=True)


# -- the tuned: block, read back (no torch) ---------------------------------------------------

@dataclass(frozen=True)
class TunedEntry:
    """One strategy entry of a tuned config: what was chosen, on which protocol, with what
    budget (from its ``tuned:`` block)."""

    scenario: str
    strategy: str
    hparams: dict[str, Any]  # the entry's settings with the chosen ones, as best.yaml gives them
    chosen: dict[str, Any]
    trials: int
    complete: int
    best_value: float | None
    objective: str
    first_tasks: int
    n_tasks: int
    val_fraction: float
    report_on: str
    sampler: str

    @property
    def task_range(self) -> list[int] | None:
        """The task range of the stream that best.yaml trains and reports on."""
        return [self.first_tasks, self.n_tasks] if self.report_on == "remaining" else None

    def matches(self, record: dict[str, Any]) -> bool:
        """Whether a run record is of this entry: its scenario (on the stream best.yaml names),
        strategy, and every setting of the entry."""
        config = record.get("config") or {}
        hparams, params = config.get("hparams") or {}, config.get("scenario_params") or {}
        return (record.get("scenario") == self.scenario and record.get("strategy") == self.strategy
                and params.get("task_range") == self.task_range
                and all(k in hparams and hparams[k] == v for k, v in self.hparams.items()))

    def protocol(self) -> str:
        """The protocol in one sentence, saying plainly where the tasks of the choice went."""
        chosen_on = f"task{'s 1-' if self.first_tasks > 1 else ' '}{self.first_tasks}"
        where = (f"reported on tasks {self.first_tasks + 1}-{self.n_tasks} of {self.n_tasks}: the tasks of the "
                 "choice are neither trained on nor measured here" if self.report_on == "remaining" else
                 f"reported on all {self.n_tasks} tasks, including {chosen_on}, on which the choice was made: "
                 "those are not held out")
        return (f"Hyperparameters chosen by clbench tune on {chosen_on} of {self.scenario} (a validation split of "
                f"{self.val_fraction:g} of their training examples; no test set used; objective "
                f"{self.objective.upper()}; {self.sampler} sampler); {where}.")


def tuned_entries(raw: Any) -> tuple[list[TunedEntry], list[str]]:
    """The entries of the ``tuned:`` block of a parsed config (best.yaml, or its copy kept with
    the results), and one line for each part that is not well formed (a hand-edited file)."""
    block = raw.get("tuned") if isinstance(raw, dict) else None
    if block is None:
        return [], []
    found, problems = [], []
    try:
        common = {k: block[k] for k in ("scenario", "objective", "first_tasks", "n_tasks", "val_fraction",
                                        "report_on", "sampler")}
        entries = block["strategies"]
        if not isinstance(entries, list):
            raise TypeError
    except (KeyError, TypeError):
        return [], [f"tuned: not a block written by clbench tune ({str(block)[:80]})"]
    for i, item in enumerate(entries):
        try:
            found.append(TunedEntry(strategy=str(item["name"]), hparams=dict(item["hparams"]),
                                    chosen=dict(item["chosen"]), trials=int(item["trials"]),
                                    complete=int(item["complete"]),
                                    best_value=None if item.get("best_value") is None else float(item["best_value"]),
                                    **common))
        except (KeyError, TypeError, ValueError):
            problems.append(f"tuned.strategies[{i}] skipped: not a tuned entry ({str(item)[:80]})")
    return found, problems


def annotate(rows: list[dict[str, Any]], entries: Sequence[TunedEntry], config_ids: Mapping[str, str],
             records: Sequence[dict[str, Any]], *, scenario: str) -> list[dict[str, Any]]:
    """The tuned rows of one report section: for each comparison row (``config_id`` and
    ``strategy`` label) whose runs are of a tuned entry, the entry and the label the table
    gives the row, marked with the budget (``mer (tuned, 20 trials)``)."""
    out = []
    for entry in entries:
        if entry.scenario != scenario:
            continue
        ids = {config_ids.get(r.get("run_id")) for r in records if entry.matches(r)}
        for row in rows:
            if row["config_id"] in ids:
                out.append({"config_id": row["config_id"], "entry": entry,
                            "label": f"{row['strategy']} (tuned, {entry.trials} trials)"})
    return out
