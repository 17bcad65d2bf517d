"""``clbench tune`` end to end on a tiny stream: the protocol of Chaudhry et al. (2019) (trials on
the first tasks' validation split, best.yaml reported on the rest), the SQLite study and its
resumption after a real ``kill -9``, the test sets never looked at, and the same trials through
local workers and Ray as in one process."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from benchmark.cli import main
from benchmark.config import load_experiment
from benchmark.ownership import BEST_MARK

optuna = pytest.importorskip("optuna", reason="the tune extra is not installed")

REPO = Path(__file__).resolve().parents[2]
PLUGIN = str(Path(__file__).parent / "plugins" / "faulty.py")
TINY = {
    "name": "tiny-tune",
    "seeds": [0, 1],
    "train": {"batch_size": 10, "epochs": 1, "device": "cpu"},
    "model": {"hidden": [32]},
    "scenarios": [{"name": "permuted-mnist", "source": "digits", "n_tasks": 4, "per_task": 100}],
    "strategies": [{"name": "naive", "lr": 0.05}],
    "tune": {"first_tasks": 2, "val_fraction": 0.2, "trials": 6,
             "spaces": {"naive": {"lr": {"log_uniform": [0.001, 1.0]}}}},
}


def _config(tmp_path: Path, cfg: dict, name: str = "tune.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _with(**tune) -> dict:
    cfg = copy.deepcopy(TINY)
    cfg["tune"].update(tune)
    return cfg


def _best(out: Path) -> dict:
    text = (out / "best.yaml").read_text()
    assert text.splitlines()[0] == BEST_MARK
    return yaml.safe_load(text)


def _trials(out: Path, study: str, states=None) -> list:
    loaded = optuna.load_study(study_name=study, storage=f"sqlite:///{out / 'study.sqlite'}")
    return sorted(loaded.get_trials(deepcopy=False, states=states), key=lambda t: t.number)


def _complete(out: Path, study: str) -> list:
    return _trials(out, study, (optuna.trial.TrialState.COMPLETE,))


def _study_names(out: Path) -> list[str]:
    return [s.study_name for s in optuna.get_all_study_summaries(storage=f"sqlite:///{out / 'study.sqlite'}")]


def _tune(cfg: Path, out: Path, *extra: str) -> int:
    return main(["tune", str(cfg), "--out", str(out), *extra])


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """A tiny tune, in this process."""
    tmp = tmp_path_factory.mktemp("tune")
    cfg = _config(tmp, TINY)
    out = tmp / "out"
    code = _tune(cfg, out, "--in-process")
    return cfg, out, code


def test_trials_train_on_the_first_tasks_and_are_scored_on_their_validation_split(tuned):
    _, out, code = tuned
    assert code == 0
    block = _best(out)["tuned"]
    [entry] = block["strategies"]
    trials = _complete(out, entry["study"])
    assert len(trials) == entry["trials"] == entry["complete"] == 6 and entry["failed"] == 0
    assert trials[0].params == {"lr": 0.05}  # the config's own settings are the first trial
    assert len({t.params["lr"] for t in trials}) == 6
    assert len({t.value for t in trials}) > 1  # the scores tell the settings apart
    for t in trials:
        assert 0.001 <= t.params["lr"] <= 1.0
        [run_id] = t.user_attrs["run_ids"]  # one tuning seed: the config's first
        record = json.loads((out / run_id / "run.json").read_text())
        assert record["seed"] == 0 and record["config"]["hparams"]["lr"] == t.params["lr"]
        assert record["config"]["scenario_params"]["task_range"] == [0, 2]
        assert record["config"]["scenario_params"]["val_fraction"] == 0.2
        assert len(record["acc_matrix"]) == 2  # trained on the first two tasks only
        assert record["metrics"]["acc"] == t.value  # the objective: ACC on the validation split
    best = max(trials, key=lambda t: (t.value, -t.number))
    assert entry["best_trial"] == best.number and entry["best_value"] == best.value
    assert entry["chosen"] == best.params and entry["hparams"] == {"lr": best.params["lr"]}
    assert block["first_tasks"] == 2 and block["n_tasks"] == 4 and block["report_on"] == "remaining"
    assert block["val_fraction"] == 0.2 and block["objective"] == "acc" and "Chaudhry et al. 2019" in block["protocol"]
    assert Path(block["study"]) == out / "study.sqlite"


def test_best_yaml_runs_on_the_remaining_tasks_and_the_report_marks_the_tuned_strategy(tuned, tmp_path):
    cfg, out, _ = tuned
    best = load_experiment(out / "best.yaml")
    entry = _best(out)["tuned"]["strategies"][0]
    assert best.name == "tuned-tiny-tune" and best.tune is None and best.seeds == (0, 1)
    [(scenario, params)] = best.scenarios
    assert params["task_range"] == [2, 4] and params["val_fraction"] is None
    assert best.strategies[0][1]["lr"] == entry["chosen"]["lr"]
    evaluated = tmp_path / "eval"
    assert main(["run", str(out / "best.yaml"), "--out", str(evaluated), "--in-process", "--no-progress"]) == 0
    records = [json.loads(p.read_text()) for p in evaluated.glob("*/run.json")]
    assert len(records) == 2 and all(len(r["acc_matrix"]) == 2 for r in records)  # tasks 3 and 4
    assert main(["report", str(evaluated)]) == 0
    md = (evaluated / "report.md").read_text()
    assert "| naive (tuned, 6 trials) | 2 | 0 |" in md
    assert "on tasks 1-2 of permuted-mnist" in md and "reported on tasks 3-4 of 4" in md
    assert f"| naive (tuned, 6 trials) | 6 | 6 | ACC {entry['best_value'] * 100:.2f} | lr={entry['chosen']['lr']:.4g} |" in md
    html = (evaluated / "report.html").read_text()
    assert "naive (tuned, 6 trials)" in html and "reported on tasks 3-4 of 4" in html


def test_a_rerun_runs_nothing_and_a_larger_budget_adds_trials(tuned, tmp_path):
    import shutil

    cfg, out, _ = tuned
    work = tmp_path / "work"
    shutil.copytree(out, work)
    study = _best(work)["tuned"]["strategies"][0]["study"]
    runs = {p: p.stat().st_mtime_ns for p in work.glob("*/run.json")}
    before = [(t.number, t.params, t.value) for t in _complete(work, study)]
    assert _tune(cfg, work, "--in-process") == 0
    assert [(t.number, t.params, t.value) for t in _complete(work, study)] == before
    assert {p: p.stat().st_mtime_ns for p in work.glob("*/run.json")} == runs
    assert _tune(cfg, work, "--in-process", "--trials", "8") == 0
    after = [(t.number, t.params, t.value) for t in _complete(work, study)]
    assert len(after) == 8 and after[:6] == before
    assert _best(work)["tuned"]["strategies"][0]["trials"] == 8
    # a changed space is another study of the same file; the first stays as it was
    changed = _config(tmp_path, _with(spaces={"naive": {"lr": {"log_uniform": [0.01, 1.0]}}}), "changed.yaml")
    assert _tune(changed, work, "--in-process", "--trials", "2") == 0
    assert len(_study_names(work)) == 2 and [(t.number, t.params, t.value) for t in _complete(work, study)] == after


def test_report_on_all_keeps_the_whole_stream_and_the_report_says_so(tmp_path):
    out = tmp_path / "out"
    assert _tune(_config(tmp_path, _with(report_on="all", trials=2)), out, "--in-process") == 0
    best = _best(out)
    assert "task_range" not in best["scenarios"][0] and best["tuned"]["report_on"] == "all"
    evaluated = tmp_path / "eval"
    assert main(["run", str(out / "best.yaml"), "--out", str(evaluated), "--in-process", "--no-progress",
                 "--set", "seeds=[0]"]) == 0
    assert main(["report", str(evaluated)]) == 0
    md = (evaluated / "report.md").read_text()
    assert "| naive (tuned, 2 trials) | 1 | 0 |" in md
    assert "reported on all 4 tasks, including tasks 1-2, on which the choice was made: those are not held out" in md


def _npz(tmp_path: Path, name: str, *, shuffle_test: bool) -> str:
    from sklearn.datasets import load_digits

    d = load_digits()
    x, y = (d.data / 16.0).reshape(-1, 8, 8).astype(np.float32), d.target.astype(np.int64)
    y_test = y[1400:].copy()
    if shuffle_test:
        y_test = np.random.default_rng(0).permutation(y_test)
    path = tmp_path / name
    np.savez(path, x=x[:1400], y=y[:1400], x_test=x[1400:], y_test=y_test)
    return str(path)


def test_the_choice_never_looks_at_the_test_sets(tmp_path):
    """Chaudhry et al.'s protocol: the choice touches only training data of the first tasks.
    A stream whose test labels are shuffled gives the very same trials, scores and choice."""
    found = {}
    for kind in ("clean", "shuffled"):
        cfg = _with(trials=5)
        cfg["scenarios"] = [{"name": "rotated-mnist", "source": "npz", "n_tasks": 3, "per_task": 100,
                             "path": _npz(tmp_path, f"{kind}.npz", shuffle_test=kind == "shuffled")}]
        cfg["tune"]["spaces"] = {"naive": {"lr": {"log_uniform": [0.001, 1.0]}, "momentum": {"uniform": [0.0, 0.9]}}}
        out = tmp_path / kind
        assert _tune(_config(tmp_path, cfg, f"{kind}.yaml"), out, "--in-process") == 0
        best = _best(out)["tuned"]["strategies"][0]
        found[kind] = (best["chosen"], best["best_value"], [(t.params, t.value) for t in _complete(out, best["study"])])
        # the test labels do matter to a run that is measured on the test split
        assert main(["run", str(_config(tmp_path, {**cfg, "name": kind}, f"{kind}-run.yaml")), "--out",
                     str(tmp_path / f"{kind}-run"), "--in-process", "--no-progress", "--set", "seeds=[0]"]) == 0
        [record] = [json.loads(p.read_text()) for p in (tmp_path / f"{kind}-run").glob("*/run.json")]
        found[f"{kind}-test"] = record["acc_matrix"]
    assert found["clean"] == found["shuffled"]
    assert len({value for _, value in found["clean"][2]}) > 1
    assert found["clean-test"] != found["shuffled-test"]


def test_grid_search_visits_each_point_once_within_the_budget(tmp_path):
    out = tmp_path / "out"
    cfg = _with(sampler="grid", trials=5, spaces={"naive": {"lr": {"choice": [0.01, 0.1, 0.3]}}})
    assert _tune(_config(tmp_path, cfg), out, "--in-process") == 0
    entry = _best(out)["tuned"]["strategies"][0]
    trials = _complete(out, entry["study"])
    assert sorted(t.params["lr"] for t in trials) == [0.01, 0.1, 0.3]
    assert entry["trials"] == 3 and entry["complete"] == 3  # the grid is smaller than the budget
    assert entry["chosen"] == max(trials, key=lambda t: (t.value, -t.number)).params


def test_failed_trials_count_in_the_budget_and_best_yaml_keeps_the_entrys_settings(tmp_path, capsys):
    cfg = _with(trials=2, seeds=[0, 1], spaces={"test-fails-seed-1": {"lr": {"uniform": [0.01, 0.5]}}})
    cfg["strategies"] = [{"name": "test-fails-seed-1", "lr": 0.1}]
    out = tmp_path / "out"
    assert _tune(_config(tmp_path, cfg), out, "--in-process", "--plugin", PLUGIN) == 1
    entry = _best(out)["tuned"]["strategies"][0]
    assert entry["complete"] == 0 and entry["failed"] == 2 and entry["best_value"] is None and entry["chosen"] == {}
    assert _best(out)["strategies"] == [{"name": "test-fails-seed-1", "lr": 0.1}]
    failed = _trials(out, entry["study"])
    assert len(failed) == 2 and all("planned failure" in t.user_attrs["error"] or "seed 1" in t.user_attrs["error"]
                                    for t in failed)
    assert "a strategy has no complete trial" in capsys.readouterr().err


def _random_sampler_config(tmp_path: Path) -> Path:
    return _config(tmp_path, _with(sampler="random", trials=4), "random.yaml")


@pytest.fixture(scope="module")
def in_one_process(tmp_path_factory):
    """Random search in this process: its trials depend on the seed alone, not on the order in
    which trials finish, so other executors must give exactly these."""
    tmp = tmp_path_factory.mktemp("random")
    out = tmp / "out"
    assert _tune(_random_sampler_config(tmp), out, "--in-process") == 0
    study = _best(out)["tuned"]["strategies"][0]["study"]
    return [(t.number, t.params, t.value) for t in _complete(out, study)]


def test_local_workers_run_the_same_trials(in_one_process, tmp_path):
    out = tmp_path / "out"
    assert _tune(_random_sampler_config(tmp_path), out, "--jobs", "2") == 0
    study = _best(out)["tuned"]["strategies"][0]["study"]
    assert [(t.number, t.params, t.value) for t in _complete(out, study)] == in_one_process


def test_ray_runs_the_same_trials(in_one_process, tmp_path, monkeypatch):
    pytest.importorskip("ray", reason="the ray extra is not installed")
    import benchmark.tune

    executed = []

    def through_ray(source, **kwargs):  # the executor of `clbench run --executor ray`, called through
        executed.append(kwargs["address"])
        return run_ray(source, **kwargs)

    run_ray = benchmark.tune.run_ray
    monkeypatch.setattr(benchmark.tune, "run_ray", through_ray)
    out = tmp_path / "out"
    assert _tune(_random_sampler_config(tmp_path), out, "--executor", "ray") == 0
    assert executed == [None]  # a local Ray instance
    study = _best(out)["tuned"]["strategies"][0]["study"]
    assert [(t.number, t.params, t.value) for t in _complete(out, study)] == in_one_process
    assert len(list(out.glob("*/run.json"))) == 4


def _clbench(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "benchmark", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_tune_killed_with_sigkill_resumes_without_losing_a_finished_trial(tmp_path):
    """kill -9 of a real ``clbench tune`` process once some trials are complete (read from the
    SQLite study with Optuna's API while it runs), then the same command again: every trial
    complete before the kill is still there, unchanged and not run again; the trials that were
    running are marked interrupted and not counted; the study ends with exactly the budget of
    complete trials, the very trials of a tune that was never killed."""
    # a budget far above the kill point: reading the study between polls takes longer than a
    # tiny trial, so a small budget can finish before the kill lands (it did, once, in CI)
    budget = 30
    cfg = _config(tmp_path, _with(trials=budget))
    out = tmp_path / "out"
    # trials in the tune's own process, so that the kill lands in the middle of one (workers
    # die with it either way, see test_faults), and the test takes seconds, not a fork server's start
    proc = _clbench(["tune", str(cfg), "--out", str(out), "--in-process"], tmp_path)
    study, killed_at = None, None
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
            try:  # from the start: the study file appears whole (test_the_study_file_appears_whole)
                study = study or next(iter(_study_names(out)), None)
                if study and len(_complete(out, study)) >= 2:
                    proc.send_signal(signal.SIGKILL)
                    killed_at = True
                    break
            except Exception:  # noqa: BLE001 (the database may not exist yet, or be locked a moment)
                continue
    finally:
        if proc.poll() is None and not killed_at:
            proc.kill()
        _, err = proc.communicate(timeout=60)
    assert killed_at and proc.returncode == -signal.SIGKILL, f"the tune ended before it could be killed: {err[-2000:]}"
    assert not (out / "best.yaml").exists()
    before = {t.number: (t.params, t.value, t.datetime_complete) for t in _complete(out, study)}
    assert 2 <= len(before) < budget
    runs = {p: p.stat().st_mtime_ns for p in out.glob("*/run.json")}

    again = _clbench(["tune", str(cfg), "--out", str(out), "--in-process"], tmp_path)
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    after = _complete(out, study)
    assert len(after) == budget
    kept = {t.number: (t.params, t.value, t.datetime_complete) for t in after if t.number in before}
    assert kept == before  # every finished trial is there, unchanged, not run again
    assert {p: p.stat().st_mtime_ns for p in runs} == runs  # and none of their runs was redone
    interrupted = [t for t in _trials(out, study) if t.user_attrs.get("interrupted")]
    assert all(t.state == optuna.trial.TrialState.FAIL for t in interrupted)
    assert len(_trials(out, study)) == budget + len(interrupted)
    assert len(interrupted) <= 1
    if interrupted:
        assert f"trial {interrupted[0].number} was running when the last tune stopped" in err
    assert _best(out)["tuned"]["strategies"][0]["complete"] == budget
    # the sampler is seeded per trial: the resumed study holds the trials of one never killed
    whole = tmp_path / "whole"
    assert _tune(cfg, whole, "--in-process") == 0
    assert [(t.params, t.value) for t in after] == [(t.params, t.value) for t in _complete(whole, study)]


def test_the_report_reads_tuned_blocks_without_importing_torch():
    """``clbench report`` reads tuned: blocks (benchmark.tune_config) as it reads targets:
    without torch, which only the tune: section's validation needs."""
    code = ("import sys, benchmark.report, benchmark.tune_config; "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    assert subprocess.run([sys.executable, "-c", code], env=env, timeout=120).returncode == 0


def test_the_study_file_appears_whole(tmp_path):
    """A reader that opens study.sqlite the moment it exists (Optuna's load_study creates the
    tables of an empty file) must find Optuna's schema there, not race the tune to create it:
    the file is polled while the tune opens its storage, and every sight of it has the schema."""
    import sqlite3
    import threading

    from benchmark.tune import open_storage

    for attempt in range(3):
        path = tmp_path / f"{attempt}" / "study.sqlite"
        path.parent.mkdir()
        sights, done = [], threading.Event()

        def poll():
            while not done.is_set():
                if path.exists():
                    con = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=10)
                    try:
                        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
                        version = (con.execute("SELECT COUNT(*) FROM alembic_version").fetchone()[0]
                                   if "alembic_version" in tables else 0)
                    except sqlite3.OperationalError:  # locked by the writer a moment: look again
                        continue
                    finally:
                        con.close()
                    sights.append(("studies" in tables, version))
                    return

        reader = threading.Thread(target=poll)
        reader.start()
        open_storage(path)
        done.set()
        reader.join(timeout=30)
        assert sights == [(True, 1)]
        assert not [p for p in path.parent.iterdir() if p.name != "study.sqlite"]  # no temporary file left
