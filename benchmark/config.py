"""Experiment files: YAML -> validated :class:`Experiment` -> one :class:`RunSpec` per run.

Layout (DESIGN.md)::

    name: quickstart
    seeds: [0, 1, 2]
    train: {batch_size: 10, epochs: 1}
    model: {name: auto}                 # optional: auto | mlp | cnn, hidden: [100, 100]
    scenarios:
      - {name: permuted-mnist, source: mnist5k, n_tasks: 10, per_task: 1000}
    strategies:
      - {name: naive, lr: 0.1}

Every name and parameter is checked against the registries before anything runs, so a typo
fails at once with one line; :func:`load_experiment` also checks that each stream fits its data
where that needs no download (an npz file, ``per_task`` against the examples there are). YAML is
read with ``yaml.safe_load``'s loader (which also refuses a key given twice in one mapping): a
config never runs code.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Sequence
from typing import Any

import yaml

import scenarios
import strategies
from benchmark.messages import closest
from benchmark.evaluation import HEADS
from benchmark.models import BACKBONES, INITS
from benchmark.settings import DEVICES, MAX_NAME_BYTES, MAX_SEED, defaults, keys
from benchmark.spec_keys import scenario_identity, train_identity
from benchmark.targets import Target, TargetError
from benchmark.targets import parse as parse_targets
from benchmark.tune_config import TuneError, TuneSettings
from benchmark.tune_config import parse as parse_tune

# the keys and defaults of benchmark.settings.SETTINGS (what `clbench list` shows); settings that
# do not change results stay out of the run id (and the report's groups):
# benchmark.spec_keys.NOT_IN_RUN_ID and SCENARIO_NOT_IN_RUN_ID
TOP_KEYS = keys("")
TRAIN_DEFAULTS = defaults("train")
MODEL_DEFAULTS = defaults("model")
TUNE_KEYS = keys("tune")


class ConfigError(ValueError):
    """A malformed experiment file or override; the message is one line."""


class _SafeLoader(yaml.SafeLoader):
    """``yaml.safe_load``'s loader, refusing a key given twice in one mapping (plain PyYAML
    keeps the last one silently, so half of a config would be dropped without a word)."""


def _mapping_without_duplicates(loader: _SafeLoader, node: yaml.MappingNode, deep: bool = False):
    seen = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in seen
        except TypeError:  # unhashable: construct_mapping says so
            continue
        if duplicate:
            raise yaml.constructor.ConstructorError(None, None, f"the key {key!r} is given twice in one mapping",
                                                    key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_SafeLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def _kind(value: Any) -> str:
    """'a list', 'a string', ... for messages about a value of the wrong type."""
    names = {list: "a list", dict: "a mapping", str: "a string", bool: "a boolean", int: "an integer",
             float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


@dataclass(frozen=True)
class RunSpec:
    """Everything that determines one run's results."""

    scenario: str
    scenario_params: dict[str, Any]
    strategy: str
    hparams: dict[str, Any]
    seed: int
    train: dict[str, Any]
    model: dict[str, Any]

    def identity(self) -> dict[str, Any]:
        """The resolved spec that the run id is a digest of."""
        return {
            "scenario": self.scenario,
            "scenario_params": scenario_identity(self.scenario_params),
            "strategy": self.strategy, "hparams": strategies.recorded_hparams(self.strategy, self.hparams),
            "seed": self.seed,
            "train": train_identity(self.train),
            "model": self.model,
        }

    @property
    def run_id(self) -> str:
        """``<scenario>__<strategy>__s<seed>__<digest>``: only [a-z0-9-_], whatever was typed."""
        blob = json.dumps(self.identity(), sort_keys=True, default=str)
        digest = hashlib.sha256(blob.encode()).hexdigest()[:10]
        return f"{_safe(self.scenario)}__{_safe(self.strategy)}__s{self.seed}__{digest}"

    def to_dict(self) -> dict[str, Any]:
        """The whole resolved spec, including the settings that stay out of the run id."""
        return {**self.identity(), "scenario_params": dict(self.scenario_params), "train": dict(self.train)}


def _safe(name: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:40] or "x"


@dataclass(frozen=True)
class Experiment:
    """A validated experiment file."""

    name: str
    seeds: tuple[int, ...]
    train: dict[str, Any]
    model: dict[str, Any]
    scenarios: tuple[tuple[str, dict[str, Any]], ...]
    strategies: tuple[tuple[str, dict[str, Any]], ...]
    source: dict[str, Any] = field(default_factory=dict)
    targets: tuple[Target, ...] = ()  # published figures the report shows beside the measured ones
    tune: TuneSettings | None = None  # how `clbench tune` chooses hyperparameters (benchmark.tune_config)
    tuned: dict[str, Any] | None = None  # how `clbench tune` chose them (best.yaml's tuned: block)

    def specs(self) -> list[RunSpec]:
        """Every (scenario x strategy x seed), in that nesting order."""
        return [
            RunSpec(sc, dict(sp), st, dict(hp), seed, dict(self.train), dict(self.model))
            for sc, sp in self.scenarios for st, hp in self.strategies for seed in self.seeds
        ]


def load_experiment(path: str | Path, *, overrides: list[str] = (), check_data: bool = True) -> Experiment:
    """Read, override (``--set key=value``) and validate an experiment file; with
    ``check_data``, also check that every stream fits its data (:func:`scenarios.check_data`)."""
    if "\0" in str(path):
        raise ConfigError(f"config file name {str(path)!r} contains a NUL byte")
    if not str(path).strip():
        raise ConfigError("config file name is empty; give an experiment YAML file")
    p = Path(path)
    _check_config_path(p)
    try:
        raw = yaml.load(p.read_text(encoding="utf-8"), Loader=_SafeLoader)  # a SafeLoader: never runs code
    except RecursionError:
        raise ConfigError(f"config {p}: nested too deeply for a config (YAML mappings or lists inside each "
                          "other thousands of levels down)") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        if isinstance(exc, yaml.reader.ReaderError):  # a character YAML does not allow
            char = exc.character if isinstance(exc.character, int) else ord(exc.character)
            problem = f"unacceptable character #x{char:04x} at character {exc.position}: {exc.reason}"
        raise ConfigError(f"config {p}: malformed YAML{where}: {problem}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config {p}: not UTF-8 text (byte {exc.start}); save it as UTF-8 YAML") from None
    except OSError as exc:
        raise ConfigError(f"config {p}: cannot read it ({exc.strerror or type(exc).__name__})") from None
    if raw is None:
        raise ConfigError(f"config {p}: the file is empty; it must be a mapping with keys {', '.join(TOP_KEYS)}")
    if not isinstance(raw, dict):
        raise ConfigError(f"config {p}: the top level is {_kind(raw)}; it must be a mapping with keys "
                          f"{', '.join(TOP_KEYS)}")
    raw.setdefault("name", p.stem)
    return experiment_from_mapping(raw, where=str(p), overrides=overrides, check_data=check_data)


def experiment_from_mapping(raw: dict[str, Any], *, where: str = "config", overrides: Sequence[str] = (),
                            check_data: bool = True) -> Experiment:
    """:func:`load_experiment` of a config already read (a dict, as a notebook gives it):
    ``overrides`` applied, validated, streams checked against their data; errors name ``where``."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: the top level is {_kind(raw)}; it must be a mapping with keys {', '.join(TOP_KEYS)}")
    raw = copy.deepcopy(raw)
    original = copy.deepcopy(raw) if overrides else None
    for item in overrides:
        apply_override(raw, item)

    def checked(source: dict[str, Any]) -> Experiment:
        try:
            exp = validate(source, where=where)
        except RecursionError:
            raise ConfigError(f"config {where}: nested too deeply for a config") from None
        if check_data:
            _check_data(exp, where=where)
        return exp

    try:
        return checked(raw)
    except ConfigError as exc:
        if original is None:
            raise
        try:  # the file alone is fine: the --set values are what is wrong
            checked(original)
        except ConfigError:
            raise exc from None
        raise ConfigError(f"--set {' '.join(overrides)}: {str(exc).removeprefix(f'{where}: ')}") from None


def _check_config_path(p: Path) -> None:
    """One line for a config path that is not a readable regular file: missing, a folder, a
    FIFO or device, a symbolic-link loop, a name longer than the filesystem allows."""
    import errno
    import stat

    try:
        mode = p.stat().st_mode
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            raise ConfigError(f"config path is too long for the filesystem ({len(str(p))} characters): "
                              f"{str(p)[:60]}...") from None
        if exc.errno == errno.ELOOP:
            raise ConfigError(f"config {p} is a symbolic link loop; give an experiment YAML file") from None
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            raise ConfigError(f"config file not found: {p}") from None
        raise ConfigError(f"config {p}: cannot read it ({exc.strerror or type(exc).__name__})") from None
    if stat.S_ISDIR(mode):
        raise ConfigError(f"config {p} is a folder; give an experiment YAML file")
    if not stat.S_ISREG(mode):
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) \
            else "a socket" if stat.S_ISSOCK(mode) else "not a regular file"
        raise ConfigError(f"config {p} is {kind}, not a file; give an experiment YAML file")


def _check_data(exp: Experiment, *, where: str) -> None:
    """Refuse a stream that does not fit its data before any run starts (a broken npz file,
    more examples per task than there are); sources that need a download are left to the run."""
    # the largest replay memory of the sweep ('mem_size', the examples a strategy keeps to replay)
    replay = max((int(hp.get("mem_size") or 0) for _, hp in exp.strategies), default=0)
    for i, (name, params) in enumerate(exp.scenarios):
        try:
            scenarios.check_data(name, seeds=exp.seeds, replay_examples=replay, **params)
        except scenarios.ScenarioError as exc:
            raise ConfigError(f"{where}: scenarios[{i}]: {exc}") from None


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Apply ``KEY=VALUE`` in place. KEY is dotted: ``train.batch_size``, ``seeds``,
    ``strategies.er.mem_size`` (every entry named er), ``scenarios.0.n_tasks`` (by position).
    VALUE is read as YAML (``1``, ``0.5``, ``[0, 1]``, ``true``)."""
    if "=" not in item:
        raise ConfigError(f"--set '{item}' must look like KEY=VALUE, e.g. train.batch_size=1")
    key, _, text = item.partition("=")
    parts = [k for k in key.strip().split(".")]
    if not all(parts):
        raise ConfigError(f"--set key '{key}' is malformed; use dotted names like train.batch_size")
    try:
        value = yaml.load(text, Loader=_SafeLoader)  # a SafeLoader: never runs code
    except yaml.YAMLError:
        raise ConfigError(f"--set {key}: value '{text}' is not valid YAML") from None
    head = parts[0]
    if head not in TOP_KEYS:
        raise ConfigError(f"--set key '{key}' does not exist{closest(head, TOP_KEYS)}; top-level keys: {', '.join(TOP_KEYS)}")
    if head in ("name", "seeds", "description", "targets"):
        if len(parts) != 1:
            raise ConfigError(f"--set key '{key}' does not exist; '{head}' has no sub-keys")
        raw[head] = value
        return
    if head == "tuned":
        raise ConfigError(f"--set key '{key}': the tuned block is written by clbench tune, not set by hand")
    if head in ("train", "model", "tune"):
        allowed = {"train": TRAIN_DEFAULTS, "model": MODEL_DEFAULTS, "tune": TUNE_KEYS}[head]
        if len(parts) != 2 or parts[1] not in allowed:
            sub = parts[1] if len(parts) > 1 else ""
            raise ConfigError(f"--set key '{key}' does not exist{closest(sub, allowed)}; allowed: "
                              + ", ".join(f"{head}.{k}" for k in allowed))
        if raw.get(head) is None:
            raw[head] = {}
        section = raw[head]
        if not isinstance(section, dict):
            raise ConfigError(f"--set {key}: '{head}' in the config is {_kind(section)}; it must be a mapping "
                              f"with keys {', '.join(allowed)}")
        section[parts[1]] = value
        return
    entries = raw.get(head)
    if len(parts) != 3 or not isinstance(entries, list):
        raise ConfigError(f"--set key '{key}' does not exist; use {head}.<name or index>.<parameter>")
    selector, param = parts[1], parts[2]
    if param == "name":
        raise ConfigError(f"--set key '{key}': the name of an entry cannot be overridden")
    for i, e in enumerate(entries):  # an entry may be written as its bare name
        if isinstance(e, str):
            entries[i] = {"name": e}
    if selector.isascii() and selector.isdigit():
        idx = int(selector)
        if idx >= len(entries):
            raise ConfigError(f"--set key '{key}': there are only {len(entries)} {head} entries")
        targets = [entries[idx]]
    else:
        targets = [e for e in entries if isinstance(e, dict) and _norm(str(e.get("name", ""))) == _norm(selector)]
        if not targets:
            names = [str(e.get("name")) for e in entries if isinstance(e, dict)]
            raise ConfigError(f"--set key '{key}': no {'strategy' if head == 'strategies' else 'scenario'} named '{selector}' in the config{closest(selector, names)}; "
                              f"present: {', '.join(names)}")
    for t in targets:
        if not isinstance(t, dict):
            raise ConfigError(f"--set key '{key}': {head}[{selector}] is {_kind(t)}, not an entry like {{name: ...}}")
        t[param] = value


def _norm(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(" ", "-")


def validate(raw: dict[str, Any], *, where: str = "config") -> Experiment:
    """Check every key, type and name of a parsed config; resolve all parameters."""
    for key in raw:
        if key not in TOP_KEYS:
            raise ConfigError(f"{where}: unknown key '{key}'{closest(str(key), TOP_KEYS)}; allowed: {', '.join(TOP_KEYS)}")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{where}: 'name' must be a non-empty string, got {name!r}")
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise ConfigError(f"{where}: 'name' is {len(name.encode('utf-8'))} bytes long; at most {MAX_NAME_BYTES} "
                          "(it names the results folder)")
    if "/" in name or "\\" in name or not name.isprintable():
        raise ConfigError(f"{where}: 'name' is {name!r}; it names the results folder, so it may not contain "
                          "'/', '\\' or control characters (NUL, tab, newline)")
    description = raw.get("description")
    if description is not None and not isinstance(description, str):
        raise ConfigError(f"{where}: 'description' must be a string, got {_kind(description)}")
    seeds = raw.get("seeds", [0])
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = [seeds]
    if not isinstance(seeds, list) or not seeds:
        raise ConfigError(f"{where}: 'seeds' must be a non-empty list of integers >= 0, got {seeds!r}")
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise ConfigError(f"{where}: every seed must be an integer >= 0, got {s!r}")
        if s > MAX_SEED:
            raise ConfigError(f"{where}: seed {s} is too large; allowed: integers 0 .. {MAX_SEED}")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"{where}: 'seeds' lists a seed twice: {seeds}")
    train = _section(raw, "train", TRAIN_DEFAULTS, where)
    for k in ("batch_size", "epochs", "eval_batch_size"):
        v = train[k]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"{where}: train.{k} must be an integer >= 1, got {v!r}")
    for k in ("eval_every", "eval_subsample"):
        v, low = train[k], 0 if k == "eval_every" else 1
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise ConfigError(f"{where}: train.{k} must be an integer >= {low}, got {v!r}")
    if train["eval_head"] not in HEADS:
        raise ConfigError(f"{where}: train.eval_head is {train['eval_head']!r}; allowed: {', '.join(HEADS)}"
                          f"{closest(str(train['eval_head']), HEADS)}")
    if not isinstance(train["task_mask"], bool):
        raise ConfigError(f"{where}: train.task_mask must be true or false, got {train['task_mask']!r}")
    if train["device"] not in DEVICES:
        raise ConfigError(f"{where}: train.device is {train['device']!r}; allowed: {', '.join(DEVICES)}"
                          f"{closest(str(train['device']), DEVICES)}")
    model = _section(raw, "model", MODEL_DEFAULTS, where)
    if model["name"] not in ("auto", *BACKBONES):
        raise ConfigError(f"{where}: model.name is {model['name']!r}; allowed: auto, {', '.join(BACKBONES)}"
                          f"{closest(str(model['name']), ('auto', *BACKBONES))}")
    if model["init"] not in INITS:
        raise ConfigError(f"{where}: model.init is {model['init']!r}; allowed: {', '.join(INITS)}"
                          f"{closest(str(model['init']), INITS)}")
    hidden = model["hidden"]
    if not isinstance(hidden, list) or not hidden or not all(isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in hidden):
        raise ConfigError(f"{where}: model.hidden must be a non-empty list of integers >= 1, got {hidden!r}")
    scs = tuple(_entries(raw, "scenarios", where, _resolve_scenario))
    sts = tuple(_entries(raw, "strategies", where, _resolve_strategy))
    for kind, entries in (("scenario", scs), ("strategy", sts)):
        seen = set()
        for e in entries:
            key = json.dumps(e, sort_keys=True, default=str)
            if key in seen:
                raise ConfigError(f"{where}: the {kind} '{e[0]}' is listed twice with the same parameters")
            seen.add(key)
    try:
        goals = parse_targets(raw.get("targets"), scenarios=[sc for sc, _ in scs], strategies=sts, where=where)
    except TargetError as exc:
        raise ConfigError(str(exc)) from None
    try:
        tune = parse_tune(raw.get("tune"), scenarios=scs, strategies=sts, seeds=seeds, where=where)
    except TuneError as exc:
        raise ConfigError(str(exc)) from None
    tuned = raw.get("tuned")
    if tuned is not None and not isinstance(tuned, dict):
        raise ConfigError(f"{where}: 'tuned' is {_kind(tuned)}; it is the mapping clbench tune writes into best.yaml")
    return Experiment(name.strip(), tuple(seeds), train, model, scs, sts, source=raw, targets=goals, tune=tune,
                      tuned=tuned)


def _section(raw, key, defaults, where):
    given = raw.get(key)
    if given is None:
        given = {}
    if not isinstance(given, dict):
        raise ConfigError(f"{where}: '{key}' is {_kind(given)}; it must be a mapping with keys {', '.join(defaults)}")
    for k in given:
        if k not in defaults:
            raise ConfigError(f"{where}: unknown key '{key}.{k}'{closest(str(k), defaults)}; allowed: {', '.join(defaults)}")
    return {**defaults, **given}


def _entries(raw, key, where, resolver):
    items = raw.get(key)
    if not isinstance(items, list) or not items:
        raise ConfigError(f"{where}: '{key}' must be a non-empty list of entries like {{name: ..., <parameter>: ...}}")
    out = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, dict) or "name" not in item:
            raise ConfigError(f"{where}: {key}[{i}] must be a mapping with a 'name', got {item!r}")
        params = {k: v for k, v in item.items() if k != "name"}
        for k in params:
            if not isinstance(k, str):
                raise ConfigError(f"{where}: {key}[{i}] has a parameter name that is not a string: {k!r}")
        try:
            out.append(resolver(item["name"], params))
        except (scenarios.ScenarioError, strategies.StrategyError) as exc:
            raise ConfigError(f"{where}: {key}[{i}]: {exc}") from None
    return out


def _resolve_scenario(name, params):
    if not isinstance(name, str):
        raise scenarios.ScenarioError(f"a scenario name must be a string, got {name!r}")
    return scenarios.resolve_params(name, **params)


def _resolve_strategy(name, params):
    return strategies.resolve(name, params)
