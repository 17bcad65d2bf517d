"""ER with one SGD step per incoming example (MER's Algorithm 4, eralg4.py), checked against the
update computed here from its definition, and against the minibatch ER it replaces."""

import copy

import numpy as np
import pytest
import torch
from avalanche.core import SupervisedPlugin

import scenarios
import strategies
from scenarios.stream import TaskData, to_avalanche
from tests.strategies.lockstep import ReluMargin


def _tiny_stream(n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 2, 3, generator=g)
    y = torch.randint(0, 3, (n,), generator=g)
    return to_avalanche([TaskData(x, y, x, y, 0, (0, 1, 2))])


class _Record(SupervisedPlugin):
    """The minibatches in the order the strategy receives them."""

    def __init__(self):
        super().__init__()
        self.batches = []

    def before_training_iteration(self, strategy, **kwargs):
        self.batches.append((strategy.mb_x.clone(), strategy.mb_y.clone()))


def _model():
    torch.manual_seed(3)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))


def _expected(model, x, y, *, lr, mem_size, replay_batch, seed):
    """eralg4 in plain torch: per example, a batch of memory draws + the example, one SGD step
    on the batch's mean loss, then Algorithm R with the same generator the memory uses."""
    params = [p.detach().clone().requires_grad_() for p in model.parameters()]
    names = [n for n, _ in model.named_parameters()]
    rng = np.random.default_rng(seed)
    mem_x, mem_y, seen = [None] * mem_size, [None] * mem_size, 0
    for i in range(len(y)):
        stored = min(seen, mem_size)
        idx = rng.choice(stored, size=min(replay_batch, stored), replace=False) if stored else []
        bx = torch.stack([mem_x[j] for j in idx] + [x[i]])
        by = torch.stack([mem_y[j] for j in idx] + [y[i]])
        logits = torch.func.functional_call(model, dict(zip(names, params)), (bx,))
        loss = torch.nn.functional.cross_entropy(logits, by)
        grads = torch.autograd.grad(loss, params)
        params = [(p - lr * g).detach().requires_grad_() for p, g in zip(params, grads)]
        slot = seen if seen < mem_size else int(rng.integers(0, seen + 1))
        seen += 1
        if slot < mem_size:
            mem_x[slot], mem_y[slot] = x[i], y[i]
    return params, torch.stack(mem_y[:min(seen, mem_size)])


@pytest.mark.parametrize("mem_size,replay_batch", [(4, 2), (20, 3)])
def test_one_step_per_example_on_example_plus_memory(mem_size, replay_batch):
    bench = _tiny_stream()
    model = _model()
    before = copy.deepcopy(model)
    record = _Record()
    ctx = strategies.StrategyContext(batch_size=5, n_classes=3, input_shape=(1, 2, 3), seed=5, plugins=(record,))
    s = strategies.build("er", model=model, context=ctx, per_example=True, lr=0.2, mem_size=mem_size,
                         replay_batch=replay_batch)
    with ReluMargin(s.model) as margin:
        s.train(bench.train_stream[0])
    # the weights agree to 1e-6, which moves a pre-activation (6 inputs below 1, and a bias) by
    # 7e-6 at most: a margin of 1e-5 (the run keeps 3e-5) leaves no ReLU tie to rounding luck
    assert margin.min > 1e-5, margin.min
    assert s.report().inner_steps == 12 and len(record.batches) == 3  # 12 steps inside 3 minibatches
    x = torch.cat([b[0] for b in record.batches])
    y = torch.cat([b[1] for b in record.batches])
    expected, mem_y = _expected(before, x, y, lr=0.2, mem_size=mem_size, replay_batch=replay_batch, seed=5)
    for p, q in zip(s.model.parameters(), expected):
        assert torch.allclose(p, q, atol=1e-6)
    assert torch.equal(s.memory.y[:len(mem_y)], mem_y)


def test_per_example_er_takes_ten_times_the_steps_of_minibatch_er():
    stream = scenarios.build("permuted-mnist", seed=0, n_tasks=2, per_task=30, test_per_task=50)
    ctx = strategies.StrategyContext(batch_size=10, n_classes=10, input_shape=stream.input_shape)
    weights = {}
    for per_example in (True, False):
        torch.manual_seed(0)
        record = _Record()
        ctx = strategies.StrategyContext(batch_size=10, n_classes=10, input_shape=stream.input_shape,
                                         plugins=(record,))
        s = strategies.build("er", model=_model_for(stream), context=ctx, per_example=per_example, lr=0.05)
        for exp in stream.benchmark.train_stream:
            s.train(exp)
        assert len(record.batches) == 6  # 60 examples in minibatches of 10
        if per_example:
            assert s.report().inner_steps == 60  # one step per example, inside the 6 Avalanche iterations
        weights[per_example] = next(s.model.parameters()).detach()
    assert not torch.allclose(weights[True], weights[False])


def _model_for(stream):
    from benchmark.models import build_model

    return build_model("mlp", input_shape=stream.input_shape, n_classes=10)
