"""Tables from run records: pure functions, no training objects."""

from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np

COLUMNS = (("acc", "ACC"), ("bwt", "BWT"), ("forgetting", "Forgetting"), ("train_s", "train s"), ("eval_share", "eval %"))


def _values(records: list[dict[str, Any]], key: str) -> list[float]:
    out = []
    for r in records:
        v = (r.get("metrics") or {}).get(key, (r.get("timing") or {}).get(key))
        if v is None:
            v = (r.get("timing") or {}).get(key)
        if isinstance(v, (int, float)) and math.isfinite(v):
            out.append(float(v))
    return out


def _cell(vals: list[float], key: str) -> str:
    if not vals:
        return "-"
    scale = 100.0 if key in ("acc", "bwt", "forgetting", "eval_share") else 1.0
    mean = np.mean(vals) * scale
    if len(vals) == 1:
        return f"{mean:.1f}"
    return f"{mean:.1f} ± {np.std(vals, ddof=1) * scale:.1f}"


def _hparams(r: dict[str, Any]) -> dict[str, Any]:
    return ((r.get("config") or {}).get("hparams")) or {}


def strategy_labels(records: Iterable[dict[str, Any]]) -> dict[str, str]:
    """run_id -> label: the strategy name, plus the hyperparameters that tell apart several
    configurations of one strategy on one scenario (``mer (algorithm=6)``)."""
    import json

    records = list(records)
    configs: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for r in records:
        hp = _hparams(r)
        configs.setdefault((r.get("scenario", "?"), r.get("strategy", "?")), {})[json.dumps(hp, sort_keys=True, default=str)] = hp
    labels = {}
    for r in records:
        variants = list(configs[(r.get("scenario", "?"), r.get("strategy", "?"))].values())
        name = str(r.get("strategy", "?"))
        if len(variants) > 1:
            hp = _hparams(r)
            keys = sorted({k for v in variants for k in v if any(v.get(k) != w.get(k) for w in variants)})
            name += " (" + ", ".join(f"{k}={hp.get(k)}" for k in keys) + ")"
        labels[r.get("run_id", "?")] = name
    return labels


def summary_table(records: Iterable[dict[str, Any]]) -> str:
    """A plain-text table: per scenario and strategy configuration, mean ± sd over seeds
    (accuracies in %), the number of done runs and of failed ones."""
    records = list(records)
    labels = strategy_labels(records)
    by_key: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        by_key.setdefault((r.get("scenario", "?"), labels[r.get("run_id", "?")]), []).append(r)
    header = ["scenario", "strategy", "runs", "failed", *(title for _, title in COLUMNS)]
    rows = []
    for (sc, st), recs in sorted(by_key.items()):
        done = [r for r in recs if r.get("status") == "done"]
        rows.append([sc, st, str(len(done)), str(len(recs) - len(done)), *(_cell(_values(done, k), k) for k, _ in COLUMNS)])
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    return "\n".join(lines)
