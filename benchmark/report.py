"""``clbench report DIR``: tables, plots and a forgetting report from the run records alone.

Writes ``report.md``, ``report.html`` (one self-contained file: images embedded as data
URIs, no network fetches, sortable tables, print styles), ``summary.csv``, and per scenario
``tables/<scenario>.{csv,md,tex}`` and ``plots/*.png|svg``. Every string from a run record is
escaped in the HTML.

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
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from benchmark import faults, plots
from benchmark.store import BadRecord, RunStore, remove_stale_temps, write_atomic
from benchmark.tables import (
    METRIC_INFO,
    REPORT_METRICS,
    SIGNIFICANCE,
    comparison,
    to_latex,
    to_markdown,
)
from benchmark.tidy import average_accuracy_table, long_table, matrix_table

DEFINITIONS = [
    ("ACC", "retained accuracy (RA): mean_j R[T-1, j], accuracy on every task after the last one"),
    ("LA", "learning accuracy: mean_j R[j, j], accuracy on each task right after learning it"),
    ("BWT", "backward transfer (BTI): 1/(T-1) sum_{j<T-1} (R[T-1, j] - R[j, j]); negative means forgetting"),
    ("FWT", "forward transfer: 1/(T-1) sum_{j>=1} (R[j-1, j] - b[j]), b = accuracy of the untrained model"),
    ("Forgetting", "Chaudhry et al. (2018): 1/(T-1) sum_{j<T-1} (max_{l<T-1} R[l, j] - R[T-1, j])"),
]
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
    scenario: str
    table: pd.DataFrame
    figures: list[PlotFile] = field(default_factory=list)


@dataclass
class ReportContent:
    title: str
    generated: str
    versions: list[dict[str, Any]]
    machines: list[dict[str, Any]]
    config_text: str
    sections: list[ScenarioSection]
    failed: list[dict[str, Any]]
    unreadable: list[BadRecord]
    n_runs: int
    records: list[dict[str, Any]] = field(default_factory=list)


def slug(text: str) -> str:
    """A file-name-safe form of ``text``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip(".-")[:80] or "x"


def _distinct(dicts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    counts = Counter(json.dumps(d, sort_keys=True, default=str) for d in dicts if isinstance(d, dict) and d)
    return [json.loads(k) for k, _ in counts.most_common()]


def collect(root: str | Path, *, scanned: tuple[list[dict[str, Any]], list[BadRecord]] | None = None,
            ) -> ReportContent:
    """Read the run records under ``root`` (or take ``scanned``, what ``RunStore.scan`` found
    there) and compute every table and figure, reusing the plots under ``root/plots`` whose
    inputs are unchanged."""
    store = RunStore(root)
    figure = _figure_maker(store.root / "plots")
    records, bad = scanned if scanned is not None else store.scan()
    long = long_table(records)
    matrices = matrix_table(records)
    curves = average_accuracy_table(matrices) if len(matrices) else matrices
    config_file = store.root / "experiment.yaml"
    config_text = config_file.read_text(encoding="utf-8", errors="replace") if config_file.is_file() else ""
    title = store.root.resolve().name
    try:
        import yaml

        title = str((yaml.safe_load(config_text) or {}).get("name") or title)
    except Exception:  # noqa: BLE001, S110 (a config that does not parse keeps the folder's name)
        pass
    sections = []
    for scenario in sorted(long["scenario"].dropna().unique()):
        table = comparison(long, scenario)
        sec = ScenarioSection(scenario, table)
        m = matrices[matrices["scenario"] == scenario]
        c = curves[curves["scenario"] == scenario] if len(curves) else curves
        if len(m):
            sec.figures.append(figure(f"{slug(scenario)}__average_accuracy", f"{scenario}: average accuracy over the stream",
                                      plots.average_accuracy_curves, c, title=f"{scenario}: average accuracy"))
            sec.figures.append(figure(f"{slug(scenario)}__forgetting_bwt", f"{scenario}: forgetting and BWT per strategy",
                                      plots.forgetting_bars, table, title=f"{scenario}: forgetting and BWT"))
            sec.figures.append(figure(f"{slug(scenario)}__cost", f"{scenario}: ACC against train time",
                                      plots.cost_scatter, table, title=f"{scenario}: accuracy and cost"))
            for strategy, ms in m.groupby("strategy", sort=True):
                sec.figures.append(figure(f"{slug(scenario)}__heatmap__{slug(strategy)}",
                                          f"{scenario}, {strategy}: accuracy matrix (mean over seeds)",
                                          plots.accuracy_heatmap, ms, title=f"{strategy} on {scenario}"))
                sec.figures.append(figure(f"{slug(scenario)}__forgetting__{slug(strategy)}",
                                          f"{scenario}, {strategy}: accuracy of each task over time",
                                          plots.forgetting_curves, ms, title=f"{strategy} on {scenario}: each task"))
        sections.append(sec)
    failed = [r for r in records if r.get("status") != "done"]
    return ReportContent(
        title=title, generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        versions=_distinct([r.get("versions") for r in records]), machines=_distinct([r.get("machine") for r in records]),
        config_text=config_text, sections=sections, failed=failed, unreadable=bad, n_runs=len(records),
        records=records,
    )


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


def _first_line(text: Any) -> str:
    return str(text or "").strip().splitlines()[0] if str(text or "").strip() else ""


def _kv(d: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in d.items())


# -- Markdown ----------------------------------------------------------------------------
def render_markdown(c: ReportContent) -> str:
    out = [f"# Forgetting report: {c.title}", "",
           (f"Generated {c.generated} from {c.n_runs} run records "
            f"({c.n_runs - len(c.failed)} done, {len(c.failed)} failed)."), ""]
    out += ["## Setup", ""]
    out += [f"- Versions: {_kv(v)}" for v in c.versions] or ["- Versions: unknown"]
    out += [f"- Hardware: {_kv(m)}" for m in c.machines] or ["- Hardware: unknown"]
    out.append("")
    for sec in c.sections:
        out += [f"## {sec.scenario}", "", to_markdown(sec.table), ""]
        for f in sec.figures:
            out += [f"![{f.caption}](plots/{f.stem}.png)", ""]
    out += ["## Metrics", ""] + [f"- **{k}**: {v}" for k, v in DEFINITIONS] + [""] + [f"- {n}" for n in NOTES] + [""]
    out += ["## Failed runs", ""]
    if c.failed:
        out += ["| run | strategy | scenario | seed | error |", "|---|---|---|---|---|"]
        out += [f"| {r.get('run_id')} | {r.get('strategy')} | {r.get('scenario')} | {r.get('seed')} | "
                f"{_first_line(r.get('error')).replace('|', '/')} |" for r in c.failed]
    else:
        out.append("None.")
    if c.unreadable:
        out += ["", "Unreadable run records (skipped):", ""] + [f"- `{b.path}`: {b.reason}" for b in c.unreadable]
    out += ["", "## Configuration", "", "```yaml", c.config_text.rstrip() or "# experiment.yaml not found", "```", ""]
    return "\n".join(out)


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


def _html_table(table: pd.DataFrame) -> str:
    from benchmark.tables import cell

    heads = ["Strategy", "Seeds", "Failed", *(METRIC_INFO[m][0] for m in REPORT_METRICS)]
    rows = []
    for _, r in table.iterrows():
        cells = [f'<td data-v="{_e(r["strategy"])}">{_e(r["strategy"])}</td>',
                 f'<td data-v="{int(r["runs"])}">{int(r["runs"])}</td>',
                 f'<td data-v="{int(r["failed"])}">{int(r["failed"])}</td>']
        for m in REPORT_METRICS:
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
    parts.append("</ul>")
    for sec in c.sections:
        parts += [f"<h2>{_e(sec.scenario)}</h2>", _html_table(sec.table), '<div class="figs">']
        for f in sec.figures:
            data = base64.b64encode(f.png).decode("ascii")
            parts.append(f'<figure><img alt="{_e(f.caption)}" src="data:image/png;base64,{data}">'
                         f"<figcaption>{_e(f.caption)}</figcaption></figure>")
        parts.append("</div>")
    parts += ["<h2>Metrics</h2><ul>"] + [f"<li><b>{_e(k)}</b>: {_e(v)}</li>" for k, v in DEFINITIONS] + ["</ul>"]
    parts += ['<ul class="note">'] + [f"<li>{_e(n)}</li>" for n in NOTES] + ["</ul>"]
    parts.append("<h2>Failed runs</h2>")
    if c.failed:
        parts.append('<div class="scroll"><table class="sortable"><thead><tr><th>Run</th><th>Strategy</th>'
                     "<th>Scenario</th><th>Seed</th><th>Error</th></tr></thead><tbody>")
        for r in c.failed:
            parts.append("<tr>" + "".join(f'<td data-v="{_e(x)}">{_e(x)}</td>' for x in (
                r.get("run_id"), r.get("strategy"), r.get("scenario"), r.get("seed"))) +
                f'<td class="err" data-v="">{_e(_first_line(r.get("error")))}</td></tr>')
        parts.append("</tbody></table></div>")
    else:
        parts.append("<p>None.</p>")
    if c.unreadable:
        parts.append("<p>Unreadable run records (skipped):</p><ul>")
        parts += [f"<li><code>{_e(b.path)}</code>: {_e(b.reason)}</li>" for b in c.unreadable]
        parts.append("</ul>")
    parts += ["<h2>Configuration</h2>", f"<pre>{_e(c.config_text.rstrip() or '# experiment.yaml not found')}</pre>"]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{_e(c.title)}: forgetting report</title><style>{_CSS}</style></head><body>"
            + "\n".join(parts) + f"<script>{_JS}</script></body></html>\n")


# -- writing -----------------------------------------------------------------------------
def write_report(root: str | Path, *, scanned: tuple[list[dict[str, Any]], list[BadRecord]] | None = None,
                 ) -> dict[str, Path]:
    """Write every report file under ``root``; returns what was written, by kind."""
    root = Path(root)
    for folder in (root, root / "tables", root / "plots"):  # what a killed report left half-written
        remove_stale_temps(folder)
    content = collect(root, scanned=scanned)
    written: dict[str, Path] = {"summary": RunStore(root).write_summary(content.records)}
    for sec in content.sections:
        base = root / "tables" / slug(sec.scenario)
        write_atomic(base.with_suffix(".csv"), sec.table.to_csv(index=False))
        write_atomic(base.with_suffix(".md"), to_markdown(sec.table) + "\n")
        write_atomic(base.with_suffix(".tex"), to_latex(sec.table, caption=f"Results on {sec.scenario}") + "\n")
        faults.reach("report-table")
    for sec in content.sections:
        for f in sec.figures:
            if not f.reused:
                write_atomic(root / "plots" / f"{f.stem}.png", f.png)
                write_atomic(root / "plots" / f"{f.stem}.svg", f.svg)
                faults.reach("report-plot")
    write_atomic(root / "report.md", render_markdown(content))
    write_atomic(root / "report.html", render_html(content))
    written.update(markdown=root / "report.md", html=root / "report.html")
    return written
