"""Synthetic but well-formed run records, written through the real ``RunStore.write``, for
tests of what reads a large store (``clbench report`` on a long sweep) without training.

The records have the fields ``benchmark.runner.run_one`` writes, real run ids from a validated
experiment, accuracy matrices drawn per (strategy, seed) and metrics computed from them.

    python -m tests.benchmark.synthetic OUT --runs 500     # then: time clbench report OUT
"""

from __future__ import annotations

import argparse
import math
import random
from pathlib import Path

from benchmark import metrics
from benchmark.config import validate
from benchmark.store import RunStore

SCENARIOS = [{"name": "permuted-mnist", "source": "digits", "n_tasks": 10, "per_task": 50},
             {"name": "rotated-mnist", "source": "digits", "n_tasks": 10, "per_task": 50}]
STRATEGIES = [{"name": "naive", "lr": 0.1}, {"name": "er", "lr": 0.1, "mem_size": 50},
              {"name": "agem", "lr": 0.1}, {"name": "mer", "lr": 0.1}, {"name": "la-maml"}]


def experiment(n_runs: int, *, strategies: int = len(STRATEGIES)):
    """A validated experiment of len(SCENARIOS) x ``strategies`` x enough seeds for ``n_runs``."""
    cells = len(SCENARIOS) * strategies
    seeds = list(range(math.ceil(n_runs / cells)))
    return validate({"name": "synthetic", "seeds": seeds, "train": {"device": "cpu"},
                     "scenarios": SCENARIOS, "strategies": STRATEGIES[:strategies]}, where="synthetic")


def record(spec, *, rng: random.Random, failed: bool = False) -> dict:
    """A record of ``spec`` as run_one returns it, with made-up accuracies."""
    base = {"run_id": spec.run_id, "strategy": spec.strategy, "scenario": spec.scenario, "seed": spec.seed,
            "config": spec.to_dict(), "started": "2026-01-01T00:00:00+00:00",
            "versions": {"clbench": "0.1.0", "python": "3.11", "torch": "2", "avalanche": "0.6.0", "numpy": "2"},
            "machine": {"cpu": "synthetic", "cores": 2, "torch_threads": 1, "platform": "Linux"}}
    if failed:
        return {**base, "status": "failed", "error": "DivergenceError: loss became nan at iteration 7\nTraceback ...",
                "finished": "2026-01-01T00:00:01+00:00"}
    t = spec.scenario_params["n_tasks"]
    skill = 0.5 + 0.08 * (sum(map(ord, spec.strategy)) % 5) + rng.uniform(-0.03, 0.03)
    rows = [[min(1.0, max(0.0, (skill if j <= i else 0.1) - (0.02 * (i - j) if j <= i else 0) + rng.uniform(-.02, .02)))
             for j in range(t)] for i in range(t)]
    b = [0.1 + rng.uniform(-0.02, 0.02) for _ in range(t)]
    found = metrics.all_metrics(rows, b)
    train_s = rng.uniform(1, 20)
    return {**base, "status": "done", "acc_matrix": rows, "random_init_acc": b,
            "average_accuracy": metrics.average_accuracy_curve(rows),
            "metrics": {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in found.items()},
            "timing": {"train_s": train_s, "eval_s": train_s / 10, "eval_share": 1 / 11, "iterations": 50 * t,
                       "inner_steps": None},
            "peak_rss_mb": 300.0, "device": "cpu", "n_tasks": t, "joint_training": False,
            "finished": "2026-01-01T00:01:00+00:00"}


def write_store(root: str | Path, *, n_runs: int, strategies: int = len(STRATEGIES), failed_every: int = 50,
                seed: int = 0) -> RunStore:
    """``n_runs`` records in a store at ``root`` (every ``failed_every``-th one failed)."""
    store = RunStore(root)
    rng = random.Random(seed)
    specs = experiment(n_runs, strategies=strategies).specs()
    for k, spec in enumerate(sorted(specs, key=lambda s: (s.seed, s.scenario, s.strategy))[:n_runs]):
        store.write(record(spec, rng=rng, failed=failed_every > 0 and k % failed_every == failed_every - 1))
    return store


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("--runs", type=int, default=500)
    p.add_argument("--strategies", type=int, default=len(STRATEGIES), choices=range(1, len(STRATEGIES) + 1))
    args = p.parse_args()
    write_store(args.out, n_runs=args.runs, strategies=args.strategies)
    print(f"{args.runs} run records in {args.out}")


if __name__ == "__main__":
    main()
