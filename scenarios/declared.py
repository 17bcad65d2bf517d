"""Stream parameters declared in a builder's signature, the way strategies declare theirs.

A stream builder takes ``seed`` and keyword-only parameters, each with a type annotation and a
default; ``typing.Annotated`` adds a range or choices (``strategies.Range``, ``strategies.Choice``
or any object with the same shape: :class:`Bounds`, :class:`Values`)::

    def my_stream(*, seed: int, n_tasks: Annotated[int, Range(ge=1)] = 5,
                  root: str | None = None) -> CLScenario: ...

:func:`declared` reads them back as :class:`~scenarios.params.Param`, so that a plugin stream is
validated, listed and recorded by the same code as a built-in one.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from scenarios.errors import ScenarioError
from scenarios.params import Param

RESERVED = ("seed",)
_KINDS = {int: "int", float: "float", bool: "bool", str: "str"}
_LIST_KINDS = {int: "int-list", float: "float-list"}


@runtime_checkable
class Bounds(Protocol):
    """A numeric range (``strategies.Range`` is one)."""

    def admits(self, v: float) -> bool: ...

    def describe(self) -> str: ...


@runtime_checkable
class Values(Protocol):
    """The allowed values of a string parameter (``strategies.Choice`` is one)."""

    values: tuple[str, ...]


def _kind(hint: Any, *, owner: str, name: str) -> tuple[str, bool]:
    """(Param kind, optional) of an annotation: int, float, bool, str, list[int], list[float],
    each possibly ``| None``."""
    optional = False
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(args) < len(typing.get_args(hint))
        if len(args) == 1:
            hint = args[0]
    if hint in _KINDS:
        return _KINDS[hint], optional
    if typing.get_origin(hint) is list and typing.get_args(hint) and typing.get_args(hint)[0] in _LIST_KINDS:
        return _LIST_KINDS[typing.get_args(hint)[0]], optional
    raise ScenarioError(f"scenario '{owner}': parameter '{name}' must be annotated int, float, bool, str, "
                        f"list[int] or list[float] (optionally '| None'), got {getattr(hint, '__name__', hint)}")


def declared(builder: Callable[..., Any], *, owner: str) -> tuple[Param, ...]:
    """The parameters of ``builder``: its keyword-only arguments other than ``seed``."""
    try:
        hints = typing.get_type_hints(builder, include_extras=True)
        signature = inspect.signature(builder)
    except Exception as exc:  # noqa: BLE001 (any failure to read them is the plugin's)
        raise ScenarioError(f"scenario '{owner}': cannot read its signature ({type(exc).__name__}: {exc})") from None
    out = []
    for p in signature.parameters.values():
        if p.name in RESERVED or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        if p.kind is not p.KEYWORD_ONLY or p.default is p.empty:
            raise ScenarioError(f"scenario '{owner}': argument '{p.name}' must be keyword-only with a default "
                                "(a stream parameter)")
        hint = hints.get(p.name, type(p.default))
        bounds = values = None
        if typing.get_origin(hint) is typing.Annotated:
            hint, *extras = typing.get_args(hint)
            bounds = next((e for e in extras if isinstance(e, Bounds)), None)
            values = next((e for e in extras if isinstance(e, Values)), None)
        kind, optional = _kind(hint, owner=owner, name=p.name)
        param = Param(p.name, kind, p.default, "", choices=tuple(values.values) if values else None,
                      optional=optional or p.default is None, bounds=bounds)
        try:  # a default is a value like any other: of its kind, in its range
            param.check(p.default, owner=owner)
        except ScenarioError as exc:
            raise ScenarioError(f"{exc} (its default)") from None
        out.append(param)
    return tuple(out)


def takes_seed(builder: Callable[..., Any]) -> bool:
    """Whether ``builder`` accepts a ``seed`` keyword."""
    params = inspect.signature(builder).parameters
    return "seed" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())
