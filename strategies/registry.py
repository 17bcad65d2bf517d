"""The strategy registry: strategies by name, their hyperparameters, and plugin discovery.

- ``@register("name", aliases=(...))`` on a factory function or a strategy class taking
  ``model`` and ``context`` keyword arguments and keyword-only hyperparameters.
- Names are normalised (``La_MAML`` == ``la-maml``); a duplicate name is an error.
- Plugins come from the entry-point group ``clbench.strategies`` (each entry point names a
  module that registers its strategies on import) or from a single file
  (:meth:`Registry.load_file`). A plugin that fails to import is remembered with its error and
  raises only when one of its strategies is asked for; others go on working.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from strategies import contract
from strategies.errors import StrategyError
from strategies.hparams import HParam, closest, declared, resolve, takes_model_and_context

ENTRY_POINT_GROUP = "clbench.strategies"


def normalise(name: str) -> str:
    """Lower case, with '_' and spaces read as '-'."""
    if not isinstance(name, str) or not name.strip():
        raise StrategyError(f"a strategy name must be a non-empty string, got {name!r}")
    return name.strip().lower().replace("_", "-").replace(" ", "-")


@dataclass(frozen=True)
class StrategyDef:
    """A registered strategy."""

    name: str
    factory: Callable[..., Any]
    hparams: tuple[HParam, ...]
    description: str
    origin: str
    check: Callable[[dict[str, Any]], None] | None = None
    portable: bool = True  # another process can register it too (built in, plugin file, entry point)

    def defaults(self) -> dict[str, Any]:
        return {h.name: h.default for h in self.hparams}


class Registry:
    """Strategies by normalised name. The package keeps one, :data:`strategies.REGISTRY`;
    tests make their own."""

    def __init__(self, *, builtins: Callable[[Registry], None] | None = None) -> None:
        self._builtins = builtins
        self._defs: dict[str, StrategyDef] = {}
        self._aliases: dict[str, str] = {}
        self._broken: dict[str, str] = {}  # plugin name -> one-line error
        self._loaded_entry_points = False
        self._files: dict[Path, list[str]] = {}  # plugin files loaded, and what each added
        self._loading: Path | None = None  # the plugin file being run: what its registrations come from
        self._loading_builtins = False

    # -- isolation (tests, notebooks) ---------------------------------------------------------
    _STATE = ("_defs", "_aliases", "_broken", "_files", "_loaded_entry_points")

    def snapshot(self) -> dict[str, Any]:
        """What this registry holds now (strategies, aliases, broken plugins, plugin files,
        whether entry points were loaded), for :meth:`restore`."""
        return {k: (dict(v) if isinstance(v, dict) else v) for k, v in ((k, getattr(self, k)) for k in self._STATE)}

    def restore(self, state: dict[str, Any] | None = None) -> None:
        """Put back a :meth:`snapshot` (None: the state of a new registry, before anything
        was registered)."""
        if state is None:
            state = type(self)(builtins=self._builtins).snapshot()
        for k in self._STATE:
            value = state[k]
            setattr(self, k, dict(value) if isinstance(value, dict) else value)

    # -- registration -------------------------------------------------------------------
    def register(self, name: str, *, aliases: tuple[str, ...] = (), description: str | None = None,
                 check: Callable[[dict[str, Any]], None] | None = None, origin: str = "clbench"):
        """Decorator: register a factory or strategy class under ``name`` (and ``aliases``).

        ``check`` receives the resolved hyperparameters and raises StrategyError where they
        disagree with each other (say, a replay batch larger than the memory)."""
        for n in (name, *aliases):
            if not isinstance(n, str) or not n.strip() or not n.isprintable():
                raise StrategyError(f"strategy name {n!r} must be a non-empty string of printable characters "
                                    "(no newline, tab or control character)")
        key = normalise(name)
        portable = True
        if origin == "clbench" and self._loading is not None:
            origin = f"plugin {self._loading}"

        def decorate(factory: Callable[..., Any]) -> Callable[..., Any]:
            nonlocal origin, portable
            if origin == "clbench" and self._loading is None and not self._loading_builtins:
                # registered by code running in this process (a notebook, a script, a test)
                origin, portable = f"code in module {getattr(factory, '__module__', '?')}", False
            for k in (key, *map(normalise, aliases)):
                if k in self._defs or k in self._aliases:
                    raise StrategyError(f"strategy name '{k}' is already registered (by {self._origin_of(k)})")
            if not callable(factory):
                raise StrategyError(f"strategy '{key}': what is registered must be a factory function or a strategy "
                                    f"class, got {type(factory).__name__}")
            takes_model_and_context(factory, owner=key)
            paragraph = (factory.__doc__ or "").strip().split("\n\n")[0]
            doc = description or " ".join(line.strip() for line in paragraph.splitlines())
            self._defs[key] = StrategyDef(key, factory, declared(factory, owner=key), doc, origin, check, portable)
            for a in aliases:
                self._aliases[normalise(a)] = key
            return factory

        return decorate

    def _origin_of(self, key: str) -> str:
        d = self._defs.get(self._aliases.get(key, key))
        return d.origin if d else "?"

    # -- look-up ------------------------------------------------------------------------
    def names(self) -> list[str]:
        self.load_entry_points()
        return sorted(self._defs)

    def get(self, name: str) -> StrategyDef:
        """The strategy ``name``, or a StrategyError listing the names there are."""
        self.load_entry_points()
        key = normalise(name)
        key = self._aliases.get(key, key)
        if key in self._defs:
            return self._defs[key]
        if self._broken:
            broken = "; ".join(f"{p}: {e}" for p, e in self._broken.items())
            hint = f" (plugins that failed to load: {broken})"
        else:
            hint = ""
        raise StrategyError(
            f"unknown strategy '{name}'{closest(key, [*self._defs, *self._aliases])}; allowed: {', '.join(sorted(self._defs))}{hint}"
        )

    def plugin_files(self) -> list[Path]:
        """The plugin files loaded so far, in the order they were loaded."""
        return list(self._files)

    def available(self) -> dict[str, dict[str, Any]]:
        """Every strategy name with its hyperparameters and their defaults."""
        return {n: self._defs[n].defaults() for n in self.names()}

    def resolve(self, name: str, given: Mapping[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        """(canonical name, every hyperparameter with its checked value)."""
        d = self.get(name)
        values = resolve(d.name, d.hparams, dict(given or {}))
        if d.check is not None:
            try:
                d.check(values)
            except StrategyError as exc:  # name the strategy, as every other message does
                text = str(exc)
                raise StrategyError(text if text.startswith("strategy '") else f"strategy '{d.name}': {text}") from None
        return d.name, values

    def recorded(self, name: str, values: Mapping[str, Any]) -> dict[str, Any]:
        """The hyperparameters that identify a run of ``name``: ``values`` without those marked
        :class:`~strategies.hparams.AddedLater` that are at their default (all of ``values`` for
        a name not registered in this process, which has nothing marked)."""
        try:
            d = self.get(name)
        except StrategyError:
            return dict(values)
        later = {p.name: p.default for p in d.hparams if p.added_later}
        return {k: v for k, v in values.items() if not (k in later and v == later[k])}

    def build(self, name: str, *, model: Any, context: Any, **hparams: Any) -> Any:
        """The Avalanche strategy ``name`` for ``model``, with checked hyperparameters."""
        key, values = self.resolve(name, hparams)
        d = self._defs[key]
        strategy = d.factory(model=model, context=context, **values)
        from avalanche.training.templates import BaseTemplate

        if not isinstance(strategy, BaseTemplate):
            raise StrategyError(f"strategy '{key}' ({d.origin}): its factory returned {type(strategy).__name__}, "
                                "not an Avalanche strategy (a BaseTemplate such as Naive)")
        try:
            contract.check(strategy, owner=key)
        except StrategyError as exc:
            raise StrategyError(f"{exc} ({d.origin})") from None
        return strategy

    # -- plugins ------------------------------------------------------------------------
    def load_entry_points(self) -> None:
        """Register the built-in strategies, then every entry point of the group
        ``clbench.strategies``, once. An entry point names either a module that registers its
        strategies on import, or a factory/class registered under the entry point's name."""
        if self._loaded_entry_points:
            return
        self._loaded_entry_points = True
        if self._builtins is not None:
            self._loading_builtins = True
            try:
                self._builtins(self)
            finally:
                self._loading_builtins = False
        from importlib.metadata import entry_points

        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:
                obj = ep.load()
                if not isinstance(obj, type(sys)):
                    self.register(ep.name, origin=f"entry point {ep.value}")(obj)
            except StrategyError as exc:
                self._broken[ep.name] = str(exc)
            except Exception as exc:  # noqa: BLE001 (a broken plugin is remembered, not fatal)
                self._broken[ep.name] = _one_line(exc)

    def load_file(self, path: str | Path) -> list[str]:
        """Run the plugin file ``path`` (it registers with ``@strategies.register``) and return
        the names it added. A failing file raises StrategyError naming the file. Loading the
        same file again does nothing and returns the same names."""
        if "\0" in str(path):
            raise StrategyError(f"plugin file {str(path)!r} contains a NUL byte; give the path of a .py file")
        p = Path(path)
        if p.is_dir():
            raise StrategyError(f"plugin {p} is a folder; give a Python file ending in .py")
        if not p.is_file():
            raise StrategyError(f"plugin file not found: {p}")
        if p.suffix != ".py":
            raise StrategyError(f"plugin file {p} must be a Python file ending in .py")
        if p.resolve() in self._files:
            return self._files[p.resolve()]
        self.load_entry_points()
        before = set(self._defs)
        module_name = f"clbench_plugin_{abs(hash(str(p.resolve())))}"
        spec = importlib.util.spec_from_file_location(module_name, p)
        if spec is None or spec.loader is None:
            raise StrategyError(f"plugin file {p} cannot be imported")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        self._loading = p
        try:
            spec.loader.exec_module(module)
        except StrategyError as exc:
            sys.modules.pop(module_name, None)
            raise StrategyError(f"plugin {p}: {exc}") from None
        except SyntaxError as exc:  # the innermost frame is importlib's, so name the file's line
            sys.modules.pop(module_name, None)
            raise StrategyError(f"plugin {p} failed to load: SyntaxError: {exc.msg} (line {exc.lineno}); "
                                "it must be valid Python") from None
        except SystemExit as exc:  # a plugin may not end the program
            sys.modules.pop(module_name, None)
            raise StrategyError(f"plugin {p} failed to load: it called sys.exit({exc.code!r}); "
                                "a plugin must only register strategies") from None
        except Exception as exc:  # noqa: BLE001 (whatever a plugin file raises, name the file)
            sys.modules.pop(module_name, None)
            raise StrategyError(f"plugin {p} failed to load: {_one_line(exc)}") from None
        except BaseException as exc:  # KeyboardInterrupt, GeneratorExit or a class of its own: still the file's
            sys.modules.pop(module_name, None)
            raise StrategyError(f"plugin {p} failed to load: it raised {_one_line(exc)}; a plugin must only "
                                "register strategies") from None
        finally:
            self._loading = None
        added = sorted(set(self._defs) - before)
        self._files[p.resolve()] = added
        return added


def _one_line(exc: BaseException) -> str:
    """``Type: message (file:line)`` of the innermost frame, on one line."""
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" ({Path(tb[-1].filename).name}:{tb[-1].lineno})" if tb else ""
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}{': ' + msg if msg else ''}{where}"
