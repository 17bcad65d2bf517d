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


TUNE_CONFIGS = sorted((ROOT / "configs").glob("tune-*.yaml"))
TUNED_CONFIGS = sorted((ROOT / "configs" / "tuned").glob("*.yaml"))


@pytest.mark.parametrize("path", TUNE_CONFIGS, ids=[p.stem for p in TUNE_CONFIGS])
def test_every_tune_config_loads_with_an_equal_budget_on_the_first_three_tasks(path):
    from benchmark.config import load_experiment

    exp = load_experiment(path, check_data=False)
    assert exp.tune.first_tasks == 3 and exp.tune.trials == 20 and exp.tune.report_on == "remaining"
    assert set(exp.tune.spaces) == {name for name, _ in exp.strategies}
    assert not any(space.derived for space in exp.tune.spaces.values())


@pytest.mark.parametrize("path", TUNED_CONFIGS, ids=[p.stem for p in TUNED_CONFIGS])
def test_every_tuned_config_loads_and_says_how_its_settings_were_chosen(path):
    """The shipped best configs hold the chosen settings their tuned: block records, on the
    tasks after those of the choice; the defaults beside them run on the same tasks."""
    import yaml

    from benchmark.config import load_experiment
    from benchmark.tune_config import tuned_entries

    exp = load_experiment(path, check_data=False)
    [(scenario, params)] = exp.scenarios
    assert params["task_range"] == [3, 20] and exp.seeds == (0, 1, 2, 3, 4)
    entries, problems = tuned_entries(yaml.safe_load(path.read_text()))
    assert not problems
    if path.stem.startswith("defaults-"):
        assert not entries and exp.tuned is None
        tuned = load_experiment(path.with_name(path.name.removeprefix("defaults-")), check_data=False)
        assert [name for name, _ in exp.strategies] == [name for name, _ in tuned.strategies]
        assert exp.scenarios == tuned.scenarios and exp.train == tuned.train and exp.model == tuned.model
        return
    assert [e.strategy for e in entries] == [name for name, _ in exp.strategies]
    for (name, hparams), entry in zip(exp.strategies, entries):
        assert entry.scenario == scenario and entry.task_range == params["task_range"]
        assert entry.trials == entry.complete == 20 and entry.best_value is not None
        assert all(hparams[k] == v for k, v in entry.chosen.items())
