"""Comparison tables from the tidy long table: pure functions, no training objects.

For each section (one scenario setting: stream parameters, train and model settings; see
:mod:`benchmark.groups`), one row per strategy configuration, never two configurations in one
row: the mean and the sample standard deviation over seeds of every metric, the number of
distinct seeds with a done run and of failed runs, the best mean of
each column (higher is better, except forgetting and time), and a significance mark where
a strategy differs from the best at p < 0.05 by Welch's unpaired two-sided t-test over seeds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from benchmark.metric_names import METRICS
from benchmark.tables_labels import strategy_labels

# metric -> (column title, higher is better, shown in %)
METRIC_INFO: dict[str, tuple[str, bool, bool]] = {
    "acc": ("ACC", True, True),
    "la": ("LA", True, True),
    "bwt": ("BWT", True, True),
    "fwt": ("FWT", True, True),
    "forgetting": ("Forgetting", False, True),
    "train_s": ("Train s", False, False),
    "eval_share": ("Eval %", False, True),
    "grad_per_example": ("Grad/ex", False, False),
    "aaa": ("AAA", True, True),
    "min_acc": ("min-ACC", True, True),
    "wc_acc": ("WC-ACC", True, True),
    "gap_depth": ("Gap depth", False, True),
    "gap_recovered": ("Gap recovered", True, True),
    "online_acc": ("Online ACC", True, True),
}
REPORT_METRICS = (*METRICS, "train_s")
COMPUTE_METRICS = ("grad_per_example",)  # shown where the runs counted their gradient evaluations
CURVE_COLUMNS = ("aaa", "min_acc", "wc_acc", "gap_depth", "online_acc")  # shown where the runs recorded curves
SUMMARY_METRICS = ("acc", "bwt", "forgetting", "train_s", "eval_share")
SIGNIFICANCE = 0.05
MARK = "†"


def welch_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value of Welch's t-test; NaN with fewer than 2 values on a side or no
    variance at all."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or len(b) < 2:
        return math.nan
    if np.var(a) == 0 and np.var(b) == 0:
        return 0.0 if np.mean(a) != np.mean(b) else 1.0
    # scipy.stats' ttest_ind(equal_var=False), without the second it takes to import scipy.stats
    from scipy.special import stdtr

    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    t = (np.mean(a) - np.mean(b)) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    return float(min(1.0, 2.0 * stdtr(df, -abs(t))))


def sections(long: pd.DataFrame) -> list[str]:
    """The section labels of a long table (one per scenario setting), sorted."""
    return sorted(long["section"].dropna().unique()) if "section" in long.columns else []


def comparison(long: pd.DataFrame, section: str, metrics: Sequence[str] = REPORT_METRICS) -> pd.DataFrame:
    """The comparison table of one section (a scenario setting, see :mod:`benchmark.groups`),
    given by its label or its ``section_id``: one row per configuration of the section, never
    two configurations in one row. Columns: strategy (the configuration's label), runs (the
    number of distinct seeds with a done run: the table's "Seeds"), failed (failed runs), and
    per metric m: m_mean, m_std, m_n (seeds with a value), m_best, m_p (Welch's test against
    the best row of this section); then section and config_id. A metric is first averaged over
    the runs of one seed, then over seeds."""
    by_id = "section_id" in long.columns and section in set(long["section_id"])
    sc = long[long["section_id" if by_id else "section"] == section]
    runs = sc.drop_duplicates("run_id")
    rows = []
    for config_id, group in runs.groupby("config_id", sort=False):
        done = group[group["status"] == "done"]
        rows.append({"strategy": str(group["strategy"].iloc[0]), "runs": int(done["seed"].nunique()),
                     "failed": int((group["status"] != "done").sum()), "config_id": config_id,
                     "section": str(group["section"].iloc[0])})
    table = pd.DataFrame(rows, columns=["strategy", "runs", "failed", "config_id", "section"])
    table = table.sort_values("strategy", kind="stable").reset_index(drop=True)
    done = sc[sc["status"] == "done"]
    for m in metrics:
        per_seed = done[done["metric"] == m].dropna(subset=["value"]).groupby(["config_id", "seed"])["value"].mean()
        values = {c: per_seed.loc[c].to_numpy() for c in per_seed.index.get_level_values(0).unique()}
        ids = table["config_id"]
        table[f"{m}_mean"] = [float(np.mean(values[c])) if len(values.get(c, [])) else math.nan for c in ids]
        table[f"{m}_std"] = [float(np.std(values[c], ddof=1)) if len(values.get(c, [])) > 1 else math.nan
                             for c in ids]
        table[f"{m}_n"] = [len(values.get(c, [])) for c in ids]
        means = table[f"{m}_mean"]
        if means.notna().any():
            best_idx = means.idxmax() if METRIC_INFO[m][1] else means.idxmin()
            best = table.loc[best_idx, "config_id"]
            table[f"{m}_best"] = ids == best
            table[f"{m}_p"] = [math.nan if c == best else welch_p(values.get(c, []), values[best]) for c in ids]
        else:
            table[f"{m}_best"] = False
            table[f"{m}_p"] = math.nan
    return table[[c for c in table.columns if c not in ("config_id", "section")] + ["section", "config_id"]]


def table_metrics(long: pd.DataFrame, section: str) -> tuple[str, ...]:
    """The columns of a section's comparison table: :data:`REPORT_METRICS`, then gradient
    evaluations per incoming example and the continual-evaluation metrics where its runs have them."""
    by_id = "section_id" in long.columns and section in set(long["section_id"])
    sc = long[(long["section_id" if by_id else "section"] == section) & long["value"].notna()]
    present = set(sc["metric"])
    return (*REPORT_METRICS, *(m for m in (*COMPUTE_METRICS, *CURVE_COLUMNS) if m in present))


def cell(row: pd.Series, metric: str, *, bold: tuple[str, str] = ("", ""), mark: str = MARK) -> str:
    """``mean ± sd`` of one metric (accuracies in %), bold where best, marked where p < 0.05."""
    mean, std = row[f"{metric}_mean"], row[f"{metric}_std"]
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    scale = 100.0 if METRIC_INFO[metric][2] else 1.0
    digits = 2 if metric == "grad_per_example" and mean < 10 else 1
    text = f"{mean * scale:.{digits}f}"
    if not (isinstance(std, float) and math.isnan(std)):
        text += f" ± {std * scale:.{digits}f}"
    if row[f"{metric}_best"]:
        text = f"{bold[0]}{text}{bold[1]}"
    p = row[f"{metric}_p"]
    if isinstance(p, float) and not math.isnan(p) and p < SIGNIFICANCE:
        text += mark
    return text


def headers(metrics: Sequence[str]) -> list[str]:
    return ["Strategy", "Seeds", "Failed", *(METRIC_INFO[m][0] for m in metrics)]


def body(table: pd.DataFrame, metrics: Sequence[str], *, bold=("", ""), mark=MARK) -> list[list[str]]:
    return [[str(r["strategy"]), str(r["runs"]), str(r["failed"]), *(cell(r, m, bold=bold, mark=mark) for m in metrics)]
            for _, r in table.iterrows()]


def to_markdown(table: pd.DataFrame, metrics: Sequence[str] = REPORT_METRICS) -> str:
    """A GitHub Markdown table; best in bold, † where p < 0.05 against the best."""
    def esc(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["| " + " | ".join(headers(metrics)) + " |",
             "|" + "|".join(["---"] + ["--:"] * (len(metrics) + 2)) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in body(table, metrics, bold=("**", "**"))]
    return "\n".join(lines)


def to_latex(table: pd.DataFrame, *, caption: str, metrics: Sequence[str] = REPORT_METRICS) -> str:
    """A booktabs LaTeX table; best in \\textbf, $^\\dagger$ where p < 0.05 against the best."""
    def esc(text: str) -> str:
        for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("$", r"\$"), ("#", r"\#"),
                     ("_", r"\_"), ("{", r"\{"), ("}", r"\}"), ("~", r"\textasciitilde{}"), ("^", r"\^{}")):
            text = text.replace(a, b)
        return text

    rows = body(table, metrics, bold=("BOLDSTART", "BOLDEND"), mark="DAGGER")
    out = [r"\begin{table}[t]", r"\centering", rf"\caption{{{esc(caption)}}}",
           r"\begin{tabular}{l" + "r" * (len(metrics) + 2) + "}", r"\toprule",
           " & ".join(esc(h) for h in headers(metrics)) + r" \\", r"\midrule"]
    for row in rows:
        cells = [esc(c).replace("BOLDSTART", r"\textbf{").replace("BOLDEND", "}").replace("DAGGER", r"$^\dagger$")
                 .replace("±", r"$\pm$") for c in row]
        out.append(" & ".join(cells) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(out)


def summary_table(records: Iterable[dict[str, Any]]) -> str:
    """The plain-text table ``clbench run`` prints: per section (scenario setting) and
    configuration, mean ± sd over seeds (accuracies in %), seeds with a done run, failed
    runs, train time, eval share. Different configurations are never averaged together."""
    from benchmark.tidy import long_table

    long = long_table(records)
    head = ["section", *[h.lower() for h in headers(SUMMARY_METRICS)[:3]], *headers(SUMMARY_METRICS)[3:]]
    rows = []
    for section in sections(long):
        for r in body(comparison(long, section, SUMMARY_METRICS), SUMMARY_METRICS, mark=""):
            rows.append([section, *r])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    return "\n".join(lines)


__all__ = ["METRIC_INFO", "comparison", "sections", "strategy_labels", "summary_table", "table_metrics", "to_latex",
           "to_markdown", "welch_p"]
