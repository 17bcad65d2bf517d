"""Run records as tidy pandas tables: the one shape every table and plot is built from."""

from __future__ import annotations

from typing import Any, Iterable

import pandas as pd

from benchmark.tables_labels import strategy_labels

METRICS = ("acc", "la", "bwt", "fwt", "forgetting")
TIMINGS = ("train_s", "eval_s", "eval_share")


def long_table(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """One row per (run, metric): run_id, scenario, strategy (configuration label), seed,
    status, metric, value. Missing values stay missing (NaN), failed runs keep their rows
    with no metric values so that they can be counted."""
    records = list(records)
    labels = strategy_labels(records)
    rows = []
    for r in records:
        base = {"run_id": r.get("run_id"), "scenario": r.get("scenario"), "strategy": labels.get(r.get("run_id")),
                "seed": r.get("seed"), "status": r.get("status")}
        metrics = r.get("metrics") or {}
        timing = r.get("timing") or {}
        for name in METRICS:
            rows.append({**base, "metric": name, "value": metrics.get(name)})
        for name in TIMINGS:
            rows.append({**base, "metric": name, "value": timing.get(name)})
    df = pd.DataFrame(rows, columns=["run_id", "scenario", "strategy", "seed", "status", "metric", "value"])
    df["value"] = pd.to_numeric(df["value"], errors="coerce")
    return df


def matrix_table(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """One row per entry of every done run's accuracy matrix: run_id, scenario, strategy,
    seed, after_task (i), task (j), acc (R[i][j])."""
    records = list(records)
    labels = strategy_labels(records)
    rows = []
    for r in records:
        if r.get("status") != "done":
            continue
        for i, row in enumerate(r.get("acc_matrix") or []):
            for j, acc in enumerate(row):
                rows.append({"run_id": r["run_id"], "scenario": r.get("scenario"), "strategy": labels[r["run_id"]],
                             "seed": r.get("seed"), "after_task": i, "task": j, "acc": acc})
    return pd.DataFrame(rows, columns=["run_id", "scenario", "strategy", "seed", "after_task", "task", "acc"])


def average_accuracy_table(matrices: pd.DataFrame) -> pd.DataFrame:
    """Average accuracy over the tasks seen so far after each task, per run:
    run_id, scenario, strategy, seed, after_task, avg_acc (``mean_{j<=i} R[i][j]``)."""
    seen = matrices[matrices["task"] <= matrices["after_task"]]
    out = seen.groupby(["run_id", "scenario", "strategy", "seed", "after_task"], as_index=False)["acc"].mean()
    return out.rename(columns={"acc": "avg_acc"})
