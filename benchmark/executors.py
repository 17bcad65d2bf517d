"""Where runs execute: in this process, in local worker processes, or as Ray tasks.

Every executor calls ``on_result(record)`` in the driver process as each run finishes, so
the driver alone writes the store, whichever machine trained the run.
"""

from __future__ import annotations

import os
import traceback
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any, Callable, Sequence

from benchmark.config import RunSpec

OnResult = Callable[[dict[str, Any]], None]
OnProgress = Callable[[RunSpec, int, int], None]
EXECUTORS = ("local", "ray")


def _prepare_worker(plugin_files: Sequence[str], threads: int | None) -> None:
    """Load the user's plugin files and size torch's thread pool, in a fresh worker."""
    import torch

    import strategies

    if threads:
        torch.set_num_threads(threads)
    for f in plugin_files:
        strategies.load_plugin(f)


def _worker_run(spec: RunSpec) -> dict[str, Any]:
    from benchmark.runner import run_one

    return run_one(spec)


def _failed(spec: RunSpec, exc: BaseException) -> dict[str, Any]:
    """The record of a run whose worker died or could not return a result."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return {"run_id": spec.run_id, "status": "failed", "strategy": spec.strategy, "scenario": spec.scenario,
            "seed": spec.seed, "config": spec.to_dict(),
            "error": f"{type(exc).__name__}: worker lost ({str(exc).strip() or 'no message'})\n{text}"}


def run_local(specs: Sequence[RunSpec], *, jobs: int, plugin_files: Sequence[str], on_result: OnResult,
              on_progress: OnProgress | None = None) -> None:
    """Run ``specs`` here (jobs == 1) or in ``jobs`` spawned worker processes."""
    from benchmark.runner import run_one

    if jobs <= 1 or len(specs) <= 1:
        for spec in specs:
            progress = (lambda done, total, s=spec: on_progress(s, done, total)) if on_progress else None
            on_result(run_one(spec, progress=progress))
        return
    import multiprocessing

    threads = max(1, (os.cpu_count() or 1) // jobs)
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_prepare_worker,
                             initargs=(tuple(plugin_files), threads)) as pool:
        pending = {pool.submit(_worker_run, s): s for s in specs}
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                spec = pending.pop(fut)
                try:
                    record = fut.result()
                except Exception as exc:  # a worker died (killed, out of memory) or pickling failed
                    record = _failed(spec, exc)
                on_result(record)


def run_ray(specs: Sequence[RunSpec], *, address: str | None, plugin_files: Sequence[str], on_result: OnResult,
            num_cpus: int | None = None) -> None:
    """One Ray task per run, on the cluster at ``address`` or on a local Ray instance."""
    try:
        import ray
    except ImportError:
        raise RuntimeError("the ray executor needs Ray: pip install 'clbench[ray]'") from None
    started_here = not ray.is_initialized()
    if started_here:
        kwargs: dict[str, Any] = {"address": address} if address else {"num_cpus": num_cpus or os.cpu_count(),
                                                                         "include_dashboard": False}
        ray.init(ignore_reinit_error=True, log_to_driver=False, **kwargs)
    try:
        files = tuple(plugin_files)

        @ray.remote(num_cpus=1, max_retries=0)
        def ray_run(spec: RunSpec) -> dict[str, Any]:
            _prepare_worker(files, 1)
            return _worker_run(spec)

        refs = {ray_run.remote(s): s for s in specs}
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1)
            for ref in ready:
                spec = refs.pop(ref)
                try:
                    record = ray.get(ref)
                except Exception as exc:  # the task's worker died
                    record = _failed(spec, exc)
                on_result(record)
    finally:
        if started_here:
            ray.shutdown()
