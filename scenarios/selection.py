"""Parts of a stream: a range of its tasks, and a validation split held out of each task's
training examples in place of its test split.

Both serve hyperparameter selection as Chaudhry et al. (2019, "Efficient Lifelong Learning with
A-GEM", ICLR) propose it: choose the hyperparameters on the first k tasks, on data held out of
their training examples, then train and report on a stream that did not take part in the
choice. Every stream takes the two parameters:

- ``task_range: [start, stop]`` keeps tasks start .. stop-1 of the stream (0-based, stop
  excluded), each exactly as it is in the whole stream (its permutation, angle, classes and
  examples are drawn per task, so a part is the same tasks, not a shorter stream drawn anew);
  where task labels are meaningful they are renumbered from 0 in the part, since strategies
  index their task masks by the label.
- ``val_fraction: f`` replaces each task's test split by ``round(f * n)`` (at least 1) of its
  n training examples, drawn per (seed, task), and trains on the rest. The source's test split
  is dropped before the tasks are built, so no test example or label reaches such a stream.

Both default to null (the whole stream, its test split); at null they stay out of run ids
(``benchmark.spec_keys``), so runs recorded before they existed keep their ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch

from scenarios.errors import ScenarioError
from scenarios.params import Param
from scenarios.stream import TaskData
from scenarios.transforms import task_generator

_VALIDATION = 6  # purpose of the validation draw (see scenarios.streams for the others)

PARAMS: tuple[Param, ...] = (
    Param("task_range", "int-list", None,
          "[start, stop]: keep tasks start .. stop-1 of the stream (0-based), as they are in the whole stream "
          "(null: every task)", optional=True),
    Param("val_fraction", "float", None,
          "evaluate on this fraction of each task's training examples, held out of training, instead of the "
          "test split, which is then never loaded (null: the test split)", optional=True),
)

NAMES = tuple(p.name for p in PARAMS)


def check(owner: str, resolved: dict[str, Any]) -> None:
    """Refuse a ``task_range`` outside ``0 .. n_tasks`` or empty, and a ``val_fraction``
    outside (0, 1) or that leaves no training example of ``per_task``."""
    span = resolved.get("task_range")
    n_tasks = resolved.get("n_tasks")  # None: a plugin stream's, known once it is built
    if span is not None:
        if len(span) != 2:
            raise ScenarioError(f"{owner}: parameter 'task_range' must be [start, stop], two integers, got {span}")
        start, stop = span
        if n_tasks is None and not 0 <= start < stop:
            raise ScenarioError(f"{owner}: task_range={list(span)} is not a range of tasks; allowed: [start, stop] "
                                "with 0 <= start < stop <= the number of tasks")
        if n_tasks is not None and not 0 <= start < stop <= n_tasks:
            raise ScenarioError(f"{owner}: task_range={list(span)} is not a range of the {n_tasks} tasks; allowed: "
                                f"[start, stop] with 0 <= start < stop <= {n_tasks}")
    fraction = resolved.get("val_fraction")
    if fraction is not None:
        if not 0.0 < fraction < 1.0:
            raise ScenarioError(f"{owner}: parameter 'val_fraction' must be > 0 and < 1, got {fraction!r}")
        per_task = resolved.get("per_task")
        if per_task is not None and per_task - held_out(fraction, per_task) < 1:
            raise ScenarioError(f"{owner}: val_fraction={fraction:g} of per_task={per_task} leaves no training "
                                "example; give more examples per task or a smaller fraction")


def held_out(fraction: float, n: int) -> int:
    """How many of ``n`` training examples a task holds out for validation."""
    return max(1, round(fraction * n))


def without_test_split(data):
    """The source ``data`` with an empty test split (the same type, same shapes otherwise)."""
    return replace(data, x_test=data.x_test[:0], y_test=data.y_test[:0])


def select(tasks: Sequence[TaskData], *, task_range: Sequence[int] | None, task_labelled: bool) -> list[TaskData]:
    """The tasks of ``task_range`` (all without one); task labels renumbered from 0 where they
    are meaningful."""
    if task_range is None:
        return list(tasks)
    start, stop = task_range
    part = list(tasks[start:stop])
    return [replace(t, task_label=i) for i, t in enumerate(part)] if task_labelled else part


def apply(tasks: Sequence[TaskData], *, task_range: Sequence[int] | None, val_fraction: float | None, seed: int,
          task_labelled: bool) -> list[TaskData]:
    """The part of a stream's tasks that ``task_range`` and ``val_fraction`` ask for
    (:func:`select`, then :func:`hold_out`); the tasks unchanged when both are None."""
    part = select(tasks, task_range=task_range, task_labelled=task_labelled)
    if val_fraction is None:
        return part
    return hold_out(part, fraction=val_fraction, seed=seed, first=task_range[0] if task_range else 0)


def hold_out(tasks: Sequence[TaskData], *, fraction: float, seed: int, first: int = 0) -> list[TaskData]:
    """Each task with ``held_out(fraction, n)`` of its training examples moved to its test
    split (which they replace), drawn by ``(seed, task)``; task i of ``tasks`` is task
    ``first + i`` of the whole stream. The examples kept for training stay in their order."""
    out = []
    for i, t in enumerate(tasks):
        n = len(t.y_train)
        k = held_out(fraction, n)
        if n - k < 1:
            raise ScenarioError(f"val_fraction={fraction:g} of the {n} training examples of task {first + i} leaves "
                                "none to train on; give more examples per task or a smaller fraction")
        order = torch.randperm(n, generator=task_generator(seed, _VALIDATION, first + i))
        val, train = order[:k].sort().values, order[k:].sort().values
        out.append(replace(t, x_train=t.x_train[train], y_train=t.y_train[train],
                           x_test=t.x_train[val], y_test=t.y_train[val]))
    return out
