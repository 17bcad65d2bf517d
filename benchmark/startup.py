"""What running each run in a worker process costs: ``python -m benchmark.startup``.

Prints, measured here and now (median of ``--repeat`` tries):

- a worker's start: the fork server's first worker (importing torch, Avalanche and the suite
  once per sweep), a fresh worker from the warm fork server (after a failed run), and a run
  handed to a warm worker (the cost of each further run);
- a whole small sweep side by side, in worker processes (the default) and ``--in-process``,
  each in a fresh ``clbench run`` process, alternating, so that the difference is what the
  workers cost a user.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

SWEEP = {  # 4 runs of a second or so on the embedded MNIST subset
    "name": "startup",
    "seeds": [0, 1],
    "train": {"batch_size": 10, "device": "cpu"},
    "scenarios": [{"name": "permuted-mnist", "n_tasks": 2, "per_task": 100}],
    "strategies": [{"name": "naive", "lr": 0.1}, {"name": "er", "lr": 0.1, "mem_size": 50}],
}


def _noop() -> int:
    return 0


def worker_costs() -> dict[str, float]:
    """Seconds: first worker of a new fork server, a fresh worker of a warm one, a call handed
    to a warm worker."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from benchmark.executors import PRELOAD, prepare_worker

    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(list(PRELOAD))

    def start() -> tuple[float, ProcessPoolExecutor]:
        t0 = time.perf_counter()
        pool = ProcessPoolExecutor(max_workers=1, mp_context=ctx, initializer=prepare_worker, initargs=((), 1))
        pool.submit(_noop).result()
        return time.perf_counter() - t0, pool

    first, pool = start()
    pool.shutdown()
    fresh, pool = start()
    t0 = time.perf_counter()
    for _ in range(50):
        pool.submit(_noop).result()
    reused = (time.perf_counter() - t0) / 50
    pool.shutdown()
    return {"first worker (fork server start)": first, "fresh worker, warm fork server": fresh,
            "run handed to a warm worker": reused}


def sweep_seconds(in_process: bool, folder: Path) -> float:
    cfg = folder / "startup.yaml"
    cfg.write_text(yaml.safe_dump(SWEEP))
    out = folder / f"out-{time.monotonic_ns()}"
    args = [sys.executable, "-m", "benchmark", "run", str(cfg), "--out", str(out), "--no-progress"]
    t0 = time.perf_counter()
    subprocess.run(args + (["--in-process"] if in_process else []), check=True, capture_output=True)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmark.startup", description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=3, help="tries of each measurement (default 3)")
    args = p.parse_args(argv)
    if args.repeat < 1:
        p.error(f"--repeat must be >= 1, got {args.repeat}")
    costs: dict[str, list[float]] = {}
    for _ in range(args.repeat):
        for k, v in worker_costs().items():
            costs.setdefault(k, []).append(v)
    for k, v in costs.items():  # the fork server lives on in this process: its start is the first try
        print(f"{k:36s} {(v[0] if k.startswith('first') else statistics.median(v)) * 1000:9.1f} ms")
    runs = len(SWEEP["seeds"]) * len(SWEEP["strategies"])
    with tempfile.TemporaryDirectory() as tmp:
        walls: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(args.repeat):
            for in_process in (False, True):
                walls[in_process].append(sweep_seconds(in_process, Path(tmp)))
    workers, here = statistics.median(walls[False]), statistics.median(walls[True])
    print(f"clbench run, {runs} runs, in workers    {workers:9.2f} s")
    print(f"clbench run, {runs} runs, --in-process  {here:9.2f} s")
    print(f"workers cost this sweep               {workers - here:9.2f} s (once per sweep: the fork server's imports)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
