"""Labels that tell apart several configurations of one strategy."""

from __future__ import annotations

from typing import Any, Iterable


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
