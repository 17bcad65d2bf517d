"""Plots of a sweep: pure functions of DataFrames that draw on an optional axis and return
the figure. They never touch pyplot's global state (figures are ``matplotlib.figure.Figure``),
so they are safe in workers and tests.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
from matplotlib.figure import Figure


def _axis(ax, size=(6.0, 4.0)):
    if ax is not None:
        return ax.figure, ax
    fig = Figure(figsize=size, layout="constrained")
    return fig, fig.subplots()


def _integer_x(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def one_configuration(matrices: pd.DataFrame, what: str) -> None:
    """Refuse to average accuracy matrices that are not of one configuration: a ValueError
    when the runs in ``matrices`` (told apart by run_id, else seed) have matrices of different
    shapes, or when they belong to more than one configuration group (``config_id``)."""
    if not len(matrices):
        return
    if "config_id" in matrices.columns and matrices["config_id"].nunique(dropna=False) > 1:
        raise ValueError(f"{what}: the runs belong to {matrices['config_id'].nunique(dropna=False)} configurations; "
                         "draw one configuration at a time (benchmark.groups), never an average of several")
    run = "run_id" if "run_id" in matrices.columns else "seed" if "seed" in matrices.columns else None
    if run is None:
        return
    size = matrices.groupby(run, dropna=False).agg(rows=("after_task", "max"), cols=("task", "max")) + 1
    shapes = sorted({(int(r), int(c)) for r, c in size.to_numpy()})
    if len(shapes) > 1:
        raise ValueError(f"{what}: accuracy matrices of different shapes "
                         f"({', '.join(f'{r}x{c}' for r, c in shapes)}) cannot be averaged; "
                         "draw one configuration at a time (benchmark.groups)")


def accuracy_heatmap(matrices: pd.DataFrame, *, title: str = "", ax=None) -> Figure:
    """The accuracy matrix averaged over seeds: row i = after training task i, column j =
    test task j, annotated in %. ``matrices`` has columns after_task, task, acc (and run_id,
    config_id): the runs of one configuration, whose matrices all have one shape; anything
    else raises ValueError (:func:`one_configuration`) rather than averaging a 2x2 matrix into
    the corner of a 4x4 one."""
    one_configuration(matrices, "accuracy heatmap")
    mean = matrices.groupby(["after_task", "task"])["acc"].mean().unstack("task").sort_index()
    t = mean.shape[0]
    fig, ax = _axis(ax, (max(4.5, 1.2 + 0.45 * t), max(3.6, 1.0 + 0.4 * t)))
    image = ax.imshow(mean.to_numpy() * 100, vmin=0, vmax=100, cmap="viridis", aspect="auto")
    if t <= 25:
        for i in range(t):
            for j in range(mean.shape[1]):
                v = mean.iat[i, j] * 100
                ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=7 if t > 10 else 9,
                        color="white" if v < 60 else "black")
    ax.set_xlabel("test task j")
    ax.set_ylabel("after training task i")
    step = max(1, t // 10)
    ax.set_xticks(range(0, mean.shape[1], step))
    ax.set_yticks(range(0, t, step))
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, label="accuracy (%)")
    return fig


def average_accuracy_curves(curves: pd.DataFrame, *, title: str = "", ax=None) -> Figure:
    """Average accuracy over the tasks seen so far after each task, one line per strategy
    (mean over seeds) with a band of ± one standard deviation. Columns: strategy, seed,
    after_task, avg_acc; the configurations of one section (one ``section_id``), else
    ValueError: curves of different streams are not drawn on one axis."""
    if "section_id" in curves.columns and curves["section_id"].nunique(dropna=False) > 1:
        raise ValueError("average accuracy curves: the runs belong to several sections (scenario settings); "
                         "draw one section at a time (benchmark.groups)")
    fig, ax = _axis(ax)
    for strategy, group in curves.groupby("strategy", sort=True):
        stats = group.groupby("after_task")["avg_acc"].agg(["mean", "std"]).fillna(0.0)
        x = stats.index.to_numpy() + 1
        ax.plot(x, stats["mean"] * 100, marker="o", markersize=3, label=strategy)
        ax.fill_between(x, (stats["mean"] - stats["std"]) * 100, (stats["mean"] + stats["std"]) * 100, alpha=0.2)
    ax.set_xlabel("tasks learned")
    ax.set_ylabel("average accuracy on tasks seen (%)")
    _integer_x(ax)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def forgetting_curves(matrices: pd.DataFrame, *, title: str = "", ax=None) -> Figure:
    """Accuracy on each task j from the moment it is learned (i >= j) to the end, mean over
    seeds: the classic forgetting curves of one strategy. Columns: after_task, task, acc (and
    run_id, config_id): one configuration, else ValueError (:func:`one_configuration`)."""
    one_configuration(matrices, "forgetting curves")
    fig, ax = _axis(ax)
    mean = matrices.groupby(["task", "after_task"])["acc"].mean()
    tasks = sorted(matrices["task"].unique())
    colours = [f"C{k % 10}" for k in range(len(tasks))]
    for j, colour in zip(tasks, colours):
        series = mean.loc[j]
        series = series[series.index >= j]
        ax.plot(series.index + 1, series.to_numpy() * 100, color=colour, alpha=0.85, marker="o", markersize=3,
                label=f"task {j + 1}" if len(tasks) <= 10 else None)
    ax.set_xlabel("tasks learned")
    ax.set_ylabel("accuracy on the task (%)")
    _integer_x(ax)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    if len(tasks) <= 10:
        ax.legend(fontsize=7, ncol=2)
    return fig


def forgetting_bars(table: pd.DataFrame, *, title: str = "", ax=None) -> Figure:
    """Forgetting and BWT per strategy (mean ± sd over seeds, in %), from a comparison table."""
    fig, ax = _axis(ax)
    x = np.arange(len(table))
    width = 0.4
    for offset, metric, label in ((-width / 2, "forgetting", "forgetting"), (width / 2, "bwt", "BWT")):
        ax.bar(x + offset, table[f"{metric}_mean"].fillna(0) * 100, width,
               yerr=table[f"{metric}_std"].fillna(0) * 100, capsize=3, label=label)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(x, table["strategy"], rotation=30, ha="right")
    ax.set_ylabel("%")
    ax.set_title(title)
    ax.legend()
    return fig


def cost_scatter(table: pd.DataFrame, *, title: str = "", ax=None) -> Figure:
    """ACC against train time per run (log scale), one point per strategy (means over seeds),
    from a comparison table: what each method costs."""
    fig, ax = _axis(ax)
    data = table.dropna(subset=["acc_mean", "train_s_mean"])
    for k, (_, row) in enumerate(data.iterrows()):
        ax.errorbar(max(row["train_s_mean"], 1e-3), row["acc_mean"] * 100,
                    yerr=0 if np.isnan(row["acc_std"]) else row["acc_std"] * 100, fmt="o", color=f"C{k % 10}")
        ax.annotate(row["strategy"], (max(row["train_s_mean"], 1e-3), row["acc_mean"] * 100), fontsize=8,
                    xytext=(4, 4), textcoords="offset points")
    from matplotlib.ticker import NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels crowd a short log axis
    ax.set_xlabel("train time per run (s, log scale)")
    ax.set_ylabel("ACC (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, which="both")
    return fig


def stability_gap_curves(curves: pd.DataFrame, *, title: str = "") -> Figure:
    """Continual-evaluation curves of one section (columns of :func:`benchmark.tidy.curve_table`):
    above, the accuracy of the first task against training iterations; below, the average
    accuracy of the old tasks (those before the one training), one line per strategy (mean over
    seeds), task switches as dotted lines. The drop right after each switch is the stability gap
    (De Lange et al. 2023); a section's configurations share one iteration grid."""
    if "section_id" in curves.columns and curves["section_id"].nunique(dropna=False) > 1:
        raise ValueError("stability-gap curves: the runs belong to several sections (scenario settings); "
                         "draw one section at a time (benchmark.groups)")
    fig = Figure(figsize=(7.0, 5.2), layout="constrained")
    first_ax, old_ax = fig.subplots(2, 1, sharex=True)
    old = curves[curves["task"] < curves["current"]]
    old_mean = old.groupby(["strategy", "seed", "iteration"])["acc"].mean().groupby(["strategy", "iteration"]).mean()
    first = curves[curves["task"] == 0].groupby(["strategy", "iteration"])["acc"].mean()
    for k, strategy in enumerate(sorted(curves["strategy"].unique())):
        colour = f"C{k % 10}"
        f = first.loc[strategy]
        first_ax.plot(f.index, f.to_numpy() * 100, color=colour, linewidth=1.0, label=strategy)
        if strategy in old_mean.index.get_level_values(0):
            o = old_mean.loc[strategy]
            old_ax.plot(o.index, o.to_numpy() * 100, color=colour, linewidth=1.0)
    switches = curves.groupby("current")["iteration"].max().sort_index().to_numpy()[:-1]
    for ax in (first_ax, old_ax):
        for x in switches:
            ax.axvline(x, color="grey", linestyle=":", linewidth=0.8)
        ax.grid(alpha=0.3)
    first_ax.set_ylabel("first task (%)")
    old_ax.set_ylabel("old tasks, mean (%)")
    old_ax.set_xlabel("training iteration (dotted: task switch)")
    first_ax.set_title(title, fontsize=9)
    first_ax.legend(fontsize=7, ncol=2)
    return fig


def equal_compute_scatter(table: pd.DataFrame, *, title: str = "", ax=None) -> Figure:
    """ACC against gradient evaluations per incoming example (log scale), one point per
    strategy with ± one standard deviation over seeds on both axes, from a comparison table
    with the ``grad_per_example`` column: accuracy at equal compute."""
    fig, ax = _axis(ax)
    data = table.dropna(subset=["acc_mean", "grad_per_example_mean"])
    data = data[data["grad_per_example_mean"] > 0]
    for k, (_, row) in enumerate(data.iterrows()):
        x, y = row["grad_per_example_mean"], row["acc_mean"] * 100
        xerr = 0 if np.isnan(row["grad_per_example_std"]) else row["grad_per_example_std"]
        ax.errorbar(x, y, xerr=xerr, yerr=0 if np.isnan(row["acc_std"]) else row["acc_std"] * 100, fmt="o",
                    color=f"C{k % 10}", capsize=2)
        ax.annotate(row["strategy"], (x, y), fontsize=8, xytext=(4, 4), textcoords="offset points")
    from matplotlib.ticker import NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("gradient evaluations per incoming example (log scale)")
    ax.set_ylabel("ACC (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, which="both")
    return fig


def to_bytes(fig: Figure, fmt: str, *, metadata: dict[str, str] | None = None) -> bytes:
    """The figure as PNG or SVG bytes (``metadata``: text fields stored in the file)."""
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=110 if fmt == "png" else None, metadata=metadata)
    return buf.getvalue()
