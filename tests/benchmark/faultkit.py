"""Helpers of the crash-safety tests: a tiny fast sweep, ``clbench`` in a real process (with
fault injection through ``CLBENCH_FAULT``), and the invariants a results folder must keep
whatever happens to the processes that write it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import yaml

from benchmark.store import RunStore

REPO = Path(__file__).resolve().parents[2]
PLUGIN = str(Path(__file__).parent / "plugins" / "faulty.py")
# 8 runs of well under a second each: 8x8 digits, 3 tasks of 50 examples, a 20-unit MLP
TINY = {
    "name": "crash",
    "seeds": [0, 1, 2, 3],
    "train": {"batch_size": 10, "epochs": 1, "device": "cpu"},
    "model": {"name": "auto", "hidden": [20]},
    "scenarios": [{"name": "permuted-mnist", "source": "digits", "n_tasks": 3, "per_task": 50}],
    "strategies": [{"name": "naive", "lr": 0.1}, {"name": "er", "lr": 0.1, "mem_size": 20, "replay_batch": 5}],
}


def write_config(folder: Path, cfg: dict = TINY, name: str = "sweep.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def env(fault: str | None = None, **extra: str) -> dict[str, str]:
    """The environment of a clbench process: this checkout first on the path, the fault to
    inject (if any), and the test process's pid, which the killer plugin refuses to kill."""
    e = {k: v for k, v in os.environ.items() if k != "CLBENCH_FAULT"}
    e["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    e["CLBENCH_TEST_PROTECTED_PID"] = str(os.getpid())
    if fault:
        e["CLBENCH_FAULT"] = fault
    e.update(extra)
    return e


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "benchmark", *args]


def clbench(*args: str, fault: str | None = None, timeout: float = 300, **extra: str) -> subprocess.CompletedProcess:
    """``clbench ARGS`` in a real process; returncode -9 means it was killed by SIGKILL."""
    return subprocess.run(command(*args), cwd=REPO, env=env(fault, **extra), capture_output=True, text=True,
                          timeout=timeout, check=False)


def start(*args: str, fault: str | None = None, **extra: str) -> subprocess.Popen:
    return subprocess.Popen(command(*args), cwd=REPO, env=env(fault, **extra), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def killed(proc: subprocess.CompletedProcess | subprocess.Popen) -> bool:
    return proc.returncode == -signal.SIGKILL


def records(out: Path) -> dict[str, bytes]:
    """run_id -> the bytes of its run.json, for every run.json there is."""
    return {p.parent.name: p.read_bytes() for p in Path(out).glob("*/run.json")}


def check_invariants(out: Path, before: dict[str, bytes] | None = None) -> dict[str, bytes]:
    """What must hold after any crash: every run.json is a whole, well-formed record (none is
    partial, unreadable or mistaken for another file), every record present before is still
    there byte for byte, and the store reads exactly the run.json files. Returns the records."""
    now = records(out)
    good, bad = RunStore(out).scan()
    assert bad == [], f"unreadable records after a crash: {bad}"
    assert sorted(r["run_id"] for r in good) == sorted(now), "the store reads something else than the run.json files"
    for run_id, blob in now.items():
        rec = json.loads(blob)
        assert rec["run_id"] == run_id and rec["status"] in ("done", "failed")
    for run_id, blob in (before or {}).items():
        assert now.get(run_id) == blob, f"the finished run {run_id} was lost or changed"
    return now


def temp_files(out: Path) -> list[Path]:
    return sorted(p for p in Path(out).rglob("*.tmp"))


def matrices(out: Path) -> dict[str, list]:
    return {k: json.loads(v)["acc_matrix"] for k, v in records(out).items() if json.loads(v)["status"] == "done"}
