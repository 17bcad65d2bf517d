"""The standard task streams: how one source becomes a sequence of tasks.

Each builder is a pure function of (source data, seed, resolved parameters) that returns the
tasks as tensors; :mod:`scenarios.registry` validates parameters, loads the source and wraps
the tasks into an Avalanche scenario.

Protocols (GEM, MER and La-MAML run scripts): one fixed pixel permutation per task, or one
fixed rotation angle per task; 1000 training examples per task for 20 tasks, 200 per task for
Many Permutations (100 tasks). Examples of one task are drawn without replacement from the
source's training split, independently for every task.

Rotations: the MER and La-MAML MNIST Rotations data are the file made by GEM's generator
(facebookresearch/GradientEpisodicMemory, ``data/mnist_rotations.py``; MER's ``get_data.py``
downloads it prebuilt; La-MAML's README sends users to a ``get_data.py`` for the MNIST
benchmarks and its ``dataloaders/task_incremental_loader.py`` loads the same ``<dataset>.pt``
task files; La-MAML has no rotation generator of its own). That
generator gives task t of T one angle drawn uniformly in
[t*(max-min)/T + min, (t+1)*(max-min)/T + min) degrees, min 0 and max 180 in the run
scripts, so the angles grow task by task (``angles: progressive``, our default), and rotates
with PIL's ``Image.rotate`` (nearest neighbour; ``interpolation: nearest``, our default).
``angles: uniform`` draws every angle independently in [min, max), the stream of our first
version. Our draw uses our own seeded generator (GEM's uses Python's unseeded ``random``), so
the angles are not GEM's numbers but follow its distribution.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from scenarios.errors import ScenarioError
from scenarios.sources import ImageData
from scenarios.stream import TaskData
from scenarios.transforms import (
    permute_pixels,
    pixel_permutation,
    rotate_images,
    task_generator,
)

# purposes of random draws; see transforms.task_generator
_SAMPLE, _PERMUTATION, _ANGLE, _CLASS_ORDER, _TEST = 1, 2, 3, 4, 5


def _check_per_task(data: ImageData, per_task: int) -> None:
    n = len(data.y_train)
    if per_task > n:
        raise ScenarioError(
            f"per_task={per_task} is larger than the {n} training examples of source '{data.name}'; allowed: 1 .. {n}"
        )


def _check_images(data: ImageData) -> None:
    if not data.is_image:
        raise ScenarioError(
            f"rotated streams need images (N, H, W) or (N, C, H, W); source '{data.name}' gives flat vectors of shape {data.input_shape}"
        )


def _sample_train(data: ImageData, per_task: int, *, seed: int, task: int) -> tuple[torch.Tensor, torch.Tensor]:
    _check_per_task(data, per_task)
    n = len(data.y_train)
    idx = torch.randperm(n, generator=task_generator(seed, _SAMPLE, task))[:per_task]
    return data.x_train[idx], data.y_train[idx]


def _test_subset(data: ImageData, test_per_task: int | None, *, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    if test_per_task is None or test_per_task >= len(data.y_test):
        return data.x_test, data.y_test
    idx = torch.randperm(len(data.y_test), generator=task_generator(seed, _TEST, 0))[:test_per_task]
    idx, _ = idx.sort()
    return data.x_test[idx], data.y_test[idx]


def _all_classes(data: ImageData) -> tuple[int, ...]:
    return tuple(range(data.n_classes))


def permuted(data: ImageData, *, seed: int, n_tasks: int, per_task: int, identity_first: bool,
             task_labels: bool, test_per_task: int | None, **_: Any) -> list[TaskData]:
    """Permuted streams: task k applies one fixed random pixel permutation to its training
    examples and to the whole test set (task 0 unpermuted when ``identity_first``)."""
    n_pixels = data.x_train.shape[-1] if data.x_train.dim() == 2 else data.x_train.shape[-1] * data.x_train.shape[-2]
    x_te, y_te = _test_subset(data, test_per_task, seed=seed)
    tasks = []
    for k in range(n_tasks):
        x, y = _sample_train(data, per_task, seed=seed, task=k)
        if k == 0 and identity_first:
            perm = torch.arange(n_pixels)
        else:
            perm = pixel_permutation(n_pixels, task_generator(seed, _PERMUTATION, k))
        tasks.append(TaskData(permute_pixels(x, perm), y, permute_pixels(x_te, perm), y_te,
                              k if task_labels else 0, _all_classes(data)))
    return tasks


ANGLE_MODES = ("progressive", "uniform")


def reconcile_angles(resolved: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """Explicit ``angles`` fix the number of tasks; an explicit ``n_tasks`` must agree; the
    angle range must not be empty."""
    angles = resolved["angles"]
    if resolved["max_angle"] < resolved["min_angle"]:
        raise ScenarioError(f"max_angle={resolved['max_angle']:g} is below min_angle={resolved['min_angle']:g}; "
                            "give min_angle <= max_angle")
    if isinstance(angles, str):
        return resolved
    if not angles:
        raise ScenarioError(f"angles is empty; give at least one angle, or one of {', '.join(ANGLE_MODES)} to draw them")
    if "n_tasks" in given and given["n_tasks"] != len(angles):
        raise ScenarioError(f"n_tasks={given['n_tasks']} but {len(angles)} angles were given; make them agree")
    return {**resolved, "n_tasks": len(angles)}


def rotation_angles(*, seed: int, n_tasks: int, mode: str = "progressive", min_angle: float = 0.0,
                    max_angle: float = 180.0) -> list[float]:
    """The angle of every task of a rotated stream drawn for ``seed`` (module docstring):
    ``progressive`` (GEM's generator) draws task t uniformly in
    [t*(max-min)/T + min, (t+1)*(max-min)/T + min); ``uniform`` draws every task in [min, max).
    Task t's draw uses its own generator, so with ``uniform`` a stream of 10 tasks is the
    prefix of the same stream with 20; with ``progressive`` the ranges depend on T."""
    if mode not in ANGLE_MODES:
        raise ScenarioError(f"angles is {mode!r}; allowed: {', '.join(ANGLE_MODES)} or a list of angles")
    span = max_angle - min_angle
    out = []
    for k in range(n_tasks):
        u = float(torch.rand((), generator=task_generator(seed, _ANGLE, k), dtype=torch.float64))
        if mode == "uniform":
            out.append(min_angle + u * span)
        else:
            lo, hi = k / n_tasks * span + min_angle, (k + 1) / n_tasks * span + min_angle
            out.append(lo + u * (hi - lo))
    return out


def rotated(data: ImageData, *, seed: int, n_tasks: int, per_task: int, angles: str | list[float],
            min_angle: float, max_angle: float, interpolation: str, task_labels: bool,
            test_per_task: int | None, **_: Any) -> list[TaskData]:
    """Rotated streams: task k rotates its examples and the test set by one fixed angle, drawn
    by :func:`rotation_angles` unless ``angles`` lists them (see :func:`reconcile_angles`)."""
    _check_images(data)
    x_te, y_te = _test_subset(data, test_per_task, seed=seed)
    if isinstance(angles, str):
        angles = rotation_angles(seed=seed, n_tasks=n_tasks, mode=angles, min_angle=min_angle, max_angle=max_angle)
    tasks = []
    for k in range(n_tasks):
        angle = float(angles[k])
        x, y = _sample_train(data, per_task, seed=seed, task=k)
        tasks.append(TaskData(rotate_images(x, angle, interpolation=interpolation), y,
                              rotate_images(x_te, angle, interpolation=interpolation), y_te,
                              k if task_labels else 0, _all_classes(data)))
    return tasks


def _split_order(data: ImageData, *, seed: int, n_tasks: int, class_order: list[int] | None,
                 shuffle_classes: bool) -> list[int]:
    """The classes in the order a split stream cuts them into tasks, after checking that
    ``n_tasks`` divides them and that ``class_order`` lists each once."""
    n_classes = data.n_classes
    if n_classes % n_tasks:
        divisors = [d for d in range(1, n_classes + 1) if n_classes % d == 0]
        raise ScenarioError(
            f"n_tasks={n_tasks} does not divide the {n_classes} classes of source '{data.name}'; "
            f"allowed: {', '.join(map(str, divisors))}"
        )
    if class_order is not None:
        if sorted(class_order) != list(range(n_classes)):
            raise ScenarioError(
                f"class_order must list each class 0 .. {n_classes - 1} of source '{data.name}' exactly once, got {class_order}"
            )
        if shuffle_classes:
            raise ScenarioError("give class_order or shuffle_classes: true, not both")
        return list(class_order)
    if shuffle_classes:
        return torch.randperm(n_classes, generator=task_generator(seed, _CLASS_ORDER, 0)).tolist()
    return list(range(n_classes))


def _split_train_indices(data: ImageData, classes: tuple[int, ...], per_task: int | None) -> torch.Tensor:
    tr = torch.isin(data.y_train, torch.tensor(classes)).nonzero().squeeze(1)
    if per_task is not None and per_task > len(tr):
        raise ScenarioError(
            f"per_task={per_task} is larger than the {len(tr)} training examples of classes {list(classes)}; "
            f"allowed: 1 .. {len(tr)} or null for all"
        )
    return tr


def _groups(order: list[int], n_tasks: int) -> list[tuple[int, ...]]:
    size = len(order) // n_tasks
    return [tuple(order[k * size:(k + 1) * size]) for k in range(n_tasks)]


def split(data: ImageData, *, seed: int, n_tasks: int, per_task: int | None, task_incremental: bool,
          class_order: list[int] | None, shuffle_classes: bool, test_per_task: int | None, **_: Any) -> list[TaskData]:
    """Split streams: the classes, in ``class_order`` (default ascending, or shuffled by the
    seed with ``shuffle_classes``), cut into ``n_tasks`` equal groups; task k holds the
    training and test examples of its group. Task-incremental streams give task k the task
    label k; class-incremental ones give every task label 0 (one head over all classes)."""
    order = _split_order(data, seed=seed, n_tasks=n_tasks, class_order=class_order, shuffle_classes=shuffle_classes)
    x_te_all, y_te_all = _test_subset(data, test_per_task, seed=seed)
    tasks = []
    for k, classes in enumerate(_groups(order, n_tasks)):
        tr = _split_train_indices(data, classes, per_task)
        tr = tr[torch.randperm(len(tr), generator=task_generator(seed, _SAMPLE, k))][:per_task]
        te = torch.isin(y_te_all, torch.tensor(classes)).nonzero().squeeze(1)
        tasks.append(TaskData(data.x_train[tr], data.y_train[tr], x_te_all[te], y_te_all[te],
                              k if task_incremental else 0, classes))
    return tasks


# Checks that a stream fits its data, without building it: each raises the ScenarioError its
# builder would raise, so that a sweep can refuse a bad config before any run starts.

def check_permuted(data: ImageData, *, seed: int, per_task: int, **_: Any) -> None:
    _check_per_task(data, per_task)


def check_rotated(data: ImageData, *, seed: int, per_task: int, **_: Any) -> None:
    _check_images(data)
    _check_per_task(data, per_task)


def check_split(data: ImageData, *, seed: int, n_tasks: int, per_task: int | None, class_order: list[int] | None,
                shuffle_classes: bool, **_: Any) -> None:
    order = _split_order(data, seed=seed, n_tasks=n_tasks, class_order=class_order, shuffle_classes=shuffle_classes)
    if per_task is not None:
        for classes in _groups(order, n_tasks):
            _split_train_indices(data, classes, per_task)


Builder = Callable[..., list[TaskData]]
Checker = Callable[..., None]
