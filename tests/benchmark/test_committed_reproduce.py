"""The committed results are what today's code gives: seed 0 of a committed sweep, run afresh,
reproduces each committed record bit for bit (CPU, one torch thread per worker, as the sweeps
ran). A change to a strategy's numerics (a kernel's order of summation, a default) fails here
until the records it changes are run again and committed, so the tables in the README never
come from code that no longer gives them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from benchmark.cli import main

ROOT = Path(__file__).resolve().parents[2]
SLOW_STRATEGIES = ("cope",)  # ten minutes a run on the paper streams: left to a full rerun of the sweep

CASES = [
    ("reference", "configs/quickstart.yaml"),
    ("paper-mnist-permutations", "configs/paper-mnist-permutations.yaml"),
]


@pytest.mark.slow
@pytest.mark.parametrize("folder, config", CASES, ids=[c[0] for c in CASES])
def test_seed_0_of_a_committed_sweep_reproduces_its_records(folder, config, tmp_path):
    raw = yaml.safe_load((ROOT / config).read_text())
    raw["seeds"] = [0]
    raw["strategies"] = [s for s in raw["strategies"] if (s if isinstance(s, str) else s["name"]) not in SLOW_STRATEGIES]
    raw.pop("targets", None)
    cfg = tmp_path / "seed0.yaml"
    cfg.write_text(yaml.safe_dump(raw, sort_keys=False))
    out = tmp_path / "out"
    # one worker per core: one torch thread each, as the committed sweeps ran on this 2-core machine
    assert main(["run", str(cfg), "--out", str(out), "--jobs", str(os.cpu_count() or 1), "--no-progress"]) == 0
    fresh = {p.parent.name: json.loads(p.read_text()) for p in out.glob("*/run.json")}
    assert fresh
    differ = []
    for run_id, rec in sorted(fresh.items()):
        committed = json.loads((ROOT / "results" / folder / run_id / "run.json").read_text())
        for key in ("acc_matrix", "random_init_acc", "curves"):
            if rec.get(key) != committed.get(key):
                differ.append(f"{run_id}: {key} (ACC {rec['metrics']['acc']:.4f} now, "
                              f"{committed['metrics']['acc']:.4f} committed)")
                break
    assert not differ, "committed records that today's code does not reproduce:\n" + "\n".join(differ)
