"""MER behaves as the paper's algorithms say."""

import copy

import pytest
import torch

import scenarios
import strategies
from benchmark.models import build_model
from tests.strategies.lockstep import ATOL, ReluMargin, against, backends, factory, lockstep


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


def _online_sgd(model, lr):
    """Plain online SGD over a minibatch, one example at a time in its order, with torch.optim:
    the weights after it, from ``weights``."""

    def steps(weights, batch):
        net = copy.deepcopy(model)
        with torch.no_grad():
            for p, w in zip(net.parameters(), weights):
                p.copy_(w)
        opt = torch.optim.SGD(net.parameters(), lr=lr)
        x, y = batch[0], batch[1]
        for i in range(len(y)):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x[i:i + 1]), y[i:i + 1]).backward()
            opt.step()
        return [p.detach() for p in net.parameters()]

    return steps


def test_mer_with_unit_reptile_and_no_replay_is_online_sgd(stream):
    """Minibatch by minibatch from MER's own state (tests/strategies/lockstep.py), on the
    reference path (torch against torch; the compiled backend equals it, tested below)."""
    base, built = _model(stream), []
    mer = factory("mer", base, context=_context_kwargs(stream), fast_path=False, built=built, lr=0.05, beta=1.0,
                  gamma=1.0, batches_per_example=1, replay_batch=0)
    assert against(mer, stream.benchmark.train_stream, _online_sgd(base, lr=0.05), atol=ATOL) == 12
    assert built[0].report().inner_steps == 120
    assert not torch.allclose(next(base.parameters()), next(built[0].model.parameters()))


def _mer_lockstep(stream, reference: dict, candidate: dict, *, tasks=2, **common):
    base, ctx = _model(stream), _context_kwargs(stream)
    return lockstep(factory("mer", base, context=ctx, **common, **reference),
                    factory("mer", base, context=ctx, **common, **candidate),
                    list(stream.benchmark.train_stream)[:tasks], atol=ATOL)


def test_reptile_steps_change_the_result(stream):
    """beta and gamma each change the update; with one batch per example they interpolate the
    same way and compose (theta_A0 + gamma * beta * (theta_SGD - theta_A0)), so beta 0.5 acts
    as gamma 0.5 and as 0.8 * 0.625, minibatch by minibatch from the same state."""
    common = dict(lr=0.05, batches_per_example=1, replay_batch=0)
    plain, damped, gamma = dict(beta=1.0, gamma=1.0), dict(beta=0.5, gamma=1.0), dict(beta=1.0, gamma=0.5)
    for other in (damped, gamma):
        with pytest.raises(AssertionError, match="minibatch 0: the candidate differs"):
            _mer_lockstep(stream, plain, other, **common)
    _mer_lockstep(stream, damped, gamma, **common).check(minibatches=12, reference="numba")
    _mer_lockstep(stream, damped, dict(beta=0.8, gamma=0.625), **common).check(minibatches=12, reference="numba")


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
    """Without replay, weight s with rate lr / s is the same SGD as weight 1 with rate lr,
    minibatch by minibatch from the same state; weight 3 with rate lr is not."""
    common = dict(algorithm=7, gamma=1.0, replay_batch=0)
    s1, s3 = dict(batches_per_example=1, lr=0.01), dict(batches_per_example=3, lr=0.01 / 3)
    _mer_lockstep(stream, s1, s3, tasks=1, **common).check(minibatches=6, reference="numba")
    with pytest.raises(AssertionError, match="minibatch 0: the candidate differs"):
        _mer_lockstep(stream, s1, dict(batches_per_example=3, lr=0.01), tasks=1, **common)


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
    against autograd, on inputs that are 70% zeros, with task masks and loss weights: fifty
    steps, each from autograd's weights (one step from the same state: no rounding tie can
    split the two, asserted by the margin of the hidden units' inputs)."""
    import numpy as np

    from strategies.functional import masked_cross_entropy
    from strategies.mer_numba import sgd_steps
    from strategies.mlp_numba import TransposedMLP, linear_relu_layers

    torch.manual_seed(0)
    a = build_model("mlp", input_shape=(1, 6, 6), n_classes=5)
    b = copy.deepcopy(a)
    net = TransposedMLP(linear_relu_layers(b, (1, 6, 6)), n_tasks=2)
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(50, 36, generator=g), torch.randint(0, 5, (50,), generator=g)
    x[torch.rand(50, 36, generator=g) < 0.7] = 0.0
    masks = torch.tensor([[0.0, 0.0, float("-inf"), 0.0, float("-inf")], [0.0] * 5])
    t = torch.arange(50) % 2
    w = 1.0 + (torch.arange(50) % 3).float()
    with ReluMargin(a) as margin:
        for k in range(50):
            with torch.no_grad():
                for p, q in zip(b.parameters(), a.parameters()):
                    p.copy_(q)
            net.load()
            rows = slice(k, k + 1)
            got = sgd_steps(net.wts, net.bs, *net.scratch, x[rows].numpy(), y[rows].numpy(), t[rows].numpy(),
                            w[rows].numpy(), masks.numpy(), True, 0.1)
            net.store()
            loss = masked_cross_entropy(a(x[rows].reshape(1, 1, 6, 6)), y[rows], t[rows], masks, w[rows])
            grads = torch.autograd.grad(loss, list(a.parameters()))
            with torch.no_grad():
                for p, gr in zip(a.parameters(), grads):
                    p -= 0.1 * gr
            np.testing.assert_allclose(got, [float(loss.detach())], rtol=1e-5)
            for p, q in zip(a.parameters(), b.parameters()):
                assert torch.allclose(p, q, atol=1e-6), (k, float((p - q).abs().max()))
    # one step from the same weights: the two differ in a pre-activation by the rounding of one sum
    # of at most 100 products, about sqrt(100) * 6e-8 * sum |w x| ~ 1e-7 here; the steps keep 6e-6
    assert margin.min > 1e-6, margin.min


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
