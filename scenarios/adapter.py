"""A foreign Avalanche benchmark as the suite's :class:`~scenarios.stream.Stream`.

A plugin stream's builder may return any Avalanche benchmark (a ``CLScenario``: from
``nc_benchmark``, ``ni_benchmark``, ``benchmark_from_datasets``, ``SplitMNIST``...). The harness
needs what our own streams give: tensors per task, the input shape, the number of classes,
whether task labels are meaningful and the classes of each task. :func:`tasks_of` reads the
experiences into :class:`~scenarios.stream.TaskData` (through the datasets' eval transforms, so
that the tensors are the same on every call: no random augmentation), and :func:`describe` infers
what the benchmark does not say.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from scenarios.errors import ScenarioError
from scenarios.stream import TaskData


@dataclass(frozen=True)
class Inferred:
    """What a benchmark's experiences say about it."""

    input_shape: tuple[int, ...]
    n_classes: int
    task_labels: bool  # more than one distinct task label: task-incremental
    classes_per_task: tuple[tuple[int, ...], ...]
    default_backbone: str


def is_avalanche_benchmark(obj: Any) -> bool:
    from avalanche.benchmarks import CLScenario

    return isinstance(obj, CLScenario) or (hasattr(obj, "train_stream") and hasattr(obj, "test_stream"))


def _tensors(dataset: Any, *, owner: str, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    data = dataset.eval() if hasattr(dataset, "eval") else dataset
    xs, ys = [], []
    for batch in torch.utils.data.DataLoader(data, batch_size=512, shuffle=False, num_workers=0):
        if not isinstance(batch, (list, tuple)) or len(batch) < 2 or not isinstance(batch[0], torch.Tensor):
            raise ScenarioError(f"scenario '{owner}': {where} does not yield (input tensor, label, ...) items")
        xs.append(batch[0].float())
        ys.append(torch.as_tensor(batch[1]).long())
    if not xs:
        raise ScenarioError(f"scenario '{owner}': {where} is empty")
    return torch.cat(xs), torch.cat(ys)


def _task_label(exp: Any, *, owner: str, i: int) -> int:
    labels = sorted(set(getattr(exp, "task_labels", None) or [getattr(exp, "task_label", 0)]))
    if len(labels) != 1:
        raise ScenarioError(f"scenario '{owner}': training experience {i} holds several task labels {labels}; "
                            "the harness needs one task label per experience")
    return int(labels[0])


def tasks_of(benchmark: Any, *, owner: str) -> list[TaskData]:
    """One TaskData per training experience, with the test experience of the same index."""
    train, test = list(benchmark.train_stream), list(benchmark.test_stream)
    if not train:
        raise ScenarioError(f"scenario '{owner}': its benchmark has no training experience")
    if len(test) != len(train):
        raise ScenarioError(f"scenario '{owner}': its benchmark has {len(train)} training and {len(test)} test "
                            "experiences; the harness evaluates task i on test experience i, so they must match")
    tasks = []
    for i, (tr, te) in enumerate(zip(train, test)):
        x_train, y_train = _tensors(tr.dataset, owner=owner, where=f"training experience {i}")
        x_test, y_test = _tensors(te.dataset, owner=owner, where=f"test experience {i}")
        declared = getattr(tr, "classes_in_this_experience", None)
        classes = tuple(sorted(int(c) for c in declared)) if declared is not None else tuple(
            sorted(int(c) for c in torch.unique(y_train)))
        tasks.append(TaskData(x_train, y_train, x_test, y_test, _task_label(tr, owner=owner, i=i), classes))
    return tasks


def default_backbone(input_shape: Sequence[int]) -> str:
    """cnn for colour images (3 x H x W), mlp for flat or single-channel small inputs (1 x 28 x 28)."""
    return "cnn" if len(input_shape) == 3 and input_shape[0] == 3 else "mlp"


def describe(benchmark: Any, tasks: Sequence[TaskData]) -> Inferred:
    """Input shape, number of classes, task labels and classes per task of ``benchmark``."""
    shape = tuple(int(d) for d in tasks[0].x_train.shape[1:])
    top = max(int(max(t.y_train.max(), t.y_test.max())) for t in tasks) + 1
    given = getattr(benchmark, "n_classes", None)
    n_classes = max(int(given), top) if isinstance(given, int) else top
    return Inferred(shape, n_classes, len({t.task_label for t in tasks}) > 1, tuple(t.classes for t in tasks),
                    default_backbone(shape))
