"""Reproduction targets: validated with the config, shown in the report beside the measured value."""

import json
import math
import statistics

import pytest
import yaml

from benchmark.config import ConfigError, validate

BASE = {"name": "t", "seeds": [0, 1], "train": {"batch_size": 10, "device": "cpu"}, "model": {"hidden": [20]},
        "scenarios": [{"name": "permuted-mnist", "source": "digits", "n_tasks": 2, "per_task": 40}],
        "strategies": [{"name": "naive", "lr": 0.1},
                       {"name": "er", "lr": 0.1, "mem_size": 20, "per_example": True},
                       {"name": "er", "lr": 0.1, "mem_size": 20, "per_example": False}]}


def _target(**kw):
    return {"scenario": "permuted-mnist", "strategy": "naive", "metric": "acc", "value": 50.0, "source": "a paper", **kw}


@pytest.mark.parametrize("target, message", [
    (_target(strategy="la-maml"), r"targets\[0\]: strategy 'la-maml' is not a strategy of this config .*present: er, naive"),
    (_target(scenario="rotated-mnist"), r"scenario 'rotated-mnist' is not a scenario of this config"),
    (_target(metric="accuracy"), r"metric 'accuracy' is unknown; allowed: acc, la, bwt, fwt, forgetting"),
    (_target(value="high"), r"value must be a finite number"),
    (_target(value=float("nan")), r"value must be a finite number"),
    (_target(source=""), r"source must say where the figure comes from"),
    (_target(strategy="er", hparams={"per_example": "yes"}), r"no 'er' entry of this config has hyperparameters"),
    (_target(colour="red"), r"unknown key 'colour'; allowed: scenario, strategy, hparams, metric, value, source"),
    ({"scenario": "permuted-mnist", "strategy": "naive", "metric": "acc", "value": 1.0},
     r"missing 'source'; a target needs scenario, strategy, metric, value, source"),
    ("acc 61", r"targets\[0\] must be a mapping"),
])
def test_a_bad_target_is_refused_in_one_line(target, message):
    with pytest.raises(ConfigError, match=message) as info:
        validate({**BASE, "targets": [target]})
    assert "\n" not in str(info.value)


def test_targets_are_resolved_with_the_config():
    exp = validate({**BASE, "targets": [_target(strategy="er", hparams={"per_example": True}, value=61)]})
    (t,) = exp.targets
    assert (t.strategy, t.hparams, t.value, t.metric) == ("er", {"per_example": True}, 61.0, "acc")


def test_the_report_shows_each_target_beside_the_measured_value(tmp_path):
    from benchmark.config import load_experiment
    from benchmark.report import write_report
    from benchmark.sweep import run_sweep

    cfg = {**BASE, "targets": [_target(value=12.5, source="Somebody 2020, Table 1"),
                               _target(strategy="er", hparams={"per_example": True}, metric="bwt", value=-3.0,
                                       source="Other 2019"),
                               _target(strategy="er", metric="forgetting", value=1.0, source="both ER rows")]}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "out"
    assert run_sweep(load_experiment(path), out=out, show_progress=False, in_process=True).ok
    write_report(out)
    md = (out / "report.md").read_text()
    recs = [json.loads(p.read_text()) for p in out.glob("*/run.json")]

    def measured(metric, select):
        values = [100 * r["metrics"][metric] for r in recs if select(r)]
        return statistics.mean(values), statistics.stdev(values)

    naive_mean, naive_std = measured("acc", lambda r: r["strategy"] == "naive")
    row = next(line for line in md.splitlines() if line.startswith("| naive | ACC"))
    assert row == (f"| naive | ACC | 12.50 | {naive_mean:.2f} ± {naive_std:.2f} (2 seeds) | {naive_mean - 12.5:+.2f} "
                   "| Somebody 2020, Table 1 |")
    er_mean, _ = measured("bwt", lambda r: r["strategy"] == "er" and r["config"]["hparams"]["per_example"])
    assert f"| BWT | -3.00 | {er_mean:.2f}" in md
    # a target that pins no hyperparameter matches both ER configurations: a row each
    assert sum(1 for line in md.splitlines() if "| both ER rows |" in line) == 2
    html = (out / "report.html").read_text()
    assert "Somebody 2020, Table 1" in html and "Reproduction targets" in html


def test_a_target_no_run_matches_says_so_and_a_broken_kept_target_is_named(tmp_path):
    from benchmark.targets import Target, from_config, rows

    t = Target("permuted-mnist", "naive", "acc", 50.0, "x")
    (row,) = rows([t], [], {}, [], scenario="permuted-mnist", units={"acc": 100.0})
    assert row["seeds"] == 0 and math.isnan(row["measured"]) and math.isnan(row["difference"])
    assert rows([t], [], {}, [], scenario="rotated-mnist", units={}) == []
    found, problems = from_config({"targets": [_target(), {"scenario": "x"}]})
    assert len(found) == 1 and problems == ["targets[1] skipped: not a valid target ({'scenario': 'x'})"]


def test_a_sweep_scored_by_the_ncm_head_is_a_setting_of_its_own(tmp_path):
    from benchmark.config import load_experiment
    from benchmark.report import write_report
    from benchmark.sweep import run_sweep

    cfg = {**BASE, "seeds": [0], "strategies": [{"name": "naive", "lr": 0.1}]}
    for head in ("logits", "ncm"):
        path = tmp_path / f"{head}.yaml"
        path.write_text(yaml.safe_dump({**cfg, "train": {**cfg["train"], "eval_head": head}}))
        assert run_sweep(load_experiment(path), out=tmp_path / "out", show_progress=False, in_process=True).ok
    recs = {r["config"]["train"]["eval_head"]: r for r in
            (json.loads(p.read_text()) for p in (tmp_path / "out").glob("*/run.json"))}
    assert set(recs) == {"logits", "ncm"} and recs["logits"]["run_id"] != recs["ncm"]["run_id"]
    assert recs["logits"]["acc_matrix"] != recs["ncm"]["acc_matrix"]  # the same training, scored two ways
    assert recs["ncm"]["metrics"]["acc"] > 0.3  # a trained representation separates the digits
    write_report(tmp_path / "out")
    md = (tmp_path / "out" / "report.md").read_text()
    assert "train.eval_head=ncm" in md  # two sections, told apart by the setting
