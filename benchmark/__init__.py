"""The harness: configs, runner, metrics, store, executors, reports, the ``clbench`` command,
and a Python API for notebooks: ``benchmark.run(config, out=..., jobs=...)`` and
``benchmark.load(DIR, config=..., strategy=..., scenario=...)`` (:mod:`benchmark.api`).

``import benchmark`` imports nothing heavy: the API module is imported on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["load", "run"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from benchmark import api

        return getattr(api, name)
    raise AttributeError(f"module 'benchmark' has no attribute {name!r}")
