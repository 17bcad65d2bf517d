"""Streams by name: ``build(name, seed=..., **params)`` and ``available()``."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from scenarios import selection, sizes, streams
from scenarios.errors import ScenarioError
from scenarios.params import Param, closest, resolve
from scenarios.sources import OFFLINE_SOURCES, SOURCES, load_source
from scenarios.stream import Stream, to_avalanche
from scenarios.transforms import INTERPOLATIONS


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
    return {d.name: replace(d, params=d.params + selection.PARAMS) for d in defs}


def normalise(name: str) -> str:
    """Stream names are matched case-insensitively, with '_' and ' ' read as '-'."""
    return name.strip().lower().replace("_", "-").replace(" ", "-")


def definition(name: str) -> StreamDef:
    """The registered stream ``name``, or a ScenarioError listing the names there are."""
    defs = _definitions()
    key = normalise(name) if isinstance(name, str) else name
    if key not in defs:
        raise ScenarioError(f"unknown scenario '{name}'{closest(str(key), defs)}; allowed: {', '.join(defs)}")
    return defs[key]


def available() -> dict[str, dict[str, Any]]:
    """Every stream name with its parameters and their defaults."""
    return {name: {p.name: p.default for p in d.params} for name, d in _definitions().items()}


def resolve_params(name: str, **params: Any) -> tuple[str, dict[str, Any]]:
    """(canonical stream name, every parameter with its checked value), without loading data."""
    d = definition(name)
    resolved = resolve(d.name, d.params, params)
    if d.reconcile is not None:
        resolved = d.reconcile(resolved, params)
    if resolved["source"] != "npz" and resolved["path"] is not None:
        raise ScenarioError(f"{d.name}: 'path' is only for source npz, not '{resolved['source']}'")
    selection.check(d.name, resolved)
    return d.name, resolved


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
    data = load_source(resolved["source"], data_root=resolved["data_root"], path=resolved["path"],
                       download=resolved["download"])
    validation = resolved["val_fraction"] is not None
    if validation:  # the test split never reaches the builder: no test example or label is in the stream
        data = selection.without_test_split(data)
    task_labelled = bool(resolved.get("task_incremental") or resolved.get("task_labels"))
    span = resolved["task_range"]
    tasks = selection.select(d.builder(data, seed=seed, **resolved), task_range=span, task_labelled=task_labelled)
    if validation:
        tasks = selection.hold_out(tasks, fraction=resolved["val_fraction"], seed=seed, first=span[0] if span else 0)
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
