"""Reports that never mix configurations: runs are grouped by their whole resolved spec (not
the seed, not the settings that do not change results), a section per scenario setting and a
row per strategy configuration, labelled by what differs; the config history of a folder and
`clbench report DIR --config NAME`."""

import csv
import math
import random
from pathlib import Path

import numpy as np
import pytest
import yaml

from benchmark import groups, plots
from benchmark.cli import main
from benchmark.config import validate
from benchmark.report import collect, write_report
from benchmark.store import RunStore
from benchmark.sweep import save_config
from benchmark.tables import comparison, sections, summary_table
from benchmark.tidy import long_table, matrix_table
from tests.benchmark import synthetic


def _records(**cfg):
    """Synthetic records of every run of one validated config (made-up accuracies)."""
    raw = {"name": "t", "seeds": [0, 1], "strategies": [{"name": "naive"}], **cfg}
    rng = random.Random(len(str(cfg)))
    return [synthetic.record(s, rng=rng) for s in validate(raw).specs()]


def _sections(records):
    long = long_table(records)
    return {sec: comparison(long, sec).set_index("strategy") for sec in sections(long)}


def _mean(records, metric="acc"):
    per_seed = {}
    for r in records:
        per_seed.setdefault(r["seed"], []).append(r["metrics"][metric])
    return float(np.mean([np.mean(v) for v in per_seed.values()]))


SPLIT = {"name": "split-mnist", "n_tasks": 2}


def test_task_incremental_and_class_incremental_are_two_sections_of_two_seeds():
    ti = _records(scenarios=[{**SPLIT, "task_incremental": True}])
    ci = _records(scenarios=[{**SPLIT, "task_incremental": False}])
    found = _sections(ti + ci)
    assert sorted(found) == ["split-mnist (task_incremental=False)", "split-mnist (task_incremental=True)"]
    for label, recs in (("split-mnist (task_incremental=True)", ti), ("split-mnist (task_incremental=False)", ci)):
        table = found[label]
        assert list(table.index) == ["naive"]
        assert table.loc["naive", "runs"] == 2 and table.loc["naive", "failed"] == 0
        assert table.loc["naive", "acc_mean"] == pytest.approx(_mean(recs))
        assert table.loc["naive", "forgetting_mean"] == pytest.approx(_mean(recs, "forgetting"))
    text = summary_table(ti + ci)
    rows = [line for line in text.splitlines()[2:] if line.strip()]
    assert len(rows) == 2 and all(line.split()[3] == "2" for line in rows), text  # section label is 2 words
    assert not any(" 4 " in line for line in rows)
    assert text.splitlines()[0].split()[:3] == ["section", "strategy", "seeds"]


def test_seeds_counts_distinct_seeds_and_values_are_averaged_per_seed_first():
    recs = _records(scenarios=[{"name": "permuted-mnist", "n_tasks": 2}])
    twin = {**recs[0], "run_id": recs[0]["run_id"] + "-copy",
            "metrics": {**recs[0]["metrics"], "acc": recs[0]["metrics"]["acc"] + 0.1}}
    failed = {**recs[0], "run_id": "failed-one", "status": "failed", "error": "x", "metrics": None}
    table = _sections([*recs, twin, failed])["permuted-mnist"]
    assert table.loc["naive", "runs"] == 2 and table.loc["naive", "failed"] == 1
    assert table.loc["naive", "acc_n"] == 2
    assert table.loc["naive", "acc_mean"] == pytest.approx(_mean([*recs, twin]))


def test_two_task_counts_are_two_sections_with_their_own_heatmap_shapes(tmp_path):
    two = _records(scenarios=[{"name": "permuted-mnist", "n_tasks": 2}])
    four = _records(scenarios=[{"name": "permuted-mnist", "n_tasks": 4}])
    store = RunStore(tmp_path)
    for r in two + four:
        store.write(r)
    assert sorted(_sections(two + four)) == ["permuted-mnist (n_tasks=2)", "permuted-mnist (n_tasks=4)"]
    matrices = matrix_table(two + four)
    for label, t in (("permuted-mnist (n_tasks=2)", 2), ("permuted-mnist (n_tasks=4)", 4)):
        m = matrices[matrices["section"] == label]
        assert m["config_id"].nunique() == 1
        assert (m["after_task"].max() + 1, m["task"].max() + 1) == (t, t)
        fig = plots.accuracy_heatmap(m)
        assert fig.axes[0].images[0].get_array().shape == (t, t)
    with pytest.raises(ValueError, match="configurations"):
        plots.accuracy_heatmap(matrices)
    with pytest.raises(ValueError, match=r"different shapes \(2x2, 4x4\)"):
        plots.accuracy_heatmap(matrices.drop(columns=["config_id"]))
    with pytest.raises(ValueError, match="different shapes"):
        plots.forgetting_curves(matrices.drop(columns=["config_id"]))
    written = write_report(tmp_path)
    md = written["markdown"].read_text()
    assert "## permuted-mnist (n_tasks=2)" in md and "## permuted-mnist (n_tasks=4)" in md
    for stem in ("permuted-mnist-n_tasks-2", "permuted-mnist-n_tasks-4"):
        assert (tmp_path / "tables" / f"{stem}.csv").is_file()
        for kind in ("heatmap__naive", "forgetting__naive", "average_accuracy", "cost", "forgetting_bwt"):
            assert (tmp_path / "plots" / f"{stem}__{kind}.png").stat().st_size > 0
    rows = list(csv.DictReader(open(tmp_path / "summary.csv")))
    assert {r["section"] for r in rows} == {"permuted-mnist (n_tasks=2)", "permuted-mnist (n_tasks=4)"}
    assert len({r["section_id"] for r in rows}) == 2 and len({r["config_id"] for r in rows}) == 2
    assert {r["config"] for r in rows} == {"naive"}


def test_a_set_rerun_is_told_apart_by_the_key_it_changed():
    base = {"scenarios": [{"name": "permuted-mnist", "n_tasks": 2}]}
    lr1 = _records(**base, strategies=[{"name": "naive", "lr": 0.1}, {"name": "er"}])
    lr2 = _records(**base, strategies=[{"name": "naive", "lr": 0.2}])
    small = _records(**base, train={"batch_size": 1}, strategies=[{"name": "naive", "lr": 0.1}])
    found = _sections(lr1 + lr2 + small)
    assert sorted(found) == ["permuted-mnist (train.batch_size=1)", "permuted-mnist (train.batch_size=10)"]
    assert list(found["permuted-mnist (train.batch_size=10)"].index) == ["er", "naive (lr=0.1)", "naive (lr=0.2)"]
    assert list(found["permuted-mnist (train.batch_size=1)"].index) == ["naive"]
    t = found["permuted-mnist (train.batch_size=10)"]
    naive2 = [r for r in lr2 if r["strategy"] == "naive"]
    assert t.loc["naive (lr=0.2)", "acc_mean"] == pytest.approx(_mean(naive2))
    assert all(t["runs"] == 2)


def test_settings_that_do_not_change_results_do_not_split_groups():
    a = _records(seeds=[0], train={"device": "cpu", "eval_batch_size": 50},
                 scenarios=[{"name": "permuted-mnist", "n_tasks": 2, "data_root": "/data/a", "download": False}])
    b = _records(seeds=[1], train={"device": "auto", "eval_batch_size": 1000},
                 scenarios=[{"name": "permuted-mnist", "n_tasks": 2, "data_root": "/data/b", "download": True}])
    found = _sections(a + b)
    assert list(found) == ["permuted-mnist"]
    assert found["permuted-mnist"].loc["naive", "runs"] == 2
    assert len({groups.configuration_id(r) for r in a + b}) == 1
    assert "data_root" not in groups.configuration(a[0])["scenario_params"]
    assert "device" not in groups.configuration(a[0])["train"]


def test_a_key_an_old_record_lacks_is_a_value_of_its_own():
    new = _records(seeds=[0], scenarios=[{"name": "permuted-mnist", "n_tasks": 2}])
    old = _records(seeds=[1], scenarios=[{"name": "permuted-mnist", "n_tasks": 2}])
    for r in old:
        r["config"] = {**r["config"], "train": {k: v for k, v in r["config"]["train"].items() if k != "task_mask"},
                       "model": {k: v for k, v in r["config"]["model"].items() if k != "init"}}
    bare = {**new[0], "run_id": "no-config", "config": None}
    found = _sections(new + old + [bare])
    assert sorted(found) == [
        "permuted-mnist (scenario_params=missing, train=missing, model=missing)",
        "permuted-mnist (train.task_mask=True, model.init=torch)",
        "permuted-mnist (train.task_mask=missing, model.init=missing)"]
    assert all(list(t["runs"]) == [1] for t in found.values())


def test_labels_are_unique_even_when_values_print_alike():
    def flat(hparams):
        return groups.flatten({"hparams": hparams}, groups.ROW_PARTS)

    found = groups.labels({"aaaaaaaa11": ("naive", flat({"lr": 1})), "bbbbbbbb22": ("naive", flat({"lr": "1"})),
                           "cccccccc33": ("er", flat({"lr": 1}))}, groups.ROW_PARTS)
    assert found == {"aaaaaaaa11": "naive (lr=1) [aaaaaa]", "bbbbbbbb22": "naive (lr=1) [bbbbbb]", "cccccccc33": "er"}


def test_tuned_floats_are_labelled_with_four_digits_and_stay_unique():
    def flat(hparams):
        return groups.flatten({"hparams": hparams}, groups.ROW_PARTS)

    found = groups.labels({"aaaaaaaa11": ("mer", flat({"lr": 0.03, "beta": 1.0})),
                           "bbbbbbbb22": ("mer", flat({"lr": 0.012345678901, "beta": 1.0})),
                           "cccccccc33": ("mer", flat({"lr": 0.012345111, "beta": 0.5}))}, groups.ROW_PARTS)
    assert found == {"aaaaaaaa11": "mer (beta=1.0, lr=0.03)", "bbbbbbbb22": "mer (beta=1.0, lr=0.01235)",
                     "cccccccc33": "mer (beta=0.5, lr=0.01235)"}
    alike = groups.labels({"aaaaaaaa11": ("naive", flat({"lr": 0.012345678901})),
                           "bbbbbbbb22": ("naive", flat({"lr": 0.012345111}))}, groups.ROW_PARTS)
    assert alike == {"aaaaaaaa11": "naive (lr=0.01235) [aaaaaa]", "bbbbbbbb22": "naive (lr=0.01235) [bbbbbb]"}


def test_significance_and_best_are_within_a_section():
    def rec(run_id, scenario_params, strategy, seed, acc):
        return {"run_id": run_id, "scenario": "s", "strategy": strategy, "seed": seed, "status": "done",
                "config": {"scenario_params": scenario_params, "hparams": {}},
                "metrics": {"acc": acc, "la": acc, "bwt": 0.0, "fwt": None, "forgetting": 0.1},
                "timing": {"train_s": 1.0, "eval_s": 0.1, "eval_share": 0.1}}

    recs = [rec("a0", {"n": 1}, "naive", 0, 0.20), rec("a1", {"n": 1}, "naive", 1, 0.21),
            rec("b0", {"n": 1}, "er", 0, 0.50), rec("b1", {"n": 1}, "er", 1, 0.52),
            rec("c0", {"n": 2}, "mer", 0, 0.90), rec("c1", {"n": 2}, "mer", 1, 0.91)]
    found = _sections(recs)
    assert sorted(found) == ["s (n=1)", "s (n=2)"]
    one = found["s (n=1)"]
    assert bool(one.loc["er", "acc_best"]) and math.isnan(one.loc["er", "acc_p"])
    assert one.loc["naive", "acc_p"] < 0.05
    assert list(found["s (n=2)"].index) == ["mer"] and bool(found["s (n=2)"].loc["mer", "acc_best"])


def test_slugs_of_sections_stay_unique(tmp_path):
    def rec(run_id, params):
        r = _records(seeds=[0], scenarios=[{"name": "permuted-mnist", "n_tasks": 2}])[0]
        return {**r, "run_id": run_id, "config": {**r["config"], "scenario_params": params}}

    # labels 'permuted-mnist (x=a b)' and 'permuted-mnist (x=a/b)' slug alike
    content = collect(tmp_path, scanned=([rec("r1", {"x": "a b", "n_tasks": 2}),
                                          rec("r2", {"x": "a/b", "n_tasks": 2})], []))
    stems = [s.slug for s in content.sections]
    assert len(set(stems)) == 2 and all(s.startswith("permuted-mnist-x-a-b--") for s in stems), stems
    figure_stems = [f.stem for s in content.sections for f in s.figures]
    assert len(figure_stems) == len(set(figure_stems))


# -- the config history and `clbench report DIR --config NAME` ---------------------------------

TINY = {"name": "tiny", "seeds": [0], "train": {"device": "cpu"},
        "scenarios": [{"name": "permuted-mnist", "n_tasks": 2, "per_task": 20, "test_per_task": 50}],
        "strategies": [{"name": "naive"}]}


def test_save_config_keeps_every_distinct_content_and_never_overwrites(tmp_path):
    first = validate(dict(TINY))
    second = validate({**TINY, "train": {"device": "cpu", "batch_size": 1}})
    p1 = save_config(tmp_path, first)
    assert p1 == tmp_path / "configs" / "tiny.yaml"
    assert save_config(tmp_path, first) == p1
    p2 = save_config(tmp_path, second)
    assert p2.parent == p1.parent and p2.name.startswith("tiny--") and len(p2.stem) == len("tiny--") + 8
    assert save_config(tmp_path, second) == p2
    assert sorted(p.name for p in (tmp_path / "configs").iterdir()) == sorted([p1.name, p2.name])
    assert yaml.safe_load(p1.read_text())["train"]["batch_size"] == 10
    assert yaml.safe_load(p2.read_text())["train"]["batch_size"] == 1
    from benchmark.config import load_experiment

    for exp, path in ((first, p1), (second, p2)):  # the kept config gives the same runs again
        assert [s.run_id for s in load_experiment(path, check_data=False).specs()] == [s.run_id for s in exp.specs()]


def test_two_runs_keep_both_configs_and_report_one_of_them(tmp_path, capsys):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "out"
    assert main(["run", str(cfg), "--out", str(out), "--no-progress"]) == 0
    assert main(["run", str(cfg), "--out", str(out), "--no-progress", "--set", "strategies.naive.lr=0.2"]) == 0
    assert main(["run", str(cfg), "--out", str(out), "--no-progress"]) == 0  # nothing new: no third config
    kept = sorted(p.stem for p in (out / "configs").glob("*.yaml"))
    assert len(kept) == 2 and kept[0] == "tiny" and kept[1].startswith("tiny--")
    assert yaml.safe_load((out / "experiment.yaml").read_text())["strategies"] == [{"name": "naive"}]  # the last
    capsys.readouterr()

    assert main(["report", str(out)]) == 0
    table = {r["strategy"]: r for r in csv.DictReader(open(out / "tables" / "permuted-mnist.csv"))}
    assert sorted(table) == ["naive (lr=0.1)", "naive (lr=0.2)"]
    assert all(r["runs"] == "1" for r in table.values())
    md = (out / "report.md").read_text()
    assert "configs/tiny.yaml" in md and f"configs/{kept[1]}.yaml" in md
    full = (out / "report.md").read_bytes()

    assert main(["report", str(out), "--config", kept[1]]) == 0
    one = out / "reports" / kept[1]
    rows = list(csv.DictReader(open(one / "summary.csv")))
    assert len(rows) == 1 and rows[0]["run_id"] in {s.run_id for s in validate(
        {**TINY, "strategies": [{"name": "naive", "lr": 0.2}]}).specs()}
    assert [r["strategy"] for r in csv.DictReader(open(one / "tables" / "permuted-mnist.csv"))] == ["naive"]
    assert (one / "report.html").is_file() and any((one / "plots").glob("*heatmap*.png"))
    md = (one / "report.md").read_text()
    assert f"# Forgetting report: {kept[1]}" in md and "configs/tiny.yaml" not in md
    assert (out / "report.md").read_bytes() == full  # the folder's full report is left alone

    assert main(["report", str(out), "--config", "tiny"]) == 0
    rows = list(csv.DictReader(open(out / "reports" / "tiny" / "summary.csv")))
    assert len(rows) == 1 and rows[0]["run_id"] in {s.run_id for s in validate(dict(TINY)).specs()}
    capsys.readouterr()

    assert main(["report", str(out), "--config", "tinny"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no config named 'tinny'" in err[0] and "tiny" in err[0] and kept[1] in err[0], err


def test_report_help_names_the_config_option(capsys):
    assert main(["report", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--config NAME" in text and "reports/NAME/" in text


def test_a_folder_from_before_the_config_history_reports_its_experiment_yaml(tmp_path, capsys):
    store = synthetic.write_store(tmp_path, n_runs=4, strategies=1, failed_every=0)
    (tmp_path / "experiment.yaml").write_text(yaml.safe_dump(synthetic.experiment(4, strategies=1).source))
    assert not (tmp_path / "configs").exists()
    assert main(["report", str(tmp_path), "--config", "synthetic"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "reports" / "synthetic" / "summary.csv")))
    assert sorted(r["run_id"] for r in rows) == sorted(r["run_id"] for r in store.records())
    assert "experiment.yaml" in (tmp_path / "reports" / "synthetic" / "report.md").read_text()
