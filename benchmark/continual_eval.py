"""Continual evaluation (``train.eval_every``): accuracy measured during training, not only at
task ends, and online accuracy on every incoming minibatch (:mod:`benchmark.stream_metrics`
defines the metrics computed from what this records).

- :func:`subsample` fixes the examples evaluated: per task, ``eval_subsample`` test examples
  at positions drawn by a generator seeded by the task index alone, so every strategy and seed
  of a stream is evaluated at the same positions (on the same examples wherever the seed draws
  the same test set).
- :class:`ContinualEvaluation` is an Avalanche plugin the harness puts in every strategy. After
  every ``eval_every``-th training iteration (counted over the whole stream) it evaluates the
  tasks seen so far on the subsample. The point is taken just before the next iteration starts
  (or when the runner ends the task), after every plugin has finished the iteration, so a
  strategy's own after-iteration work (CoPE's prototype update, a replay buffer's insert) is in
  it. Before every iteration of an experience's first epoch it scores the incoming examples
  (test-then-train): the minibatch's first ``min(batch size, examples not yet drawn)`` rows, as
  a replay data loader (Avalanche's ``ReplayDataLoader``, CoPE's) puts the experience's own
  examples before the memory's; later epochs see no new example and are not scored. It never
  draws random numbers and restores the model's mode, so training is the same with and
  without it (a test checks the accuracy matrices are equal).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from benchmark.evaluation import EvalSet, JoinedSets

SUBSAMPLE_SEED = 0x5EED  # with the task index: the positions evaluated, the same for every run of a stream

Measure = Callable[[JoinedSets], list[float]]  # accuracy on each set, by the run's head


def subsample_positions(n: int, per_task: int, *, task: int) -> np.ndarray:
    """Sorted positions of ``per_task`` of a task's ``n`` test examples (all of them when
    ``per_task >= n``), drawn by a generator seeded by ``task`` alone."""
    if per_task >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng([SUBSAMPLE_SEED, task]).choice(n, size=per_task, replace=False))


@dataclass(frozen=True)
class Subsample:
    """The test sets cut to the evaluation subsample, and a digest of the positions kept (equal
    for every run of a stream: the record keeps it, so a comparison can check it)."""

    sets: list[EvalSet]
    digest: str


def subsample(tests: Sequence[EvalSet], per_task: int) -> Subsample:
    """The test sets of a stream cut to their evaluation subsample (:func:`subsample_positions`)."""
    sets, digest = [], hashlib.sha256()
    for k, t in enumerate(tests):
        keep = subsample_positions(len(t.y), per_task, task=k)
        digest.update(np.asarray([k, len(keep)], np.int64).tobytes() + keep.astype(np.int64).tobytes())
        keep_t = torch.from_numpy(keep)
        sets.append(EvalSet(t.x[keep_t], t.y[keep_t], t.classes))
    return Subsample(sets=sets, digest=digest.hexdigest()[:16])


@dataclass
class Recorded:
    """What continual evaluation measured so far: the points (iteration, accuracies of the tasks
    seen), the task ends, the online counts per task, and the seconds it took."""

    iterations: list[int] = field(default_factory=list)
    acc: list[list[float]] = field(default_factory=list)
    task_ends: list[int] = field(default_factory=list)
    online_correct: list[int] = field(default_factory=list)
    online_seen: list[int] = field(default_factory=list)
    iteration: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"iterations": list(self.iterations), "acc": [[round(a, 6) for a in row] for row in self.acc],
                "task_ends": list(self.task_ends), "online": {"correct": list(self.online_correct),
                                                               "seen": list(self.online_seen)},
                "iteration": self.iteration, "seconds": self.seconds}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Recorded:
        return cls(iterations=[int(i) for i in d["iterations"]], acc=[[float(a) for a in r] for r in d["acc"]],
                   task_ends=[int(i) for i in d["task_ends"]], online_correct=[int(c) for c in d["online"]["correct"]],
                   online_seen=[int(s) for s in d["online"]["seen"]], iteration=int(d["iteration"]),
                   seconds=float(d["seconds"]))


def make_continual_evaluation(*, every: int, tests: Sequence[EvalSet], n_classes: int):
    """The plugin (module docstring) evaluating ``tests`` (already subsampled) every ``every``
    iterations, the tasks seen so far in one pass; :meth:`attach` gives it the run's scorer once
    the strategy exists."""
    from avalanche.core import SupervisedPlugin

    class ContinualEvaluation(SupervisedPlugin):
        def __init__(self):
            super().__init__()
            self.every, self.tests, self.n_classes = every, list(tests), n_classes
            self._joined: dict[int, JoinedSets] = {}  # tasks seen -> their subsamples joined
            self.recorded = Recorded()
            self._measure: Measure | None = None
            self._task: int | None = None  # None: outside the harness's task loop (it does nothing)
            self._pending = False
            self._not_drawn = 0  # examples of the experience not yet drawn in its first epoch

        def attach(self, measure: Measure) -> None:
            """``measure(joined)``: the accuracy on each joined set by the run's head, in eval mode,
            without gradients (the runner's)."""
            self._measure = measure

        def start_task(self, task: int) -> None:
            self._task = task
            while len(self.recorded.online_seen) <= task:
                self.recorded.online_seen.append(0)
                self.recorded.online_correct.append(0)

        def end_task(self) -> None:
            """The task's training ended: its end is a point of the curve."""
            self.recorded.task_ends.append(self.recorded.iteration)
            self._pending = True
            self._take_pending()
            self._task = None

        def before_training_exp(self, strategy, **kwargs):
            self._not_drawn = len(strategy.experience.dataset)

        def after_training_epoch(self, strategy, **kwargs):
            self._not_drawn = 0

        def before_training_iteration(self, strategy, **kwargs):
            if self._task is None:
                return
            self._take_pending()
            n = min(len(strategy.mb_y), strategy.train_mb_size, self._not_drawn)
            if n == 0:
                return
            self._not_drawn -= n
            start = time.perf_counter()
            y = strategy.mb_y[:n].detach().cpu().long()
            incoming = EvalSet(strategy.mb_x[:n].detach(), y, self.tests[self._task].classes)
            self.recorded.online_correct[self._task] += round(self._measure(JoinedSets.of([incoming],
                                                                                         self.n_classes))[0] * n)
            self.recorded.online_seen[self._task] += n
            self.recorded.seconds += time.perf_counter() - start

        def after_training_iteration(self, strategy, **kwargs):
            if self._task is None:
                return
            self.recorded.iteration += 1
            if self.recorded.iteration % self.every == 0:
                self._pending = True

        def checkpoint_state(self) -> dict:
            """What it measured and where it stands (strategies.checkpoint: saved with the strategy)."""
            return {"recorded": self.recorded.to_dict(), "pending": self._pending, "not_drawn": self._not_drawn}

        def load_checkpoint_state(self, state: dict) -> None:
            self.recorded = Recorded.from_dict(state["recorded"])
            self._pending, self._not_drawn = bool(state["pending"]), int(state["not_drawn"])

        def _take_pending(self) -> None:
            if not self._pending:
                return
            self._pending = False
            it = self.recorded.iteration
            if self.recorded.iterations and self.recorded.iterations[-1] == it:
                return
            start = time.perf_counter()
            self.recorded.iterations.append(it)
            seen = self._task + 1
            if seen not in self._joined:
                self._joined = {seen: JoinedSets.of(self.tests[:seen], self.n_classes)}
            self.recorded.acc.append(self._measure(self._joined[seen]))
            self.recorded.seconds += time.perf_counter() - start

    return ContinualEvaluation()
