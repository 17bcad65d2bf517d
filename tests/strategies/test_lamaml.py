"""La-MAML and C-MAML: meta-gradients, learned rates, and how the variants relate."""

import copy

import pytest
import torch

import scenarios
import strategies
from benchmark.models import build_model
from strategies.lamaml import LookAheadMAML, look_ahead_meta_loss
from tests.strategies.lockstep import ATOL, ReluMargin, backends, factory, lockstep


def _tiny():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)).double()
    names = [n for n, _ in model.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in model.parameters()]
    rates = [torch.full_like(p, 0.3).requires_grad_() for p in params]
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 3, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 1, 1])
    bx = torch.randn(5, 3, generator=g, dtype=torch.float64)
    by = torch.tensor([1, 0, 1, 0, 0])
    t3, t5 = torch.zeros(3, dtype=torch.long), torch.zeros(5, dtype=torch.long)
    return model, names, params, rates, (x, y, t3), (bx, by, t5)


def _meta(second_order, model, names, params, rates, inc, meta):
    return look_ahead_meta_loss(model, names, params, rates, inc, meta, second_order=second_order)


def _finite_difference(model, names, params, rates, inc, meta, which, index, eps=1e-6):
    def value(shift):
        ps = [p.detach().clone() for p in params]
        rs = [r.detach().clone() for r in rates]
        target = ps if which == "params" else rs
        target[0].view(-1)[index] += shift
        ps = [p.requires_grad_() for p in ps]
        return float(_meta(False, model, names, ps, rs, inc, meta))

    return (value(eps) - value(-eps)) / (2 * eps)


def test_second_order_meta_gradient_matches_finite_differences():
    model, names, params, rates, inc, meta = _tiny()
    second = torch.autograd.grad(_meta(True, model, names, params, rates, inc, meta), [params[0], rates[0]])
    first = torch.autograd.grad(_meta(False, model, names, params, rates, inc, meta), [params[0], rates[0]])
    for index in range(params[0].numel()):
        fd_w = _finite_difference(model, names, params, rates, inc, meta, "params", index)
        fd_a = _finite_difference(model, names, params, rates, inc, meta, "rates", index)
        assert second[0].view(-1)[index].item() == pytest.approx(fd_w, rel=1e-5, abs=1e-8)
        assert second[1].view(-1)[index].item() == pytest.approx(fd_a, rel=1e-5, abs=1e-8)
    assert not torch.allclose(first[0], second[0], rtol=1e-3)  # first order is an approximation
    assert not torch.allclose(first[1], second[1], rtol=1e-3)


@pytest.fixture(scope="module")
def stream():
    return scenarios.build("permuted-mnist", seed=0, n_tasks=2, per_task=40, test_per_task=100)


def _context_kwargs(stream):
    return dict(batch_size=10, n_classes=10, input_shape=stream.input_shape, classes_per_task=stream.classes_per_task)


def _train(name, stream, model, *, tasks=2, **hp):
    torch.manual_seed(1)
    ctx = strategies.StrategyContext(**_context_kwargs(stream))
    s = strategies.build(name, model=model, context=ctx, **hp)
    for exp in list(stream.benchmark.train_stream)[:tasks]:
        s.train(exp)
    return s


def _model(stream):
    torch.manual_seed(0)
    return build_model("mlp", input_shape=stream.input_shape, n_classes=10)


def test_learned_rates_move_only_when_opt_lr_is_positive(stream):
    base = _model(stream)
    moving = _train("la-maml", stream, copy.deepcopy(base), opt_lr=0.3, alpha_init=0.15)
    still = _train("la-maml", stream, copy.deepcopy(base), opt_lr=0.0, alpha_init=0.15)
    assert any(not torch.allclose(a, torch.full_like(a, 0.15)) for a in moving.alphas)
    assert all(torch.equal(a, torch.full_like(a, 0.15)) for a in still.alphas)
    assert moving.report().extra_metrics["mean_alpha"] != pytest.approx(0.15)
    for p, q in zip(moving.model.parameters(), base.parameters()):
        assert not torch.equal(p, q)


def test_la_maml_without_learned_rates_is_c_maml(stream):
    """Fixed rates alpha_init, asynchronous relu(alpha) g (La-MAML) = synchronous opt_wt g (C-MAML)
    when opt_wt = alpha_init: minibatch by minibatch from the same state (tests/strategies/lockstep.py)."""
    base, ctx = _model(stream), _context_kwargs(stream)
    la = factory("la-maml", base, context=ctx, learn_lr=False, alpha_init=0.05, glances=2)
    cm = factory("c-maml", base, context=ctx, alpha_init=0.05, opt_wt=0.05, glances=2)
    lockstep(la, cm, stream.benchmark.train_stream, atol=ATOL).check(minibatches=8, reference="numba")
    other = factory("c-maml", base, context=ctx, alpha_init=0.05, opt_wt=0.1, glances=2)
    with pytest.raises(AssertionError, match="minibatch 0: the candidate differs"):
        lockstep(cm, other, stream.benchmark.train_stream, atol=ATOL)


def test_sync_la_maml_differs_from_la_maml(stream):
    base = _model(stream)
    a = _train("la-maml", stream, copy.deepcopy(base), tasks=1)
    b = _train("sync-la-maml", stream, copy.deepcopy(base), tasks=1)
    assert not torch.allclose(next(a.model.parameters()), next(b.model.parameters()))


def test_memory_fills_online_once_per_example_and_steps_are_counted(stream):
    s = _train("la-maml", stream, _model(stream), tasks=1, glances=3, mem_size=25)
    assert s.memory.seen == 40 and len(s.memory) == 25  # first glance only, during the first task
    assert s.report().inner_steps == 40 * 3


def test_online_maml_is_an_alias():
    assert strategies.resolve("online_maml")[0] == "c-maml"
    assert strategies.resolve("LaMAML")[0] == "la-maml"


@pytest.mark.parametrize("name,hp", [("la-maml", {}), ("c-maml", {}), ("sync-la-maml", {}),
                                     ("la-maml", {"learn_lr": False}), ("la-maml", {"meta_loss": "final"}),
                                     ("c-maml", {"meta_loss": "final"})])
def test_compiled_backend_equals_the_reference_path_minibatch_by_minibatch(name, hp):
    """Two tasks of six minibatches, two glances each (tests/strategies/lockstep.py): the memory
    of 25 fills during the first task and Algorithm R replaces from then on; a clip of 0.5 acts
    on the meta-gradients."""
    stream = scenarios.build("permuted-mnist", seed=0, n_tasks=2, per_task=60, test_per_task=10)
    reference, compiled, built = backends(name, _model(stream), context=_context_kwargs(stream), glances=2, mem_size=25,
                                          grad_clip_norm=0.5, **hp)
    report = lockstep(reference, compiled, stream.benchmark.train_stream, atol=ATOL)
    report.check(minibatches=12)
    assert isinstance(built[0], LookAheadMAML) and built[0].memory.seen == 120 and len(built[0].memory) == 25


def test_final_meta_loss_is_the_loss_after_the_last_inner_step():
    """Paper Alg. 1: L(B; theta_n). The official code's per-step mean m_n = (L_1 + .. + L_n) / n,
    so L_3 = 3 m_3 - 2 m_2."""
    model, names, params, rates, (x, y, t), meta = _tiny()
    m3 = float(look_ahead_meta_loss(model, names, params, rates, (x, y, t), meta))
    m2 = float(look_ahead_meta_loss(model, names, params, rates, (x[:2], y[:2], t[:2]), meta))
    final = float(look_ahead_meta_loss(model, names, params, rates, (x, y, t), meta, final_only=True))
    assert final == pytest.approx(3 * m3 - 2 * m2, rel=1e-9)
    assert final != pytest.approx(m3, rel=1e-3)


def test_final_meta_loss_trains_differently(stream):
    base = _model(stream)
    ctx = strategies.StrategyContext(batch_size=10, n_classes=10, input_shape=stream.input_shape,
                                     classes_per_task=stream.classes_per_task)
    models = []
    for meta_loss in ("every-step", "final"):
        torch.manual_seed(1)
        s = strategies.build("la-maml", model=copy.deepcopy(base), context=ctx, glances=1, meta_loss=meta_loss)
        for exp in stream.benchmark.train_stream:
            s.train(exp)
        models.append(s.model)
    assert any(not torch.allclose(p, q, atol=1e-4) for p, q in zip(*(m.parameters() for m in models)))


def test_meta_loss_choice_is_checked():
    with pytest.raises(strategies.StrategyError, match="'meta_loss' is 'last'; allowed: every-step, final"):
        strategies.resolve("la-maml", {"meta_loss": "last"})


@pytest.mark.parametrize("with_rates,final_only,masked", [(True, False, False), (True, True, True),
                                                          (False, False, True)])
def test_compiled_glance_equals_the_reference_path(with_rates, final_only, masked):
    """One glance of the compiled backend against torch.func + autograd (first order): the
    meta-loss, its gradient wrt the weights and wrt the rates. Sparse inputs (70% zeros),
    per-parameter or fixed rates, task masks, both meta-losses."""
    from strategies.lamaml_numba import CompiledLaMAML

    torch.manual_seed(0)
    model = build_model("mlp", input_shape=(1, 6, 6), n_classes=5)
    params = [p.detach().clone() for p in model.parameters()]
    g = torch.Generator().manual_seed(2)
    rates = [torch.rand(p.shape, generator=g) * 0.2 for p in params] if with_rates else [0.1] * len(params)
    x, bx = torch.rand(6, 1, 6, 6, generator=g), torch.rand(9, 1, 6, 6, generator=g)
    x[torch.rand(x.shape, generator=g) < 0.7] = 0.0
    bx[torch.rand(bx.shape, generator=g) < 0.7] = 0.0
    y, by = torch.randint(0, 5, (6,), generator=g), torch.randint(0, 5, (9,), generator=g)
    t, bt = torch.randint(0, 2, (6,), generator=g), torch.randint(0, 2, (9,), generator=g)
    mask = torch.tensor([[0.0, 0.0, 0.0, float("-inf"), float("-inf")], [float("-inf")] * 3 + [0.0, 0.0]])
    y, by = (torch.where(t == 0, y % 3, 3 + y % 2), torch.where(bt == 0, by % 3, 3 + by % 2)) if masked else (y, by)
    mask = mask if masked else None
    names = [n for n, _ in model.named_parameters()]
    leaves = [p.clone().requires_grad_(True) for p in params]
    rate_leaves = [r.clone().requires_grad_(True) for r in rates] if with_rates else rates
    with ReluMargin(model) as margin:
        meta = look_ahead_meta_loss(model, names, leaves, rate_leaves, (x, y, t), (bx, by, bt), mask=mask,
                                    second_order=False, final_only=final_only)
    # one glance from the same weights: the paths' pre-activations differ by ~1e-7 (the rounding of a
    # sum, carried through six inner steps); the glance keeps 3e-6 from every ReLU tie
    assert margin.min > 1e-6, margin.min
    wrt = leaves + (rate_leaves if with_rates else [])
    grads = torch.autograd.grad(meta, wrt)
    got = CompiledLaMAML(n_classes=5, mask=mask).glance(params, rates, (x, y, t), (bx, by, bt),
                                                        with_rates=with_rates, final_only=final_only)
    assert float(got[0]) == pytest.approx(float(meta), rel=1e-5)
    for a, b in zip(got[1], grads[:len(params)]):
        assert torch.allclose(a, b, atol=1e-6)
    if with_rates:
        for a, b in zip(got[2], grads[len(params):]):
            assert torch.allclose(a, b, atol=1e-6)
        assert any(float(a.abs().max()) > 1e-4 for a in got[2])
    else:
        assert got[2] is None
