"""MER behaves as the paper's algorithms say."""

import copy

import pytest
import torch

import scenarios
import strategies
from benchmark.models import build_model
from tests.strategies.lockstep import ATOL, backends, lockstep


@pytest.fixture(scope="module")
def stream():
    return scenarios.build("permuted-mnist", seed=0, n_tasks=2, per_task=60, test_per_task=100)


def _context_kwargs(stream, **kw):
    return dict(batch_size=10, n_classes=stream.n_classes, input_shape=stream.input_shape,
                classes_per_task=stream.classes_per_task, **kw)


def _context(stream, **kw):
    return strategies.StrategyContext(**_context_kwargs(stream, **kw))


def _model(stream, seed=0):
    torch.manual_seed(seed)
    return build_model("mlp", input_shape=stream.input_shape, n_classes=10)


def _train(name, stream, model, *, tasks=2, **hp):
    torch.manual_seed(1)  # the data order of Avalanche's loader
    s = strategies.build(name, model=model, context=_context(stream), **hp)
    for exp in list(stream.benchmark.train_stream)[:tasks]:
        s.train(exp)
    return s


def _online_sgd(stream, model, lr, tasks=2):
    """Plain online SGD, one example at a time, in the order Avalanche's loader gives."""
    from torch.utils.data import DataLoader

    torch.manual_seed(1)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    steps = 0
    for exp in list(stream.benchmark.train_stream)[:tasks]:
        for x, y, _ in DataLoader(exp.dataset, batch_size=10, shuffle=True):
            for i in range(len(y)):
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(x[i:i + 1]), y[i:i + 1]).backward()
                opt.step()
                steps += 1
    return steps


def test_mer_with_unit_reptile_and_no_replay_is_online_sgd(stream):
    base = _model(stream)
    mer_model, sgd_model = copy.deepcopy(base), copy.deepcopy(base)
    s = _train("mer", stream, mer_model, lr=0.05, beta=1.0, gamma=1.0, batches_per_example=1, replay_batch=0)
    steps = _online_sgd(stream, sgd_model, lr=0.05)
    assert s.report().inner_steps == steps == 120
    for a, b in zip(s.model.parameters(), sgd_model.parameters()):
        assert torch.allclose(a, b, atol=1e-6)
    assert not torch.allclose(next(base.parameters()), next(sgd_model.parameters()))


def test_reptile_steps_change_the_result(stream):
    base = _model(stream)
    plain = _train("mer", stream, copy.deepcopy(base), lr=0.05, beta=1.0, gamma=1.0, batches_per_example=1,
                   replay_batch=0)
    damped = _train("mer", stream, copy.deepcopy(base), lr=0.05, beta=0.5, gamma=1.0, batches_per_example=1,
                    replay_batch=0)
    gamma = _train("mer", stream, copy.deepcopy(base), lr=0.05, beta=1.0, gamma=0.5, batches_per_example=1,
                   replay_batch=0)
    w = [next(s.model.parameters()) for s in (plain, damped, gamma)]
    assert not torch.allclose(w[0], w[1]) and not torch.allclose(w[0], w[2])
    # with one batch per example, beta and gamma interpolate the same way: they compose
    # (theta_A0 + gamma * beta * (theta_SGD - theta_A0)), so 0.8 * 0.625 acts as 0.5
    both = _train("mer", stream, copy.deepcopy(base), lr=0.05, beta=0.8, gamma=0.625, batches_per_example=1,
                  replay_batch=0)
    assert torch.allclose(next(both.model.parameters()), w[1], atol=1e-6)
    assert torch.allclose(w[1], w[2], atol=1e-6)


def test_replay_starts_during_the_first_task_and_counts_steps(stream):
    s = _train("mer", stream, _model(stream), tasks=1, batches_per_example=2, replay_batch=4, mem_size=20)
    assert s.memory.seen == 60 and len(s.memory) == 20
    # example n (0-based) sees min(n, 4) memory examples in each of its 2 batches
    expected = sum(2 * (1 + min(n, 4)) for n in range(60))
    assert s.report().inner_steps == expected


def test_paper_algorithm_6_is_algorithm_1_with_beta_one(stream):
    base = _model(stream)
    a6 = _train("mer", stream, copy.deepcopy(base), algorithm=6, alg6_form="paper", beta=0.1, gamma=0.3,
                batches_per_example=2, replay_batch=3)
    a1 = _train("mer", stream, copy.deepcopy(base), algorithm=1, beta=1.0, gamma=0.3, batches_per_example=2,
                replay_batch=3)
    for p, q in zip(a6.model.parameters(), a1.model.parameters()):
        assert torch.equal(p, q)


def test_official_algorithm_6_differs_from_the_paper_form(stream):
    base = _model(stream)
    hp = dict(algorithm=6, beta=0.1, gamma=0.3, batches_per_example=2, replay_batch=3)
    official = _train("mer", stream, copy.deepcopy(base), **hp)
    paper = _train("mer", stream, copy.deepcopy(base), alg6_form="paper", **hp)
    assert official.report().inner_steps == paper.report().inner_steps
    assert not torch.allclose(next(official.model.parameters()), next(paper.model.parameters()))


def test_algorithm_7_weights_the_incoming_example(stream):
    base = _model(stream)
    s1 = _train("mer", stream, copy.deepcopy(base), tasks=1, algorithm=7, batches_per_example=1, gamma=1.0,
                replay_batch=0, lr=0.01)
    s3 = _train("mer", stream, copy.deepcopy(base), tasks=1, algorithm=7, batches_per_example=3, gamma=1.0,
                replay_batch=0, lr=0.01 / 3)
    # without replay, weight s with rate lr/s is the same SGD as weight 1 with rate lr
    for p, q in zip(s1.model.parameters(), s3.model.parameters()):
        assert torch.allclose(p, q, atol=1e-6)
    assert s1.report().inner_steps == s3.report().inner_steps == 60


def test_bad_algorithm_is_rejected():
    with pytest.raises(strategies.StrategyError, match="'algorithm' is 3; allowed: 1, 6, 7"):
        strategies.resolve("mer", {"algorithm": 3})


@pytest.mark.parametrize("algorithm,alg6_form", [(1, "official"), (6, "official"), (6, "paper"), (7, "official")])
def test_compiled_backend_equals_the_reference_path_minibatch_by_minibatch(stream, algorithm, alg6_form):
    """Two tasks of six minibatches (tests/strategies/lockstep.py); the memory of 15 fills
    during the first minibatches and Algorithm R replaces from then on."""
    hp = dict(algorithm=algorithm, alg6_form=alg6_form, batches_per_example=3, replay_batch=4, mem_size=15,
              beta=0.3, gamma=0.7)
    reference, compiled, built = backends("mer", _model(stream), context=_context_kwargs(stream), **hp)
    lockstep(reference, compiled, stream.benchmark.train_stream, atol=ATOL).check(minibatches=12)
    assert built[0].memory.seen == 120 and len(built[0].memory) == 15


def test_compiled_backend_with_task_masks_equals_the_reference_path_minibatch_by_minibatch():
    split = scenarios.build("split-mnist", seed=0, n_tasks=5, per_task=30, task_incremental=True)
    ctx = dict(batch_size=10, n_classes=10, input_shape=split.input_shape, task_labels=True,
               classes_per_task=split.classes_per_task)
    reference, compiled, _ = backends("mer", _model(split), context=ctx, batches_per_example=2, mem_size=40)
    lockstep(reference, compiled, list(split.benchmark.train_stream)[:2], atol=ATOL).check(minibatches=6)


def test_compiled_single_example_steps_equal_autograd_steps():
    """Single-example SGD steps of the compiled kernel (which skips zero inputs and dead units)
    against autograd, on inputs that are 70% zeros, with task masks and loss weights."""
    import numpy as np

    from strategies.functional import masked_cross_entropy
    from strategies.mer_numba import sgd_steps
    from strategies.mlp_numba import TransposedMLP, linear_relu_layers

    torch.manual_seed(0)
    a = build_model("mlp", input_shape=(1, 6, 6), n_classes=5)
    b = copy.deepcopy(a)
    lb = linear_relu_layers(b, (1, 6, 6))
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(50, 36, generator=g), torch.randint(0, 5, (50,), generator=g)
    x[torch.rand(50, 36, generator=g) < 0.7] = 0.0
    masks = torch.tensor([[0.0, 0.0, float("-inf"), 0.0, float("-inf")], [0.0] * 5])
    t = torch.arange(50) % 2
    w = 1.0 + (torch.arange(50) % 3).float()
    expected = []
    for k in range(50):
        loss = masked_cross_entropy(a(x[k:k + 1].reshape(1, 1, 6, 6)), y[k:k + 1], t[k:k + 1], masks, w[k:k + 1])
        grads = torch.autograd.grad(loss, list(a.parameters()))
        with torch.no_grad():
            for p, g in zip(a.parameters(), grads):
                p -= 0.1 * g
        expected.append(float(loss))
    net = TransposedMLP(lb, n_tasks=2)
    got = sgd_steps(net.wts, net.bs, *net.scratch, x.numpy(), y.numpy(), t.numpy(), w.numpy(), masks.numpy(),
                    True, 0.1)
    net.store()
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.allclose(p, q, atol=1e-6)


def test_fast_path_is_not_taken_for_other_networks():
    from strategies.mlp_numba import linear_relu_layers

    assert linear_relu_layers(build_model("cnn", input_shape=(3, 32, 32), n_classes=10), (3, 32, 32)) is None
    odd = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2))
    assert linear_relu_layers(odd, (4,)) is None

    class Skips(torch.nn.Module):  # same leaves, another computation
        def __init__(self):
            super().__init__()
            self.a, self.r, self.b = torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2)

        def forward(self, x):
            return self.b(self.r(self.a(x)) + x)

    assert linear_relu_layers(Skips(), (4,)) is None
    assert linear_relu_layers(build_model("mlp", input_shape=(1, 8, 8), n_classes=10), (1, 8, 8)) is not None
