"""Streams by name: ``build(name, seed=..., **params)`` and ``available()``.

The built-in streams are declared here; ``@scenarios.register("name")`` adds a plugin stream
(a builder returning one of our Streams or any Avalanche benchmark, its parameters declared in
its signature: :mod:`scenarios.declared`) to the same table, from a plugin file or from the
entry-point group ``clbench.scenarios``."""

from __future__ import annotations

import inspect
import math
import random
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scenarios import adapter, selection, sizes, streams
from scenarios.declared import declared, takes_seed
from scenarios.errors import ScenarioError
from scenarios.params import Param, closest, resolve
from scenarios.sources import OFFLINE_SOURCES, SOURCES, load_source
from scenarios.stream import Stream, to_avalanche
from scenarios.transforms import INTERPOLATIONS

ENTRY_POINT_GROUP = "clbench.scenarios"


@dataclass(frozen=True)
class PluginStream:
    """How a registered plugin stream is built: its builder, where it comes from, and what it
    says of itself where the benchmark cannot (None: inferred from the benchmark)."""

    builder: Callable[..., Any]
    origin: str
    backbone: str | None = None
    task_labels: bool | None = None
    file: str | None = None  # the file the builder is defined in (None: not known)

    def portable(self, plugin_files: Iterable[str]) -> bool:
        """Whether worker processes can register it too: it comes from an entry point or from
        one of ``plugin_files`` (the files the workers load), not from code in this process."""
        if self.origin.startswith("entry point"):
            return True
        return self.file is not None and any(Path(f).resolve() == Path(self.file).resolve() for f in plugin_files)


@dataclass(frozen=True)
class StreamDef:
    """A registered stream: its builder, what it is, and its declared parameters."""

    name: str
    builder: streams.Builder
    description: str
    params: tuple[Param, ...]
    reconcile: Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]] | None = None
    check: streams.Checker | None = None  # does the stream fit its data (see check_data)
    examples: Callable[..., int] = sizes.per_task_examples  # how many examples it holds (scenarios.sizes)
    plugin: PluginStream | None = None  # registered with @scenarios.register (None: built in)


def _source_params(default: str = "mnist5k") -> tuple[Param, ...]:
    return (
        Param("source", "str", default, "where the examples come from", choices=SOURCES),
        Param("data_root", "str", None, "folder of torchvision sources (default ~/.cache/clbench/data)", optional=True),
        Param("path", "str", None, "the .npz file of source npz", optional=True),
        Param("download", "bool", True, "download a torchvision source that is not under data_root"),
        Param("test_per_task", "int", None, "cap on test examples per task (null: the whole test split)",
              minimum=1, optional=True),
    )


def _permuted_params(n_tasks: int, per_task: int) -> tuple[Param, ...]:
    return _source_params() + (
        Param("n_tasks", "int", n_tasks, "number of tasks", minimum=1),
        Param("per_task", "int", per_task, "training examples per task", minimum=1),
        Param("identity_first", "bool", False, "task 0 keeps the original pixel order"),
        Param("task_labels", "bool", False, "give task k the task label k (default: one label, single head)"),
    )


def _split_params(source: str, n_tasks: int) -> tuple[Param, ...]:
    return _source_params(source) + (
        Param("n_tasks", "int", n_tasks, "number of tasks; must divide the number of classes", minimum=1),
        Param("per_task", "int", None, "training examples per task (null: all of the task's classes)",
              minimum=1, optional=True),
        Param("task_incremental", "bool", False, "task-IL with task labels (true) or class-IL single head (false)"),
        Param("class_order", "int-list", None, "fixed order of the classes (default ascending)", optional=True),
        Param("shuffle_classes", "bool", False, "order the classes at random by the seed"),
    )


def _definitions() -> dict[str, StreamDef]:
    defs = [
        StreamDef("permuted-mnist", streams.permuted,
                  "one fixed random pixel permutation per task (GEM/MER Permutations)", _permuted_params(20, 1000),
                  check=streams.check_permuted),
        StreamDef("many-permutations", streams.permuted,
                  "Permutations with 100 tasks x 200 examples (MER Many Permutations)", _permuted_params(100, 200),
                  check=streams.check_permuted),
        StreamDef("rotated-mnist", streams.rotated,
                  "one fixed rotation angle per task, growing task by task as GEM's generator draws them "
                  "(GEM/MER/La-MAML Rotations)",
                  _source_params() + (
                      Param("n_tasks", "int", 20, "number of tasks (set by angles when they are given)", minimum=1),
                      Param("per_task", "int", 1000, "training examples per task", minimum=1),
                      Param("angles", "float-list", "progressive",
                            "progressive (GEM: task t in [t, t+1) * (max-min)/T + min), uniform (each in "
                            "[min, max)), or an explicit angle per task in degrees", choices=streams.ANGLE_MODES),
                      Param("min_angle", "float", 0.0, "smallest angle drawn, in degrees"),
                      Param("max_angle", "float", 180.0, "largest angle drawn (excluded), in degrees"),
                      Param("interpolation", "str", "nearest",
                            "pixel interpolation of the rotation (nearest: PIL's default, the papers' data)",
                            choices=INTERPOLATIONS),
                      Param("task_labels", "bool", False, "give task k the task label k (default: single head)"),
                  ), reconcile=streams.reconcile_angles, check=streams.check_rotated),
        StreamDef("split-mnist", streams.split, "classes divided into tasks (class- or task-incremental)",
                  _split_params("mnist5k", 5), check=streams.check_split, examples=sizes.split_examples),
        StreamDef("split-cifar10", streams.split, "split with CIFAR-10 as the default source",
                  _split_params("cifar10", 5), check=streams.check_split, examples=sizes.split_examples),
        StreamDef("split-cifar100", streams.split, "split with CIFAR-100 as the default source (20 tasks)",
                  _split_params("cifar100", 20), check=streams.check_split, examples=sizes.split_examples),
    ]
    # every stream can be cut to a range of its tasks and evaluated on a validation split
    # (scenarios.selection); these come last, so that `clbench list` shows each stream's own first
    builtin = {d.name: replace(d, params=d.params + selection.PARAMS) for d in defs}
    _load_entry_points()
    return {**builtin, **_PLUGINS}


_PLUGINS: dict[str, StreamDef] = {}  # plugin streams by normalised name
_BROKEN: dict[str, str] = {}  # entry point name -> one-line error
_ENTRY_POINTS_LOADED = [False]


def register(name: str, *, description: str | None = None, backbone: str | None = None,
             task_labels: bool | None = None, origin: str | None = None):
    """Decorator: register ``builder`` as the stream ``name``.

    ``builder(*, seed, **params)`` returns a :class:`Stream` or any Avalanche benchmark (a
    ``CLScenario``); its keyword-only parameters, typed and with defaults (``Annotated`` with
    ``strategies.Range``/``strategies.Choice`` for ranges), are the stream's parameters.
    ``backbone`` ("mlp"/"cnn") and ``task_labels`` override what is inferred from the benchmark."""
    if not isinstance(name, str) or not name.strip() or not name.isprintable():
        raise ScenarioError(f"scenario name {name!r} must be a non-empty string of printable characters")
    key = normalise(name)
    if backbone is not None and backbone not in ("mlp", "cnn"):
        raise ScenarioError(f"scenario '{key}': backbone must be mlp or cnn, got {backbone!r}")

    def decorate(builder: Callable[..., Any]) -> Callable[..., Any]:
        if not callable(builder):
            raise ScenarioError(f"scenario '{key}': what is registered must be a function, got {type(builder).__name__}")
        where = origin or _origin(builder)
        try:
            file = inspect.getsourcefile(builder)
        except TypeError:
            file = None
        if key in _definitions():
            by = _PLUGINS[key].plugin.origin if key in _PLUGINS else "clbench"
            raise ScenarioError(f"scenario name '{key}' is already registered (by {by})")
        paragraph = (builder.__doc__ or "").strip().split("\n\n")[0]
        doc = description or " ".join(line.strip() for line in paragraph.splitlines()) or f"plugin stream ({where})"
        own = declared(builder, owner=key)
        taken = [p.name for p in own if p.name in selection.NAMES]
        if taken:
            raise ScenarioError(f"scenario '{key}': parameter '{taken[0]}' is one every stream takes "
                                f"({', '.join(selection.NAMES)}: scenarios.selection); give it another name")
        _PLUGINS[key] = StreamDef(key, builder, doc, own + selection.PARAMS,
                                  plugin=PluginStream(builder, where, backbone, task_labels, file))
        return builder

    return decorate


def _origin(builder: Callable[..., Any]) -> str:
    try:
        return f"plugin {inspect.getsourcefile(builder)}"
    except TypeError:
        return f"module {getattr(builder, '__module__', '?')}"


def _load_entry_points() -> None:
    """Import, once, every module named in the entry-point group ``clbench.scenarios`` (it
    registers its streams on import) or register a builder under the entry point's name. A
    failing one is remembered and named when a stream is not found."""
    if _ENTRY_POINTS_LOADED[0]:
        return
    _ENTRY_POINTS_LOADED[0] = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
            if not isinstance(obj, type(sys)):
                register(ep.name, origin=f"entry point {ep.value}")(obj)
        except Exception as exc:  # noqa: BLE001 (a broken plugin is remembered, not fatal)
            text = str(exc).strip().splitlines()
            _BROKEN[ep.name] = f"{type(exc).__name__}{': ' + text[0] if text else ''}"


def snapshot() -> dict[str, Any]:
    """The plugin streams registered now, for :func:`restore` (tests, notebooks)."""
    return {"plugins": dict(_PLUGINS), "broken": dict(_BROKEN), "loaded": _ENTRY_POINTS_LOADED[0]}


def restore(state: dict[str, Any] | None = None) -> None:
    """Put back a :func:`snapshot` (None: no plugin stream, entry points not loaded yet)."""
    state = state or {"plugins": {}, "broken": {}, "loaded": False}
    _PLUGINS.clear()
    _PLUGINS.update(state["plugins"])
    _BROKEN.clear()
    _BROKEN.update(state["broken"])
    _ENTRY_POINTS_LOADED[0] = state["loaded"]


def normalise(name: str) -> str:
    """Stream names are matched case-insensitively, with '_' and ' ' read as '-'."""
    return name.strip().lower().replace("_", "-").replace(" ", "-")


def definition(name: str) -> StreamDef:
    """The registered stream ``name``, or a ScenarioError listing the names there are."""
    defs = _definitions()
    key = normalise(name) if isinstance(name, str) else name
    if key not in defs:
        broken = f" (plugins that failed to load: {'; '.join(f'{k}: {v}' for k, v in _BROKEN.items())})" if _BROKEN else ""
        raise ScenarioError(f"unknown scenario '{name}'{closest(str(key), defs)}; allowed: {', '.join(defs)}{broken}")
    return defs[key]


def available() -> dict[str, dict[str, Any]]:
    """Every stream name with its parameters and their defaults."""
    return {name: {p.name: p.default for p in d.params} for name, d in _definitions().items()}


def resolve_params(name: str, **params: Any) -> tuple[str, dict[str, Any]]:
    """(canonical stream name, every parameter with its checked value), without loading data."""
    d = definition(name)
    resolved = resolve(d.name, d.params, params)
    if d.plugin is not None:  # its own parameters are the builder's to read: its number of tasks is known
        selection.check(d.name, {k: resolved[k] for k in selection.NAMES})  # once built (_build_plugin)
        return d.name, resolved
    if d.reconcile is not None:
        resolved = d.reconcile(resolved, params)
    if resolved["source"] != "npz" and resolved["path"] is not None:
        raise ScenarioError(f"{d.name}: 'path' is only for source npz, not '{resolved['source']}'")
    selection.check(d.name, resolved)
    return d.name, resolved


def task_count(name: str, **params: Any) -> int:
    """How many tasks the stream ``name`` with ``params`` has: a built-in stream's from its
    parameters, a plugin stream's by building it once (seed 0) and counting them."""
    canonical, resolved = resolve_params(name, **params)
    if definition(canonical).plugin is not None:
        return len(build(canonical, seed=0, **resolved).classes_per_task)
    span = resolved["task_range"]
    return span[1] - span[0] if span is not None else resolved["n_tasks"]


def check_data(name: str, *, seeds: Iterable[int] = (0,), replay_examples: int = 0,
               **params: Any) -> tuple[str, dict[str, Any]]:
    """:func:`resolve_params`, then, for a source read from this machine without a download
    (``mnist5k``, ``digits``, ``npz``), load it and check that the stream fits it for every seed
    (an npz file's arrays, ``per_task`` against the examples there are, ``n_tasks`` against the
    classes): the ScenarioError that :func:`build` would raise, without building the tasks.
    Torchvision sources are not loaded here (that may mean a download); their sizes are known.
    Either way, a stream (plus a replay memory of ``replay_examples`` examples) whose estimated
    memory (:mod:`scenarios.sizes`) exceeds the machine's is refused with the estimate."""
    canonical, resolved = resolve_params(name, **params)
    d = definition(canonical)
    if d.plugin is not None:  # what a plugin's builder makes is known only once built: build it once
        for seed in list(seeds)[:1]:
            build(canonical, seed=seed, **resolved)
        return canonical, resolved
    if resolved["source"] not in OFFLINE_SOURCES:
        shape = sizes.DOWNLOADED_SHAPES.get(resolved["source"])
        if shape is not None:
            _check_footprint(d, resolved, *shape, replay_examples=replay_examples)
        return canonical, resolved
    data = load_source(resolved["source"], data_root=resolved["data_root"], path=resolved["path"],
                       download=resolved["download"])
    _check_footprint(d, resolved, len(data.y_train), len(data.y_test), math.prod(data.input_shape),
                     replay_examples=replay_examples)
    if d.check is not None:
        for seed in seeds:
            d.check(data, seed=seed, **resolved)
    return canonical, resolved


def _check_footprint(d: StreamDef, resolved: dict[str, Any], n_train: int, n_test: int, features: int, *,
                     replay_examples: int) -> None:
    fp = sizes.footprint(d.examples(resolved, n_train=n_train, n_test=n_test), features)
    need, have = fp.total(replay_examples), sizes.machine_bytes()
    if need > have:
        memory = f" and a replay memory of {replay_examples} examples" if replay_examples else ""
        raise ScenarioError(f"{d.name}: n_tasks={resolved['n_tasks']}{memory} need about {sizes.gib(need)} of memory; "
                            f"this machine has {sizes.gib(have)}")


def build(name: str, *, seed: int = 0, **params: Any) -> Stream:
    """Build the stream ``name`` for ``seed``: same seed and parameters -> identical tensors,
    in the same order."""
    d = definition(name)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ScenarioError(f"{d.name}: seed must be an integer >= 0, got {seed!r}")
    _, resolved = resolve_params(d.name, **params)
    if d.plugin is not None:
        return _build_plugin(d, seed=seed, resolved=resolved)
    data = load_source(resolved["source"], data_root=resolved["data_root"], path=resolved["path"],
                       download=resolved["download"])
    if resolved["val_fraction"] is not None:  # the test split never reaches the builder: no test example or label
        data = selection.without_test_split(data)
    task_labelled = bool(resolved.get("task_incremental") or resolved.get("task_labels"))
    tasks = selection.apply(d.builder(data, seed=seed, **resolved), task_range=resolved["task_range"],
                            val_fraction=resolved["val_fraction"], seed=seed, task_labelled=task_labelled)
    return Stream(
        name=d.name,
        params=resolved,
        benchmark=to_avalanche(tasks),
        input_shape=data.input_shape,
        n_classes=data.n_classes,
        task_labels=task_labelled,
        classes_per_task=tuple(t.classes for t in tasks),
        default_backbone=data.backbone,
    )


def _build_plugin(d: StreamDef, *, seed: int, resolved: dict[str, Any]) -> Stream:
    """Call a plugin stream's builder (the global generators seeded by ``seed`` first, so that a
    builder drawing from them is deterministic too, and put back afterwards) and adapt what it
    returns (its experiences read while the generators are still seeded)."""
    assert d.plugin is not None
    owner = f"{d.name}' ({d.plugin.origin}"
    own = {k: v for k, v in resolved.items() if k not in selection.NAMES}  # the builder's own parameters
    kwargs = {**own, **({"seed": seed} if takes_seed(d.plugin.builder) else {})}
    saved = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[]):  # the caller's generators are left as they were
            random.seed(seed)
            np.random.seed(seed)
            torch.manual_seed(seed)
            made = d.plugin.builder(**kwargs)
            if not isinstance(made, Stream) and adapter.is_avalanche_benchmark(made):
                tasks = adapter.tasks_of(made, owner=d.name)
    except ScenarioError:
        raise
    except Exception as exc:  # noqa: BLE001 (whatever a plugin's builder raises, name the stream)
        text = str(exc).strip().splitlines()
        raise ScenarioError(f"scenario '{owner}): its builder failed: {type(exc).__name__}"
                            f"{': ' + text[0] if text else ''}") from None
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])
    span, fraction = resolved["task_range"], resolved["val_fraction"]
    if isinstance(made, Stream):
        if span is None and fraction is None:
            return replace(made, name=d.name, params=resolved)
        tasks = adapter.tasks_of(made.benchmark, owner=d.name)
        task_labelled = made.task_labels
        made = replace(made, name=d.name, params=resolved)
    elif not adapter.is_avalanche_benchmark(made):
        raise ScenarioError(f"scenario '{owner}): its builder returned {type(made).__name__}, not a stream "
                            "(a scenarios.Stream or an Avalanche benchmark such as nc_benchmark's)")
    else:
        info = adapter.describe(made, tasks)
        task_labelled = info.task_labels if d.plugin.task_labels is None else d.plugin.task_labels
        made = Stream(name=d.name, params=resolved, benchmark=None, input_shape=info.input_shape,
                      n_classes=info.n_classes, task_labels=task_labelled, classes_per_task=info.classes_per_task,
                      default_backbone=d.plugin.backbone or info.default_backbone)
    if span is not None and span[1] > len(tasks):
        raise ScenarioError(f"{d.name}: task_range={list(span)} is not a range of the {len(tasks)} tasks its builder "
                            f"made; allowed: [start, stop] with 0 <= start < stop <= {len(tasks)}")
    # with val_fraction the builder's test split is dropped here: no test example reaches the stream
    tasks = selection.apply(tasks, task_range=span, val_fraction=fraction, seed=seed, task_labelled=task_labelled)
    return replace(made, benchmark=to_avalanche(tasks), classes_per_task=tuple(t.classes for t in tasks))
