"""The Python API for notebooks: :func:`run` a sweep and :func:`load` a finished one, as tidy
pandas tables (one row per run and metric: :func:`benchmark.tidy.long_table`).

Both go through the code of ``clbench run`` and ``clbench report`` (:func:`benchmark.cli.sweep`,
:func:`benchmark.cli.results_of`): the same checks, and bad input raises the same one-line
errors the command prints (UsageError, ConfigError, ScenarioError, StrategyError).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd


def run(config: str | Path | Mapping[str, Any], *, out: str | Path | None = None, jobs: int = 1,
        executor: str = "local", address: str | None = None, overrides: Sequence[str] = (),
        plugins: Sequence[str | Path] = (), in_process: bool = False, show_progress: bool = False) -> pd.DataFrame:
    """Run every (scenario x strategy x seed) of ``config`` (a YAML path or a dict) not done yet
    in ``out`` (default ``results/<config name>``), as ``clbench run`` does; return the config's
    runs as a tidy table (one row per run and metric; failed runs keep rows without values)."""
    from benchmark.cli import sweep
    from benchmark.store import RunStore
    from benchmark.tidy import long_table

    given = dict(config) if isinstance(config, Mapping) else config
    exp, folder, _, _ = sweep(given, out=None if out is None else str(out), jobs=jobs, executor=executor,
                              address=address, overrides=list(overrides), plugins=[str(p) for p in plugins],
                              show_progress=show_progress, in_process=in_process)
    ids = {s.run_id for s in exp.specs()}
    return long_table(r for r in RunStore(folder).records() if r.get("run_id") in ids)


def load(folder: str | Path, *, config: str | None = None, strategy: str | None = None,
         scenario: str | None = None, plugins: Sequence[str | Path] = ()) -> pd.DataFrame:
    """The runs recorded in ``folder`` as a tidy table, as ``clbench report`` reads them: only
    those of ``config`` (a config name kept in ``folder/configs/``), of ``strategy`` and of
    ``scenario`` (registered names, matched as the registries match them) where given."""
    from benchmark.cli import results_of
    from benchmark.tidy import long_table
    from benchmark.usage import UsageError

    _, records, _, _ = results_of(folder, config=config, plugins=[str(p) for p in plugins])
    for key, name, canonical in (("strategy", strategy, _strategy_name), ("scenario", scenario, _scenario_name)):
        if name is None:
            continue
        wanted = canonical(name)
        records = [r for r in records if r.get(key) == wanted]
        if not records:
            raise UsageError(f"no run of {key} '{wanted}' is recorded in {folder}")
    return long_table(records)


def _strategy_name(name: str) -> str:
    import strategies

    try:
        return strategies.REGISTRY.get(name).name  # aliases too
    except strategies.StrategyError:  # recorded by a plugin not loaded here: its name as recorded
        return strategies.normalise(name)


def _scenario_name(name: str) -> str:
    from scenarios.registry import normalise

    return normalise(name)
