"""``clbench eval-cost DIR``: what continual evaluation (``train.eval_every``) cost the runs of a
finished sweep, from their records alone (the wall times the runner measured).

Per configuration (section and strategy label, :mod:`benchmark.groups`): mean seconds per run
of training, of the evaluation at task ends and of continual evaluation (the points during
training and the online scoring of incoming minibatches, ``timing.curve_eval_s``), and
continual evaluation's share of the run's time; then the share over the whole sweep, which is
the figure the README quotes for the quickstart (``make run`` then ``clbench eval-cost
results/quickstart``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from benchmark.groups import groups


@dataclass(frozen=True)
class EvalCost:
    """Mean seconds per run of one configuration, over its done runs with curves."""

    section: str
    strategy: str
    runs: int
    train_s: float
    end_eval_s: float
    curve_eval_s: float

    @property
    def share(self) -> float:
        """Continual evaluation's share of the run's time (training and all evaluation)."""
        total = self.train_s + self.end_eval_s + self.curve_eval_s
        return self.curve_eval_s / total if total > 0 else 0.0


def eval_costs(records: Iterable[dict[str, Any]]) -> list[EvalCost]:
    """One :class:`EvalCost` per configuration with done runs that recorded curves."""
    records = [r for r in records if r.get("status") == "done" and (r.get("timing") or {}).get("curve_eval_s")
               is not None]
    found = groups(records)
    by_config: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        g = found[str(r["run_id"])]
        by_config.setdefault((g.section, g.config), []).append(r["timing"])
    out = []
    for (section, strategy), timings in sorted(by_config.items()):
        n = len(timings)
        curve = sum(t["curve_eval_s"] for t in timings) / n
        out.append(EvalCost(section=section, strategy=strategy, runs=n, train_s=sum(t["train_s"] for t in timings) / n,
                            end_eval_s=sum(t["eval_s"] for t in timings) / n - curve, curve_eval_s=curve))
    return out


def overall_share(costs: list[EvalCost]) -> float:
    """Continual evaluation's share of the time of all runs together."""
    total = sum((c.train_s + c.end_eval_s + c.curve_eval_s) * c.runs for c in costs)
    return sum(c.curve_eval_s * c.runs for c in costs) / total if total > 0 else 0.0


def render(costs: list[EvalCost]) -> str:
    """The table ``clbench eval-cost`` prints."""
    head = ["section", "strategy", "runs", "train s", "task-end eval s", "continual eval s", "continual share"]
    rows = [[c.section, c.strategy, str(c.runs), f"{c.train_s:.2f}", f"{c.end_eval_s:.2f}", f"{c.curve_eval_s:.2f}",
             f"{100 * c.share:.1f}%"] for c in costs]
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(x.ljust(w) for x, w in zip(row, widths)) for row in rows]
    runs = sum(c.runs for c in costs)
    lines.append(f"\ncontinual evaluation: {100 * overall_share(costs):.1f}% of the time of all {runs} runs "
                 "(seconds are means per run)")
    return "\n".join(lines)
