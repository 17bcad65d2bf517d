"""Two implementations of one strategy, compared one minibatch at a time from the same state.

Comparing two float32 implementations after a whole stream decides nothing: where a ReLU input
lies within rounding of zero, the two round it to opposite sides, and from then on they are
different runs (issue 24: a pre-activation 1.6e-7 from zero on one CPU). So the reference
strategy trains through the stream in Avalanche's loop while a plugin records, for every
minibatch, the state before it (the weights and ``checkpoint_state()``: rates, momentum, lagged
weights, memory, generators, counters), the minibatch, and the state after it. The candidate
then trains through the same stream; before each minibatch its plugin loads the recorded state
and minibatch into it, and after it compares the candidate's state with the reference's:
floating tensors within ``atol + rtol * |reference|``, everything else (memory contents, the
count of examples seen, generator states, counters) exactly.

A float mismatch is excused only when it is shown to be a rounding tie: the candidate, run
again on the same minibatch from the recorded state with every learned float (weights, rates,
momentum, lagged weights; never the memory's examples) scaled by ``1 + 2**-20 * u``,
u uniform in [-1, 1], lands within tolerance of the reference in one of ``attempts`` tries.
Near a tie such a nudge moves the tied pre-activation across zero (to the side the candidate
chose) about half the time; a bug moves the update the same way from every nearby state and is
never excused. Excused minibatches are listed in the report, so a test can bound them.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

PERTURBATION = 2.0 ** -20  # relative; a few float32 ulps of the summations, far below any bug
# One minibatch from the same state: the compiled backends and the reference paths of the
# strategy tests agree to 4.2e-7 at most (weights, rates, momentum, lagged weights) under seven
# kernel settings of torch, MKL and numba on an Intel Xeon (AVX-512); 1e-5 leaves a factor 24
# for other CPUs, and the smallest deliberate bug of tests/mutations.py moves far more.
ATOL = 1e-5
# Ties are rare (about one in a hundred minibatches of these streams): a comparison that
# excuses more than a quarter of its minibatches compares nothing and fails.
MAX_EXCUSED_FRACTION = 0.25


def _snapshot(strategy) -> dict:
    return {"weights": [p.detach().clone() for p in strategy.model.parameters()],
            "state": copy.deepcopy(strategy.checkpoint_state())}


def _load(strategy, snap: dict) -> None:
    with torch.no_grad():
        for p, w in zip(strategy.model.parameters(), snap["weights"]):
            p.copy_(w)
    strategy.load_checkpoint_state(copy.deepcopy(snap["state"]))


def _comparable(obj: Any) -> Any:
    """``obj`` with each reservoir memory (``ReservoirMemory.checkpoint_state``) cut to its filled
    slots: the rest of its buffers is uninitialised."""
    if isinstance(obj, dict):
        if {"size", "seen", "x", "y", "t"} <= obj.keys():
            n = min(int(obj["seen"]), int(obj["size"]))
            return {**obj, **{k: None if obj[k] is None else obj[k][:n] for k in ("x", "y", "t")}}
        return {k: _comparable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_comparable(v) for v in obj)
    return obj


def _perturbed(snap: dict, generator: torch.Generator) -> dict:
    """``snap`` with every floating tensor outside the memory scaled by 1 + PERTURBATION * u."""

    def walk(obj, in_memory=False):
        if isinstance(obj, torch.Tensor):
            if in_memory or not obj.is_floating_point():
                return obj.clone()
            u = torch.rand(obj.shape, generator=generator, dtype=torch.float64) * 2 - 1
            return (obj.double() * (1 + PERTURBATION * u)).to(obj.dtype)
        if isinstance(obj, dict):
            return {k: walk(v, in_memory or k == "memory") for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return type(obj)(walk(v, in_memory) for v in obj)
        return copy.deepcopy(obj)

    return walk(snap)


def differences(got: Any, want: Any, *, atol: float, rtol: float, where: str = "") -> tuple[float, list[str]]:
    """(the largest absolute difference of a floating tensor; the places where ``got`` and
    ``want`` differ discretely or beyond ``atol + rtol * |want|``)."""
    if isinstance(want, torch.Tensor):
        if not isinstance(got, torch.Tensor) or got.shape != want.shape or got.dtype != want.dtype:
            return 0.0, [f"{where}: {type(got).__name__} {tuple(getattr(got, 'shape', ()))} vs {tuple(want.shape)}"]
        if not want.is_floating_point():
            return 0.0, ([] if torch.equal(got, want) else [f"{where}: differs"])
        if not want.numel():
            return 0.0, []
        diff = (got - want).abs()
        beyond = bool((diff > atol + rtol * want.abs()).any())
        return float(diff.max()), ([f"{where}: max |diff| {float(diff.max()):.3g}"] if beyond else [])
    if isinstance(want, dict):
        if not isinstance(got, dict) or got.keys() != want.keys():
            return 0.0, [f"{where}: keys differ"]
        parts = [differences(got[k], want[k], atol=atol, rtol=rtol, where=f"{where}.{k}") for k in want]
    elif isinstance(want, (list, tuple)):
        if not isinstance(got, (list, tuple)) or len(got) != len(want):
            return 0.0, [f"{where}: lengths differ"]
        parts = [differences(a, b, atol=atol, rtol=rtol, where=f"{where}[{i}]") for i, (a, b) in enumerate(zip(got, want))]
    else:
        return 0.0, ([] if got == want else [f"{where}: {got!r} vs {want!r}"])
    return max((p[0] for p in parts), default=0.0), [w for p in parts for w in p[1]]


@dataclass
class LockstepReport:
    """What the comparison saw: minibatches compared, the excused ties (index, what differed),
    the largest float difference of a minibatch that agreed, and the backends each side ran."""

    minibatches: int = 0
    excused: list[tuple[int, list[str]]] = field(default_factory=list)
    max_abs_difference: float = 0.0
    reference_backends: set = field(default_factory=set)
    candidate_backends: set = field(default_factory=set)

    def check(self, *, minibatches: int, reference: str = "reference", candidate: str = "numba") -> None:
        """The comparison covered ``minibatches`` minibatches, excused at most a quarter of them
        as ties, and each side ran the backend it should."""
        assert self.minibatches == minibatches, self
        assert len(self.excused) <= MAX_EXCUSED_FRACTION * self.minibatches, self
        assert (self.reference_backends, self.candidate_backends) == ({reference}, {candidate}), self


def _plugin_base():
    from avalanche.core import SupervisedPlugin

    return SupervisedPlugin


def lockstep(make_reference: Callable[[Any], Any], make_candidate: Callable[[Any], Any], experiences, *,
             atol: float, rtol: float = 0.0, attempts: int = 16, seed: int = 1) -> LockstepReport:
    """Train ``make_reference(plugin)`` through ``experiences``, then ``make_candidate(plugin)``
    minibatch by minibatch from the reference's states (module docstring). Each factory builds
    a strategy with ``plugin`` among its plugins. Raises AssertionError at the first minibatch
    where the candidate differs from the reference and no nudged rerun excuses it."""
    report = LockstepReport()
    recorded: list[tuple[dict, list, dict]] = []

    class Record(_plugin_base()):
        def before_training_iteration(self, strategy, **kwargs):
            self.before = _snapshot(strategy)
            self.batch = [v.clone() for v in strategy.mbatch]

        def after_training_iteration(self, strategy, **kwargs):
            report.reference_backends.add(strategy.report().backend)
            recorded.append((self.before, self.batch, _snapshot(strategy)))

    class Replay(_plugin_base()):
        index = -1

        def before_training_iteration(self, strategy, **kwargs):
            self.index += 1
            assert self.index < len(recorded), "the candidate saw more minibatches than the reference"
            before, batch, _ = recorded[self.index]
            _load(strategy, before)
            strategy.mbatch = [v.clone() for v in batch]

        def after_training_iteration(self, strategy, **kwargs):
            report.candidate_backends.add(strategy.report().backend)
            before, batch, after = recorded[self.index]
            got, want = _comparable(_snapshot(strategy)), _comparable(after)
            diff, where = differences(got, want, atol=atol, rtol=rtol)
            report.minibatches += 1
            if not where:
                report.max_abs_difference = max(report.max_abs_difference, diff)
                return
            g = torch.Generator().manual_seed(self.index)
            for _ in range(attempts):
                _load(strategy, _perturbed(before, g))
                strategy.mbatch = [v.clone() for v in batch]
                strategy._inner_updates()  # Avalanche's meta-learning step of this minibatch, again
                strategy._outer_update()
                if not differences(_comparable(_snapshot(strategy)), want, atol=atol, rtol=rtol)[1]:
                    report.excused.append((self.index, where))
                    return
            raise AssertionError(f"minibatch {self.index}: the candidate differs from the reference "
                                 f"(not a rounding tie: no nudged rerun agrees): {'; '.join(where[:6])}")

    for make, plugin in ((make_reference, Record()), (make_candidate, Replay())):
        torch.manual_seed(seed)  # the data loader's shuffles
        strategy = make(plugin)
        for exp in experiences:
            strategy.train(exp)
    assert report.minibatches == len(recorded), "the candidate saw fewer minibatches than the reference"
    return report


def against(make: Callable[[Any], Any], experiences, expected: Callable[[list, list], list], *, atol: float,
            seed: int = 1) -> int:
    """Train ``make(plugin)`` through ``experiences``; after every minibatch its weights must
    equal ``expected(weights_before, minibatch)`` within ``atol``: an algorithm checked one
    minibatch at a time, from its own state, against the test's own computation. Returns the
    number of minibatches compared."""
    compared = []

    class Check(_plugin_base()):
        def before_training_iteration(self, strategy, **kwargs):
            self.before = [p.detach().clone() for p in strategy.model.parameters()]
            self.batch = [v.clone() for v in strategy.mbatch]

        def after_training_iteration(self, strategy, **kwargs):
            want = expected(self.before, self.batch)
            diff, where = differences([p.detach() for p in strategy.model.parameters()], want, atol=atol, rtol=0.0)
            assert not where, f"minibatch {len(compared)}: {'; '.join(where)}"
            compared.append(diff)

    torch.manual_seed(seed)
    strategy = make(Check())
    for exp in experiences:
        strategy.train(exp)
    return len(compared)


def factory(name: str, model: torch.nn.Module, *, context: dict, fast_path: bool = True, built: list | None = None,
            **hp) -> Callable:
    """A factory for :func:`lockstep`: strategy ``name`` with ``hp`` on a copy of ``model``, the
    compiled backend on or off (``fast_path``); ``built`` collects what it built."""
    import strategies

    def build(plugin):
        ctx = strategies.StrategyContext(**context, plugins=(plugin,))
        s = strategies.build(name, model=copy.deepcopy(model), context=ctx, **hp)
        s.fast_path = fast_path
        if built is not None:
            built.append(s)
        return s

    return build


def backends(name: str, model: torch.nn.Module, *, context: dict, **hp) -> tuple[Callable, Callable, list]:
    """Factories of strategy ``name`` on copies of ``model`` for :func:`lockstep`: the reference
    path (``fast_path`` off) and the compiled backend (on); the list collects what they built."""
    built: list = []
    return (factory(name, model, context=context, fast_path=False, built=built, **hp),
            factory(name, model, context=context, fast_path=True, built=built, **hp), built)


class ReluMargin:
    """The smallest |input| of every ``nn.ReLU`` of ``model`` while the block runs (forward
    hooks; functional_call runs them too, compiled kernels do not). A test that compares two
    float implementations on fixed data holds on every machine when this margin is far above
    the two implementations' difference in those inputs: no rounding can move a unit across
    zero."""

    def __init__(self, model: torch.nn.Module):
        self.model, self.min = model, float("inf")

    def _hook(self, module, inputs, output):
        self.min = min(self.min, float(inputs[0].detach().abs().min()))

    def __enter__(self) -> "ReluMargin":
        self._handles = [m.register_forward_hook(self._hook) for m in self.model.modules()
                         if isinstance(m, torch.nn.ReLU)]
        assert self._handles, "the model has no nn.ReLU"
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()

