"""Labels that tell apart several configurations of one strategy (see :mod:`benchmark.groups`)."""

from __future__ import annotations

from typing import Any, Iterable


def strategy_labels(records: Iterable[dict[str, Any]]) -> dict[str, str]:
    """run_id -> label of the run's configuration within its section (its scenario setting):
    the strategy name, plus the hyperparameters that tell apart several configurations of one
    strategy there (``mer (algorithm=6)``)."""
    from benchmark.groups import groups

    return {run_id: g.config for run_id, g in groups(records).items()}
