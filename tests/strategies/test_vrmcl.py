"""VR-MCL's compiled backend (strategies/vrmcl_numba.py) against its reference path
(strategies/vrmcl.py on look_ahead_meta_loss): the same weights, learned rates, momentum, lagged
weights and memory after every minibatch of a stream, each from the reference's state
(tests/strategies/lockstep.py), where the backend applies; and where it does not."""

import copy

import pytest
import torch

import scenarios
import strategies
from benchmark.models import build_model
from strategies.lamaml import look_ahead_meta_loss
from tests.strategies.lockstep import ATOL, ReluMargin, backends, lockstep

# the paper-MNIST entry's form (first order, one example per inner step) with a tighter clip, so
# that the inner clamp and the joint-norm clips act, and a memory that fills and replaces early
HP = dict(lr=0.3, alpha_init=0.15, s_momentum=0.15, s_lr=0.35, inner_batch_size=1, meta_update_per_batch=3,
          second_order=False, grad_clip_norm=0.5, mem_size=30, replay_batch=10)

STREAMS = {
    "class-incremental": ("split-mnist", {"task_incremental": False}, (100, 100)),
    "task-incremental-masked": ("split-mnist", {"task_incremental": True}, (100, 100)),
    "permuted-one-hidden-layer": ("permuted-mnist", {}, (50,)),
}


def _train(stream, model, *, fast_path, tasks=3, **hp):
    torch.manual_seed(1)
    ctx = strategies.StrategyContext(batch_size=10, n_classes=stream.n_classes, input_shape=stream.input_shape,
                                     task_labels=stream.task_labels, classes_per_task=stream.classes_per_task)
    s = strategies.build("vr-mcl", model=model, context=ctx, **{**HP, **hp})
    s.fast_path = fast_path
    for exp in list(stream.benchmark.train_stream)[:tasks]:
        s.train(exp)
    return s


def _assert_same_state(fast, slow, atol=1e-5):
    """Weights, rates, momentum, lagged weights, memory and counters of two VR-MCL strategies."""
    for name, a, b in (("weights", list(fast.model.parameters()), list(slow.model.parameters())),
                       ("alphas", fast.alphas, slow.alphas), ("momentum", fast.momentum, slow.momentum),
                       ("lagged", fast.lagged, slow.lagged)):
        assert len(a) == len(b)
        for p, q in zip(a, b):
            assert torch.allclose(p.detach(), q.detach(), atol=atol, rtol=0), (name, float((p - q).abs().max()))
    n = len(slow.memory)
    assert fast.memory.seen == slow.memory.seen and len(fast.memory) == n
    for field in ("x", "y", "t"):
        assert torch.equal(getattr(fast.memory, field)[:n], getattr(slow.memory, field)[:n]), field
    r, q = fast.report(), slow.report()
    assert (r.inner_steps, r.meta_losses, r.meta_examples) == (q.inner_steps, q.meta_losses, q.meta_examples)


@pytest.mark.parametrize("case", sorted(STREAMS))
def test_compiled_backend_equals_the_reference_path_minibatch_by_minibatch(case):
    """Three tasks (two task boundaries, where theta_{t-1} is reset to theta_t) of fifteen
    minibatches, three meta-updates each; the memory of 30 fills during the first task and
    Algorithm R replaces from then on; the clip of 0.5 acts on the inner gradients and the
    meta-gradients; the rates go below zero."""
    name, params, hidden = STREAMS[case]
    stream = scenarios.build(name, seed=0, n_tasks=3 if name == "permuted-mnist" else 5, per_task=50,
                             test_per_task=10, **params)
    torch.manual_seed(0)
    base = build_model("mlp", input_shape=stream.input_shape, n_classes=stream.n_classes, hidden=hidden)
    ctx = dict(batch_size=10, n_classes=stream.n_classes, input_shape=stream.input_shape,
               task_labels=stream.task_labels, classes_per_task=stream.classes_per_task)
    reference, compiled, built = backends("vr-mcl", base, context=ctx, **HP)
    report = lockstep(reference, compiled, list(stream.benchmark.train_stream)[:3], atol=ATOL)
    report.check(minibatches=15)
    reference = built[0]
    assert reference.memory.seen == 150 and len(reference.memory) == 30
    assert any(bool((a < 0).any()) for a in reference.alphas)  # rates below zero: inner steps use alpha, not relu
    assert not torch.allclose(reference.lagged[0], next(reference.model.parameters()))  # one meta-update behind


def test_compiled_backend_resumes_from_a_checkpoint_as_if_uninterrupted():
    """The momentum is written in place by the kernel: a loaded checkpoint must not share it."""
    stream = scenarios.build("permuted-mnist", seed=0, n_tasks=2, per_task=30, test_per_task=10)
    torch.manual_seed(0)
    base = build_model("mlp", input_shape=stream.input_shape, n_classes=10)
    whole = _train(stream, copy.deepcopy(base), fast_path=True, tasks=2)
    first = _train(stream, copy.deepcopy(base), fast_path=True, tasks=1)
    rng = torch.get_rng_state()  # the data loader's shuffle of the second task draws from it
    state = first.checkpoint_state()
    saved = [v.clone() for v in state["momentum"]]
    resumed = _train(stream, copy.deepcopy(first.model), fast_path=True, tasks=0)
    resumed.load_checkpoint_state(state)
    torch.set_rng_state(rng)
    resumed.train(list(stream.benchmark.train_stream)[1])
    assert all(torch.equal(v, w) for v, w in zip(state["momentum"], saved))
    _assert_same_state(resumed, whole, atol=0)


def test_backend_applies_to_first_order_single_example_mlps_only():
    from strategies.vrmcl_numba import CompiledVRMCL

    torch.manual_seed(0)
    mlp = build_model("mlp", input_shape=(1, 8, 8), n_classes=4)
    cnn = build_model("cnn", input_shape=(3, 32, 32), n_classes=4)
    params = list(mlp.parameters())

    def backend(model, shape, **kw):
        return CompiledVRMCL.for_model(model, list(model.parameters()), shape, None,
                                       **{"second_order": False, "inner_batch_size": 1, **kw})

    assert isinstance(backend(mlp, (1, 8, 8)), CompiledVRMCL)
    assert backend(mlp, (1, 8, 8), second_order=True) is None
    assert backend(mlp, (1, 8, 8), inner_batch_size=2) is None
    assert backend(cnn, (3, 32, 32)) is None
    assert CompiledVRMCL.for_model(mlp, params[:-1], (1, 8, 8), None, second_order=False, inner_batch_size=1) is None
    assert backend(copy.deepcopy(mlp).double(), (1, 8, 8)) is None
    # the strategy falls back to the reference where it does not apply, and says so
    stream = scenarios.build("permuted-mnist", seed=0, n_tasks=1, per_task=20, test_per_task=10)
    model = build_model("mlp", input_shape=stream.input_shape, n_classes=10)
    for hp in ({"inner_batch_size": 2}, {"second_order": True}):
        assert _train(stream, copy.deepcopy(model), fast_path=True, tasks=1, **hp).report().backend == "reference"


def test_clamped_glance_with_signed_rates_equals_the_reference_path():
    """La-MAML's glance kernel with the inner clamp and rates of both signs (VR-MCL's alpha
    itself) against look_ahead_meta_loss: the meta-loss and its gradients wrt the weights and
    the rates, on sparse inputs large enough that the clamp cuts many inner gradient entries."""
    from strategies.lamaml_numba import CompiledLaMAML

    torch.manual_seed(0)
    model = build_model("mlp", input_shape=(1, 6, 6), n_classes=5)
    names = [n for n, _ in model.named_parameters()]
    params = [p.detach().clone() for p in model.parameters()]
    g = torch.Generator().manual_seed(2)
    rates = [torch.rand(p.shape, generator=g) * 0.4 - 0.1 for p in params]
    x, bx = torch.rand(6, 1, 6, 6, generator=g) * 3, torch.rand(9, 1, 6, 6, generator=g) * 3
    x[torch.rand(x.shape, generator=g) < 0.7] = 0.0
    bx[torch.rand(bx.shape, generator=g) < 0.7] = 0.0
    y, by = torch.randint(0, 5, (6,), generator=g), torch.randint(0, 5, (9,), generator=g)
    t, bt = torch.zeros(6, dtype=torch.long), torch.zeros(9, dtype=torch.long)
    clamp = 0.05
    first_inner = torch.autograd.grad(torch.nn.functional.cross_entropy(model(x[:1]), y[:1]), list(model.parameters()))
    assert max(float(gr.abs().max()) for gr in first_inner) > 4 * clamp  # the clamp acts
    kernel = CompiledLaMAML(n_classes=5, mask=None)
    unclamped = kernel.glance(params, rates, (x, y, t), (bx, by, bt), with_rates=True, final_only=False)
    leaves = [p.clone().requires_grad_(True) for p in params]
    rate_leaves = [r.clone().requires_grad_(True) for r in rates]
    with ReluMargin(model) as margin:
        meta = look_ahead_meta_loss(model, names, leaves, rate_leaves, (x, y, t), (bx, by, bt), clamp=clamp)
    assert margin.min > 1e-6, margin.min  # clear of every ReLU tie (test_lamaml.py's glance test says why)
    grads = torch.autograd.grad(meta, leaves + rate_leaves)
    got = kernel.glance(params, rates, (x, y, t), (bx, by, bt), with_rates=True, final_only=False, clamp=clamp)
    assert float(got[0]) == pytest.approx(float(meta.detach()), rel=1e-5)
    for a, b in zip(got[1] + got[2], grads):
        assert torch.allclose(a, b, atol=1e-6)
    assert any(not torch.allclose(a, b, atol=1e-4) for a, b in zip(got[1] + got[2], unclamped[1] + unclamped[2]))
