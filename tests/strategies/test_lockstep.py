"""The lockstep comparison (tests/strategies/lockstep.py) excuses a rounding tie and nothing else.

The candidates here are MER's reference path with a change of our own, so the test knows what
differs: a nudge of 2e-7 to one hidden bias before each minibatch stands for a kernel that
rounds differently; on the first minibatch that bias puts the unit's pre-activation within
float32 rounding of zero (a tie: the nudge sends it to the other side of the ReLU), on the
second it does not. A changed learning rate stands for a bug.
"""

from __future__ import annotations

import pytest
import torch

import strategies
from benchmark.models import MLP
from strategies.mer import MER
from tests.strategies.lockstep import ATOL, lockstep

N_IN, HIDDEN, N_OUT, UNIT, NUDGE = 6, (5,), 3, 2, 2e-7


def _experiences():
    """Two experiences of eight examples, one minibatch each: all inputs of the first are one x0."""
    from avalanche.benchmarks import tensors_benchmark

    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(N_IN, generator=g) + 0.5
    first, second = x0.repeat(8, 1), torch.rand(8, N_IN, generator=g) + 0.5
    y = torch.randint(0, N_OUT, (8,), generator=g)
    bench = tensors_benchmark(train_tensors=[[first, y], [second, y]], test_tensors=[[first, y]],
                              task_labels=[0, 0])
    return list(bench.train_stream), x0


def _tied_model(x0):
    """An MLP whose hidden unit UNIT has a pre-activation on x0 within float32 rounding of zero,
    at or below it (inactive), so that the nudge makes it active."""
    torch.manual_seed(0)
    model = MLP(input_size=N_IN, n_classes=N_OUT, hidden=HIDDEN)
    layer = model.net[1]
    with torch.no_grad():
        layer.bias[UNIT] = -float(layer.weight[UNIT].double() @ x0.double())
        while float(layer(x0[None])[0, UNIT]) > 0:
            layer.bias[UNIT] = torch.nextafter(layer.bias[UNIT], torch.tensor(-1.0))
        z = float(layer(x0[None])[0, UNIT])
    assert -NUDGE / 2 < z <= 0
    return model


def _mer(model, plugin, *, lr=0.1, nudge=0.0):
    class Nudged(MER):
        def _inner_updates(self, **kwargs):
            with torch.no_grad():
                self.model.net[1].bias[UNIT] += nudge
            super()._inner_updates(**kwargs)

    ctx = strategies.StrategyContext(batch_size=8, n_classes=N_OUT, input_shape=(N_IN,), plugins=(plugin,))
    return Nudged(model=model, lr=lr, beta=1.0, gamma=1.0, mem_size=20, replay_batch=0, batches_per_example=1,
                  fast_path=False, **ctx.template_kwargs())


def test_a_tie_is_excused_and_only_the_tied_minibatch():
    experiences, x0 = _experiences()
    model = _tied_model(x0)
    reference = lambda plugin: _mer(_copy(model), plugin)  # noqa: E731
    candidate = lambda plugin: _mer(_copy(model), plugin, nudge=NUDGE)  # noqa: E731
    report = lockstep(reference, candidate, experiences, atol=ATOL)
    assert report.minibatches == 2 and [i for i, _ in report.excused] == [0], report
    assert report.max_abs_difference < ATOL  # the untied minibatch agreed
    # the tie made a difference far beyond the tolerance: without the nudged reruns it fails
    with pytest.raises(AssertionError, match="minibatch 0: the candidate differs"):
        lockstep(reference, candidate, experiences, atol=ATOL, attempts=0)


def test_a_bug_is_not_excused():
    experiences, x0 = _experiences()
    model = _tied_model(x0)
    with pytest.raises(AssertionError, match="minibatch 0: the candidate differs.*not a rounding tie"):
        lockstep(lambda p: _mer(_copy(model), p), lambda p: _mer(_copy(model), p, lr=0.1001), experiences,
                 atol=ATOL)


def test_discrete_state_must_agree_exactly():
    """A memory that fills differently is a difference, whatever the floats say."""
    experiences, x0 = _experiences()
    model = _tied_model(x0)

    def dropping(plugin):
        s = _mer(_copy(model), plugin)
        s.memory.add = lambda *a, **k: None  # a strategy that forgets to remember
        return s

    with pytest.raises(AssertionError, match="memory"):
        lockstep(lambda p: _mer(_copy(model), p), dropping, experiences, atol=1.0)


def _copy(model):
    import copy

    return copy.deepcopy(model)
