"""Bad input to the real ``clbench tune``: exit status 2, one line on stderr naming what is wrong
and what is allowed, no traceback, no trial run, and nothing written anywhere (the style of
test_cli_bad_input.py, whose helpers these cases share)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from benchmark.cli import main
from tests.benchmark.test_cli_bad_input import _check_one_line, _tree

pytest.importorskip("optuna", reason="the tune extra is not installed")

BASE: dict[str, Any] = {
    "name": "bad-tune",
    "seeds": [0],
    "train": {"batch_size": 10, "epochs": 1, "device": "cpu"},
    "model": {"name": "auto", "hidden": [20]},
    "scenarios": [{"name": "permuted-mnist", "source": "digits", "n_tasks": 3, "per_task": 50}],
    "strategies": [
        {"name": "naive", "lr": 0.1},
        {"name": "er", "lr": 0.1, "mem_size": 20, "replay_batch": 5},
        {"name": "mer", "lr": 0.1, "beta": 0.1, "gamma": 1.0, "mem_size": 20, "replay_batch": 5,
         "batches_per_example": 2},
    ],
    "tune": {"first_tasks": 2, "val_fraction": 0.2, "trials": 3, "spaces": {
        "naive": {"lr": {"log_uniform": [0.01, 0.5]}},
        "er": {"lr": {"log_uniform": [0.01, 0.5]}, "replay_batch": {"choice": [1, 5, 10]}},
        "mer": {"lr": {"log_uniform": [0.01, 0.5]}, "beta": {"uniform": [0.01, 1.0]}},
    }},
}
TUNE = ["tune", "{cfg}", "--out", "{out}"]
DELETE = object()


def edit(*changes: tuple[str, Any]) -> dict:
    """BASE with ``(dotted.path, value)`` changes (list entries by index; DELETE removes)."""
    cfg = copy.deepcopy(BASE)
    for path, value in changes:
        *parents, last = path.split(".")
        node = cfg
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        key = int(last) if isinstance(node, list) else last
        if value is DELETE:
            del node[key]
        else:
            node[key] = value
    return cfg


SPACE = "tune.spaces"
CASES: dict[str, tuple[Any, tuple[str, ...], str]] = {  # id: (config, extra args, pattern of the one line)
    # -- the ranges of a space
    "empty range": (edit((f"{SPACE}.mer.beta", {"uniform": [0.1, 0.1]})), (),
                    r"tune\.spaces\.mer\.beta: uniform range \[0\.1, 0\.1\] is empty; give low < high"),
    "inverted range": (edit((f"{SPACE}.naive.lr", {"log_uniform": [0.5, 0.01]})), (),
                       r"tune\.spaces\.naive\.lr: log_uniform range \[0\.5, 0\.01\] is inverted; give \[low, high\] "
                       r"with low < high"),
    "inverted integer range": (edit((f"{SPACE}.er.replay_batch", {"uniform": [10, 2]})), (),
                               r"tune\.spaces\.er\.replay_batch: uniform range \[10, 2\] is inverted"),
    "log range from 0": (edit((f"{SPACE}.naive.lr", {"log_uniform": [0.0, 0.5]})), (),
                         r"tune\.spaces\.naive\.lr: log_uniform needs low > 0, got \[0\.0, 0\.5\]"),
    "range beyond the declared one": (edit((f"{SPACE}.naive.lr", {"log_uniform": [0.01, 300]})), (),
                                      r"tune\.spaces\.naive\.lr: strategy 'naive': hyperparameter 'lr' must be > 0 "
                                      r"and <= 100, got 300"),
    "choice beyond the declared range": (edit((f"{SPACE}.mer.beta", {"choice": [0.5, 2.0]})), (),
                                         r"tune\.spaces\.mer\.beta: strategy 'mer': hyperparameter 'beta' must be >= 0 "
                                         r"and <= 1, got 2\.0"),
    "choice above the memory": (edit((f"{SPACE}.er.replay_batch", {"choice": [5, 50]})), (),
                                r"tune\.spaces\.er: strategy 'er': replay_batch=50 is larger than mem_size=20"),
    "empty choice": (edit((f"{SPACE}.er.replay_batch", {"choice": []})), (),
                     r"tune\.spaces\.er\.replay_batch: choice must be a non-empty list of values, got \[\]"),
    "choice listing a value twice": (edit((f"{SPACE}.er.replay_batch", {"choice": [5, 5]})), (),
                                     r"choice lists a value twice: \[5, 5\]"),
    "range of three numbers": (edit((f"{SPACE}.mer.beta", {"uniform": [0.1, 0.5, 0.9]})), (),
                               r"tune\.spaces\.mer\.beta: uniform must be \[low, high\], two numbers"),
    "fractional bounds of an integer": (edit((f"{SPACE}.er.replay_batch", {"uniform": [1.5, 8]})), (),
                                        r"'replay_batch' is an integer hyperparameter; uniform bounds must be integers"),
    "range of a flag": (edit((f"{SPACE}.er.per_example", {"uniform": [0, 1]})), (),
                        r"tune\.spaces\.er\.per_example: 'per_example' is a bool hyperparameter; search it with "
                        r"\{choice: \[values\]\}"),
    "misspelt distribution": (edit((f"{SPACE}.naive.lr", {"loguniform": [0.01, 0.5]})), (),
                              r"tune\.spaces\.naive\.lr must be one of \{uniform: \[low, high\]\}, \{log_uniform: "
                              r"\[low, high\]\}, \{choice: \[values\]\}"),
    "bare value for a dimension": (edit((f"{SPACE}.naive.lr", 0.1)), (), r"tune\.spaces\.naive\.lr must be one of"),
    "empty space": (edit((f"{SPACE}.naive", {})), (), r"tune\.spaces\.naive must be a non-empty mapping"),
    # -- names
    "unknown hyperparameter in a space": (edit((f"{SPACE}.mer.betta", {"uniform": [0.1, 0.9]})), (),
                                          r"tune\.spaces\.mer: unknown hyperparameter 'betta' \(did you mean 'beta'\?\) "
                                          r"of strategy 'mer'; allowed: lr, beta, gamma"),
    "space for a strategy not in the config": (edit((f"{SPACE}.ewc", {"lr": {"uniform": [0.01, 0.5]}})), (),
                                               r"tune\.spaces: 'ewc' is not a strategy of this config; present: naive, "
                                               r"er, mer"),
    "space for a misspelt strategy": (edit((f"{SPACE}.merr", {"lr": {"uniform": [0.01, 0.5]}})), (),
                                      r"tune\.spaces: 'merr' is not a strategy of this config \(did you mean 'mer'\?\)"),
    "no space and no finite declared range": (edit(("strategies.2", {"name": "la-maml"}), (f"{SPACE}.mer", DELETE)),
                                              (), r"tune\.spaces: no space for 'la-maml', and none of its declared "
                                                  r"ranges is finite \(opt_lr, alpha_init, grad_clip_norm: .*\); give "
                                                  r"tune\.spaces\.la-maml"),
    "unknown tune key": (edit(("tune.trails", 5)), (),
                         r"tune: unknown key 'trails' \(did you mean 'trials'\?\); allowed: first_tasks, val_fraction"),
    "unknown objective": (edit(("tune.objective", "acc_val")), (), r"tune\.objective is 'acc_val'; allowed: acc, la, bwt"),
    "misspelt sampler": (edit(("tune.sampler", "tpee")), (),
                         r"tune\.sampler is 'tpee'; allowed: tpe, random, grid \(did you mean 'tpe'\?\)"),
    "misspelt report_on": (edit(("tune.report_on", "remainng")), (),
                           r"tune\.report_on is 'remainng'; allowed: remaining, all \(did you mean 'remaining'\?\)"),
    "grid over a range": (edit(("tune.sampler", "grid")), (),
                          r"tune\.spaces\.naive\.lr: the grid sampler takes choice lists"),
    "tune as a list": (edit(("tune", [1, 2])), (), r"tune must be a mapping with keys first_tasks"),
    # -- the budget
    "budget of 0": (edit(("tune.trials", 0)), (), r"tune\.trials must be an integer >= 1 \(the budget of each "
                                                  r"strategy\), got 0"),
    "negative budget": (edit(("tune.trials", -3)), (), r"tune\.trials must be an integer >= 1 .*, got -3"),
    "fractional budget": (edit(("tune.trials", 2.5)), (), r"tune\.trials must be an integer >= 1 .*, got 2\.5"),
    "--trials 0": (edit(), ("--trials", "0"), r"^clbench: error: --trials must be >= 1 \(the budget of each "
                                              r"strategy\), got 0$"),
    # -- the protocol
    "first_tasks equal to the tasks": (edit(("tune.first_tasks", 3)), (),
                                       r"tune\.first_tasks=3 is not smaller than the 3 tasks of permuted-mnist; .*"
                                       r"give 1 \.\. 2"),
    "first_tasks above the tasks": (edit(("tune.first_tasks", 10)), (),
                                    r"tune\.first_tasks=10 is not smaller than the 3 tasks"),
    "first_tasks of 0": (edit(("tune.first_tasks", 0)), (), r"tune\.first_tasks must be an integer >= 1, got 0"),
    "val_fraction of 1": (edit(("tune.val_fraction", 1.0)), (), r"tune\.val_fraction must be a number > 0 and < 1, got 1\.0"),
    "val_fraction of 0": (edit(("tune.val_fraction", 0)), (), r"tune\.val_fraction must be a number > 0 and < 1, got 0"),
    "val_fraction leaving nothing": (edit(("tune.val_fraction", 0.995)), (),
                                     r"tune\.val_fraction=0\.995 of per_task=50 leaves no training example"),
    "empty tuning seeds": (edit(("tune.seeds", [])), (), r"tune\.seeds must be a non-empty list of distinct integers"),
    "two scenarios": (edit(("scenarios", [BASE["scenarios"][0], {"name": "rotated-mnist", "source": "digits",
                                                                  "n_tasks": 3, "per_task": 50}])), (), r"tune: the config has 2 scenarios; hyperparameters are chosen per stream"),
    "a stream that sets its task range": (edit(("scenarios.0.task_range", [0, 2])), (),
                                          r"scenarios\[0\] sets task_range; clbench tune sets it itself"),
    # -- the command line
    "--set of the tuned block": (edit(), ("--set", "tuned.x=1"), r"--set key 'tuned\.x': the tuned block is written by "
                                                                 r"clbench tune"),
    "bad --set of a tune key": (edit(), ("--set", "tune.trials=0"), r"^clbench: error: --set tune\.trials=0: tune\.trials "
                                                                    r"must be an integer >= 1"),
    "--address without ray": (edit(), ("--address", "10.0.0.1:6379"), r"--address is only for --executor ray"),
    "--in-process with --jobs": (edit(), ("--in-process", "--jobs", "2"), r"--in-process runs one run at a time"),
    "--jobs 0": (edit(), ("--jobs", "0"), r"--jobs must be >= 1, got 0"),
}


@pytest.fixture(autouse=True)
def no_tuning(monkeypatch):
    """Bad input never reaches the tune: a case that did would fail here, at once."""
    import benchmark.tune

    def refuse(*args, **kwargs):
        raise AssertionError("a bad-input case reached run_tune")

    monkeypatch.setattr(benchmark.tune, "run_tune", refuse)


def _prepare(tmp: Path, config: Any, extra: tuple[str, ...]) -> list[str]:
    (tmp / "in").mkdir()
    (tmp / "cwd").mkdir()
    cfg = tmp / "in" / "tune.yaml"
    cfg.write_text(yaml.safe_dump(config, sort_keys=False))
    return [a.format(cfg=cfg, out=tmp / "out") for a in TUNE] + list(extra)


def test_the_base_config_is_valid(tmp_path, capsys):
    """Each case breaks one thing of BASE, so BASE itself must reach the tune (which the
    ``no_tuning`` fixture stops)."""
    assert main(_prepare(tmp_path, BASE, ())) == 1
    assert "a bad-input case reached run_tune" in capsys.readouterr().err


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_bad_tune_input_exits_2_with_one_clear_line_and_writes_nothing(case, tmp_path, monkeypatch, capsys):
    config, extra, pattern = CASES[case]
    argv = _prepare(tmp_path, config, extra)
    monkeypatch.chdir(tmp_path / "cwd")
    before = _tree(tmp_path.parent)
    code = main(argv)
    captured = capsys.readouterr()
    _check_one_line(code, captured.out, captured.err, pattern)
    assert captured.out == ""
    assert _tree(tmp_path.parent) == before, "bad input wrote files"


@pytest.mark.parametrize("name,content", [("best.yaml", "name: mine\n"), ("study.sqlite", "not a database\n")])
def test_a_file_of_the_users_in_the_output_folder_is_refused(name, content, tmp_path, monkeypatch, capsys):
    argv = _prepare(tmp_path, BASE, ())
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / name).write_text(content)
    before = _tree(tmp_path.parent)
    code = main(argv)
    _check_one_line(code, *capsys.readouterr(), rf"out/{name} exists and was not written by clbench; give --out a "
                                                rf"folder of its own \(clbench tune writes best\.yaml, study\.sqlite")
    assert _tree(tmp_path.parent) == before


def test_a_second_tune_on_a_folder_in_use_is_one_line(tmp_path, monkeypatch, capsys):
    from benchmark.locks import RunLocks

    monkeypatch.undo()  # this one reaches run_tune, which refuses at its lock before writing a study
    argv = _prepare(tmp_path, BASE, ("--in-process",))
    (tmp_path / "out").mkdir()
    import multiprocessing

    ready, release = multiprocessing.Event(), multiprocessing.Event()
    holder = multiprocessing.get_context("fork").Process(target=_hold_lock, args=(tmp_path / "out", ready, release))
    holder.start()
    try:
        assert ready.wait(30)
        code = main(argv)
        _check_one_line(code, *capsys.readouterr(), rf"another clbench tune \(pid {holder.pid}\) is running on .*out; "
                                                    r"wait for it or give another --out")
        assert not (tmp_path / "out" / "study.sqlite").exists() and not (tmp_path / "out" / "best.yaml").exists()
    finally:
        release.set()
        holder.join(30)
    assert RunLocks(tmp_path / "out").try_acquire("tune")


def _hold_lock(folder: Path, ready, release) -> None:
    from benchmark.locks import RunLocks

    locks = RunLocks(folder)
    assert locks.try_acquire("tune")
    ready.set()
    release.wait(60)


def test_derived_spaces_search_the_finite_float_ranges_a_strategy_declares():
    from benchmark.config import validate

    cfg = edit((SPACE, {"er": BASE["tune"]["spaces"]["er"]}))
    spaces = validate(cfg).tune.spaces
    assert spaces["er"].derived is False
    assert spaces["mer"].derived and spaces["mer"].to_yaml() == {"beta": {"uniform": [0.0, 1.0]},
                                                                   "gamma": {"uniform": [0.0, 1.0]}}
    [momentum] = spaces["naive"].dimensions  # lr: bounded above only by the cap on rates, so not searched
    assert momentum.name == "momentum" and momentum.low == 0.0 and momentum.high < 1.0
