"""The results store under bad input and load: truncated or hand-edited run.json files (named
in one line each by `report` and `run`; `run` keeps the bad file aside and redoes the run),
atomic writes that fail half-way, leftovers of killed writers, and `report` on 500 runs."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmark import faults, metrics
from benchmark.cli import main
from benchmark.store import RunStore, StoreWriteError, problem, write_atomic
from tests.benchmark import faultkit as fk
from tests.benchmark import synthetic
from tests.benchmark.faultkit import TINY


@pytest.fixture(scope="module")
def done_sweep(tmp_path_factory):
    """Two finished runs (naive and er, seed 0) of the tiny sweep."""
    tmp = tmp_path_factory.mktemp("store")
    cfg = fk.write_config(tmp, dict(TINY, seeds=[0]))
    out = tmp / "out"
    assert main(["run", str(cfg), "--out", str(out), "--no-progress"]) == 0
    return cfg, out


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _edit(change):
    def corrupt(path: Path) -> None:
        rec = json.loads(path.read_text())
        change(rec)
        path.write_text(json.dumps(rec))
    return corrupt


def _raw(data: bytes):
    return lambda path: path.write_bytes(data)


CORRUPTIONS = {
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), r"JSONDecodeError"),
    "empty file": (_raw(b""), r"empty file"),
    "not UTF-8": (_raw(b"\xff\xfe{garbage"), r"UnicodeDecodeError"),
    "a JSON list": (_raw(b"[1, 2, 3]"), r"not a run record \(a JSON list, not an object\)"),
    "no status": (_edit(lambda r: r.pop("status")), r"not a run record \(no status\)"),
    "unknown status": (_edit(lambda r: r.update(status="finished")), r"status 'finished' is not one of done, failed"),
    "done without a matrix": (_edit(lambda r: r.pop("acc_matrix")), r"a done run without an 'acc_matrix'"),
    "matrix of the wrong shape": (_edit(lambda r: r["acc_matrix"].pop()), r"'acc_matrix' is not square: 2 rows of lengths 3, 3"),
    "accuracy above 1": (_edit(lambda r: r["acc_matrix"][0].__setitem__(0, 1.7)), r"not an accuracy in \[0, 1\]"),
    "accuracy as text": (_edit(lambda r: r["acc_matrix"][1].__setitem__(1, "0.5")), r"not an accuracy in \[0, 1\]"),
    "seed as text": (_edit(lambda r: r.update(seed="0")), r"'seed' is not an integer"),
    "run_id of another folder": (_edit(lambda r: r.update(run_id="elsewhere")), r"run_id 'elsewhere' is not its folder's name"),
    "metric as text": (_edit(lambda r: r["metrics"].update(acc="high")), r"metric 'acc' is not a number"),
    "metric edited by hand": (_edit(lambda r: r["metrics"].update(acc=1e308)),
                              r"metric 'acc' is 1e\+308 but its accuracy matrix gives 0\.\d+; the record was edited"),
    "forgetting not what the matrix gives": (_edit(lambda r: r["metrics"].update(forgetting=r["metrics"]["forgetting"] + 0.1)),
                                             r"metric 'forgetting' is .* but its accuracy matrix gives"),
    "random-init accuracies too short": (_edit(lambda r: r["random_init_acc"].pop()), r"'random_init_acc' is not a list of 3"),
    "failed without an error": (_edit(lambda r: (r.update(status="failed"), r.pop("error", None))),
                                r"a failed run without an 'error' message"),
    "a folder": (lambda p: (p.unlink(), p.mkdir()), r"is a folder, not a file"),
}


def _victim(out: Path) -> Path:
    return next(p for p in sorted(out.glob("*/run.json")) if "__naive__" in str(p))


@pytest.mark.parametrize("case", list(CORRUPTIONS), ids=list(CORRUPTIONS))
def test_a_bad_record_is_never_read_as_a_result(case, done_sweep, tmp_path):
    corrupt, reason = CORRUPTIONS[case]
    _, out = done_sweep
    work = tmp_path / "work"
    shutil.copytree(out, work)
    victim = _victim(work)
    corrupt(victim)
    store = RunStore(work)
    good, bad = store.scan()
    assert [b.path for b in bad] == [victim] and [r["strategy"] for r in good] == ["er"]
    assert re.search(reason, bad[0].reason), bad[0].reason
    assert "\n" not in bad[0].reason
    assert store.read(victim.parent.name) is None and not store.is_done(victim.parent.name)


@pytest.mark.parametrize("case", ["truncated", "matrix of the wrong shape", "a folder", "metric edited by hand"])
def test_report_names_a_bad_record_in_one_line_and_goes_on(case, done_sweep, tmp_path, capsys):
    corrupt, _ = CORRUPTIONS[case]
    _, out = done_sweep
    work = tmp_path / "work"
    shutil.copytree(out, work)
    victim = _victim(work)
    corrupt(victim)
    bad = RunStore(work).scan()[1]
    assert main(["report", str(work)]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"clbench: skipping unreadable {victim}: {bad[0].reason}"]
    rows = _csv(work / "summary.csv")
    assert [r["strategy"] for r in rows] == ["er"]
    assert str(victim) in (work / "report.md").read_text()


@pytest.mark.parametrize("case", ["truncated", "matrix of the wrong shape", "done without a matrix", "a folder",
                                  "metric edited by hand"])
def test_run_keeps_a_bad_record_aside_and_redoes_the_run(case, done_sweep, tmp_path, capsys):
    cfg, out = done_sweep
    work = tmp_path / "work"
    shutil.copytree(out, work)
    victim = _victim(work)
    original = json.loads(victim.read_text())
    corrupt, _ = CORRUPTIONS[case]
    corrupt(victim)
    evidence = victim.read_bytes() if victim.is_file() else None
    er_before = {p: p.read_bytes() for p in work.glob("*__er__*/run.json")}
    capsys.readouterr()
    assert main(["run", str(cfg), "--out", str(work), "--no-progress"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.match(rf"clbench: unreadable {re.escape(str(victim))}: .+; kept as "
                                      r"run\.json\.corrupt-\d{8}T\d{12}Z, the run is redone$", err[0]), err
    aside = list(victim.parent.glob("run.json.corrupt-*"))
    assert len(aside) == 1
    if evidence is not None:
        assert aside[0].read_bytes() == evidence  # the evidence is kept as it was
    redone = json.loads(victim.read_text())
    assert redone["status"] == "done" and redone["acc_matrix"] == original["acc_matrix"]
    assert {p: p.read_bytes() for p in work.glob("*__er__*/run.json")} == er_before  # the good one untouched
    assert RunStore(work).scan()[1] == []  # the kept file is not read as a record


def test_run_names_bad_records_of_other_runs_and_leaves_them(done_sweep, tmp_path, capsys):
    cfg, out = done_sweep
    work = tmp_path / "work"
    shutil.copytree(out, work)
    other = work / "some-other-run" / "run.json"
    other.parent.mkdir()
    other.write_text('{"status": "do')
    capsys.readouterr()
    assert main(["run", str(cfg), "--out", str(work), "--no-progress"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"clbench: skipping unreadable {other}: JSONDecodeError"), err
    assert other.read_text() == '{"status": "do'


def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(tmp_path, monkeypatch):
    target = tmp_path / "f" / "run.json"
    write_atomic(target, "old\n")
    for point in ("before-write", "mid-write", "before-rename"):
        faults.reset()
        monkeypatch.setenv(faults.ENV, f"{point}@run.json:1:enospc")
        with pytest.raises(StoreWriteError, match=r"^disk full while writing .*run\.json \(No space left on device\)"):
            write_atomic(target, "new\n" * 1000)
        assert target.read_text() == "old\n"
        assert os.listdir(target.parent) == ["run.json"]
    monkeypatch.delenv(faults.ENV)
    faults.reset()


def test_temporary_files_of_dead_writers_are_removed_and_never_read(done_sweep, tmp_path):
    _, out = done_sweep
    work = tmp_path / "work"
    shutil.copytree(out, work)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    dead_pid = int(dead.stdout)
    folder = _victim(work).parent
    stale = folder / f".run.json.{dead_pid}.abc123.tmp"
    live = folder / f".run.json.{os.getpid()}.xyz789.tmp"
    for p in (stale, live):
        p.write_text('{"status": "done", "run_id": "x"}')
    assert len(RunStore(work).scan()[0]) == 2 and RunStore(work).scan()[1] == []
    removed = RunStore(work).remove_stale_temps()
    assert removed == [stale] and live.exists() and not stale.exists()


def test_records_are_checked_field_by_field(done_sweep):
    _, out = done_sweep
    rec = json.loads(_victim(out).read_text())
    assert problem(rec, rec["run_id"]) is None
    failed = {k: rec[k] for k in ("run_id", "strategy", "scenario", "seed")} | {"status": "failed", "error": "x"}
    assert problem(failed) is None
    assert problem({**rec, "seed": True}) == "'seed' is not an integer"
    assert problem({**rec, "n_tasks": 5}) == "'n_tasks' is 5 but 'acc_matrix' has 3 rows"
    assert problem({**rec, "metrics": {**rec["metrics"], "strategy_extra": "anything"}}) is None


# -- a long sweep -----------------------------------------------------------------------------

def _report_on(tmp_path, *, strategies: int) -> tuple[Path, float]:
    out = tmp_path / "big"
    t0 = time.perf_counter()
    store = synthetic.write_store(out, n_runs=500, strategies=strategies)
    print(f"500 synthetic records written in {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    assert main(["report", str(out)]) == 0
    took = time.perf_counter() - t0
    print(f"clbench report on 500 runs ({len(synthetic.SCENARIOS)} scenarios x {strategies} strategies): {took:.1f} s")
    records = list(store.records())
    rows = _csv(out / "summary.csv")
    assert len(rows) == len(records) == 500
    table = {r["strategy"]: r for r in _csv(out / "tables" / "permuted-mnist.csv")}
    for name in table:
        mine = [r for r in records if r["scenario"] == "permuted-mnist" and r["strategy"] == name]
        assert int(table[name]["runs"]) == sum(r["status"] == "done" for r in mine)
        assert int(table[name]["failed"]) == sum(r["status"] == "failed" for r in mine)
    return out, took


def _plot_stamps(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in (out / "plots").iterdir()}


def test_report_on_500_runs(tmp_path, capsys):
    """Default form: 500 records of 2 scenarios x 2 strategies; a second report draws nothing
    again (every plot's inputs are unchanged) and embeds the same images."""
    out, took = _report_on(tmp_path, strategies=2)
    stamps, html = _plot_stamps(out), (out / "report.html").read_text()
    t0 = time.perf_counter()
    assert main(["report", str(out)]) == 0
    print(f"again, nothing changed: {time.perf_counter() - t0:.1f} s (first: {took:.1f} s)")
    assert _plot_stamps(out) == stamps
    images = re.findall(r'src="(data:image/png;base64,[^"]+)"', html)
    assert images and images == re.findall(r'src="(data:image/png;base64,[^"]+)"', (out / "report.html").read_text())


@pytest.mark.slow
def test_report_on_500_runs_of_many_strategies_redraws_only_what_changed(tmp_path):
    out, _ = _report_on(tmp_path, strategies=len(synthetic.STRATEGIES))
    stamps = _plot_stamps(out)
    store = RunStore(out)
    rec = next(r for r in store.records() if r["strategy"] == "er" and r["scenario"] == "rotated-mnist"
               and r["status"] == "done")
    rec["acc_matrix"][-1][0] = 0.0
    rec["metrics"].update(metrics.all_metrics(rec["acc_matrix"], rec["random_init_acc"]))
    store.write(rec)
    assert main(["report", str(out)]) == 0
    changed = {k for k, v in _plot_stamps(out).items() if stamps.get(k) != v}
    # er's own plots and the scenario's comparison plots, in both formats; nothing else
    assert changed == {f"rotated-mnist__{kind}.{ext}" for ext in ("png", "svg")
                       for kind in ("heatmap__er", "forgetting__er", "average_accuracy", "forgetting_bwt", "cost")}


def test_records_get_the_usual_file_mode(tmp_path):
    import os
    import stat

    from benchmark.store import write_atomic

    umask = os.umask(0o022)
    try:
        write_atomic(tmp_path / "run.json", "{}")
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "run.json").stat().st_mode) == 0o644
