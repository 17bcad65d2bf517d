"""Faults injected into real sweeps: ``kill -9`` of ``clbench run`` and ``clbench report`` at
named points and at random times, a full disk, workers killed by SIGKILL (local pool and
Ray), and strategies that diverge, raise or exit. After each, no record is partial or lost,
and rerunning the same command completes the sweep with the accuracy matrices of an
uninterrupted sweep computed here.

The default selection injects a few faults of each kind; ``-m slow`` runs the full forms.
"""

from __future__ import annotations

import json
import os
import random
import re
import time
import uuid
from pathlib import Path

import pytest

from benchmark import faults
from benchmark.cli import main
from tests.benchmark import faultkit as fk
from tests.benchmark.faultkit import PLUGIN, TINY

ALL = "all"  # the kill point comes after every pending run is recorded


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """The uninterrupted sweep, and its accuracy matrices."""
    tmp = tmp_path_factory.mktemp("baseline")
    out = tmp / "out"
    assert main(["run", str(fk.write_config(tmp)), "--out", str(out), "--no-progress"]) == 0
    found = fk.matrices(out)
    assert len(found) == 8
    return found


@pytest.fixture
def no_fault(monkeypatch):
    """Fault injection in this process: set by the test, counted from zero, removed after."""
    monkeypatch.delenv(faults.ENV, raising=False)
    faults.reset()
    yield monkeypatch
    faults.reset()


# -- kill -9 at named points ------------------------------------------------------------------

def _kill_run_at(cfg: Path, out: Path, point: str, expected_new, before: dict[str, bytes]) -> dict[str, bytes]:
    # task-done is reached in the process that trains: with --in-process, the one killed here
    here = ["--in-process"] if point.startswith("task-done") else []
    proc = fk.clbench("run", str(cfg), "--out", str(out), "--no-progress", *here, fault=point)
    assert fk.killed(proc), f"{point}: not killed (status {proc.returncode})\n{proc.stderr[-2000:]}"
    after = fk.check_invariants(out, before)
    new = len(after) - len(before)
    pending = 8 - len(before)
    assert new == (pending if expected_new == ALL else expected_new), f"{point}: {new} new records"
    if point.startswith("mid-write"):  # the kill came in the middle of a write: its temporary file is there
        assert fk.temp_files(out), f"{point}: no temporary file; the fault was not where intended"
    print(f"killed at {point}: {len(after)}/8 runs recorded, {len(fk.temp_files(out))} temp files")
    return after


def _kill_report_at(out: Path, point: str, before: dict[str, bytes]) -> None:
    old_html = (out / "report.html").read_bytes() if (out / "report.html").exists() else None
    proc = fk.clbench("report", str(out), fault=point)
    assert fk.killed(proc), f"{point}: not killed (status {proc.returncode})\n{proc.stderr[-2000:]}"
    fk.check_invariants(out, before)
    html = (out / "report.html").read_bytes() if (out / "report.html").exists() else None
    assert html == old_html or (html or b"").endswith(b"</html>\n"), "report.html is partial"
    if point.startswith("mid-write"):
        assert fk.temp_files(out), f"{point}: no temporary file; the fault was not where intended"
    for png in out.glob("plots/*.png"):
        assert png.read_bytes().endswith(b"IEND\xaeB`\x82"), f"{png} is partial"
    print(f"report killed at {point}")


def _finish(cfg: Path, out: Path, baseline: dict[str, list], before: dict[str, bytes]) -> None:
    """The same command completes the sweep; its results are those of an uninterrupted sweep."""
    proc = fk.clbench("run", str(cfg), "--out", str(out), "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    fk.check_invariants(out, before)
    assert fk.matrices(out) == baseline
    rows = (out / "summary.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 8
    proc = fk.clbench("report", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "report.html").read_bytes().endswith(b"</html>\n")
    assert fk.temp_files(out) == [], "temporary files of killed writers were left behind"


def _kill_sweep(tmp_path, baseline, run_points, report_points, *, final_kills=()) -> None:
    """Kill `clbench run` at each of ``run_points`` and `clbench report` at each of
    ``report_points`` (then ``final_kills``), one after the other on one folder; every kill and
    the state it leaves is checked as it happens, and the finished sweep against ``baseline``."""
    cfg, out = fk.write_config(tmp_path), tmp_path / "out"
    before: dict[str, bytes] = {}
    for point, expected_new in run_points:
        before = _kill_run_at(cfg, out, point, expected_new, before)
    assert len(before) < 8, "the sweep finished before the last kill: nothing left to check"
    for point in report_points:
        _kill_report_at(out, point, before)
    for point, expected_new in final_kills:
        before = _kill_run_at(cfg, out, point, expected_new, before)
    _finish(cfg, out, baseline, before)


def test_kill_9_at_a_few_points_loses_nothing(tmp_path, baseline):
    """Default form: killed while writing a run.json, in the middle of a run, and while
    writing report.html; then the same commands finish the job."""
    _kill_sweep(tmp_path, baseline, [("mid-write@run.json:2", 1), ("task-done:4", 1)], ["mid-write@report.html:1"])


RUN_POINTS = [  # experiment.yaml first: a sweep run again writes it only when it changed
    ("mid-write@experiment.yaml:1", 0),
    ("sweep-start:1", 0),
    ("before-write@run.json:2", 1),
    ("mid-write@run.json:2", 1),
    ("before-rename@run.json:1", 0),
    ("after-rename@run.json:1", 1),
    ("task-done:4", 1),
    ("after-record:1", 1),
    ("mid-write@run.json:1", 0),
]
REPORT_POINTS = ["mid-write@summary.csv:1", "report-table:1", "report-plot:3", "mid-write@report.md:1",
                 "mid-write@report.html:1"]
LAST_POINTS = [("before-summary:1", ALL), ("mid-write@summary.csv:1", 0), ("after-summary:1", 0)]


@pytest.mark.slow
def test_kill_9_at_every_point_loses_nothing(tmp_path, baseline):
    """Full form: 12 kill points of `clbench run` and 5 of `clbench report`, one after the other
    on the same folder, each checked; then the same commands finish the job."""
    _kill_sweep(tmp_path, baseline, RUN_POINTS, REPORT_POINTS, final_kills=LAST_POINTS)


def _kill_at_random(tmp_path, baseline, kills: int, seed: int | None = None) -> None:
    seed = random.randrange(10**6) if seed is None else seed
    rng = random.Random(seed)
    print(f"random kill times drawn with seed {seed}")
    cfg, out = fk.write_config(tmp_path), tmp_path / "out"
    before: dict[str, bytes] = {}
    for k in range(kills):
        stamp = (out / "experiment.yaml").stat().st_mtime_ns if (out / "experiment.yaml").exists() else None
        proc = fk.start("run", str(cfg), "--out", str(out), "--no-progress")
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:  # until the sweep itself begins
            p = out / "experiment.yaml"
            if p.exists() and p.stat().st_mtime_ns != stamp:
                break
            time.sleep(0.01)
        delay = rng.uniform(0.0, 3.0)
        time.sleep(delay)
        proc.kill()
        proc.communicate()
        print(f"kill {k + 1}: {delay:.2f} s into the sweep: {'killed' if fk.killed(proc) else 'already over'}")
        before = fk.check_invariants(out, before)
        if k % 2:  # and a report killed at a random time
            rep = fk.start("report", str(out))
            time.sleep(rng.uniform(0.3, 3.0))
            rep.kill()
            rep.communicate()
            fk.check_invariants(out, before)
    _finish(cfg, out, baseline, before)


@pytest.mark.slow
def test_kill_9_at_random_times_in_a_row(tmp_path, baseline):
    _kill_at_random(tmp_path, baseline, kills=5)


def test_an_unknown_fault_point_is_refused(no_fault):
    no_fault.setenv(faults.ENV, "mid-wirte:1")
    with pytest.raises(ValueError, match="bad entry 'mid-wirte:1'"):
        faults.reach("mid-write")
    no_fault.setenv(faults.ENV, "mid-write@run.json:0")
    with pytest.raises(ValueError, match="COUNT >= 1"):
        faults.reach("mid-write")


def _tagged(tag: str) -> list[int]:
    """The live processes whose environment holds ``CLBENCH_TEST_TAG=tag``."""
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if f"CLBENCH_TEST_TAG={tag}".encode() in (d / "environ").read_bytes().split(b"\0"):
                    found.append(int(d.name))
            except OSError:
                pass
    return found


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc")
@pytest.mark.parametrize("jobs", [pytest.param([], id="default"), pytest.param(["--jobs", "2"], id="jobs-2",
                                                                            marks=pytest.mark.slow)])
def test_workers_end_when_their_driver_is_killed(tmp_path, baseline, jobs):
    """kill -9 of `clbench run` between runs: its workers (and the fork server they came from)
    do not live on, the run recorded is intact, and the same command finishes the sweep."""
    cfg, out, tag = fk.write_config(tmp_path), tmp_path / "out", uuid.uuid4().hex
    proc = fk.clbench("run", str(cfg), "--out", str(out), "--no-progress", *jobs, fault="after-record:1",
                      CLBENCH_TEST_TAG=tag)
    assert fk.killed(proc), proc.stderr[-2000:]
    before = fk.check_invariants(out)
    assert len(before) == 1
    deadline = time.monotonic() + 30
    while _tagged(tag) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _tagged(tag) == [], "worker processes outlived their killed driver"
    _finish(cfg, out, baseline, before)


# -- a full disk ------------------------------------------------------------------------------

def _one_error_line(capsys, pattern: str) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert re.search(pattern, lines[0]), lines[0]
    return lines[0]


def test_disk_full_while_writing_a_record(tmp_path, baseline, no_fault, capsys):
    cfg, out = fk.write_config(tmp_path), tmp_path / "out"
    no_fault.setenv(faults.ENV, "mid-write@run.json:3:enospc")
    assert main(["run", str(cfg), "--out", str(out), "--no-progress"]) == 1
    line = _one_error_line(capsys, r"^clbench: error: disk full while writing .*[/\\]run\.json "
                                   r"\(No space left on device\); free some space and rerun the same command")
    print(line)
    kept = fk.check_invariants(out)
    assert len(kept) == 2  # the two runs recorded before the disk filled
    assert fk.temp_files(out) == []
    assert not (out / "summary.csv").exists()  # nothing more was attempted on a full disk
    # once there is space again, the same command finishes the sweep
    no_fault.delenv(faults.ENV)
    assert main(["run", str(cfg), "--out", str(out), "--no-progress"]) == 0
    fk.check_invariants(out, kept)
    assert fk.matrices(out) == baseline


def test_disk_full_at_the_start_and_in_the_report(tmp_path, no_fault, capsys):
    cfg, out = fk.write_config(tmp_path, dict(TINY, seeds=[0])), tmp_path / "out"
    no_fault.setenv(faults.ENV, "mid-write@experiment.yaml:1:enospc")
    assert main(["run", str(cfg), "--out", str(out), "--no-progress"]) == 1
    _one_error_line(capsys, r"^clbench: error: disk full while writing .*experiment\.yaml")
    assert [p.name for p in out.iterdir()] == []
    no_fault.delenv(faults.ENV)
    assert main(["run", str(cfg), "--out", str(out), "--no-progress"]) == 0
    assert main(["report", str(out)]) == 0
    capsys.readouterr()
    html = (out / "report.html").read_bytes()
    faults.reset()
    no_fault.setenv(faults.ENV, "mid-write@report.html:1:enospc")
    assert main(["report", str(out)]) == 1
    _one_error_line(capsys, r"^clbench: error: disk full while writing .*report\.html")
    assert (out / "report.html").read_bytes() == html  # the previous report is whole
    assert fk.temp_files(out) == []


# -- workers killed by SIGKILL ----------------------------------------------------------------

def _worker_sweep(tmp_path, executor_args: list[str]) -> dict[str, dict]:
    """naive, a strategy whose worker is killed once (then succeeds), and one whose worker is
    killed on every attempt; the killed ones die at the start of their second task."""
    cfg = dict(TINY, seeds=[0], strategies=[
        {"name": "naive", "lr": 0.1},
        {"name": "test-sigkill", "lr": 0.1, "die_file": str(tmp_path / "once"), "deaths": 1},
        {"name": "test-sigkill", "lr": 0.05, "die_file": str(tmp_path / "always")},
    ])
    path = fk.write_config(tmp_path, cfg)
    out = tmp_path / "out"
    code = main(["run", str(path), "--out", str(out), "--plugin", PLUGIN, "--no-progress", *executor_args])
    assert code == 1  # one run failed
    return {Path(json.loads(b)["config"]["hparams"].get("die_file", "naive")).name: json.loads(b)
            for b in fk.records(out).values()}


def _check_worker_sweep(recs, tmp_path, capsys, *, deaths_of_always: int):
    fk.check_invariants(tmp_path / "out")
    assert recs["naive"]["status"] == "done"
    once = recs["once"]
    assert once["status"] == "done", once.get("error")
    assert len((tmp_path / "once.s0").read_text().split()) == 1  # killed once, retried once, done
    always = recs["always"]
    assert always["status"] == "failed"
    assert always["error"].startswith("WorkerDied: worker died while running this run"), always["error"]
    assert len((tmp_path / "always.s0").read_text().split()) == deaths_of_always
    err = capsys.readouterr().err
    assert re.search(r"failed: .*test-sigkill.*: WorkerDied: worker died", err), err
    # the retried run and the others give what an uninterrupted run of the same spec gives
    cfg = dict(TINY, seeds=[0], strategies=[
        {"name": "naive", "lr": 0.1},
        {"name": "test-sigkill", "lr": 0.1, "die_file": str(tmp_path / "once"), "deaths": 1}])
    ref = tmp_path / "ref"
    assert main(["run", str(fk.write_config(tmp_path, cfg, "ref.yaml")), "--out", str(ref), "--plugin", PLUGIN,
                 "--no-progress"]) == 0
    assert fk.matrices(tmp_path / "out") == fk.matrices(ref)


@pytest.mark.parametrize("jobs", [pytest.param([], id="default"), pytest.param(["--jobs", "2"], id="jobs-2",
                                                                            marks=pytest.mark.slow)])
def test_a_killed_local_worker_costs_its_own_run_alone(tmp_path, no_fault, monkeypatch, capsys, jobs):
    """The default (one worker process, runs one after the other) and --jobs 2 alike."""
    monkeypatch.setenv("CLBENCH_TEST_PROTECTED_PID", str(os.getpid()))
    recs = _worker_sweep(tmp_path, jobs)
    _check_worker_sweep(recs, tmp_path, capsys, deaths_of_always=2)
    assert "killed by SIGKILL, e.g. by the out-of-memory killer" in recs["always"]["error"].splitlines()[0]


def test_os_exit_and_memory_exhaustion_cost_their_own_run_alone(tmp_path, no_fault, monkeypatch, capsys):
    """By default each run executes in a worker process: a plugin calling os._exit(3), and a run
    that allocates past an address-space limit set (resource.setrlimit) in its own process, are
    recorded failed with the reason; the runs before and after them are done, summary.csv is
    written, and the runs after the failures equal those of a sweep without them."""
    monkeypatch.setenv("CLBENCH_TEST_PROTECTED_PID", str(os.getpid()))
    cfg = dict(TINY, seeds=[0], strategies=[
        {"name": "naive", "lr": 0.1}, {"name": "test-os-exit", "code": 3}, {"name": "test-memory-hog"},
        {"name": "er", "lr": 0.1, "mem_size": 20, "replay_batch": 5}])
    out = tmp_path / "out"
    code = main(["run", str(fk.write_config(tmp_path, cfg)), "--out", str(out), "--plugin", PLUGIN, "--no-progress"])
    assert code == 1
    fk.check_invariants(out)
    recs = {r["strategy"]: r for r in (json.loads(b) for b in fk.records(out).values())}
    assert sorted(recs) == ["er", "naive", "test-memory-hog", "test-os-exit"]
    assert recs["naive"]["status"] == recs["er"]["status"] == "done"
    exited = recs["test-os-exit"]
    assert exited["status"] == "failed"
    assert re.match(r"WorkerDied: worker died while running this run \(exit status 3\), on each of 2 attempts",
                    exited["error"]), exited["error"]
    hog = recs["test-memory-hog"]
    assert hog["status"] == "failed"
    first = hog["error"].splitlines()[0]
    assert "(out of memory)" in first or "killed by" in first, first
    assert len((out / "summary.csv").read_text().strip().splitlines()) == 1 + 4
    err = capsys.readouterr().err
    assert len([line for line in err.splitlines() if line.startswith("failed: ")]) == 2
    # the worker after the hog is a fresh one: er there gives what it gives in a sweep of its own
    ref = tmp_path / "ref"
    alone = dict(TINY, seeds=[0], strategies=[cfg["strategies"][3]])
    assert main(["run", str(fk.write_config(tmp_path, alone, "ref.yaml")), "--out", str(ref), "--in-process",
                 "--no-progress"]) == 0
    assert fk.matrices(ref).items() <= fk.matrices(out).items()


def test_in_process_runs_die_with_the_sweep_as_documented(tmp_path, no_fault):
    """--in-process trades that isolation for debugging: os._exit in a run ends the command."""
    cfg = dict(TINY, seeds=[0], strategies=[{"name": "test-os-exit", "code": 3}])
    proc = fk.clbench("run", str(fk.write_config(tmp_path, cfg)), "--out", str(tmp_path / "out"), "--plugin", PLUGIN,
                      "--no-progress", "--in-process", CLBENCH_TEST_PROTECTED_PID="0")
    assert proc.returncode == 3, proc.stderr[-2000:]


@pytest.mark.slow
def test_a_killed_ray_worker_costs_its_own_run_alone(tmp_path, no_fault, monkeypatch, capsys):
    pytest.importorskip("ray", reason="the ray extra is not installed")
    monkeypatch.setenv("CLBENCH_TEST_PROTECTED_PID", str(os.getpid()))
    recs = _worker_sweep(tmp_path, ["--executor", "ray"])
    _check_worker_sweep(recs, tmp_path, capsys, deaths_of_always=2)


# -- strategies that diverge, raise or exit ---------------------------------------------------

def test_divergence_and_exceptions_fail_their_run_alone(tmp_path, no_fault, capsys):
    cfg = dict(TINY, seeds=[0], strategies=[
        {"name": "test-inf"}, {"name": "test-nan-weights"}, {"name": "test-exit"}, {"name": "test-factory-raises"},
        {"name": "test-odd-metrics"}, {"name": "test-odd-metrics", "json_safe": False}, {"name": "naive", "lr": 0.1}])
    out = tmp_path / "out"
    code = main(["run", str(fk.write_config(tmp_path, cfg)), "--out", str(out), "--plugin", PLUGIN, "--no-progress"])
    assert code == 1
    fk.check_invariants(out)
    recs = {(r["strategy"], r["config"]["hparams"].get("json_safe")): r
            for r in (json.loads(b) for b in fk.records(out).values())}
    assert len(recs) == 7
    expected = {
        ("test-inf", None): r"^DivergenceError: loss became inf at iteration 1\n",
        ("test-nan-weights", None): r"^DivergenceError: parameter '.*' is not finite after task 0\n",
        ("test-exit", None): r"^SystemExit: run ended abnormally \(3\)\n",
        ("test-factory-raises", None): r"planned failure while building the strategy",
        ("test-odd-metrics", False): r"^TypeError: the run's record cannot be stored as JSON \(.*object.*\)",
    }
    for key, pattern in expected.items():
        assert recs[key]["status"] == "failed", key
        assert re.search(pattern, recs[key]["error"]), (key, recs[key]["error"][:300])
    assert recs[("naive", None)]["status"] == "done"
    odd = recs[("test-odd-metrics", True)]
    assert odd["status"] == "done", odd.get("error")
    assert odd["metrics"]["strategy_tensor"] == 0.25 and odd["metrics"]["strategy_array"] == [0, 1, 2]
    assert odd["metrics"]["strategy_float32"] is None  # NaN stays missing, the file stays JSON
    err = capsys.readouterr().err
    assert len([line for line in err.splitlines() if line.startswith("failed: ")]) == 5
    # the report shows the failures and their reasons
    assert main(["report", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert "DivergenceError: loss became inf" in md and "SystemExit: run ended abnormally (3)" in md


# -- --checkpoint-every-task: the run's folder in the store reaches run_one -------------------

def test_checkpoint_every_task_resumes_a_killed_run_from_its_folder(tmp_path, baseline, no_fault):
    cfg, out = fk.write_config(tmp_path), tmp_path / "out"
    proc = fk.clbench("run", str(cfg), "--out", str(out), "--no-progress", "--checkpoint-every-task",
                      "--in-process", fault="task-done:2")
    assert fk.killed(proc), proc.stderr[-2000:]
    assert fk.check_invariants(out) == {}
    (ckpt,) = out.glob("*/checkpoint.pt")  # the first run's, after its second task
    assert main(["run", str(cfg), "--out", str(out), "--no-progress", "--checkpoint-every-task"]) == 0
    recs = {k: json.loads(v) for k, v in fk.records(out).items()}
    assert recs[ckpt.parent.name]["checkpoint"]["resumed_from_task"] == 2
    assert all(r["checkpoint"]["enabled"] for r in recs.values())
    assert not list(out.glob("*/checkpoint.pt"))  # removed once each run is done
    assert fk.matrices(out) == baseline
    # without the flag, run_one gets no checkpoint folder
    plain = tmp_path / "plain"
    assert main(["run", str(fk.write_config(tmp_path, dict(TINY, seeds=[0]), "one.yaml")), "--out", str(plain),
                 "--no-progress"]) == 0
    assert all("checkpoint" not in json.loads(v) for v in fk.records(plain).values())
