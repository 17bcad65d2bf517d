"""What the harness may ask of a strategy beyond Avalanche's ``train``/``eval``: a typed
contract, checked when the strategy is built (:func:`check`), so that the harness never probes
attributes.

A strategy may implement any of these protocols, each one wholly:

- :class:`Reports`: ``report() -> StrategyReport``, the work it did (inner SGD steps,
  meta-loss evaluations), the backend that ran it and extra metrics for the run record;
- :class:`Checkpoints`: ``checkpoint_state()`` and ``load_checkpoint_state(state)``, what decides
  the rest of a run besides the weights (:mod:`strategies.checkpoint`);
- :class:`WholeStream`: ``trains_on_whole_stream = True``, it trains once on the whole stream
  (``joint``), so there is no accuracy "just after task j";
- :class:`Prototypes`: ``embed(x)`` and ``prototypes()``, it predicts by the nearest class
  prototype in its embedding (CoPE), so the harness scores it that way instead of by logits.

A plain Avalanche strategy implements none and gets the defaults. A strategy that implements
part of a protocol, reports in the wrong type, or uses the names of the first version's
attribute probing (``inner_steps``, ``extra_metrics`` without ``report``) fails its build with
one line naming the protocol.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from strategies.errors import StrategyError


@dataclass(frozen=True)
class StrategyReport:
    """The work a strategy did so far and what it adds to the run record.

    ``inner_steps``: single-example (or single-batch) SGD steps of the inner loop;
    ``meta_losses``: meta-loss evaluations (La-MAML: ``L(B; theta_{i+1})``); ``meta_examples``:
    the examples those evaluations forwarded and backpropagated (the sum of their ``|B|``); ``backend``: the
    implementation that ran (``reference`` or a compiled backend's name); ``extra_metrics``:
    numbers recorded as ``metrics.strategy_<name>``. ``gradient_examples``: the examples whose
    loss gradient it backpropagated, for a backend that bypasses torch autograd (the harness
    counts them itself for everything that goes through the model's forward; None: let it)."""

    inner_steps: int | None = None
    meta_losses: int | None = None
    meta_examples: int | None = None
    gradient_examples: int | None = None
    backend: str | None = None
    extra_metrics: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class Reports(Protocol):
    def report(self) -> StrategyReport: ...


@runtime_checkable
class Checkpoints(Protocol):
    def checkpoint_state(self) -> dict: ...

    def load_checkpoint_state(self, state: dict) -> None: ...


@runtime_checkable
class WholeStream(Protocol):
    trains_on_whole_stream: bool


@runtime_checkable
class Prototypes(Protocol):
    def embed(self, x: Any) -> Any:
        """The representation of a batch of inputs, (N, D): what the prototypes live in."""

    def prototypes(self) -> Mapping[int, Any]:
        """Class -> prototype, a (D,) tensor, for the classes it can predict."""


PROTOCOLS = {"Reports": ("report",), "Checkpoints": ("checkpoint_state", "load_checkpoint_state"),
             "WholeStream": ("trains_on_whole_stream",), "Prototypes": ("embed", "prototypes")}
_FIRST_VERSION = ("inner_steps", "extra_metrics")  # what the harness used to probe for


def report_of(strategy: Any) -> StrategyReport:
    """The strategy's report, or an empty one for a strategy that does not report."""
    return strategy.report() if isinstance(strategy, Reports) else StrategyReport()


def trains_on_whole_stream(strategy: Any) -> bool:
    return isinstance(strategy, WholeStream) and strategy.trains_on_whole_stream is True


def check(strategy: Any, *, owner: str) -> None:
    """Refuse, with one line, a strategy that implements a protocol in part or in the wrong
    types, or that still offers the first version's probed attributes instead of ``report``."""
    for name, members in PROTOCOLS.items():
        present = [m for m in members if _has(strategy, m)]
        if present and len(present) < len(members):
            missing = [m for m in members if m not in present]
            raise StrategyError(f"strategy '{owner}': it has {', '.join(present)} but not {', '.join(missing)}; "
                                f"implement all of strategies.contract.{name} or none of it")
    if not isinstance(strategy, Reports):
        old = [m for m in _FIRST_VERSION if _has(strategy, m)]
        if old:
            raise StrategyError(f"strategy '{owner}': it offers {', '.join(old)}, which the harness no longer reads; "
                                "return them from report() -> strategies.StrategyReport (strategies.contract.Reports)")
    else:
        _check_report(strategy.report(), owner=owner)
    if isinstance(strategy, WholeStream) and not isinstance(strategy.trains_on_whole_stream, bool):
        raise StrategyError(f"strategy '{owner}': trains_on_whole_stream must be true or false, got "
                            f"{strategy.trains_on_whole_stream!r}")


def _check_report(report: Any, *, owner: str) -> None:
    if not isinstance(report, StrategyReport):
        raise StrategyError(f"strategy '{owner}': report() returned {type(report).__name__}; it must return a "
                            "strategies.StrategyReport")
    for name in ("inner_steps", "meta_losses", "meta_examples", "gradient_examples"):
        value = getattr(report, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise StrategyError(f"strategy '{owner}': report().{name} must be an integer >= 0 or None, got {value!r}")
    if report.backend is not None and (not isinstance(report.backend, str) or not report.backend.isprintable()):
        raise StrategyError(f"strategy '{owner}': report().backend must be a printable string or None, "
                            f"got {report.backend!r}")
    if not isinstance(report.extra_metrics, Mapping) or not all(isinstance(k, str) for k in report.extra_metrics):
        raise StrategyError(f"strategy '{owner}': report().extra_metrics must map names (strings) to numbers")


def _has(obj: Any, name: str) -> bool:
    """Whether ``obj`` has the member ``name`` (an attribute, a property or a method)."""
    try:
        getattr(obj, name)
    except AttributeError:
        return False
    except Exception:  # noqa: BLE001 (a property that raises: present, but broken)
        return True
    return True
