"""Standard continual-learning task streams from real data, as Avalanche scenarios.

>>> import scenarios
>>> stream = scenarios.build("permuted-mnist", seed=0, n_tasks=3, per_task=100)
>>> stream.benchmark.train_stream[0].task_label
0

This package depends on nothing else of the suite.
"""

from scenarios.errors import ScenarioError
from scenarios.params import Param
from scenarios.registry import (
    ENTRY_POINT_GROUP,
    available,
    build,
    check_data,
    definition,
    register,
    resolve_params,
    task_count,
)
from scenarios.sources import SOURCES, ImageData, load_source
from scenarios.stream import Stream, TaskData

__all__ = ["ENTRY_POINT_GROUP", "register", "SOURCES", "ImageData", "Param", "ScenarioError", "Stream", "TaskData", "available", "build", "check_data",
           "definition", "load_source", "resolve_params", "task_count"]
