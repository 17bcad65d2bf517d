"""A tiny sweep end to end through ``clbench run``: the run.json contract, determinism,
resume, failure isolation, executors and clear errors."""

import json
import re
from pathlib import Path

import pytest
import yaml

from benchmark import metrics
from benchmark.cli import main
from benchmark.config import load_experiment
from benchmark.sweep import run_sweep

PLUGIN = str(Path(__file__).parent / "plugins" / "faulty.py")
TINY = {
    "name": "tiny",
    "seeds": [0, 1],
    "train": {"batch_size": 10, "epochs": 1, "device": "cpu"},
    "scenarios": [{"name": "permuted-mnist", "n_tasks": 3, "per_task": 100, "test_per_task": 200}],
    "strategies": [{"name": "naive", "lr": 0.1}, {"name": "er", "lr": 0.1, "mem_size": 50, "replay_batch": 5}],
}


def _config(tmp_path, cfg=TINY, name="tiny.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(cfg))
    return p


def _records(out):
    return {p.parent.name: json.loads(p.read_text()) for p in Path(out).glob("*/run.json")}


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweep")
    cfg = _config(tmp)
    out = tmp / "out"
    code = main(["run", str(cfg), "--out", str(out), "--no-progress"])
    return cfg, out, code


def test_sweep_writes_run_records_of_the_contract(tiny_sweep):
    _, out, code = tiny_sweep
    assert code == 0
    recs = _records(out)
    assert len(recs) == 4
    for run_id, r in recs.items():
        assert r["run_id"] == run_id and r["status"] == "done"
        assert r["strategy"] in ("naive", "er") and r["scenario"] == "permuted-mnist" and r["seed"] in (0, 1)
        assert {"versions", "config", "acc_matrix", "random_init_acc", "metrics", "timing"} <= set(r)
        assert r["config"]["scenario_params"]["n_tasks"] == 3 and "lr" in r["config"]["hparams"]
        assert {"torch", "avalanche", "python"} <= set(r["versions"])
        assert {"cpu_vendor", "vector_isa", "torch_cpu_capability", "blas", "numba", "numba_cpu", "torch_threads",
                "settings"} <= set(r["numerics"])
        m = r["acc_matrix"]
        assert len(m) == 3 and all(len(row) == 3 for row in m)
        assert all(0.0 <= a <= 1.0 for row in m for a in row)
        assert len(r["random_init_acc"]) == 3
        expected = metrics.all_metrics(m, r["random_init_acc"])
        for k, v in expected.items():
            assert r["metrics"][k] == pytest.approx(v)
        assert r["timing"]["train_s"] > 0 and r["timing"]["eval_s"] > 0
        assert r["timing"]["iterations"] == 3 * 100 // 10
        assert m[0][0] > r["random_init_acc"][0]  # it learned the first task


def test_summary_csv_has_one_row_per_run(tiny_sweep):
    import csv

    _, out, _ = tiny_sweep
    rows = list(csv.DictReader(open(Path(out) / "summary.csv")))
    assert len(rows) == 4
    recs = _records(out)
    for row in rows:
        assert float(row["acc"]) == pytest.approx(recs[row["run_id"]]["metrics"]["acc"])


def test_same_spec_gives_identical_accuracy_matrices(tiny_sweep, tmp_path):
    cfg, out, _ = tiny_sweep
    again = tmp_path / "again"
    assert main(["run", str(cfg), "--out", str(again), "--no-progress"]) == 0
    a, b = _records(out), _records(again)
    assert a.keys() == b.keys()
    for k in a:
        assert a[k]["acc_matrix"] == b[k]["acc_matrix"]
    seeds = {r["seed"]: r["acc_matrix"] for r in a.values() if r["strategy"] == "naive"}
    assert seeds[0] != seeds[1]


def test_rerun_skips_done_runs_and_new_hyperparameters_run_alone(tiny_sweep, tmp_path):
    import shutil

    cfg, out, _ = tiny_sweep
    work = tmp_path / "work"
    shutil.copytree(out, work)
    before = {p: p.stat().st_mtime_ns for p in work.glob("*/run.json")}
    exp = load_experiment(cfg)
    outcome = run_sweep(exp, out=work, show_progress=False)
    assert outcome.skipped == 4 and not outcome.done
    assert {p: p.stat().st_mtime_ns for p in work.glob("*/run.json")} == before
    changed = load_experiment(cfg, overrides=["strategies.er.mem_size=60"])
    outcome = run_sweep(changed, out=work, show_progress=False)
    assert outcome.skipped == 2 and len(outcome.done) == 2
    assert all("__er__" in r for r in outcome.done)
    assert len(_records(work)) == 6


def test_failed_runs_are_recorded_and_the_sweep_goes_on(tmp_path, capsys):
    cfg = dict(TINY, seeds=[0], strategies=[{"name": "test-raises"}, {"name": "naive"}, {"name": "test-nan"}])
    out = tmp_path / "out"
    code = main(["run", str(_config(tmp_path, cfg)), "--out", str(out), "--plugin", PLUGIN, "--no-progress"])
    assert code == 1
    recs = {r["strategy"]: r for r in _records(out).values()}
    assert recs["naive"]["status"] == "done"
    assert recs["test-raises"]["status"] == "failed"
    assert recs["test-raises"]["error"].startswith("RuntimeError: planned failure on the second task")
    assert "Traceback" in recs["test-raises"]["error"]
    assert recs["test-nan"]["status"] == "failed"
    assert recs["test-nan"]["error"].startswith("DivergenceError: loss became nan")
    err = capsys.readouterr().err
    assert "failed: " in err and "planned failure" in err
    # a rerun retries the failed runs only
    outcome = run_sweep(load_experiment(_config(tmp_path, cfg)), out=out, show_progress=False)
    assert outcome.skipped == 1 and len(outcome.failed) == 2


def test_local_workers_give_the_same_results(tiny_sweep, tmp_path):
    cfg, out, _ = tiny_sweep
    par = tmp_path / "par"
    assert main(["run", str(cfg), "--out", str(par), "--jobs", "2", "--no-progress"]) == 0
    a, b = _records(out), _records(par)
    assert {k: v["acc_matrix"] for k, v in a.items()} == {k: v["acc_matrix"] for k, v in b.items()}


def test_ray_local_instance_gives_the_same_results(tiny_sweep, tmp_path):
    pytest.importorskip("ray", reason="the ray extra is not installed")
    cfg, out, _ = tiny_sweep
    ray_out = tmp_path / "ray"
    code = main(["run", str(cfg), "--out", str(ray_out), "--executor", "ray", "--set", "seeds=[1]", "--no-progress"])
    assert code == 0
    a, b = _records(out), _records(ray_out)
    assert len(b) == 2
    for k, v in b.items():
        assert v["acc_matrix"] == a[k]["acc_matrix"]


def test_a_ray_connection_the_caller_opened_is_used_as_it_is_and_left_open(tmp_path):
    """A notebook's own ``ray.init()``: the sweep runs on it (plugin files loaded from their
    paths, which this machine's workers see) and does not shut it down."""
    ray = pytest.importorskip("ray", reason="the ray extra is not installed")
    cfg = _config(tmp_path, dict(TINY, seeds=[0], strategies=[{"name": "naive", "lr": 0.1},
                                                             {"name": "test-fails-seed-1", "lr": 0.05}]))
    here = tmp_path / "here"
    assert main(["run", str(cfg), "--out", str(here), "--plugin", PLUGIN, "--in-process", "--no-progress"]) == 0
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        there = tmp_path / "there"
        assert main(["run", str(cfg), "--out", str(there), "--plugin", PLUGIN, "--executor", "ray",
                     "--no-progress"]) == 0
        assert ray.is_initialized()
    finally:
        ray.shutdown()
    a, b = _records(here), _records(there)
    assert len(b) == 2 and {k: v["acc_matrix"] for k, v in a.items()} == {k: v["acc_matrix"] for k, v in b.items()}


@pytest.mark.parametrize("args,pattern", [
    (["run", "missing.yaml"], r"config file not found: missing.yaml"),
    (["run", "{cfg}", "--set", "train.batchsize=2"], r"--set key 'train.batchsize' does not exist"),
    (["run", "{cfg}", "--set", "strategies.naive.lr=-1"], r"hyperparameter 'lr' must be > 0"),
    (["run", "{cfg}", "--jobs", "0"], r"--jobs must be >= 1"),
    (["run", "{cfg}", "--plugin", "nope.py"], r"plugin file not found: nope.py"),
    (["run", "{cfg}", "--executor", "slurm"], r"invalid choice: 'slurm'"),
    (["report", "{tmp}/nothing"], r"results folder not found"),
    (["frobnicate"], r"invalid choice: 'frobnicate'"),
])
def test_bad_input_exits_2_with_one_line(args, pattern, tmp_path, capsys):
    import re

    cfg = _config(tmp_path)
    args = [a.format(cfg=cfg, tmp=tmp_path) for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert re.search(pattern, err), err


def test_broken_plugin_names_the_file(tmp_path, capsys):
    bad = tmp_path / "broken_plugin.py"
    bad.write_text("import strategies\nraise ImportError('no module named fancylib')\n")
    assert main(["list", "--plugin", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "broken_plugin.py failed to load: ImportError: no module named fancylib" in err


def test_list_shows_strategies_and_scenarios_with_parameters(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for text in ("naive", "er", "ewc", "si", "lwf", "agem", "gem", "joint", "avalanche-mer", "avalanche-la-maml",
                 "mem_size = 200", "permuted-mnist", "n_tasks = 20", "split-mnist"):
        assert text in out, text


def test_list_shows_every_config_key_with_its_type_range_and_default(capsys):
    """Every key the config accepts outside the entries (top level, train.*, model.*) is listed,
    each with its default and its allowed values, and what `clbench list` states is what the
    validation does: the default loads, and a value outside the stated range is refused."""
    from benchmark.config import MODEL_DEFAULTS, TOP_KEYS, TRAIN_DEFAULTS, ConfigError, validate

    assert main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    keys = [*TOP_KEYS, *(f"train.{k}" for k in TRAIN_DEFAULTS), *(f"model.{k}" for k in MODEL_DEFAULTS)]
    listed = {line.split(" = ")[0].strip(): line for line in lines if " = " in line and line.startswith("  ") and
              not line.startswith("      ")}
    for key in keys:
        assert key in listed, key
        assert re.search(r" = .+  \(.+\): .+", listed[key]), listed[key]
    assert "train.batch_size = 10  (integer >= 1)" in listed["train.batch_size"]
    assert "(auto | cpu | cuda)" in listed["train.device"] and "not part of the run id" in listed["train.device"]
    assert "model.init = torch  (torch | xavier | kaiming)" in listed["model.init"]
    base = {"name": "x", "scenarios": ["permuted-mnist"], "strategies": ["naive"]}
    assert validate(dict(base)).train == TRAIN_DEFAULTS and validate(dict(base)).model == MODEL_DEFAULTS
    for section, key, bad in (("train", "batch_size", 0), ("train", "epochs", 1.5), ("train", "device", "tpu"),
                              ("train", "task_mask", "yes"), ("model", "init", "orthogonal"), ("model", "hidden", [])):
        with pytest.raises(ConfigError, match=rf"{section}\.{key}"):
            validate({**base, section: {key: bad}})


def test_report_rebuilds_summary_and_skips_unreadable_records(tiny_sweep, tmp_path, capsys):
    import shutil

    _, out, _ = tiny_sweep
    work = tmp_path / "rep"
    shutil.copytree(out, work)
    victim = next(work.glob("*/run.json"))
    victim.write_text('{"status": "do')
    (work / "summary.csv").unlink()
    assert main(["report", str(work)]) == 0
    captured = capsys.readouterr()
    assert f"skipping unreadable {victim}" in captured.err
    assert len((work / "summary.csv").read_text().strip().splitlines()) == 1 + 3


def test_joint_trains_once_on_everything_and_leaves_transfer_undefined(tmp_path):
    cfg = dict(TINY, seeds=[0], strategies=[{"name": "joint"}])
    out = tmp_path / "joint"
    assert main(["run", str(_config(tmp_path, cfg)), "--out", str(out), "--no-progress"]) == 0
    (rec,) = _records(out).values()
    rows = rec["acc_matrix"]
    assert rec["joint_training"] is True and all(row == rows[-1] for row in rows)
    assert rec["metrics"]["acc"] == pytest.approx(sum(rows[-1]) / 3)
    assert rec["metrics"]["la"] is None and rec["metrics"]["bwt"] is None and rec["metrics"]["forgetting"] is None
    assert rec["timing"]["iterations"] == 3 * 100 // 10  # one pass over the union of the tasks
    assert min(rows[-1]) > max(rec["random_init_acc"])  # every task was learned


# -- files a user owns are never overwritten (issue 12) -------------------------------------------
SMALL = {**TINY, "seeds": [0], "scenarios": [{**TINY["scenarios"][0], "n_tasks": 2, "per_task": 20}],
         "strategies": [TINY["strategies"][0]]}


@pytest.mark.parametrize("own", ["experiment.yaml", "summary.csv", "report.md"])
def test_a_users_own_file_where_clbench_writes_is_refused_before_anything_runs(own, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cfg = _config(tmp_path, SMALL, name="experiment.yaml" if own == "experiment.yaml" else "mine.yaml")
    if own != "experiment.yaml":
        (tmp_path / own).write_text("my own notes, not clbench's\n")
    mine = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    args = ["run", cfg.name, "--out", ".", "--set", "strategies.naive.lr=0.2", "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{own} exists and was not written by clbench; give --out a folder of its own" in err[0]
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == mine  # nothing written, nothing changed


def test_a_finished_sweep_rerun_writes_nothing(tmp_path, capsys):
    cfg = _config(tmp_path, SMALL)
    out = tmp_path / "out"
    assert main(["run", str(cfg), "--out", str(out), "--no-progress"]) == 0
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(["run", str(cfg), "--out", str(out), "--no-progress"]) == 0
    assert "1 already done, 0 done now" in capsys.readouterr().out
    after = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*") if p.is_file()}
    assert after == before  # so a read-only folder of a finished sweep reports "nothing to do"
    assert (out / "experiment.yaml").read_text().startswith("# written by clbench")
    (out / "report.md").write_text("my own notes\n")  # the report would write over it: refused too
    assert main(["report", str(out)]) == 2
    assert "report.md exists and was not written by clbench" in capsys.readouterr().err
    assert (out / "report.md").read_text() == "my own notes\n"


def test_names_that_read_alike_once_made_safe_get_folders_of_their_own(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    folders = []
    for name in ("α", "β"):
        cfg = _config(tmp_path, {**SMALL, "name": name}, name=f"{name}.yaml")
        assert main(["run", str(cfg), "--no-progress"]) == 0
        folders.append({p.parent.parent.name for p in (tmp_path / "results").glob("*/*/run.json")})
    capsys.readouterr()
    assert len(folders[1]) == 2 and folders[0] < folders[1]  # β did not land in α's folder
    assert all(f.startswith("experiment-") for f in folders[1])


def test_run_records_hold_no_absolute_machine_paths(tmp_path):
    cfg = _config(tmp_path, SMALL)
    out = tmp_path / "out"
    assert main(["run", str(cfg), "--out", str(out), "--no-progress", "--checkpoint-every-task"]) == 0
    text = next(out.glob("*/run.json")).read_text()
    assert json.loads(text)["checkpoint"]["path"] == "checkpoint.pt"
    assert str(tmp_path) not in text


def test_run_help_explains_the_exit_statuses_and_the_summary_its_units(tiny_sweep, capsys):
    assert main(["run", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for status in ("0 every run done", "1 a run failed", "2 bad input", "130 interrupted"):
        assert status in text
    cfg, out, _ = tiny_sweep
    assert main(["run", str(cfg), "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "ACC, BWT and forgetting in %" in printed and "Eval %: share of a run's time spent evaluating" in printed


def test_a_strategy_registered_by_code_here_runs_in_process_or_is_refused_in_one_line(tmp_path):
    """Workers load plugin files and entry points; a strategy registered by code in this process
    alone cannot reach them: run_sweep says so before anything runs, and in_process runs it."""
    import strategies
    from avalanche.training import Naive
    from torch.optim import SGD

    @strategies.register("here-only")
    def here_only(*, model, context, lr: float = 0.1):
        """Naive, registered by this test."""
        return Naive(model=model, optimizer=SGD(model.parameters(), lr=lr), **context.template_kwargs())

    cfg = dict(TINY, seeds=[0], strategies=[{"name": "here-only"}])
    exp = load_experiment(_config(tmp_path, cfg))
    with pytest.raises(strategies.StrategyError, match=r"^strategy 'here-only' is registered by code in module "
                                                       r"tests\.benchmark\.test_sweep, in this process only"):
        run_sweep(exp, out=tmp_path / "refused", show_progress=False)
    assert not (tmp_path / "refused").exists()
    outcome = run_sweep(exp, out=tmp_path / "here", show_progress=False, in_process=True)
    assert outcome.ok and len(outcome.done) == 1


def test_worker_progress_reaches_the_driver_task_by_task(tmp_path):
    """The progress bar of a sweep in worker processes hears of every task as it ends."""
    from benchmark.executors import ListSource, run_local

    (spec,) = load_experiment(_config(tmp_path, dict(TINY, seeds=[0], strategies=[{"name": "naive"}]))).specs()
    records, heard = [], []
    run_local(ListSource([spec]), jobs=1, plugin_files=(), on_result=records.append,
              on_progress=lambda s, done, total: heard.append((s.run_id, done, total)))
    assert [r["status"] for r in records] == ["done"]
    assert [h for h in heard if h[1] > 0] == [(spec.run_id, k, 3) for k in (1, 2, 3)]


def test_the_config_history_knows_a_config_whatever_its_key_order(tmp_path):
    """A kept config whose keys were written in another order (an older version of the suite)
    is the same config: a rerun adds no digest-named twin."""
    cfg = _config(tmp_path, SMALL)
    out = tmp_path / "out"
    assert main(["run", str(cfg), "--out", str(out), "--no-progress"]) == 0
    (kept,) = (out / "configs").glob("*.yaml")
    kept.write_text(yaml.safe_dump(yaml.safe_load(kept.read_text()), sort_keys=True))
    assert main(["run", str(cfg), "--out", str(out), "--no-progress", "--set", f"seeds={SMALL['seeds']}"]) == 0
    assert list((out / "configs").glob("*.yaml")) == [kept]
    assert main(["run", str(cfg), "--out", str(out), "--no-progress", "--set", "train.epochs=2"]) == 0
    assert len(list((out / "configs").glob("*.yaml"))) == 2  # a changed config is still kept apart
