"""Several real ``clbench run`` on one results folder at once: they share the runs, no run
runs twice at the same time, no file is corrupted, and a lock dies with its process
(``kill -9`` included)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from benchmark.cli import main
from benchmark.locks import RunLocks
from tests.benchmark import faultkit as fk
from tests.benchmark.faultkit import PLUGIN, TINY

N_RUNS = 6


def _holder(root: Path, run_id: str) -> subprocess.Popen:
    """A process that takes the lock of ``run_id`` and sleeps."""
    code = ("import sys, time\nfrom benchmark.locks import RunLocks\n"
            "assert RunLocks(sys.argv[1]).try_acquire(sys.argv[2])\nprint('locked', flush=True)\ntime.sleep(120)\n")
    p = subprocess.Popen([sys.executable, "-c", code, str(root), run_id], env=fk.env(), stdout=subprocess.PIPE,
                         text=True)
    assert p.stdout.readline().strip() == "locked"
    return p


def test_a_run_lock_dies_with_its_process(tmp_path):
    holder = _holder(tmp_path, "r1")
    mine = RunLocks(tmp_path)
    assert not mine.try_acquire("r1")
    assert mine.holder("r1") == holder.pid
    waited = threading.Event()
    waiter = threading.Thread(target=lambda: (RunLocks(tmp_path).wait("r1"), waited.set()))
    waiter.start()
    time.sleep(0.3)
    assert not waited.is_set()  # wait() blocks while the holder lives
    holder.kill()  # SIGKILL: no cleanup code runs
    holder.wait()
    waiter.join(timeout=10)
    assert waited.is_set()
    assert mine.try_acquire("r1")
    mine.release_all()


def _config(tmp_path: Path, *, sleep_s: float = 0.0) -> Path:
    cfg = dict(TINY, seeds=list(range(N_RUNS)), strategies=[
        {"name": "test-logged", "log": str(tmp_path / "log"), "gate": str(tmp_path / "gate"), "sleep_s": sleep_s}])
    return fk.write_config(tmp_path, cfg)


def _log(tmp_path: Path) -> list[tuple[str, int, int, float]]:
    try:
        lines = (tmp_path / "log").read_text().splitlines()
    except FileNotFoundError:
        return []
    return [(w, int(s), int(p), float(t)) for w, s, p, t in (line.split() for line in lines)]


def _wait_for_starts(tmp_path: Path, procs, n: int) -> list[tuple[str, int, int, float]]:
    """Until ``n`` runs started in ``n`` different processes (each stays in its first task
    until the gate opens)."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        starts = [e for e in _log(tmp_path) if e[0] == "start"]
        if len({e[2] for e in starts}) >= n:
            return starts
        for p in procs:
            if p.poll() is not None:
                pytest.fail(f"a clbench run ended early ({p.returncode}): {p.communicate()[1][-3000:]}")
        time.sleep(0.05)
    pytest.fail("the sweeps did not start their runs in time")


def _runs_for(pid: int, sweep: int) -> bool:
    """Whether the process ``pid`` that logged a run is the sweep ``sweep`` or one of its
    workers (a worker's parent is the sweep's fork server)."""
    import psutil

    try:
        return pid == sweep or any(p.pid == sweep for p in psutil.Process(pid).parents())
    except psutil.NoSuchProcess:
        return False


def _done_now(stdout: str) -> int:
    m = re.search(r"(\d+) done now", stdout)
    assert m, stdout[-2000:]
    return int(m.group(1))


def _check_each_run_ran_once_to_the_end(tmp_path: Path, out: Path) -> None:
    entries = _log(tmp_path)
    for seed in range(N_RUNS):
        tasks = [e for e in entries if e[0] == "task" and e[1] == seed]
        assert len(tasks) == 3, f"seed {seed}: {len(tasks)} tasks logged (a run ran twice, or not to its end)"
        assert len({e[2] for e in tasks}) == 1, f"seed {seed}: its tasks ran in several processes"
    recs = fk.check_invariants(out)
    assert len(recs) == N_RUNS and all(json.loads(b)["status"] == "done" for b in recs.values())
    assert len((out / "summary.csv").read_text().strip().splitlines()) == 1 + N_RUNS
    assert fk.temp_files(out) == []


def _reference(tmp_path: Path, cfg: Path) -> dict[str, list]:
    """The same sweep in one process, uninterrupted (the gate is open by now)."""
    ref = tmp_path / "ref"
    assert main(["run", str(cfg), "--out", str(ref), "--plugin", PLUGIN, "--no-progress"]) == 0
    return fk.matrices(ref)


def test_two_sweeps_on_one_folder_share_the_runs(tmp_path):
    cfg, out = _config(tmp_path), tmp_path / "out"
    args = ("run", str(cfg), "--out", str(out), "--plugin", PLUGIN, "--no-progress")
    procs = [fk.start(*args), fk.start(*args)]
    try:
        starts = _wait_for_starts(tmp_path, procs, 2)
        assert len({e[1] for e in starts}) == len(starts), "one run was started twice at the same time"
        (tmp_path / "gate").touch()
        results = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, (stdout, stderr) in zip(procs, results):
        assert p.returncode == 0, stderr[-3000:]
    done = [_done_now(stdout) for stdout, _ in results]
    print(f"runs done by each sweep: {done}")
    assert sum(done) == N_RUNS and min(done) >= 1  # each run done once, by one of them; both worked
    _check_each_run_ran_once_to_the_end(tmp_path, out)
    assert fk.matrices(out) == _reference(tmp_path, cfg)


@pytest.mark.slow
def test_a_sweep_killed_mid_run_leaves_its_run_to_the_others(tmp_path):
    """Two sweeps start; one is killed with -9 in the middle of a run; a third joins with two
    workers. The killed sweep's worker ends with it (it would log more tasks otherwise), the
    survivors redo the killed run (its lock died with it) and finish the sweep."""
    cfg, out = _config(tmp_path, sleep_s=0.2), tmp_path / "out"
    args = ("run", str(cfg), "--out", str(out), "--plugin", PLUGIN, "--no-progress")
    a, b = fk.start(*args), fk.start(*args)
    procs = [a, b]
    try:
        starts = _wait_for_starts(tmp_path, procs, 2)
        seed_of_a = next(e[1] for e in starts if _runs_for(e[2], a.pid))
        a.kill()
        a.communicate()
        killed_at = time.time()
        c = fk.start(*args, "--jobs", "2")
        procs.append(c)
        (tmp_path / "gate").touch()
        results = [p.communicate(timeout=400) for p in (b, c)]
    finally:
        for p in procs:
            p.kill()
    assert fk.killed(a)
    for p, (stdout, stderr) in zip((b, c), results):
        assert p.returncode == 0, stderr[-3000:]
    done = [_done_now(stdout) for stdout, _ in results]
    print(f"runs done by the two survivors: {done}")
    assert sum(done) == N_RUNS
    restarted = [e for e in _log(tmp_path) if e[0] == "start" and e[1] == seed_of_a]
    assert len(restarted) == 2 and restarted[1][3] >= killed_at - 0.5  # redone, after the kill
    _check_each_run_ran_once_to_the_end(tmp_path, out)
    assert fk.matrices(out) == _reference(tmp_path, cfg)
