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


def summary_table(records: Iterable[dict[str, Any]]) -> str:
    """A plain-text table: per scenario and strategy, mean ± sd over seeds (accuracies in %),
    the number of done runs and of failed ones."""
    by_key: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        by_key.setdefault((r.get("scenario", "?"), r.get("strategy", "?")), []).append(r)
    header = ["scenario", "strategy", "runs", "failed", *(title for _, title in COLUMNS)]
    rows = []
    for (sc, st), recs in sorted(by_key.items()):
        done = [r for r in recs if r.get("status") == "done"]
        rows.append([sc, st, str(len(done)), str(len(recs) - len(done)), *(_cell(_values(done, k), k) for k, _ in COLUMNS)])
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    return "\n".join(lines)
