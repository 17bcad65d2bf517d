"""Run records as tidy pandas tables: the one shape every table and plot is built from.

Every row carries the run's configuration group (:mod:`benchmark.groups`): ``section`` (the
scenario setting's label) and ``section_id``, ``strategy`` (the configuration's label within
its section, e.g. ``mer (algorithm=6)``) and ``config_id``. Tables and plots group by these
keys, never by scenario or strategy name alone, so that runs of different configurations are
never averaged together.
"""

from __future__ import annotations

from typing import Any, Iterable

import pandas as pd

from benchmark.groups import groups
from benchmark.metric_names import CURVE_METRICS, METRICS, TIMES

RUN_COLUMNS = ["run_id", "scenario", "section", "section_id", "strategy", "config_id", "seed"]


def _run_columns(r: dict[str, Any], g) -> dict[str, Any]:
    return {"run_id": r.get("run_id"), "scenario": r.get("scenario"), "section": g.section,
            "section_id": g.section_id, "strategy": g.config, "config_id": g.config_id, "seed": r.get("seed")}


def long_table(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """One row per (run, metric): run_id, scenario, section, section_id, strategy
    (configuration label within its section), config_id, seed, status, metric, value. Missing
    values stay missing (NaN), failed runs keep their rows with no metric values so that they
    can be counted."""
    records = list(records)
    found = groups(records)
    rows = []
    for r in records:
        base = {**_run_columns(r, found[str(r.get("run_id"))]), "status": r.get("status")}
        metrics = r.get("metrics") or {}
        timing = r.get("timing") or {}
        for name in METRICS:
            rows.append({**base, "metric": name, "value": metrics.get(name)})
        for name in CURVE_METRICS:
            if name in metrics:
                rows.append({**base, "metric": name, "value": metrics.get(name)})
        for name in (*TIMES, "grad_per_example"):
            rows.append({**base, "metric": name, "value": timing.get(name)})
    df = pd.DataFrame(rows, columns=[*RUN_COLUMNS, "status", "metric", "value"])
    df["value"] = pd.to_numeric(df["value"], errors="coerce")
    return df


def matrix_table(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """One row per entry of every done run's accuracy matrix: run_id, scenario, section,
    section_id, strategy, config_id, seed, after_task (i), task (j), acc (R[i][j])."""
    records = list(records)
    found = groups(records)
    rows = []
    for r in records:
        if r.get("status") != "done":
            continue
        base = _run_columns(r, found[str(r.get("run_id"))])
        for i, row in enumerate(r.get("acc_matrix") or []):
            for j, acc in enumerate(row):
                rows.append({**base, "after_task": i, "task": j, "acc": acc})
    return pd.DataFrame(rows, columns=[*RUN_COLUMNS, "after_task", "task", "acc"])


def average_accuracy_table(matrices: pd.DataFrame) -> pd.DataFrame:
    """Average accuracy over the tasks seen so far after each task, per run: the run columns
    of ``matrices``, after_task, avg_acc (``mean_{j<=i} R[i][j]``)."""
    seen = matrices[matrices["task"] <= matrices["after_task"]]
    keys = [c for c in RUN_COLUMNS if c in matrices.columns] + ["after_task"]
    out = seen.groupby(keys, as_index=False, dropna=False, sort=True)["acc"].mean()
    return out.rename(columns={"acc": "avg_acc"})


def curve_table(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """One row per value of every done run's continual-evaluation curves (``train.eval_every``):
    the run columns, iteration, current (the task training then), task, acc; runs without
    curves have no rows."""
    records = list(records)
    found = groups(records)
    rows = []
    for r in records:
        c = r.get("curves")
        if r.get("status") != "done" or not c:
            continue
        base = _run_columns(r, found[str(r.get("run_id"))])
        ends = c["task_ends"]
        current = 0
        for it, accs in zip(c["iterations"], c["acc"]):
            while current < len(ends) - 1 and it > ends[current]:
                current += 1
            for task, acc in enumerate(accs):
                rows.append({**base, "iteration": it, "current": current, "task": task, "acc": acc})
    return pd.DataFrame(rows, columns=[*RUN_COLUMNS, "iteration", "current", "task", "acc"])
