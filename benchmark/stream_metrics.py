"""Metrics across the stream, from the curves of continual evaluation (``train.eval_every``):
pure functions of a :class:`Curves`, no training objects.

A curve point is an evaluation during training: after training iteration ``i`` (counted over
the whole stream, from 1), the accuracy on a fixed subsample of the test set of every task seen
so far (tasks ``0 .. k`` while task ``k`` trains). ``task_ends[k]`` is the iteration at which
task ``k``'s training ended; the harness always evaluates there, so every task has a point at
its end. Accuracies are fractions; a point may miss a task's value (``None``), and every
function skips what is missing.

Definitions, each as its paper has it:

- **AAA**, average anytime accuracy (Caccia et al. 2022, "New Insights on Reducing Abrupt
  Representation Change in Online Continual Learning", ICLR; Koh et al. 2022, "Online
  Continual Learning on Class Incremental Blurry Task Configuration with Anytime Inference",
  ICLR): ``AAA = (1/|P|) sum_{p in P} mean_{j <= k(p)} a_j(p)``, the mean over evaluation points
  ``p`` of the average accuracy on the tasks seen so far.
- **min-ACC** (De Lange, van de Ven and Tuytelaars 2023, "Continual Evaluation for Lifelong
  Learning: Identifying the Stability Gap", ICLR): after training task ``k``,
  ``min-ACC_k = (1/k) sum_{i < k} min_{n_i < p <= n_k} a_i(p)``: for every old task, the lowest
  accuracy it had at any point after its own training ended (``n_i`` = ``task_ends[i]``), up
  to the end of task ``k``; averaged. Undefined (``None``) with one task.
- **WC-ACC** (ibid.): ``WC-ACC_k = (1/(k+1)) a_k(n_k) + (1 - 1/(k+1)) min-ACC_k`` with
  ``k+1`` tasks seen: the current task's accuracy at the end of its training weighed against
  the worst case of the old ones. With one task it is that task's accuracy.
- **Stability gap** at the switch to task ``k >= 1`` (ibid.): with
  ``old(p) = mean_{i < k} a_i(p)`` and the pre-switch level ``L_k = old(n_{k-1})`` (the point at
  the end of task ``k-1``), over the points ``n_{k-1} < p <= n_k`` of task ``k``:
  ``depth = max(0, L_k - min_p old(p))``; ``trough`` = iterations from the switch to the first
  point of that minimum; ``recovery`` = iterations from the switch to the first point at or
  after the trough where ``old(p) >= L_k`` ("recovered": back to the pre-switch level, no
  tolerance), 0 when it never dropped, ``None`` when it does not recover before task ``k``
  ends. A run's ``gap_depth`` is the mean depth over its switches and ``gap_recovered`` the
  share of switches that recovered.
- **Online accuracy** (Cai, Sener and Koltun 2021, "Online Continual Learning with Natural
  Distribution Shifts", ICCV): the accuracy on each incoming minibatch before training
  on it (the prequential, test-then-train measure), summed over the stream:
  ``sum correct / sum seen``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from benchmark.metric_names import CURVE_METRICS


@dataclass(frozen=True)
class Curves:
    """The continual-evaluation points of one run: ``iterations`` (increasing), ``acc`` (per
    point, the accuracy on tasks ``0 .. k`` seen so far; ``None`` where missing) and
    ``task_ends`` (the iteration at which each task's training ended)."""

    iterations: tuple[int, ...]
    acc: tuple[tuple[float | None, ...], ...]
    task_ends: tuple[int, ...]

    def __post_init__(self):
        if len(self.iterations) != len(self.acc):
            raise ValueError(f"curves: {len(self.iterations)} iterations but {len(self.acc)} accuracy rows")
        if any(b <= a for a, b in zip(self.iterations, self.iterations[1:])):
            raise ValueError("curves: evaluation iterations must increase")
        if any(b <= a for a, b in zip(self.task_ends, self.task_ends[1:])):
            raise ValueError("curves: task ends must increase")

    @classmethod
    def from_record(cls, curves: Mapping[str, Any]) -> Curves:
        """From a run record's ``curves`` entry (lists, as JSON keeps them)."""
        return cls(iterations=tuple(int(i) for i in curves["iterations"]),
                   acc=tuple(tuple(None if a is None else float(a) for a in row) for row in curves["acc"]),
                   task_ends=tuple(int(i) for i in curves["task_ends"]))

    def task_of(self, iteration: int) -> int:
        """The task training at ``iteration`` (a task's last iteration is its own)."""
        for k, end in enumerate(self.task_ends):
            if iteration <= end:
                return k
        return len(self.task_ends) - 1

    def points(self, start: int, stop: int) -> list[tuple[int, tuple[float | None, ...]]]:
        """(iteration, accuracies) of the points with ``start < iteration <= stop``."""
        return [(i, a) for i, a in zip(self.iterations, self.acc) if start < i <= stop]

    def at(self, iteration: int) -> tuple[float | None, ...] | None:
        """The accuracies of the point at ``iteration``, None without one."""
        for i, a in zip(self.iterations, self.acc):
            if i == iteration:
                return a
        return None


@dataclass(frozen=True)
class Gap:
    """The stability gap at the switch to task ``task`` (module docstring): ``level`` = L_k,
    ``depth`` >= 0, ``trough`` and ``recovery`` in iterations from the switch (``recovery``
    None: not recovered before the task ended)."""

    task: int
    level: float
    depth: float
    trough: int
    recovery: int | None


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def average_anytime_accuracy(c: Curves) -> float | None:
    """AAA: the mean over points of the mean accuracy on the tasks seen so far."""
    return _mean([_mean(row[:c.task_of(i) + 1]) for i, row in zip(c.iterations, c.acc)])


def min_acc(c: Curves, k: int | None = None) -> float | None:
    """min-ACC after task ``k`` (default the last): the mean over old tasks ``i < k`` of their
    lowest accuracy at the points ``task_ends[i] < p <= task_ends[k]``; None with no old task
    (or no point after one)."""
    k = len(c.task_ends) - 1 if k is None else k
    lows = []
    for i in range(k):
        seen = [row[i] for _, row in c.points(c.task_ends[i], c.task_ends[k]) if i < len(row) and row[i] is not None]
        if seen:
            lows.append(min(seen))
    return sum(lows) / len(lows) if lows else None


def wc_acc(c: Curves, k: int | None = None) -> float | None:
    """WC-ACC after task ``k`` (default the last): ``(1/(k+1)) a_k(n_k) + (1 - 1/(k+1)) min-ACC_k``;
    None without a point at the end of task ``k``."""
    k = len(c.task_ends) - 1 if k is None else k
    end = c.at(c.task_ends[k])
    current = end[k] if end is not None and k < len(end) else None
    if current is None:
        return None
    if k == 0:
        return current
    worst = min_acc(c, k)
    return None if worst is None else current / (k + 1) + (1 - 1 / (k + 1)) * worst


def stability_gaps(c: Curves) -> list[Gap]:
    """The stability gap at every task switch that has a pre-switch level and points after it."""
    gaps = []
    for k in range(1, len(c.task_ends)):
        switch = c.task_ends[k - 1]
        before = c.at(switch)
        level = _mean(before[:k]) if before is not None else None
        after = [(i - switch, _mean(row[:k])) for i, row in c.points(switch, c.task_ends[k])]
        after = [(d, v) for d, v in after if v is not None]
        if level is None or not after:
            continue
        low = min(v for _, v in after)
        trough = next(d for d, v in after if v == low)
        depth = max(0.0, level - low)
        recovery = 0 if depth == 0 else next((d for d, v in after if d >= trough and v >= level), None)
        gaps.append(Gap(task=k, level=level, depth=depth, trough=trough, recovery=recovery))
    return gaps


def online_accuracy(correct: Sequence[int], seen: Sequence[int]) -> float | None:
    """Online (test-then-train) accuracy over the stream: ``sum correct / sum seen``."""
    total = sum(seen)
    return sum(correct) / total if total else None


def curve_metrics(c: Curves, online: Mapping[str, Sequence[int]] | None = None) -> dict[str, float | None]:
    """Every metric of :data:`CURVE_METRICS` of one run (None where undefined; ``online`` is the
    record's ``{"correct": [...], "seen": [...]}`` per task)."""
    gaps = stability_gaps(c)
    return {
        "aaa": average_anytime_accuracy(c),
        "min_acc": min_acc(c),
        "wc_acc": wc_acc(c),
        "gap_depth": sum(g.depth for g in gaps) / len(gaps) if gaps else None,
        "gap_recovered": sum(g.recovery is not None for g in gaps) / len(gaps) if gaps else None,
        "online_acc": online_accuracy(online["correct"], online["seen"]) if online else None,
    }

