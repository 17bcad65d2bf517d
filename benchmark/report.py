"""``clbench report DIR``: tables, plots and a forgetting report from the run records alone.

Writes ``report.md``, ``report.html`` (one self-contained file: images embedded as data
URIs, no network fetches, sortable tables, print styles), ``summary.csv``, and per section
``tables/<section>.{csv,md,tex}`` and ``plots/*.png|svg``. Every string from a run record is
escaped in the HTML.

Runs are grouped by configuration (:mod:`benchmark.groups`): a section per scenario setting
(stream parameters, train and model settings), a row per strategy configuration in it, and
never an average over different configurations. Tables, significance marks, heatmaps and
curves are all per section. ``clbench report DIR --config NAME`` reports the runs of one of
the configs kept in ``DIR/configs/`` (:func:`select_configs`) into ``DIR/reports/NAME/``.

Drawing the plots is most of the work, and their number grows with scenarios x strategies,
not with runs. Each plot file carries a digest of the data and code that drew it, so a plot
whose inputs have not changed since the last report is read back instead of drawn again.
Every file is written atomically: a report killed half-way leaves the previous files whole,
and the next report finishes the job.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from benchmark import faults, plots
from benchmark.messages import first_line
from benchmark.metric_names import CURVE_METRICS, METRICS
from benchmark.names import safe_name
from benchmark.store import CONFIGS_FOLDER, BadRecord, RunStore, remove_stale_temps, write_atomic
from benchmark.tables import (
    METRIC_INFO,
    REPORT_METRICS,
    SIGNIFICANCE,
    comparison,
    headers,
    table_metrics,
    to_latex,
    to_markdown,
)
from benchmark.targets import Target
from benchmark.targets import from_config as targets_in
from benchmark.targets import rows as target_rows
from benchmark.tidy import average_accuracy_table, curve_table, long_table, matrix_table
from benchmark.tune_config import TunedEntry, annotate, tuned_entries

_DEFINED_AS = {
    "acc": "retained accuracy (RA): mean_j R[T-1, j], accuracy on every task after the last one",
    "la": "learning accuracy: mean_j R[j, j], accuracy on each task right after learning it",
    "bwt": "backward transfer (BTI): 1/(T-1) sum_{j<T-1} (R[T-1, j] - R[j, j]); negative means forgetting",
    "fwt": "forward transfer: 1/(T-1) sum_{j>=1} (R[j-1, j] - b[j]), b = accuracy of the untrained model",
    "forgetting": "Chaudhry et al. (2018): 1/(T-1) sum_{j<T-1} (max_{l<T-1} R[l, j] - R[T-1, j])",
}
_DEFINED_AS.update({
    "grad_per_example": ("gradient evaluations per incoming example: examples backpropagated through the model "
                         "(inner steps, meta-losses, replay), counted by hooks on the model or reported by a "
                         "compiled backend, over the training examples of the stream"),
    "aaa": ("average anytime accuracy (Caccia et al. 2022; Koh et al. 2022): mean over evaluation points during "
            "training of the mean accuracy on the tasks seen so far"),
    "min_acc": ("De Lange et al. (2023): mean over old tasks of the lowest accuracy each had after its own "
                "training ended, up to the end of the stream"),
    "wc_acc": "De Lange et al. (2023): (1/T) A(last task at its end) + (1 - 1/T) min-ACC",
    "gap_depth": ("stability gap (De Lange et al. 2023): at each task switch, the pre-switch mean accuracy of the "
                  "old tasks minus its lowest value while the new task trains (0 if it never drops), averaged "
                  "over switches"),
    "gap_recovered": ("share of task switches after which the old tasks' mean accuracy came back to its "
                      "pre-switch value before the new task ended"),
    "online_acc": ("online accuracy (Cai et al. 2021): accuracy on each incoming minibatch before training on it, "
                   "over the whole stream"),
})
DEFINITIONS = [(METRIC_INFO[m][0], _DEFINED_AS[m]) for m in METRICS]  # (column title, definition)
# shown under "Metrics" when a section's table has them
EXTRA_DEFINITIONS = [(m, METRIC_INFO[m][0], _DEFINED_AS[m]) for m in ("grad_per_example", *CURVE_METRICS)]
NOTES = [
    "R[i][j] is the test accuracy on task j after training on task i (indices from 0).",
    ("The GEM, MER and La-MAML reference code divides BWT and FWT by T, not T-1; this report uses the "
     "papers' equations (T-1), so its BWT and FWT are T/(T-1) times theirs."),
    "Avalanche's 'forgetting' metric is R[j,j] - R[T-1,j] (no max), i.e. -BWT per task, not Chaudhry's forgetting.",
    ("Accuracies, BWT, FWT and forgetting are in %; train time is seconds per run. Cells are mean ± sample "
     "standard deviation over seeds; bold marks the best mean of a column (higher is better, except forgetting "
     f"and time); {'†'} marks a mean that differs from the best at p < {SIGNIFICANCE} by Welch's unpaired "
     "two-sided t-test over seeds (needs at least two seeds on each side)."),
    "For 'joint' (one training on all tasks) LA, BWT, FWT and forgetting are undefined and left empty.",
    ("Runs are grouped by their resolved configuration (stream parameters, train and model settings, "
     "hyperparameters; not the seed, device, evaluation batch size or data location): each section is one "
     "scenario setting, each row one strategy configuration in it, and runs of different configurations are "
     "never averaged together. Labels name what differs between sections (or rows) of the same name. Seeds "
     "counts the distinct seeds with a done run; significance is tested only between rows of one section."),
]


@dataclass
class PlotFile:
    """A plot to write: file stem, caption, PNG and SVG bytes."""

    stem: str
    caption: str
    png: bytes
    svg: bytes


    reused: bool = False


@dataclass
class ScenarioSection:
    """One section of the report: one scenario setting (see :mod:`benchmark.groups`)."""

    label: str
    table: pd.DataFrame
    figures: list[PlotFile] = field(default_factory=list)
    metrics: tuple[str, ...] = REPORT_METRICS  # the table's metric columns (benchmark.tables.table_metrics)
    scenario: str = ""
    section_id: str = ""
    slug: str = ""
    setting: str = ""
    targets: list[dict[str, Any]] = field(default_factory=list)  # benchmark.targets.rows
    tuned: list[dict[str, Any]] = field(default_factory=list)  # benchmark.tune_config.annotate


@dataclass(frozen=True)
class SavedConfig:
    """A config kept in a results folder: ``key`` (its file's stem, which ``--config`` takes),
    the config's ``name``, its file and its text."""

    key: str
    name: str
    path: Path
    text: str


@dataclass
class ReportContent:
    title: str
    generated: str
    versions: list[dict[str, Any]]
    machines: list[dict[str, Any]]
    numerics: list[dict[str, Any]]
    configs: list[SavedConfig]
    sections: list[ScenarioSection]
    failed: list[dict[str, Any]]
    unreadable: list[BadRecord]
    n_runs: int
    records: list[dict[str, Any]] = field(default_factory=list)
    target_notes: list[str] = field(default_factory=list)  # targets of the kept configs that were skipped


def slug(text: str) -> str:
    """A file-name-safe form of ``text``."""
    return safe_name(text, fallback="x")


def unique_slugs(labels: dict[str, str]) -> dict[str, str]:
    """key -> file-name-safe form of its label, unique among ``labels`` (also on file systems
    that ignore case): where two labels slug the same, each gets a short digest of its key."""
    base = {k: slug(label) for k, label in labels.items()}
    counts = Counter(b.lower() for b in base.values())
    return {k: (f"{slug(labels[k])[:70]}--{slug(k)[:8]}" if counts[b.lower()] > 1 else b) for k, b in base.items()}


def _distinct(dicts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    counts = Counter(json.dumps(d, sort_keys=True, default=str) for d in dicts if isinstance(d, dict) and d)
    return [json.loads(k) for k, _ in counts.most_common()]


def _config_name(text: str, default: str) -> str:
    try:
        import yaml

        found = yaml.safe_load(text)
        name = found.get("name") if isinstance(found, dict) else None
        return str(name) if isinstance(name, str) and name.strip() else default
    except Exception:  # noqa: BLE001 (a config that does not parse keeps its file's name)
        return default


def saved_configs(root: str | Path) -> list[SavedConfig]:
    """The configs kept in the results folder ``root``: every ``configs/*.yaml`` that sweeps
    wrote there (the folder's config history); in a folder from before that history, its
    ``experiment.yaml`` (the last sweep's config)."""
    root = Path(root)
    found = []
    folder = root / CONFIGS_FOLDER
    if folder.is_dir():
        for p in sorted(folder.glob("*.yaml")):
            if p.name.startswith(".") or not p.is_file():
                continue
            try:
                text = p.read_text(encoding="utf-8", errors="replace")
            except OSError:
                continue
            found.append(SavedConfig(p.stem, _config_name(text, p.stem), p, text))
    legacy = root / "experiment.yaml"
    if not found and legacy.is_file():
        try:
            text = legacy.read_text(encoding="utf-8", errors="replace")
        except OSError:
            text = None
        if text is not None:
            name = _config_name(text, root.resolve().name)
            found.append(SavedConfig(name, name, legacy, text))
    return found


class ConfigNotFound(ValueError):
    """No kept config of a results folder has the name asked for; the message is one line."""


def select_configs(root: str | Path, name: str) -> list[SavedConfig]:
    """The kept configs that ``name`` means: the one whose file stem is ``name``
    (``quickstart--1a2b3c4d``), else every one whose config is named ``name`` (a config run
    again with ``--set`` keeps its name: all its versions). :class:`ConfigNotFound` names the
    configs there are."""
    configs = saved_configs(root)
    chosen = [c for c in configs if c.key == name] or [c for c in configs if c.name == name]
    if not chosen:
        keys = ", ".join(c.key if c.key == c.name else f"{c.key} (name {c.name})" for c in configs)
        where = f"configs in {Path(root)}: {keys}" if configs else (
            f"{Path(root)} keeps no config ({CONFIGS_FOLDER}/*.yaml or experiment.yaml)")
        raise ConfigNotFound(f"no config named {name!r}; {where}")
    return chosen


def config_run_ids(configs: list[SavedConfig]) -> set[str]:
    """The run ids of every run of ``configs`` (each loaded with its defaults applied, as
    ``clbench run`` does, without checking data)."""
    from benchmark.config import load_experiment

    return {s.run_id for c in configs for s in load_experiment(c.path, check_data=False).specs()}


def _setting_text(rec: dict[str, Any]) -> str:
    """The whole scenario setting of a section, in one line."""
    from benchmark.groups import section_setting

    s = section_setting(rec)
    parts = [str(s.get("scenario"))]
    for key, prefix in (("scenario_params", ""), ("train", "train: "), ("model", "model: ")):
        value = s.get(key)
        if isinstance(value, dict):
            parts.append(prefix + ", ".join(f"{k}={v}" for k, v in value.items()))
        elif key in s:
            parts.append(f"{prefix}{value}")
    return "; ".join(parts)


def collect(root: str | Path, *, scanned: tuple[list[dict[str, Any]], list[BadRecord]] | None = None,
            out: str | Path | None = None, configs: list[SavedConfig] | None = None, title: str | None = None,
            ) -> ReportContent:
    """Read the run records under ``root`` (or take ``scanned``, what ``RunStore.scan`` found
    there, or a part of it) and compute every table and figure, one section per scenario
    setting, reusing the plots under ``out/plots`` (``out`` is ``root`` unless given) whose
    inputs are unchanged. ``configs``: the configs to show (default: all kept in ``root``)."""
    store = RunStore(root)
    out = store.root if out is None else Path(out)
    figure = _figure_maker(out / "plots")
    records, bad = scanned if scanned is not None else store.scan()
    long = long_table(records)
    matrices = matrix_table(records)
    curves = average_accuracy_table(matrices) if len(matrices) else matrices
    during = curve_table(records)
    configs = saved_configs(store.root) if configs is None else configs
    if title is None:
        config_file = store.root / "experiment.yaml"
        text = config_file.read_text(encoding="utf-8", errors="replace") if config_file.is_file() else ""
        title = _config_name(text, store.root.resolve().name)
    by_run = {r.get("run_id"): r for r in records}
    goals, target_notes, tuned, tuned_notes = _kept_settings(configs)
    config_ids = dict(zip(long["run_id"], long["config_id"])) if len(long) else {}
    units = {m: 100.0 if METRIC_INFO[m][2] else 1.0 for m in METRICS}
    heads = long.drop_duplicates("section_id").sort_values("section", kind="stable")
    section_slugs = unique_slugs(dict(zip(heads["section_id"], heads["section"])))
    sections = []
    for _, head in heads.iterrows():
        sid, label, stem = head["section_id"], head["section"], section_slugs[head["section_id"]]
        metrics = table_metrics(long, sid)
        table = comparison(long, sid, metrics)
        marked = annotate(table.to_dict("records"), tuned, config_ids, records, scenario=str(head["scenario"]))
        if marked:  # a tuned configuration says so, with its budget, wherever its label is shown
            table["strategy"] = table["config_id"].map({m["config_id"]: m["label"] for m in marked}).fillna(
                table["strategy"])
        sec = ScenarioSection(label, table, scenario=str(head["scenario"]), section_id=sid, slug=stem,
                              setting=_setting_text(by_run.get(head["run_id"]) or {}), metrics=metrics,
                              tuned=marked)
        sec.targets = target_rows(goals, table.to_dict("records"), config_ids, records, scenario=sec.scenario,
                                  units=units)
        m = matrices[matrices["section_id"] == sid]
        c = curves[curves["section_id"] == sid] if len(curves) else curves
        if len(m):
            sec.figures.append(figure(f"{stem}__average_accuracy", f"{label}: average accuracy over the stream",
                                      plots.average_accuracy_curves, c, title=f"{label}: average accuracy"))
            sec.figures.append(figure(f"{stem}__forgetting_bwt", f"{label}: forgetting and BWT per strategy",
                                      plots.forgetting_bars, table, title=f"{label}: forgetting and BWT"))
            sec.figures.append(figure(f"{stem}__cost", f"{label}: ACC against train time",
                                      plots.cost_scatter, table, title=f"{label}: accuracy and cost"))
            if "grad_per_example" in metrics:
                sec.figures.append(figure(
                    f"{stem}__equal_compute", f"{label}: ACC at equal compute (gradient evaluations per example)",
                    plots.equal_compute_scatter, table, title=f"{label}: accuracy at equal compute"))
            d = during[during["section_id"] == sid] if len(during) else during
            if len(d):
                sec.figures.append(figure(
                    f"{stem}__stability_gap", f"{label}: first task and old tasks during training (stability gap)",
                    plots.stability_gap_curves, d, title=f"{label}: accuracy during training"))
            rows = m.drop_duplicates("config_id").sort_values("strategy", kind="stable")
            row_slugs = unique_slugs(dict(zip(rows["config_id"], rows["strategy"])))
            for config_id, strategy in zip(rows["config_id"], rows["strategy"]):
                ms = m[m["config_id"] == config_id]
                sec.figures.append(figure(f"{stem}__heatmap__{row_slugs[config_id]}",
                                          f"{label}, {strategy}: accuracy matrix (mean over seeds)",
                                          plots.accuracy_heatmap, ms, title=f"{strategy} on {label}"))
                sec.figures.append(figure(f"{stem}__forgetting__{row_slugs[config_id]}",
                                          f"{label}, {strategy}: accuracy of each task over time",
                                          plots.forgetting_curves, ms, title=f"{strategy} on {label}: each task"))
        sections.append(sec)
    failed = [r for r in records if r.get("status") != "done"]
    return ReportContent(
        title=title, generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        versions=_distinct([r.get("versions") for r in records]), machines=_distinct([r.get("machine") for r in records]),
        numerics=_distinct([r.get("numerics") for r in records]),
        configs=configs, sections=sections, failed=failed, unreadable=bad, n_runs=len(records),
        records=records, target_notes=target_notes + tuned_notes,
    )


def _kept_settings(configs: list[SavedConfig]) -> tuple[list[Target], list[str], list[TunedEntry], list[str]]:
    """The reproduction targets and the tuned entries of the kept configs (once each), and a
    line for each entry of either that is skipped."""
    import yaml

    found: list[Target] = []
    tuned: list[TunedEntry] = []
    notes: list[str] = []
    tuned_notes: list[str] = []
    for conf in configs:
        try:
            raw = yaml.safe_load(conf.text)
        except yaml.YAMLError:
            continue  # not the report's to judge: the config is shown as it is
        goals, problems = targets_in(raw)
        found += [g for g in goals if g not in found]
        notes += [f"{conf.key}: {p}" for p in problems]
        entries, problems = tuned_entries(raw)
        tuned += [e for e in entries if e not in tuned]
        tuned_notes += [f"{conf.key}: {p}" for p in problems]
    return found, notes, tuned, tuned_notes


def _number(value: float, digits: int = 2) -> str:
    return "" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _target_cells(row: dict[str, Any]) -> list[str]:
    """strategy, metric, target, measured (mean ± std over seeds), difference, source."""
    measured = "no run" if math.isnan(row["measured"]) else _number(row["measured"]) + (
        f" ± {_number(row['std'])}" if not math.isnan(row["std"]) else "") + f" ({row['seeds']} seeds)"
    diff = "" if math.isnan(row["difference"]) else f"{row['difference']:+.2f}"
    return [row["strategy"], METRIC_INFO[row["metric"]][0], _number(row["target"]), measured, diff, row["source"]]


TARGET_HEADERS = ["Strategy", "Metric", "Target", "Measured", "Difference", "Source"]
TUNING_HEADERS = ["Strategy", "Budget (trials)", "Complete", "Validation score", "Chosen"]


def _tuning_cells(row: dict[str, Any]) -> list[str]:
    """strategy (as the table labels it), budget, complete trials, best validation score (in
    the report's units), the chosen hyperparameters."""
    e: TunedEntry = row["entry"]
    score = "" if e.best_value is None else f"{METRIC_INFO[e.objective][0]} " + _number(
        e.best_value * (100.0 if METRIC_INFO[e.objective][2] else 1.0))
    chosen = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in e.chosen.items())
    return [row["label"], str(e.trials), str(e.complete), score, chosen or "its own settings (no trial completed)"]


def _tuning_lines(rows: list[dict[str, Any]], *, markdown: bool) -> list[str]:
    """How the tuned rows of a section were chosen: one sentence per protocol, then (Markdown)
    a table of their budgets, validation scores and chosen hyperparameters."""
    sentences = list(dict.fromkeys(r["entry"].protocol() for r in rows))
    out = [" ".join(sentences)]
    if markdown:
        out += ["", "| " + " | ".join(TUNING_HEADERS) + " |", "|" + "---|" * len(TUNING_HEADERS)]
        out += ["| " + " | ".join(c.replace("|", "/") for c in _tuning_cells(r)) + " |" for r in rows]
        out.append("")
    return out


def _figure_maker(folder: Path) -> Callable[..., PlotFile]:
    """``figure(stem, caption, draw, data, **kwargs)``: the PlotFile of ``draw(data, **kwargs)``,
    read back from ``folder`` when both of its files there were drawn from the same inputs."""
    import matplotlib

    code = hashlib.sha256(Path(plots.__file__).read_bytes() + matplotlib.__version__.encode()).hexdigest()

    def figure(stem: str, caption: str, draw: Callable[..., Any], data: pd.DataFrame, **kwargs: Any) -> PlotFile:
        h = hashlib.sha256(f"{code}|{stem}|{caption}|{draw.__name__}|{sorted(kwargs.items())}|".encode())
        h.update("|".join(f"{c}:{t}" for c, t in data.dtypes.astype(str).items()).encode())
        h.update(pd.util.hash_pandas_object(data, index=False).to_numpy().tobytes())
        tag = f"clbench-plot {h.hexdigest()}"
        png, svg = folder / f"{stem}.png", folder / f"{stem}.svg"
        try:
            old_png, old_svg = png.read_bytes(), svg.read_bytes()
            if tag.encode() in old_png and tag.encode() in old_svg:
                return PlotFile(stem, caption, old_png, old_svg, reused=True)
        except OSError:
            pass
        fig = draw(data, **kwargs)
        png_bytes = plots.to_bytes(fig, "png", metadata={"Description": tag})
        fig.set_layout_engine("none")  # laid out once by the PNG draw; the SVG keeps that layout
        return PlotFile(stem, caption, png_bytes, plots.to_bytes(fig, "svg", metadata={"Description": tag}))

    return figure


def _definitions(c: ReportContent) -> list[tuple[str, str]]:
    """(column title, definition) of every metric column the report's tables show."""
    shown = {m for sec in c.sections for m in sec.metrics}
    return DEFINITIONS + [(title, text) for m, title, text in EXTRA_DEFINITIONS if m in shown]


def _kv(d: dict[str, Any]) -> str:
    return ", ".join(f"{k} {_plain(v)}" for k, v in d.items())


def _plain(v: Any) -> str:
    """A list as its items, a dict as key=value pairs (``none`` when empty), anything else as text."""
    if isinstance(v, (list, tuple)):
        return " ".join(map(str, v)) or "none"
    if isinstance(v, dict):
        return " ".join(f"{k}={x}" for k, x in v.items()) or "none"
    return str(v)


# -- Markdown ----------------------------------------------------------------------------
def render_markdown(c: ReportContent) -> str:
    out = [f"# Forgetting report: {c.title}", "",
           (f"Generated {c.generated} from {c.n_runs} run records "
            f"({c.n_runs - len(c.failed)} done, {len(c.failed)} failed)."), ""]
    out += ["## Setup", ""]
    out += [f"- Versions: {_kv(v)}" for v in c.versions] or ["- Versions: unknown"]
    out += [f"- Hardware: {_kv(m)}" for m in c.machines] or ["- Hardware: unknown"]
    out += [f"- Numerics (what decides the float results): {_kv(n)}" for n in c.numerics]
    out.append("")
    for sec in c.sections:
        out += [f"## {sec.label}", ""]
        if sec.setting:
            out += [f"Setting: {sec.setting} (section `{sec.section_id}`)", ""]
        out += [to_markdown(sec.table, sec.metrics), ""]
        if sec.tuned:
            out += _tuning_lines(sec.tuned, markdown=True)
        if sec.targets:
            out += ["Reproduction targets (measured minus target in the Difference column):", "",
                    "| " + " | ".join(TARGET_HEADERS) + " |", "|" + "---|" * len(TARGET_HEADERS)]
            out += ["| " + " | ".join(str(c).replace("|", "/") for c in _target_cells(t)) + " |" for t in sec.targets]
            out.append("")
        for f in sec.figures:
            out += [f"![{f.caption}](plots/{f.stem}.png)", ""]
    out += ["## Metrics", ""] + [f"- **{k}**: {v}" for k, v in _definitions(c)] + [""] + [f"- {n}" for n in NOTES]
    out += [""]
    if c.target_notes:
        out += ["Reproduction targets skipped:", ""] + [f"- {n}" for n in c.target_notes] + [""]
    out += ["## Failed runs", ""]
    if c.failed:
        out += ["| run | strategy | scenario | seed | error |", "|---|---|---|---|---|"]
        out += [f"| {r.get('run_id')} | {r.get('strategy')} | {r.get('scenario')} | {r.get('seed')} | "
                f"{first_line(r.get('error')).replace('|', '/')} |" for r in c.failed]
    else:
        out.append("None.")
    if c.unreadable:
        out += ["", "Unreadable run records (skipped):", ""] + [f"- `{b.path}`: {b.reason}" for b in c.unreadable]
    out += ["", "## Configuration", ""]
    if not c.configs:
        out += ["```yaml", "# experiment.yaml not found", "```", ""]
    for conf in c.configs:
        if len(c.configs) > 1:
            out += [f"### {conf.key}", ""]
        out += [f"`{_config_path(conf)}`:", "", "```yaml", conf.text.rstrip(), "```", ""]
    return "\n".join(out)


def _config_path(conf: SavedConfig) -> str:
    return f"{conf.path.parent.name}/{conf.path.name}" if conf.path.parent.name == CONFIGS_FOLDER else conf.path.name


# -- HTML --------------------------------------------------------------------------------
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:0 auto;padding:1rem 1.5rem;
color:#1b1b1b;line-height:1.45}
h1{font-size:1.6rem}h2{font-size:1.3rem;border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
table{border-collapse:collapse;margin:.8rem 0;font-size:.9rem;font-variant-numeric:tabular-nums}
th,td{padding:.3rem .6rem;border-bottom:1px solid #e3e3e3;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}th{cursor:pointer;background:#f5f5f5;user-select:none}
th[aria-sort=ascending]::after{content:" \\25B2"}th[aria-sort=descending]::after{content:" \\25BC"}
.best{font-weight:700}.figs{display:grid;grid-template-columns:repeat(auto-fill,minmax(330px,1fr));gap:1rem}
figure{margin:0;break-inside:avoid}figure img{width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.8rem;color:#555}pre{background:#f7f7f7;padding:.8rem;overflow-x:auto;font-size:.8rem}
.note{font-size:.85rem;color:#333}.err{font-family:monospace;font-size:.8rem;white-space:pre-wrap}
.scroll{overflow-x:auto}
@media print{body{max-width:none;padding:0}th{cursor:auto}.figs{grid-template-columns:1fr 1fr}
h2{break-before:auto;break-after:avoid}table{break-inside:avoid}}
"""

_JS = """
document.querySelectorAll('table.sortable').forEach(function(table){
  table.querySelectorAll('th').forEach(function(th, col){
    th.addEventListener('click', function(){
      var asc = th.getAttribute('aria-sort') !== 'ascending';
      table.querySelectorAll('th').forEach(function(h){h.removeAttribute('aria-sort');});
      th.setAttribute('aria-sort', asc ? 'ascending' : 'descending');
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function(a, b){
        var x = a.cells[col].getAttribute('data-v'), y = b.cells[col].getAttribute('data-v');
        var nx = parseFloat(x), ny = parseFloat(y);
        var r = (isNaN(nx) || isNaN(ny)) ? String(x).localeCompare(String(y)) : nx - ny;
        if (isNaN(nx) && !isNaN(ny)) r = 1; if (!isNaN(nx) && isNaN(ny)) r = -1;
        return asc ? r : -r;
      });
      rows.forEach(function(r){body.appendChild(r);});
    });
  });
});
"""


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _html_table(table: pd.DataFrame, metrics: tuple[str, ...] = REPORT_METRICS) -> str:
    from benchmark.tables import cell

    heads = headers(metrics)
    rows = []
    for _, r in table.iterrows():
        cells = [f'<td data-v="{_e(r["strategy"])}">{_e(r["strategy"])}</td>',
                 f'<td data-v="{int(r["runs"])}">{int(r["runs"])}</td>',
                 f'<td data-v="{int(r["failed"])}">{int(r["failed"])}</td>']
        for m in metrics:
            mean = r[f"{m}_mean"]
            v = "" if mean is None or (isinstance(mean, float) and math.isnan(mean)) else f"{mean:.6g}"
            cls = ' class="best"' if r[f"{m}_best"] else ""
            cells.append(f'<td data-v="{v}"{cls}>{_e(cell(r, m))}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    head = "".join(f'<th scope="col">{_e(h)}</th>' for h in heads)
    return (f'<div class="scroll"><table class="sortable"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


def render_html(c: ReportContent) -> str:
    parts = [f"<h1>Forgetting report: {_e(c.title)}</h1>",
             (f"<p>Generated {_e(c.generated)} from {c.n_runs} run records ({c.n_runs - len(c.failed)} done, "
              f"{len(c.failed)} failed).</p>"), "<h2>Setup</h2><ul>"]
    parts += [f"<li>Versions: {_e(_kv(v))}</li>" for v in c.versions] or ["<li>Versions: unknown</li>"]
    parts += [f"<li>Hardware: {_e(_kv(m))}</li>" for m in c.machines] or ["<li>Hardware: unknown</li>"]
    parts += [f"<li>Numerics (what decides the float results): {_e(_kv(n))}</li>" for n in c.numerics]
    parts.append("</ul>")
    for sec in c.sections:
        parts.append(f"<h2>{_e(sec.label)}</h2>")
        if sec.setting:
            parts.append(f'<p class="note">Setting: {_e(sec.setting)} (section <code>{_e(sec.section_id)}</code>)</p>')
        parts.append(_html_table(sec.table, sec.metrics))
        if sec.tuned:
            lines = _tuning_lines(sec.tuned, markdown=False)
            parts.append(f'<p class="note">{_e(lines[0])}</p>')
            head = "".join(f'<th scope="col">{_e(h)}</th>' for h in TUNING_HEADERS)
            body = "".join("<tr>" + "".join(f"<td>{_e(x)}</td>" for x in _tuning_cells(t)) + "</tr>"
                           for t in sec.tuned)
            parts.append(f'<div class="scroll"><table class="tuned"><thead><tr>{head}</tr></thead>'
                         f"<tbody>{body}</tbody></table></div>")
        if sec.targets:
            head = "".join(f'<th scope="col">{_e(h)}</th>' for h in TARGET_HEADERS)
            body = "".join("<tr>" + "".join(f"<td>{_e(x)}</td>" for x in _target_cells(t)) + "</tr>"
                           for t in sec.targets)
            parts.append('<p class="note">Reproduction targets (measured minus target in the Difference column):</p>'
                         f'<div class="scroll"><table class="targets"><thead><tr>{head}</tr></thead>'
                         f"<tbody>{body}</tbody></table></div>")
        parts.append('<div class="figs">')
        for f in sec.figures:
            data = base64.b64encode(f.png).decode("ascii")
            parts.append(f'<figure><img alt="{_e(f.caption)}" src="data:image/png;base64,{data}">'
                         f"<figcaption>{_e(f.caption)}</figcaption></figure>")
        parts.append("</div>")
    parts += ["<h2>Metrics</h2><ul>"] + [f"<li><b>{_e(k)}</b>: {_e(v)}</li>" for k, v in _definitions(c)] + ["</ul>"]
    parts += ['<ul class="note">'] + [f"<li>{_e(n)}</li>" for n in NOTES] + ["</ul>"]
    if c.target_notes:
        parts.append('<p class="note">Reproduction targets skipped:</p><ul>')
        parts += [f"<li>{_e(n)}</li>" for n in c.target_notes]
        parts.append("</ul>")
    parts.append("<h2>Failed runs</h2>")
    if c.failed:
        parts.append('<div class="scroll"><table class="sortable"><thead><tr><th>Run</th><th>Strategy</th>'
                     "<th>Scenario</th><th>Seed</th><th>Error</th></tr></thead><tbody>")
        for r in c.failed:
            parts.append("<tr>" + "".join(f'<td data-v="{_e(x)}">{_e(x)}</td>' for x in (
                r.get("run_id"), r.get("strategy"), r.get("scenario"), r.get("seed"))) +
                f'<td class="err" data-v="">{_e(first_line(r.get("error")))}</td></tr>')
        parts.append("</tbody></table></div>")
    else:
        parts.append("<p>None.</p>")
    if c.unreadable:
        parts.append("<p>Unreadable run records (skipped):</p><ul>")
        parts += [f"<li><code>{_e(b.path)}</code>: {_e(b.reason)}</li>" for b in c.unreadable]
        parts.append("</ul>")
    parts.append("<h2>Configuration</h2>")
    if not c.configs:
        parts.append("<pre># experiment.yaml not found</pre>")
    for conf in c.configs:
        if len(c.configs) > 1:
            parts.append(f"<h3>{_e(conf.key)}</h3>")
        parts += [f'<p class="note"><code>{_e(_config_path(conf))}</code></p>', f"<pre>{_e(conf.text.rstrip())}</pre>"]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{_e(c.title)}: forgetting report</title><style>{_CSS}</style></head><body>"
            + "\n".join(parts) + f"<script>{_JS}</script></body></html>\n")


# -- writing -----------------------------------------------------------------------------
def write_report(root: str | Path, *, scanned: tuple[list[dict[str, Any]], list[BadRecord]] | None = None,
                 out: str | Path | None = None, configs: list[SavedConfig] | None = None, title: str | None = None,
                 ) -> dict[str, Path]:
    """Write every report file of the runs under ``root`` (or of ``scanned``) into ``out``
    (``root`` unless given: ``clbench report DIR --config NAME`` writes into
    ``DIR/reports/NAME``); returns what was written, by kind."""
    root = Path(root)
    out = root if out is None else Path(out)
    for folder in (out, out / "tables", out / "plots"):  # what a killed report left half-written
        remove_stale_temps(folder)
    content = collect(root, scanned=scanned, out=out, configs=configs, title=title)
    written: dict[str, Path] = {"summary": RunStore(out).write_summary(content.records)}
    for sec in content.sections:
        base = out / "tables" / sec.slug
        write_atomic(base.with_suffix(".csv"), sec.table.to_csv(index=False))
        write_atomic(base.with_suffix(".md"), to_markdown(sec.table, sec.metrics) + "\n")
        write_atomic(base.with_suffix(".tex"), to_latex(sec.table, caption=f"Results on {sec.label}",
                                                        metrics=sec.metrics) + "\n")
        faults.reach("report-table")
    for sec in content.sections:
        for f in sec.figures:
            if not f.reused:
                write_atomic(out / "plots" / f"{f.stem}.png", f.png)
                write_atomic(out / "plots" / f"{f.stem}.svg", f.svg)
                faults.reach("report-plot")
    write_atomic(out / "report.md", render_markdown(content))
    write_atomic(out / "report.html", render_html(content))
    written.update(markdown=out / "report.md", html=out / "report.html", tables=out / "tables", plots=out / "plots")
    return written
