"""A sweep: every run of an experiment that is not done yet, recorded in the store."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml

from benchmark.config import Experiment
from benchmark.executors import run_local, run_ray
from benchmark.store import RunStore, write_atomic


@dataclass
class SweepOutcome:
    """What a sweep did: runs skipped because done, runs finished now, runs that failed."""

    total: int
    skipped: int = 0
    done: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


def run_sweep(experiment: Experiment, *, out: str | Path, jobs: int = 1, executor: str = "local",
              address: str | None = None, plugin_files: Sequence[str] = (), show_progress: bool | None = None,
              ) -> SweepOutcome:
    """Run every spec of ``experiment`` whose record in ``out`` is not ``done``."""
    store = RunStore(out)
    store.root.mkdir(parents=True, exist_ok=True)
    write_atomic(store.root / "experiment.yaml",
                 yaml.safe_dump(_plain(experiment.source), sort_keys=False, allow_unicode=True))
    specs = experiment.specs()
    pending = [s for s in specs if not store.is_done(s.run_id)]
    outcome = SweepOutcome(total=len(specs), skipped=len(specs) - len(pending))
    if show_progress is None:
        show_progress = sys.stderr.isatty()
    bar = _progress_bar(len(specs), outcome.skipped, show_progress)

    def on_result(record: dict[str, Any]) -> None:
        store.write(record)
        (outcome.done if record["status"] == "done" else outcome.failed).append(record["run_id"])
        if bar is not None:
            bar.update(1)
            bar.set_postfix_str(f"{record['strategy']} on {record['scenario']}: {record['status']}")

    def on_progress(spec, done, total):
        if bar is not None:
            bar.set_postfix_str(f"{spec.strategy} on {spec.scenario} seed {spec.seed}: task {done}/{total}")

    try:
        if executor == "ray":
            run_ray(pending, address=address, plugin_files=plugin_files, on_result=on_result)
        else:
            run_local(pending, jobs=jobs, plugin_files=plugin_files, on_result=on_result, on_progress=on_progress)
    finally:
        if bar is not None:
            bar.close()
        store.write_summary()
    return outcome


def _progress_bar(total: int, initial: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="run", dynamic_ncols=True, file=sys.stderr)


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj
