"""Declared stream parameters: type, default, allowed range, and their validation.

Every stream declares its parameters as a tuple of :class:`Param`; :func:`resolve` checks
what a user passed (unknown names, wrong types, out-of-range values) and fills in defaults,
so that ``Stream.params`` records every resolved value.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from scenarios.errors import ScenarioError

KINDS = ("int", "float", "bool", "str", "int-list", "float-list")


@dataclass(frozen=True)
class Param:
    """One keyword parameter of a stream.

    ``kind`` is one of :data:`KINDS`; ``optional`` allows ``None``; ``minimum`` bounds
    numbers (inclusive); ``choices`` bounds strings (for a list kind: the named alternatives
    to an explicit list, e.g. ``angles: progressive``).
    """

    name: str
    kind: str
    default: Any
    help: str
    minimum: float | None = None
    choices: tuple[str, ...] | None = None
    optional: bool = False
    bounds: Any = None  # a range declared by a plugin stream (scenarios.declared.Bounds): admits(v), describe()

    def check(self, value: Any, *, owner: str) -> Any:
        """Return ``value`` converted to this parameter's kind, or raise ScenarioError."""
        if value is None:
            if self.optional:
                return None
            raise ScenarioError(f"{owner}: parameter '{self.name}' may not be null; expected {self.kind}")
        where = f"{owner}: parameter '{self.name}'"
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise ScenarioError(f"{where} must be true or false, got {value!r}")
            return value
        if self.kind == "str":
            if not isinstance(value, str):
                raise ScenarioError(f"{where} must be a string, got {value!r}")
            if self.choices is not None and value not in self.choices:
                raise ScenarioError(f"{where} is {value!r}; allowed: {', '.join(self.choices)}"
                                    f"{closest(value, self.choices)}")
            return value
        if self.kind in ("int", "float"):
            return self._number(value, self.kind, where)
        if self.kind in ("int-list", "float-list"):
            if isinstance(value, str) and self.choices is not None:
                if value not in self.choices:
                    raise ScenarioError(f"{where} is {value!r}; allowed: {', '.join(self.choices)} or a list of "
                                        f"{self.kind[:-5]} values{closest(value, self.choices)}")
                return value
            if isinstance(value, (str, bytes)) or not isinstance(value, Iterable) or isinstance(value, Mapping):
                alternatives = f"{', '.join(self.choices)} or " if self.choices else ""
                raise ScenarioError(f"{where} must be {alternatives}a list of {self.kind[:-5]} values, got {value!r}")
            return [self._number(v, self.kind[:-5], where) for v in value]
        raise AssertionError(f"undeclared kind {self.kind!r}")

    def _number(self, value: Any, kind: str, where: str) -> int | float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ScenarioError(f"{where} must be {'an integer' if kind == 'int' else 'a number'}, got {value!r}")
        if kind == "int":
            if isinstance(value, float):
                if not (value.is_integer() and abs(value) <= 2**53):
                    raise ScenarioError(f"{where} must be an integer, got {value!r} (a float counts only as a "
                                        "whole number up to 2**53)")
                value = int(value)
        else:
            value = float(value)
            if not math.isfinite(value):
                raise ScenarioError(f"{where} must be a finite number, got {value!r}")
        if self.minimum is not None and value < self.minimum:
            raise ScenarioError(f"{where} must be >= {self.minimum:g}, got {value!r}")
        if self.bounds is not None and not self.bounds.admits(value):
            raise ScenarioError(f"{where} must be {self.bounds.describe()}, got {value!r}")
        return value


def closest(name: str, allowed: Iterable[str]) -> str:
    """A ' (did you mean ...?)' hint for a misspelt name, or ''."""
    match = difflib.get_close_matches(name, list(allowed), n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


def resolve(owner: str, declared: tuple[Param, ...], given: Mapping[str, Any]) -> dict[str, Any]:
    """Check ``given`` against ``declared`` and return every parameter with its value."""
    names = [p.name for p in declared]
    for key in given:
        if key not in names:
            raise ScenarioError(
                f"{owner}: unknown parameter '{key}'{closest(key, names)}; allowed: {', '.join(names)}"
            )
    return {p.name: p.check(given[p.name], owner=owner) if p.name in given else p.default for p in declared}
