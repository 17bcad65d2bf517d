"""The stream object of the DESIGN.md contract, and its Avalanche scenario."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch


@dataclass(frozen=True)
class TaskData:
    """The tensors of one task before they become an Avalanche experience."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    task_label: int
    classes: tuple[int, ...]


@dataclass(frozen=True)
class Stream:
    """A built task stream.

    ``benchmark`` is the Avalanche scenario (``train_stream``, ``test_stream``; experience i of
    each holds task i with its task label). ``task_labels`` is True where the task labels are
    meaningful (task-incremental): then ``classes_per_task[i]`` are the output units task i
    may use, and a single head is masked to them at test time. Labels are the source's global
    class ids in every stream.
    """

    name: str
    params: Mapping[str, Any]
    benchmark: Any
    input_shape: tuple[int, ...]
    n_classes: int
    task_labels: bool
    classes_per_task: tuple[tuple[int, ...], ...]
    default_backbone: str

    @property
    def n_tasks(self) -> int:
        return len(self.classes_per_task)


def to_avalanche(tasks: Sequence[TaskData]):
    """One Avalanche classification experience per task, in the train and the test stream."""
    from avalanche.benchmarks import tensors_benchmark

    return tensors_benchmark(
        train_tensors=[[t.x_train, t.y_train] for t in tasks],
        test_tensors=[[t.x_test, t.y_test] for t in tasks],
        task_labels=[t.task_label for t in tasks],
    )
