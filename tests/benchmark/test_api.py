"""The Python API: benchmark.run / benchmark.load, the README's notebook section run as written,
the CLI's one-line errors raised as exceptions, and a cheap `import benchmark`."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
ROOT = README.parent


def _notebook_blocks() -> list[str]:
    text = README.read_text().split("<!-- notebook:start -->", 1)[1].split("<!-- notebook:end -->", 1)[0]
    return re.findall(r"```python\n(.*?)```", text, re.S)


def test_the_readme_notebook_section_runs_loads_and_plots(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    blocks = _notebook_blocks()
    assert len(blocks) == 3
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 (the README's own code)
    runs, long, er = namespace["runs"], namespace["long"], namespace["er"]
    assert sorted(runs["strategy"].unique()) == ["er", "naive"] and set(runs["seed"]) == {0, 1}
    assert runs["run_id"].nunique() == 4 and (runs["status"] == "done").all()
    assert runs.groupby("run_id")["metric"].apply(lambda m: "acc" in set(m) and "bwt" in set(m)).all()
    acc = runs[runs.metric == "acc"]["value"]
    assert acc.between(0, 1).all() and acc.notna().all()
    # load reads back exactly what run returned
    key = ["run_id", "metric"]
    assert long.sort_values(key).reset_index(drop=True)[runs.columns].equals(
        runs.sort_values(key).reset_index(drop=True))
    assert set(er["strategy"]) == {"er"} and er["run_id"].nunique() == 2
    assert (tmp_path / "forgetting.png").stat().st_size > 1000 and (tmp_path / "acc-bwt.png").stat().st_size > 1000
    # a second run finds every run done and returns the same table, running nothing
    import benchmark

    again = benchmark.run(namespace["config"], out="results/notebook", in_process=True)
    assert again.sort_values(key).reset_index(drop=True).equals(runs.sort_values(key).reset_index(drop=True))


def test_bad_input_raises_the_clis_one_line_errors(tmp_path):
    import benchmark
    from benchmark.config import ConfigError
    from benchmark.usage import UsageError

    good = {"name": "x", "seeds": [0], "scenarios": [{"name": "permuted-mnist", "n_tasks": 2, "per_task": 10}],
            "strategies": [{"name": "naive"}]}
    with pytest.raises(ConfigError, match=r"^config: strategies\[0\]: unknown strategy 'naiv' \(did you mean "
                                          r"'naive'\?\)") as bad:
        benchmark.run({**good, "strategies": [{"name": "naiv"}]}, out=tmp_path / "a")
    assert "\n" not in str(bad.value)
    with pytest.raises(ConfigError, match=r"^--set scenarios\.0\.n_tasks=0: scenarios\[0\]: permuted-mnist: "
                                          r"parameter 'n_tasks' must be >= 1, got 0$"):
        benchmark.run(good, out=tmp_path / "a", overrides=["scenarios.0.n_tasks=0"])
    with pytest.raises(UsageError, match=r"^--jobs must be >= 1, got 0$"):
        benchmark.run(good, out=tmp_path / "a", jobs=0)
    assert not (tmp_path / "a").exists()  # nothing run, no folder made
    with pytest.raises(UsageError, match=r"^results folder not found: .*nowhere$"):
        benchmark.load(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match=r"^no run records in .*empty; a results folder holds"):
        benchmark.load(tmp_path / "empty")


def test_import_benchmark_imports_neither_pandas_nor_torch():
    code = "import sys, benchmark; print(sorted(m for m in ('pandas', 'torch', 'scenarios') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert done.stdout.strip() == "[]"
