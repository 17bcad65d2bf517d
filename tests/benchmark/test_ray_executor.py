"""The parts of the Ray executor that need no cluster: which data files travel with a job to a
cluster, how the job folder is laid out, and the clean-up of a killed worker's scratch folder.
The executor itself runs against real clusters in test_ray_cluster.py and test_sweep.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from benchmark.config import RunSpec
from benchmark.ray_executor import SCRATCH, _remove_dead_scratch, shipped_data_files, stage
from benchmark.usage import UsageError


def _spec(path: str, source: str = "npz") -> RunSpec:
    return RunSpec("permuted-mnist", {"source": source, "path": path}, "naive", {}, 0, {}, {})


def test_relative_npz_files_below_the_folder_travel_and_others_stay(tmp_path):
    (tmp_path / "data").mkdir()
    np.savez(tmp_path / "data" / "a.npz", x=np.zeros((2, 3)), y=np.zeros(2))
    outside = tmp_path.parent / f"{tmp_path.name}-elsewhere"
    outside.mkdir()
    np.savez(outside / "b.npz", x=np.zeros((2, 3)), y=np.zeros(2))
    (tmp_path / "linked").symlink_to(outside)  # a data folder that is a link elsewhere is followed
    specs = [_spec("data/a.npz"), _spec("data/a.npz"), _spec("linked/b.npz"), _spec(str(outside / "b.npz")),
             _spec("data/missing.npz"), _spec("data/a.npz", source="mnist5k")]
    assert shipped_data_files(specs, cwd=tmp_path) == ["data/a.npz", "linked/b.npz"]
    with pytest.raises(UsageError, match=r"^npz path '\.\./x\.npz' leaves the folder clbench runs in"):
        shipped_data_files([_spec("../x.npz")], cwd=tmp_path)


def test_the_job_folder_holds_the_plugins_under_their_names_and_the_data_at_their_paths(tmp_path):
    here = tmp_path / "here"
    (here / "data").mkdir(parents=True)
    (here / "data" / "a.npz").write_bytes(b"PK data")
    plugins = [tmp_path / "one" / "p.py", tmp_path / "two" / "p.py"]  # two plugin files of one name
    for i, p in enumerate(plugins):
        p.parent.mkdir()
        p.write_text(f"X = {i}\n")
    job = tmp_path / "job"
    names = stage(job, plugin_files=[str(p) for p in plugins], data_files=["data/a.npz"], cwd=here)
    assert names == ("clbench-plugins/0/p.py", "clbench-plugins/1/p.py")
    assert [(job / n).read_text() for n in names] == ["X = 0\n", "X = 1\n"]
    assert (job / "data" / "a.npz").read_bytes() == b"PK data"


def test_a_killed_workers_scratch_folder_is_removed_and_a_live_ones_kept():
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)  # a process that has ended
    gone = Path(tempfile.mkdtemp(prefix=f"{SCRATCH}{pid}-"))
    (gone / "checkpoint.pt").write_bytes(b"x")
    mine = Path(tempfile.mkdtemp(prefix=f"{SCRATCH}{os.getpid()}-"))
    try:
        _remove_dead_scratch()
        assert not gone.exists() and mine.exists()
    finally:
        for d in (gone, mine):
            shutil.rmtree(d, ignore_errors=True)
