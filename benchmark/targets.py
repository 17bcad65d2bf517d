"""Reproduction targets: published figures a config expects its runs to reproduce, shown in the
report beside what was measured.

A config lists them under ``targets:``, one mapping each::

    targets:
      - {scenario: split-cifar100, strategy: la-maml, metric: acc, value: 61.18,
         source: "Gupta et al. 2020, Table 1 (single pass)"}
      - {scenario: split-cifar100, strategy: er, hparams: {epochs: 1}, metric: acc, value: 47.88, source: ...}

``scenario`` and ``strategy`` are registered names (not aliases) of the config's entries;
``hparams`` (optional) pins the hyperparameters that tell apart several entries of one strategy;
``metric`` is one of the report's metrics and ``value`` is in the report's units (accuracies,
BWT, FWT and forgetting in %). Validation (:func:`parse`) needs the config's resolved entries;
matching (:func:`rows`) needs only run records and the report's tables, so ``clbench report``
reads targets from the configs kept with the results without importing torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable

from benchmark.metric_names import METRICS

KEYS = ("scenario", "strategy", "hparams", "metric", "value", "source")


class TargetError(ValueError):
    """A malformed ``targets`` entry; the message is one line."""


@dataclass(frozen=True)
class Target:
    scenario: str
    strategy: str
    metric: str
    value: float
    source: str
    hparams: dict[str, Any] = field(default_factory=dict)

    def matches(self, record: dict[str, Any]) -> bool:
        """Whether a run record is of this target's scenario, strategy and pinned hyperparameters."""
        config = record.get("config") or {}
        hparams = config.get("hparams") or {}
        return (record.get("scenario") == self.scenario and record.get("strategy") == self.strategy
                and all(k in hparams and hparams[k] == v for k, v in self.hparams.items()))


def parse(raw: Any, *, scenarios: Iterable[str], strategies: Iterable[tuple[str, dict[str, Any]]],
          where: str = "config") -> tuple[Target, ...]:
    """Validate a config's ``targets`` list against its scenario names and its resolved
    (strategy, hyperparameters) entries; raise :class:`TargetError` naming what is wrong."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise TargetError(f"{where}: 'targets' must be a list of mappings like {{scenario: ..., strategy: ..., "
                          "metric: acc, value: 61.2, source: ...}")
    scenario_names = sorted(set(scenarios))
    entries = list(strategies)
    out = []
    for i, item in enumerate(raw):
        at = f"{where}: targets[{i}]"
        if not isinstance(item, dict):
            raise TargetError(f"{at} must be a mapping with {', '.join(KEYS)}, got {item!r}")
        unknown = [k for k in item if k not in KEYS]
        if unknown:
            raise TargetError(f"{at}: unknown key '{unknown[0]}'; allowed: {', '.join(KEYS)}")
        missing = [k for k in KEYS if k != "hparams" and k not in item]
        if missing:
            raise TargetError(f"{at}: missing '{missing[0]}'; a target needs {', '.join(k for k in KEYS if k != 'hparams')}")
        scenario, strategy, metric, value, source = (item[k] for k in ("scenario", "strategy", "metric", "value", "source"))
        hparams = item.get("hparams") or {}
        if scenario not in scenario_names:
            raise TargetError(f"{at}: scenario {scenario!r} is not a scenario of this config (give its registered "
                              f"name); present: {', '.join(scenario_names)}")
        names = sorted({name for name, _ in entries})
        if strategy not in names:
            raise TargetError(f"{at}: strategy {strategy!r} is not a strategy of this config (give its registered "
                              f"name, not an alias); present: {', '.join(names)}")
        if not isinstance(hparams, dict):
            raise TargetError(f"{at}: 'hparams' must be a mapping of hyperparameters, got {hparams!r}")
        if not any(name == strategy and all(k in hp and hp[k] == v for k, v in hparams.items()) for name, hp in entries):
            raise TargetError(f"{at}: no '{strategy}' entry of this config has hyperparameters {hparams}")
        if metric not in METRICS:
            raise TargetError(f"{at}: metric {metric!r} is unknown; allowed: {', '.join(METRICS)}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise TargetError(f"{at}: value must be a finite number (in the report's units, % for accuracies), "
                              f"got {value!r}")
        if not isinstance(source, str) or not source.strip():
            raise TargetError(f"{at}: source must say where the figure comes from (a non-empty string)")
        out.append(Target(scenario, strategy, metric, float(value), source.strip(), dict(hparams)))
    return tuple(out)


def from_config(raw: Any) -> tuple[list[Target], list[str]]:
    """The well-formed targets of a parsed config kept with the results (validated when it ran),
    and one line for each entry that is not (a hand-edited file): the report shows both."""
    found, problems = [], []
    items = raw.get("targets") if isinstance(raw, dict) else None
    for i, item in enumerate(items if isinstance(items, list) else []):
        try:
            value = item["value"]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or item["metric"] not in METRICS:
                raise TypeError
            found.append(Target(str(item["scenario"]), str(item["strategy"]), item["metric"], float(value),
                                str(item["source"]), dict(item.get("hparams") or {})))
        except (KeyError, TypeError, ValueError, AttributeError):
            problems.append(f"targets[{i}] skipped: not a valid target ({item!r})")
    return found, problems


def rows(targets: Iterable[Target], table_rows: list[dict[str, Any]], config_ids: dict[str, str],
         records: list[dict[str, Any]], *, scenario: str, units: dict[str, float]) -> list[dict[str, Any]]:
    """Measured against target for one report section of ``scenario``: one row per (target,
    matching configuration of the section). ``table_rows`` are the section's comparison rows
    (``config_id``, ``strategy`` label, ``<metric>_mean``/``_std``/``_n`` as stored);
    ``config_ids`` maps run ids to configuration ids; ``units`` the factor from stored values to
    the report's units per metric (100 for accuracies). A target that no run of the section
    matches gets a row without a measured value."""
    out = []
    for target in targets:
        if target.scenario != scenario:
            continue
        ids = {config_ids.get(r.get("run_id")) for r in records if target.matches(r)}
        matched = [row for row in table_rows if row["config_id"] in ids]
        scale = units.get(target.metric, 1.0)
        for row in matched or [None]:
            mean = row[f"{target.metric}_mean"] * scale if row else math.nan
            out.append({"strategy": row["strategy"] if row else target.strategy, "metric": target.metric,
                        "target": target.value, "measured": mean,
                        "std": row[f"{target.metric}_std"] * scale if row else math.nan,
                        "seeds": int(row[f"{target.metric}_n"]) if row else 0,
                        "difference": mean - target.value, "source": target.source})
    return out
