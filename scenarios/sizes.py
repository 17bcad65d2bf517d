"""How much memory a stream will take, estimated from its sizes before anything is built, so
that a config asking for more than the machine has (``n_tasks: 1000000000``, a replay memory
of 1e30 examples) is refused with one line instead of growing until the kernel kills it.

The estimate counts float32 examples: every task's training examples and its test examples
(permuted and rotated streams transform the test set once per task), three copies of each (the
task tensors, Avalanche's datasets over them, and the evaluation tensors), plus a replay memory
of ``replay_examples`` examples. It is a lower bound of what a run uses, good to within a small
factor; its only use is to refuse what cannot fit.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

FLOAT32_BYTES = 4
COPIES = 3  # task tensors, Avalanche datasets, evaluation tensors
# (train examples, test examples, features) of the sources that are downloaded, not loaded, to check
DOWNLOADED_SHAPES = {
    "mnist": (60000, 10000, 784), "fashion-mnist": (60000, 10000, 784), "kmnist": (60000, 10000, 784),
    "cifar10": (50000, 10000, 3072), "cifar100": (50000, 10000, 3072),
}


@dataclass(frozen=True)
class Footprint:
    """Estimated bytes of a stream's examples and of one example."""

    stream_bytes: int
    example_bytes: int

    def total(self, replay_examples: int = 0) -> int:
        return self.stream_bytes + replay_examples * self.example_bytes


def machine_bytes() -> int:
    """The machine's physical memory in bytes."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def gib(n: float) -> str:
    """``n`` bytes in GiB, readable at any size (``1.2e+07 GiB``)."""
    v = n / 2**30
    return f"{v:.1f} GiB" if v < 1e6 else f"{v:.2g} GiB"


def per_task_examples(resolved: dict, *, n_train: int, n_test: int) -> int:
    """Examples of a permuted or rotated stream: each task's training examples and its own
    transformed copy of the (capped) test set."""
    test = n_test if resolved.get("test_per_task") is None else min(resolved["test_per_task"], n_test)
    return resolved["n_tasks"] * (resolved["per_task"] + test)


def split_examples(resolved: dict, *, n_train: int, n_test: int) -> int:
    """Examples of a split stream: each source example belongs to at most one task."""
    train = n_train if resolved.get("per_task") is None else min(resolved["per_task"] * resolved["n_tasks"], n_train)
    test = n_test if resolved.get("test_per_task") is None else min(resolved["test_per_task"], n_test)
    return train + test


def footprint(examples: int, features: int) -> Footprint:
    example = features * FLOAT32_BYTES
    return Footprint(stream_bytes=examples * example * COPIES, example_bytes=example)
