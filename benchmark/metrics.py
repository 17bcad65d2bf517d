"""Continual-learning metrics as pure functions of the accuracy matrix.

``R`` is the T x T accuracy matrix, ``R[i][j]`` the test accuracy on task j after training
on task i; ``b`` the accuracy of the untrained model on each task. Indices start at 0.
Definitions (DESIGN.md):

- ACC, retained accuracy (Lopez-Paz and Ranzato 2017, Eq. 2; "RA" in La-MAML):
  ``mean_j R[T-1, j]``
- LA, learning accuracy (Riemer et al. 2019, Sec. 5): ``mean_j R[j, j]``
- BWT, backward transfer (Lopez-Paz and Ranzato 2017, Eq. 3; "BTI" in La-MAML):
  ``1/(T-1) * sum_{j<T-1} (R[T-1, j] - R[j, j])``
- FWT, forward transfer (Lopez-Paz and Ranzato 2017, Eq. 4):
  ``1/(T-1) * sum_{j>=1} (R[j-1, j] - b[j])``
- Forgetting (Chaudhry et al. 2018, Riemannian Walk, Eq. 3 averaged over tasks):
  ``1/(T-1) * sum_{j<T-1} (max_{l<T-1} R[l, j] - R[T-1, j])``

The official GEM/MER/La-MAML code divides BWT and FWT by T rather than T-1; these functions
follow the papers' equations. With T = 1, BWT, FWT and forgetting are undefined and are NaN.
None of the functions modifies its input.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

Matrix = Sequence[Sequence[float]]


def _square(acc_matrix: Matrix) -> np.ndarray:
    r = np.array(acc_matrix, dtype=float)  # a copy: the input is never touched
    if r.ndim != 2 or r.shape[0] != r.shape[1] or r.shape[0] == 0:
        raise ValueError(f"acc_matrix must be a non-empty T x T matrix, got shape {r.shape}")
    return r


def acc(acc_matrix: Matrix) -> float:
    """ACC: mean accuracy over all tasks after training on the last one."""
    r = _square(acc_matrix)
    return float(r[-1].mean())


def la(acc_matrix: Matrix) -> float:
    """LA: mean accuracy on each task right after training on it."""
    r = _square(acc_matrix)
    return float(np.diag(r).mean())


def bwt(acc_matrix: Matrix) -> float:
    """BWT: mean change of accuracy on earlier tasks from just after learning them to the end
    (negative = forgetting). NaN for T = 1."""
    r = _square(acc_matrix)
    t = r.shape[0]
    if t < 2:
        return math.nan
    return float(np.mean(r[-1, :-1] - np.diag(r)[:-1]))


def fwt(acc_matrix: Matrix, random_init_acc: Sequence[float]) -> float:
    """FWT: mean accuracy on each task j >= 1 just before training on it, above the untrained
    model's accuracy on it. NaN for T = 1."""
    r = _square(acc_matrix)
    b = np.array(random_init_acc, dtype=float)
    t = r.shape[0]
    if b.shape != (t,):
        raise ValueError(f"random_init_acc must have length T={t}, got shape {b.shape}")
    if t < 2:
        return math.nan
    return float(np.mean([r[j - 1, j] - b[j] for j in range(1, t)]))


def forgetting(acc_matrix: Matrix) -> float:
    """Chaudhry's forgetting: mean over tasks j < T-1 of the best accuracy ever reached on j
    before the last task minus the final accuracy on j. NaN for T = 1."""
    r = _square(acc_matrix)
    t = r.shape[0]
    if t < 2:
        return math.nan
    best = r[:-1, :-1].max(axis=0)
    return float(np.mean(best - r[-1, :-1]))


def average_accuracy_curve(acc_matrix: Matrix) -> list[float]:
    """Mean accuracy over the tasks seen so far, after each task: ``mean_{j<=i} R[i, j]``."""
    r = _square(acc_matrix)
    return [float(r[i, : i + 1].mean()) for i in range(r.shape[0])]


def all_metrics(acc_matrix: Matrix, random_init_acc: Sequence[float]) -> dict[str, float]:
    """The metrics of the run record, by name, in the order of
    :data:`benchmark.metric_names.METRICS` (acc, la, bwt, fwt, forgetting)."""
    return {
        "acc": acc(acc_matrix),
        "la": la(acc_matrix),
        "bwt": bwt(acc_matrix),
        "fwt": fwt(acc_matrix, random_init_acc),
        "forgetting": forgetting(acc_matrix),
    }
