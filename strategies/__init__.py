"""Continual-learning strategies as Avalanche strategies, and the registry that names them.

>>> import strategies
>>> sorted(strategies.available())[:3]
['agem', 'avalanche-la-maml', 'avalanche-mer']

Add your own with ``@strategies.register("name")`` (see the README). This package depends on
nothing else of the suite.
"""

from strategies.context import StrategyContext
from strategies.contract import Checkpoints, Reports, StrategyReport, WholeStream
from strategies.errors import StrategyError
from strategies.hparams import Choice, HParam, Range
from strategies.memory import ReservoirMemory
from strategies.registry import ENTRY_POINT_GROUP, Registry, StrategyDef, normalise


def _builtin(registry: Registry) -> None:
    from strategies.baselines import register_baselines
    from strategies.meta_strategies import register_meta_strategies

    register_baselines(registry)
    register_meta_strategies(registry)


REGISTRY = Registry(builtins=_builtin)
"""The suite's registry: the built-in strategies, installed entry points, and plugin files."""

register = REGISTRY.register


def available() -> dict:
    """Every strategy name with its hyperparameters and their defaults."""
    return REGISTRY.available()


def resolve(name: str, hparams: dict | None = None) -> tuple[str, dict]:
    """(canonical name, every hyperparameter with its checked value)."""
    return REGISTRY.resolve(name, hparams)


def recorded_hparams(name: str, hparams: dict) -> dict:
    """The hyperparameters that identify a run (:meth:`Registry.recorded`)."""
    return REGISTRY.recorded(name, hparams)


def build(name: str, *, model, context: StrategyContext, **hparams):
    """The Avalanche strategy ``name`` for ``model``."""
    return REGISTRY.build(name, model=model, context=context, **hparams)


def load_plugin(path) -> list[str]:
    """Run a plugin file that registers strategies; returns the names it added."""
    return REGISTRY.load_file(path)


__all__ = ["StrategyContext", "StrategyReport", "Reports", "Checkpoints", "WholeStream", "StrategyError", "Choice", "HParam", "Range", "ReservoirMemory", "Registry",
           "StrategyDef", "ENTRY_POINT_GROUP", "normalise", "REGISTRY", "register", "available", "resolve", "recorded_hparams",
           "build", "load_plugin"]
