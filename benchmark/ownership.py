"""The files clbench writes at the top of a results folder, and whether one found there is its.

A results folder holds files of the suite's own (``experiment.yaml``, ``summary.csv``,
``report.md``, ``report.html``, and the folders ``configs/``, ``tables/``, ``plots/``,
``reports/``); a folder of ``clbench tune`` holds ``best.yaml``, ``study.sqlite`` and
``summary.csv``. ``clbench run --out .`` in a folder that holds the user's own ``experiment.yaml``
or ``summary.csv`` must not replace them: before anything runs, :func:`check_folder` names such
a file in one line. A file is the suite's when it carries the suite's mark: the first line of
``experiment.yaml`` (:data:`CONFIG_MARK`; files from before the mark are recognised by sitting
in a folder of run records), the first line of ``best.yaml`` (:data:`BEST_MARK`), the header
row of ``summary.csv``, the title of the reports, Optuna's tables in ``study.sqlite``.
"""

from __future__ import annotations

from pathlib import Path

CONFIG_MARK = "# written by clbench: the config of the last `clbench run` into this folder (the history is in configs/)"
BEST_MARK = ("# written by clbench tune: the config with the hyperparameters it chose (see tuned:); "
             "`clbench run` it to evaluate them")


def _first_line(path: Path, size: int = 4096) -> str:
    with open(path, "rb") as f:
        return f.read(size).decode("utf-8", errors="replace").split("\n", 1)[0].strip()


def _is_ours(path: Path) -> bool:
    name = path.name
    if name == "experiment.yaml":
        first = _first_line(path)
        legacy = any(path.parent.glob("*/run.json"))  # a results folder from before the mark
        return first == CONFIG_MARK or legacy
    if name == "summary.csv":
        return _first_line(path).startswith("run_id,scenario,strategy,seed,status,")
    if name == "report.md":
        return _first_line(path).startswith("# Forgetting report:")
    if name == "report.html":
        return "forgetting report</title>" in path.read_text(encoding="utf-8", errors="replace")[:4096]
    if name == "best.yaml":
        return _first_line(path) == BEST_MARK
    if name == "study.sqlite":
        return _is_study(path)
    return True


def _is_study(path: Path) -> bool:
    """Whether ``path`` is an SQLite database holding Optuna's tables (a study of clbench tune)."""
    import sqlite3

    with open(path, "rb") as f:
        if f.read(16) != b"SQLite format 3\x00":
            return False
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            return con.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='studies'").fetchone() is not None
        finally:
            con.close()
    except sqlite3.Error:
        return False


OWNED_FILES = ("experiment.yaml", "summary.csv", "report.md", "report.html")
TUNE_FILES = ("best.yaml", "study.sqlite", "summary.csv")  # what `clbench tune` writes at the top of its folder


def foreign_files(root: str | Path, names: tuple[str, ...] = OWNED_FILES) -> list[Path]:
    """The files among ``names`` in ``root`` that clbench would write and did not."""
    root = Path(root)
    found = []
    for name in names:
        p = root / name
        try:
            if p.is_dir() or (p.exists() and not _is_ours(p)):
                found.append(p)
        except OSError:
            found.append(p)
    return found
