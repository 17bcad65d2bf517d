"""The paper configs load, and the CIFAR-100 ones run whole (every strategy, its hyperparameters as
written) on a tiny colour stand-in of CIFAR-100's shape, with their targets in the report."""

import json
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs").glob("paper-*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_paper_config_loads(path):
    from benchmark.config import load_experiment

    exp = load_experiment(path, check_data=False)
    assert exp.specs()


def _stand_in(tmp_path) -> Path:
    """10 classes of 32x32 colour images (uint8, channels last as CIFAR's files), 12 per class."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(10), 12)
    x = (rng.random((len(y), 32, 32, 3)) * 64 + y[:, None, None, None] * 19).astype(np.uint8)
    path = tmp_path / "cifar-stand-in.npz"
    np.savez(path, x=x, y=y)
    return path


def _run(config: str, tmp_path):
    from benchmark.config import load_experiment
    from benchmark.report import write_report
    from benchmark.sweep import run_sweep

    npz = _stand_in(tmp_path)
    overrides = ["seeds=[0]", "scenarios.0.source=npz", f"scenarios.0.path={npz}", "scenarios.0.n_tasks=2",
                 "scenarios.0.per_task=10"]
    exp = load_experiment(ROOT / "configs" / config, overrides=overrides)
    out = tmp_path / "out"
    assert run_sweep(exp, out=out, show_progress=False, in_process=True).ok
    write_report(out)
    records = [json.loads(p.read_text()) for p in out.glob("*/run.json")]
    assert {r["strategy"] for r in records} == {name for name, _ in exp.strategies}
    assert all(r["status"] == "done" and r["config"]["model"]["name"] == "cnn" for r in records)
    md = (out / "report.md").read_text()
    for t in exp.targets:  # each target beside a measured value of its strategy
        line = next(ln for ln in md.splitlines() if ln.startswith(f"| {t.strategy} | ACC | {t.value:.2f} | "))
        assert "(1 seeds)" in line and t.source in line
    return records


def test_the_single_pass_cifar100_config_runs_on_a_stand_in(tmp_path):
    records = _run("paper-cifar100.yaml", tmp_path)
    lamaml = next(r for r in records if r["strategy"] == "la-maml")
    assert lamaml["backend"] == "reference" and lamaml["timing"]["inner_steps"] == 2 * 10 * 5  # tasks x glances x chunks


@pytest.mark.slow
def test_the_multi_pass_cifar100_config_runs_on_a_stand_in(tmp_path):
    _run("paper-cifar100-multipass.yaml", tmp_path)
