"""Hyperparameters declared in a factory's signature.

A strategy factory takes ``model`` and ``context`` and declares each hyperparameter as a
keyword-only argument with a type annotation and a default; ``typing.Annotated`` adds the
allowed range or choices::

    def er(*, model, context, lr: Annotated[float, Range(gt=0)] = 0.1,
           mem_size: Annotated[int, Range(ge=1)] = 200): ...

:func:`declared` reads them back as :class:`HParam`; :func:`resolve` validates a user's values.
"""

from __future__ import annotations

import difflib
import inspect
import math
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from strategies.errors import StrategyError

RESERVED = ("model", "context")


MAX_EXACT_INT = 2**53  # the largest whole number a float holds exactly
MAX_RATE = 100.0  # learning rates above this diverge at once on any network here: refused up front


@dataclass(frozen=True)
class Range:
    """Numeric bounds: ``gt``/``ge`` below, ``lt``/``le`` above (None: unbounded)."""

    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None

    def describe(self) -> str:
        parts = []
        if self.gt is not None:
            parts.append(f"> {self.gt:g}")
        if self.ge is not None:
            parts.append(f">= {self.ge:g}")
        if self.lt is not None:
            parts.append(f"< {self.lt:g}")
        if self.le is not None:
            parts.append(f"<= {self.le:g}")
        return " and ".join(parts)

    def admits(self, v: float) -> bool:
        return ((self.gt is None or v > self.gt) and (self.ge is None or v >= self.ge)
                and (self.lt is None or v < self.lt) and (self.le is None or v <= self.le))


@dataclass(frozen=True)
class Choice:
    """The allowed values of a string hyperparameter."""

    values: tuple[str, ...]

    def __init__(self, *values: str):
        object.__setattr__(self, "values", tuple(values))


@dataclass(frozen=True)
class AddedLater:
    """Marks a hyperparameter added to a strategy after runs of it were recorded
    (``Annotated[bool, AddedLater()]``): at its default it is left out of what identifies a run
    (the run id and the record's hyperparameters, :meth:`Registry.recorded`), so that earlier
    runs keep their ids, resume, and share their rows with new runs of the same setting."""


@dataclass(frozen=True)
class HParam:
    """One declared hyperparameter."""

    name: str
    type: type
    default: Any
    range: Range | None = None
    choice: Choice | None = None
    added_later: bool = False

    @property
    def kind(self) -> str:
        return self.type.__name__

    def allowed(self) -> str:
        if self.choice is not None:
            return ", ".join(self.choice.values)
        if self.range is not None:
            return f"{self.kind} {self.range.describe()}"
        return self.kind

    def finite_range(self) -> tuple[float, float] | None:
        """``(low, high)``, the closed interval of values a float hyperparameter's declared range
        admits where both its ends are finite (an open end moved inside by one float step): what
        a search space derived from the declarations searches. None for other types, for a range
        open on one side, and for a rate bounded above only by :data:`MAX_RATE`, which caps what
        is refused (rates that diverge at once), not the values worth trying."""
        r = self.range
        if self.type is not float or r is None:
            return None
        low = r.ge if r.ge is not None else (math.nextafter(r.gt, math.inf) if r.gt is not None else None)
        high = r.le if r.le is not None else (math.nextafter(r.lt, -math.inf) if r.lt is not None else None)
        if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)) or low >= high:
            return None
        if (r.le if r.le is not None else r.lt) == MAX_RATE:
            return None
        return float(low), float(high)

    def check(self, value: Any, *, owner: str) -> Any:
        where = f"strategy '{owner}': hyperparameter '{self.name}'"
        t = self.type
        if t is bool:
            if not isinstance(value, bool):
                raise StrategyError(f"{where} must be true or false, got {value!r}")
            return value
        if t in (int, float):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise StrategyError(f"{where} must be {'an integer' if t is int else 'a number'}, got {value!r}")
            if t is int:
                if isinstance(value, float) and not (value.is_integer() and abs(value) <= MAX_EXACT_INT):
                    raise StrategyError(f"{where} must be an integer, got {value!r} (a float counts only as a "
                                        "whole number up to 2**53)")
                value = int(value)
            else:
                value = float(value)
                if not math.isfinite(value):
                    raise StrategyError(f"{where} must be a finite number, got {value!r}")
            if self.range is not None and not self.range.admits(value):
                raise StrategyError(f"{where} must be {self.range.describe()}, got {value!r}")
            return value
        if t is str:
            if not isinstance(value, str):
                raise StrategyError(f"{where} must be a string, got {value!r}")
            if self.choice is not None and value not in self.choice.values:
                raise StrategyError(f"{where} is {value!r}; allowed: {', '.join(self.choice.values)}"
                                    f"{closest(value, self.choice.values)}")
            return value
        return value


def takes_model_and_context(factory: Callable[..., Any], *, owner: str) -> None:
    """Refuse a factory that cannot be called as ``factory(model=..., context=..., **hparams)``."""
    target = factory.__init__ if inspect.isclass(factory) else factory
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        raise StrategyError(f"strategy '{owner}': its signature cannot be read") from None
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    missing = [n for n in RESERVED if n not in params or params[n].kind is params[n].POSITIONAL_ONLY]
    if missing:
        raise StrategyError(f"strategy '{owner}': its factory must take the keyword arguments model and context "
                            f"(missing: {', '.join(missing)})")


def declared(factory: Callable[..., Any], *, owner: str) -> tuple[HParam, ...]:
    """The hyperparameters of ``factory``: its keyword-only arguments other than model/context."""
    try:
        hints = typing.get_type_hints(factory, include_extras=True)
    except Exception as exc:  # noqa: BLE001 (any failure to read them is the plugin's)
        raise StrategyError(f"strategy '{owner}': cannot read its annotations ({type(exc).__name__}: {exc})") from None
    out = []
    target = factory.__init__ if inspect.isclass(factory) else factory
    for p in inspect.signature(target).parameters.values():
        if p.name in RESERVED or p.name == "self" or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        if p.kind is not p.KEYWORD_ONLY or p.default is p.empty:
            raise StrategyError(
                f"strategy '{owner}': argument '{p.name}' must be keyword-only with a default (a hyperparameter)"
            )
        hint = hints.get(p.name, type(p.default))
        rng = choice = None
        later = False
        if typing.get_origin(hint) is typing.Annotated:
            base, *extras = typing.get_args(hint)
            rng = next((e for e in extras if isinstance(e, Range)), None)
            choice = next((e for e in extras if isinstance(e, Choice)), None)
            later = any(isinstance(e, AddedLater) for e in extras)
            hint = base
        if hint not in (int, float, bool, str):
            raise StrategyError(f"strategy '{owner}': hyperparameter '{p.name}' must be int, float, bool or str")
        hp = HParam(p.name, hint, p.default, rng, choice, later)
        try:  # a default is a value like any other: of its type, in its range
            hp.check(p.default, owner=owner)
        except StrategyError as exc:
            raise StrategyError(f"{exc} (its default)") from None
        out.append(hp)
    return tuple(out)


def closest(name: str, allowed) -> str:
    """A ' (did you mean ...?)' hint, or ''."""
    match = difflib.get_close_matches(name, list(allowed), n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


def resolve(owner: str, params: tuple[HParam, ...], given: Mapping[str, Any]) -> dict[str, Any]:
    """Every hyperparameter of ``owner`` with its value: ``given`` checked, defaults filled in."""
    names = [p.name for p in params]
    for key in given:
        if key not in names:
            allowed = ", ".join(names) if names else "none"
            raise StrategyError(f"strategy '{owner}': unknown hyperparameter '{key}'{closest(key, names)}; allowed: {allowed}")
    return {p.name: p.check(given[p.name], owner=owner) if p.name in given else p.default for p in params}


def replay_within_memory(hp: Mapping[str, Any]) -> None:
    """Registry check for replay strategies: a replay batch cannot exceed the memory."""
    if hp["replay_batch"] > hp["mem_size"]:
        raise StrategyError(f"replay_batch={hp['replay_batch']} is larger than mem_size={hp['mem_size']}; "
                            "allowed: replay_batch <= mem_size")
