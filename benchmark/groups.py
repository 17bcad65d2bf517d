"""Configuration groups: which run records may be averaged together, and how to name them.

A mean over seeds is only meaningful when every other setting of the runs is the same. So
every table row, plot, heatmap and significance test of a report is built from one
*configuration group*: the runs whose resolved spec (``RunSpec.to_dict()``, kept in each
record's ``config``) is identical once the seed and the settings that do not change results
are left out. Those settings are the ones the run id leaves out too
(``benchmark.spec_keys.train_identity``: device, eval batch size, and settings added later at
their default; ``benchmark.spec_keys.scenario_identity``: data root, download, and stream
parameters added later at their default), so a run moved to another machine or data folder
stays in its group. Two configurations are never averaged into one row:
``split-mnist`` with and without task labels, ``permuted-mnist`` with 2 and 4 tasks, or a
``--set train.batch_size=1`` rerun in the same folder, are told apart.

The groups nest in two levels:

- a *section* is one scenario setting: scenario name, stream parameters, train and model
  settings (everything but strategy, hyperparameters and seed). Each section gets its own
  table, plots and significance tests: only its rows are compared with each other.
- a *row* (a configuration) is one strategy with one set of hyperparameters within a section.

Labels name only what differs between groups of the same name: a section is
``permuted-mnist`` when it is the only one of that scenario, else
``permuted-mnist (n_tasks=2)``, ``split-mnist (task_incremental=True)`` or
``permuted-mnist (train.batch_size=1)``; a row is ``mer`` or ``mer (algorithm=6)``. A key
that an old record lacks (``train.task_mask``, ``model.init``) is a value of its own,
``missing``. Labels are unique: where two groups would read the same, a short digest of the
group is added (``naive [3fa2c1]``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from benchmark.spec_keys import scenario_identity, train_identity

MISSING = "missing"  # how a key that a record lacks is written in a label
_ABSENT = object()


def digest(obj: Any, n: int = 10) -> str:
    """A stable short digest of a JSON-like object (keys sorted)."""
    blob = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:n]


def section_setting(rec: dict[str, Any]) -> dict[str, Any]:
    """The scenario setting of a record: scenario name, stream parameters, train and model
    settings, without those that do not change results. A part the record lacks is left out
    (so it is a value of its own)."""
    cfg = rec.get("config") if isinstance(rec.get("config"), dict) else {}
    out: dict[str, Any] = {"scenario": rec.get("scenario", cfg.get("scenario"))}
    if "scenario_params" in cfg:
        params = cfg["scenario_params"]
        out["scenario_params"] = scenario_identity(params) if isinstance(params, dict) else params
    if "train" in cfg:
        out["train"] = train_identity(cfg["train"]) if isinstance(cfg["train"], dict) else cfg["train"]
    if "model" in cfg:
        out["model"] = cfg["model"]
    return out


def row_setting(rec: dict[str, Any]) -> dict[str, Any]:
    """The strategy configuration of a record: strategy name and hyperparameters."""
    cfg = rec.get("config") if isinstance(rec.get("config"), dict) else {}
    out: dict[str, Any] = {"strategy": rec.get("strategy", cfg.get("strategy"))}
    if "hparams" in cfg:
        out["hparams"] = cfg["hparams"]
    return out


def configuration(rec: dict[str, Any]) -> dict[str, Any]:
    """The configuration group of a record: its resolved spec without the seed and without the
    settings that do not change results (see the module docstring)."""
    return {**section_setting(rec), **row_setting(rec)}


def configuration_id(rec: dict[str, Any]) -> str:
    """The stable key of a record's configuration group (a digest of :func:`configuration`)."""
    return digest(configuration(rec))


def section_id(rec: dict[str, Any]) -> str:
    """The stable key of a record's section (a digest of :func:`section_setting`)."""
    return digest(section_setting(rec))


@dataclass(frozen=True)
class Group:
    """Where one run belongs: its section (label and key) and its configuration within the
    section (label and key)."""

    section: str
    section_id: str
    config: str
    config_id: str


SECTION_PARTS = (("scenario_params", ""), ("train", "train."), ("model", "model."))
ROW_PARTS = (("hparams", ""),)
Flat = dict[tuple[str, Any], Any]  # (part, setting) -> value; (part, None) where a part is not a mapping


def flatten(setting: dict[str, Any], parts: tuple[tuple[str, str], ...]) -> Flat:
    """The settings of ``parts`` of a section or row setting, one entry per setting; a part
    the record lacks (or that is not a mapping) is one entry ``(part, None)``."""
    out: Flat = {}
    for part, _ in parts:
        value = setting.get(part, _ABSENT)
        if isinstance(value, dict):
            out.update({(part, str(k)): v for k, v in value.items()})
        else:
            out[(part, None)] = value
    return out


def _text(value: Any) -> str:
    """A setting's value in a label; a float of more than four significant digits (a tuned
    learning rate) to four of them: labels that would then read alike get a digest."""
    if value is _ABSENT:
        return MISSING
    if isinstance(value, float) and float(f"{value:.4g}") != value:
        return f"{value:.4g}"
    return str(value)


def _same(flat: Flat, key: tuple[str, Any]) -> str:
    if key not in flat:
        return "\0none"
    value = flat[key]
    return "\0absent" if value is _ABSENT else json.dumps(value, sort_keys=True, default=str)


def labels(items: dict[str, tuple[str, Flat]], parts: tuple[tuple[str, str], ...]) -> dict[str, str]:
    """key -> label, for groups given as key -> (name, :func:`flatten`ed settings): the name,
    plus every setting that differs between the groups of that name (``mer (algorithm=6)``,
    ``permuted-mnist (train.batch_size=1)``; settings of ``parts`` named with the part's
    prefix); a setting a group lacks reads ``missing``, a whole part it lacks
    ``train=missing`` (and its settings do not count as differences for the others).
    Labels are unique: where two would read the same, the first six characters of the key
    are added (``naive (lr=1) [3fa2c1]``)."""
    prefix = dict(parts)
    rank = {part: i for i, (part, _) in enumerate(parts)}
    by_name: dict[str, list[str]] = {}
    for key, (name, _) in items.items():
        by_name.setdefault(name, []).append(key)
    out: dict[str, str] = {}
    for name, keys in by_name.items():
        if len(keys) == 1:
            out[keys[0]] = name
            continue
        order = sorted({s for k in keys for s in items[k][1]},
                       key=lambda s: (rank.get(s[0], len(rank)), s[1] is not None, str(s[1])))
        # a setting differs when it differs among the groups that have its part (a group that
        # lacks a whole part is told apart by that alone)
        differ = [s for s in order
                  if len({_same(items[k][1], s) for k in keys
                          if s[1] is None or (s[0], None) not in items[k][1]}) > 1]
        for k in keys:
            flat, shown, said = items[k][1], [], set()
            for part, setting in differ:
                if (part, None) in flat:  # the whole part is missing (or not a mapping) here
                    if part not in said:
                        said.add(part)
                        shown.append(f"{part}={_text(flat[(part, None)])}")
                elif setting is not None:
                    shown.append(f"{prefix.get(part, '')}{setting}={_text(flat.get((part, setting), _ABSENT))}")
            out[k] = name + (" (" + ", ".join(shown) + ")" if shown else "")
    seen: dict[str, int] = {}
    for label in out.values():
        seen[label] = seen.get(label, 0) + 1
    return {k: (f"{label} [{k[:6]}]" if seen[label] > 1 else label) for k, label in out.items()}


def groups(records: Iterable[dict[str, Any]]) -> dict[str, Group]:
    """run_id -> :class:`Group` for every record: sections labelled against each other,
    configurations labelled against the others of their section."""
    records = [r for r in records if isinstance(r, dict)]
    sections: dict[str, tuple[str, dict[str, Any]]] = {}
    rows: dict[str, dict[str, tuple[str, dict[str, Any]]]] = {}
    keys: dict[str, tuple[str, str]] = {}
    for r in records:
        s = section_setting(r)
        sid, cid = digest(s), digest({**s, **row_setting(r)})
        row = row_setting(r)
        sections.setdefault(sid, (str(s.get("scenario")), flatten(s, SECTION_PARTS)))
        rows.setdefault(sid, {}).setdefault(cid, (str(row.get("strategy")), flatten(row, ROW_PARTS)))
        keys[str(r.get("run_id"))] = (sid, cid)
    section_labels = labels(sections, SECTION_PARTS)
    row_labels = {sid: labels(members, ROW_PARTS) for sid, members in rows.items()}
    return {rid: Group(section_labels[sid], sid, row_labels[sid][cid], cid) for rid, (sid, cid) in keys.items()}


__all__ = ["Group", "MISSING", "configuration", "configuration_id", "digest", "flatten", "groups", "labels",
           "row_setting",
           "section_id", "section_setting"]
