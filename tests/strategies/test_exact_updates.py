"""Complete updates of the meta strategies, checked number by number against the papers'
equations evaluated here with plain torch autograd on an explicit parameter list.

Nothing of the suite's own machinery computes an expected value: not strategies.functional,
not look_ahead_meta_loss, not the kernels, not ReservoirMemory. The only things shared with
the strategies are the seeds of their random draws: the reservoir memory's numpy generator
(``np.random.default_rng(seed)``: Algorithm R's slot, then ``choice(n, k, replace=False)`` for
replay) and the order generator ``torch.Generator().manual_seed(seed)`` (La-MAML's shuffle of
each glance, MER Algorithm 7's batch order); the tests make the same calls on their own
generators, so they know which examples the strategies drew.

Setting: an MLP 6-5-4-3 (ReLU), eight examples of six features in [0, 10) (some exactly zero,
which the compiled kernels skip), one Avalanche experience read in order as two minibatches of
four. The memory holds five examples: the fifth example fills it and Algorithm R replaces from
the sixth on, during the second minibatch; replay batches of three are drawn at random. The
La-MAML settings make the clipping act in some glances and not in others (for the weights' and
the rates' meta-gradients), and drive some learned rates below zero, where relu matters.
Every strategy runs twice: on the compiled path (numba kernels, the default for float32 CPU
ReLU MLPs) and on the reference autograd path (``fast_path=False``).

Equations (Riemer et al. 2019; Gupta et al. 2020; DESIGN.md "Protocols of the papers"):

- MER Algorithm 1, per incoming example (x, y): theta_A0 = theta; s times: theta_W0 = theta,
  batch = [(x, y), replay_batch memory examples], one SGD step per example in batch order,
  theta = theta_W0 + beta (theta - theta_W0); then theta = theta_A0 + gamma (theta - theta_A0);
  then Algorithm R offers (x, y) to the memory.
- Algorithm 6, official meralg6.py: batches [memory examples..., (x, y)], Reptile with gamma
  after each batch, nothing across batches. Paper: Algorithm 1 with beta = 1.
- Algorithm 7: one batch [(x, y), memory examples] in a random order, the loss of (x, y)
  weighted by s, then theta = theta_A0 + gamma (theta - theta_A0).
- La-MAML family, per glance: shuffle the minibatch; meta-batch B = [memory examples, minibatch];
  theta_{i+1} = theta_i - r grad L(x_i; theta_i) (first order: the inner gradient is a
  constant) with r = relu(alpha) (La-MAML, Sync) or alpha_init (C-MAML); meta-loss
  = mean_i L(B; theta_{i+1}); both meta-gradients clipped (separately) to norm grad_clip_norm;
  alpha -= opt_lr g_alpha first; then theta -= relu(alpha) g_theta (La-MAML) or
  theta -= opt_wt g_theta (C-MAML, Sync). The minibatch enters the memory on the first glance,
  after the meta-batch was drawn.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import strategies
from benchmark.models import MLP
from tests.strategies.lockstep import ReluMargin

SEED = 7  # the run's seed: the memory's generator and the order generator start from it
# No hidden pre-activation of these runs comes closer to zero than this (asserted on the reference
# path), so no rounding can send a unit to the other side of its ReLU on any machine: the
# strategies' weights differ from the float64 expected values by 3.4e-6 at most (measured), which
# moves a pre-activation by at most 3.4e-6 * (6 inputs * 10 + 1) = 2.1e-4 with every difference
# aligned (about 1e-5 in practice); the runs keep 2.9e-4 (Reptile) and 5.9e-4 or more (the rest).
TIE_MARGIN = 2.5e-4
N, BATCH, N_IN, HIDDEN, N_OUT = 8, 4, 6, (5, 4), 3


# -- the setting -----------------------------------------------------------------------
def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(N, N_IN, generator=g) * 10.0
    x[torch.rand(N, N_IN, generator=g) < 0.3] = 0.0  # exact zeros: the compiled kernels skip them
    y = torch.tensor([0, 2, 1, 1, 0, 2, 2, 1])
    return x, y


def _model():
    torch.manual_seed(0)
    return MLP(input_size=N_IN, n_classes=N_OUT, hidden=HIDDEN)


def _experience(x, y):
    from avalanche.benchmarks import tensors_benchmark

    return tensors_benchmark(train_tensors=[[x, y]], test_tensors=[[x, y]], task_labels=[0]).train_stream[0]


def _recorder():
    from avalanche.core import SupervisedPlugin

    class Recorder(SupervisedPlugin):
        """The minibatches as the strategy received them."""

        def __init__(self):
            super().__init__()
            self.seen = []

        def before_training_iteration(self, strategy, *args, **kwargs):
            self.seen.append(strategy.mb_x.detach().clone())

    return Recorder()


def _train(name, fast_path, **hp):
    """The strategy ``name`` after one experience of N examples, two minibatches, in order."""
    x, y = _data()
    recorder = _recorder()
    ctx = strategies.StrategyContext(batch_size=BATCH, n_classes=N_OUT, input_shape=(N_IN,), seed=SEED,
                                     plugins=(recorder,))
    if name == "mer":
        s = strategies.build(name, model=_model(), context=ctx, fast_path=fast_path, **hp)
    else:  # the La-MAML family takes the path as an attribute (not a hyperparameter)
        s = strategies.build(name, model=_model(), context=ctx, **hp)
        s.fast_path = fast_path
    with ReluMargin(s.model) as margin:
        s.train(_experience(x, y), shuffle=False)
    if s.report().backend == "reference":  # the compiled twin of a case runs the same data through weights within 1e-5
        assert margin.min > TIE_MARGIN, f"a hidden unit comes within {margin.min:.2g} of a ReLU tie"
    assert [len(b) for b in recorder.seen] == [BATCH, N - BATCH]
    assert torch.equal(torch.cat(recorder.seen), x)  # the stream order the expected values assume
    return s


# -- the equations, in plain torch (float64) ----------------------------------------------
def _initial_params():
    return [p.detach().double().clone() for p in _model().parameters()]  # [W1, b1, W2, b2, W3, b3]


def _logits(params, x):
    h = x.reshape(len(x), -1)
    for layer in range(0, len(params), 2):
        h = h @ params[layer].T + params[layer + 1]
        if layer + 2 < len(params):
            h = torch.relu(h)
    return h


def _loss(params, x, y):
    """Mean cross-entropy over the examples (x, y)."""
    return F.cross_entropy(_logits(params, x), y)


def _sgd(params, x, y, lr, weight=1.0, clip=None, clipped=None):
    """One SGD step on the single example (x, y) with its loss times ``weight``; with ``clip``
    the gradient is first scaled to joint norm at most ``clip`` (and ``clipped`` records whether)."""
    params = [p.detach().requires_grad_() for p in params]
    grads = torch.autograd.grad(weight * _loss(params, x[None], y[None]), params)
    if clip is not None:
        grads, was = _clipped(grads, clip)
        clipped.append(was)
    return [(p - lr * g).detach() for p, g in zip(params, grads)]


def _interpolate(before, after, rate):
    """Reptile: before + rate * (after - before)."""
    return [b + rate * (a - b) for b, a in zip(before, after)]


class _AlgorithmR:
    """Vitter's reservoir (Algorithm R) over example indices, on its own numpy generator seeded
    like the strategy's memory: example i (0-based) fills slot i while there is room; later it
    takes slot j = uniform integer in [0, i] when j < size. Replay draws are k distinct slots."""

    def __init__(self, size, seed=SEED):
        self.size, self.seen, self.slots = size, 0, []
        self.rng = np.random.default_rng(seed)

    def offer(self, example):
        i, self.seen = self.seen, self.seen + 1
        if i < self.size:
            self.slots.append(example)
            return
        j = int(self.rng.integers(0, i + 1))
        if j < self.size:
            self.slots[j] = example

    def draw(self, k):
        if k == 0 or not self.slots:
            return []
        return [self.slots[j] for j in self.rng.choice(len(self.slots), size=min(k, len(self.slots)), replace=False)]


def _check_memory(strategy, memory, x, y):
    assert strategy.memory.seen == memory.seen == N
    n = len(memory.slots)
    assert len(strategy.memory) == n
    assert torch.equal(strategy.memory.y[:n], y[memory.slots])
    assert torch.equal(strategy.memory.x[:n], x[memory.slots])


def _check_params(strategy, expected):
    got = [p.detach() for p in strategy.model.parameters()]
    assert len(got) == len(expected)
    for p, e in zip(got, expected):
        assert torch.allclose(p.double(), e, atol=1e-5, rtol=0), (p - e).abs().max()


def _check_path(strategy, fast_path):
    """The path asked for is the one that ran, as the run record would say."""
    assert strategy.report().backend == ("numba" if fast_path else "reference")


# -- the reservoir memory ----------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, SEED])
def test_reservoir_memory_is_algorithm_r(seed):
    """Contents after every batch (batches longer than the memory included, where a later
    example may replace an earlier one of the same batch) and every replay draw."""
    mem = strategies.ReservoirMemory(size=5, seed=seed)
    expected = _AlgorithmR(5, seed)
    ids = torch.arange(60)
    start, replaced = 0, 0
    for size in (3, 1, 4, 7, 2, 13, 1, 9, 20):
        batch = ids[start:start + size]
        mem.add(batch.float()[:, None] * 0.5, batch, batch % 2)
        before = list(expected.slots)
        for i in batch.tolist():
            expected.offer(i)
        replaced += sum(a != b for a, b in zip(before, expected.slots))
        start += size
        n = len(expected.slots)
        assert len(mem) == n and mem.seen == expected.seen == start
        assert mem.y[:n].tolist() == expected.slots
        assert mem.x[:n, 0].tolist() == [0.5 * i for i in expected.slots] and mem.t[:n].tolist() == [i % 2 for i in expected.slots]
        for k in (2, 5, 8):
            x, y, t = mem.sample(k)
            assert y.tolist() == expected.draw(k)
            assert x[:, 0].tolist() == [0.5 * i for i in y.tolist()]
    assert replaced >= 5  # Algorithm R kept replacing to the end
    assert set(expected.slots) != set(range(55, 60))  # not "the last five"


# -- MER ------------------------------------------------------------------------------
def _expected_mer(*, algorithm, alg6_form, lr, beta, gamma, s, k, mem_size, clip=None):
    x, y = _data()
    xd = x.double()
    theta = _initial_params()
    memory = _AlgorithmR(mem_size)
    order = torch.Generator().manual_seed(SEED)
    changed_by_memory = 0
    clipped = []
    for n in range(N):
        theta_a0 = theta
        if algorithm == 7:
            batch = [n] + memory.draw(k)
            weights = [float(s)] + [1.0] * (len(batch) - 1)
            changed_by_memory += len(batch) - 1
            for j in torch.randperm(len(batch), generator=order).tolist():
                theta = _sgd(theta, xd[batch[j]], y[batch[j]], lr, weights[j])
            theta = _interpolate(theta_a0, theta, gamma)
        else:
            for _ in range(s):
                theta_w0 = theta
                drawn = memory.draw(k)
                changed_by_memory += len(drawn)
                if algorithm == 6 and alg6_form == "official":  # meralg6.py: the incoming example last
                    batch = drawn + [n]
                else:
                    batch = [n] + drawn
                for j in batch:
                    theta = _sgd(theta, xd[j], y[j], lr, clip=clip, clipped=clipped)
                if algorithm == 1:
                    theta = _interpolate(theta_w0, theta, beta)
                elif alg6_form == "official":  # Reptile with gamma after each batch
                    theta = _interpolate(theta_w0, theta, gamma)
            if algorithm == 1 or alg6_form == "paper":
                theta = _interpolate(theta_a0, theta, gamma)
        memory.offer(n)
    assert changed_by_memory > 0 and memory.seen > mem_size  # replay and replacement both happened
    if clip is not None:  # the clipping acted on some steps and not on others
        assert any(clipped) and not all(clipped), clipped
    return theta, memory


MER_CASES = {
    "alg1": dict(algorithm=1, alg6_form="official", beta=0.3, gamma=0.6, s=2),
    "alg6-official": dict(algorithm=6, alg6_form="official", beta=0.3, gamma=0.6, s=2),
    "alg6-paper": dict(algorithm=6, alg6_form="paper", beta=0.3, gamma=0.6, s=2),
    "alg7": dict(algorithm=7, alg6_form="official", beta=0.3, gamma=0.6, s=3),
}


@pytest.mark.parametrize("fast_path", [True, False], ids=["compiled", "reference"])
@pytest.mark.parametrize("case", sorted(MER_CASES))
def test_mer_updates_equal_the_papers_equations(case, fast_path):
    hp = dict(MER_CASES[case], lr=0.2, k=3, mem_size=5)
    s = _train("mer", fast_path, lr=hp["lr"], beta=hp["beta"], gamma=hp["gamma"], batches_per_example=hp["s"],
               replay_batch=hp["k"], mem_size=hp["mem_size"], algorithm=hp["algorithm"], alg6_form=hp["alg6_form"])
    _check_path(s, fast_path)
    expected, memory = _expected_mer(**hp)
    x, y = _data()
    _check_memory(s, memory, x, y)
    _check_params(s, expected)


# -- La-MAML, C-MAML, Sync-La-MAML --------------------------------------------------------
def _clipped(grads, max_norm):
    """grads * min(1, max_norm / (joint L2 norm + 1e-6)), and whether the factor was below 1."""
    norm = torch.sqrt(sum((g ** 2).sum() for g in grads))
    factor = min(1.0, max_norm / (float(norm) + 1e-6))
    return [g * factor for g in grads], factor < 1.0


def _expected_lamaml(name, *, alpha_init, opt_lr, opt_wt, glances, k, mem_size, clip, cifar=False):
    """``cifar``: La-MAML's CIFAR code: inner steps with alpha itself, each inner gradient clamped
    elementwise to ``clip``, the minibatch cut into chunks of ceil(4 / 3) = 2 examples for
    ``cifar_batches`` = 3 (one step and one meta-loss each),
    second-order meta-gradients."""
    x, y = _data()
    xd = x.double()
    theta = _initial_params()
    alpha = [torch.full_like(p, alpha_init) for p in theta]
    memory = _AlgorithmR(mem_size)
    order = torch.Generator().manual_seed(SEED)
    learned = name != "c-maml"
    clipped = {"theta": [], "alpha": []}
    for start in range(0, N, BATCH):
        batch = torch.arange(start, min(start + BATCH, N))
        for glance in range(glances):
            batch = batch[torch.randperm(len(batch), generator=order)]
            meta = memory.draw(k) + batch.tolist()
            th = [p.clone().requires_grad_() for p in theta]
            al = [a.clone().requires_grad_() for a in alpha]
            rates = ([a for a in al] if cifar else [torch.relu(a) for a in al]) if learned else [alpha_init] * len(th)
            fast, meta_losses = th, []
            size = -(-len(batch) // 3) if cifar else 1
            for c in range(0, len(batch), size):
                rows = batch[c:c + size]
                # first order: the inner gradient is a constant; the CIFAR form differentiates it (second order)
                inner = torch.autograd.grad(_loss(fast, xd[rows], y[rows]), fast, create_graph=cifar)
                if cifar:
                    inner = [g.clamp(-clip, clip) for g in inner]
                fast = [w - r * g for w, r, g in zip(fast, rates, inner)]
                meta_losses.append(_loss(fast, xd[meta], y[meta]))
            if glance == 0:  # the minibatch enters the memory once, after this glance's draw
                for i in batch.tolist():
                    memory.offer(i)
            meta_loss = torch.stack(meta_losses).mean()
            grads = torch.autograd.grad(meta_loss, th + (al if learned else []))
            g_theta, was = _clipped(grads[:len(th)], clip)
            clipped["theta"].append(was)
            with torch.no_grad():
                if learned:
                    g_alpha, was = _clipped(grads[len(th):], clip)
                    clipped["alpha"].append(was)
                    alpha = [a - opt_lr * g for a, g in zip(alpha, g_alpha)]
                if name == "la-maml":  # asynchronous: the new rates, through relu
                    theta = [p - torch.relu(a) * g for p, a, g in zip(theta, alpha, g_theta)]
                else:
                    theta = [p - opt_wt * g for p, g in zip(theta, g_theta)]
    # the setting exercises what it should: clipping both active and inactive
    if cifar:  # the clipping acted at least once
        assert any(clipped["theta"] + clipped["alpha"]), clipped
    else:
        assert any(clipped["theta"]) and not all(clipped["theta"]), clipped
        if learned:
            assert any(clipped["alpha"]) and not all(clipped["alpha"]), clipped
    return theta, alpha, memory


LAMAML_CASES = {
    "la-maml": dict(alpha_init=0.05, opt_lr=2.0),
    "sync-la-maml": dict(alpha_init=0.05, opt_lr=2.0, opt_wt=0.3),
    "c-maml": dict(alpha_init=0.1, opt_wt=0.3),
}


@pytest.mark.parametrize("fast_path", [True, False], ids=["compiled", "reference"])
@pytest.mark.parametrize("name", sorted(LAMAML_CASES))
def test_lamaml_family_updates_equal_the_papers_equations(name, fast_path):
    hp = dict(LAMAML_CASES[name], glances=2, replay_batch=3, mem_size=5, grad_clip_norm=0.5)
    s = _train(name, fast_path, **hp)
    _check_path(s, fast_path)
    theta, alpha, memory = _expected_lamaml(name, alpha_init=hp["alpha_init"], opt_lr=hp.get("opt_lr", 0.0),
                                            opt_wt=hp.get("opt_wt", 0.0), glances=hp["glances"],
                                            k=hp["replay_batch"], mem_size=hp["mem_size"], clip=hp["grad_clip_norm"])
    x, y = _data()
    _check_memory(s, memory, x, y)
    _check_params(s, theta)
    for a, e in zip(s.alphas, alpha):
        assert torch.allclose(a.detach().double(), e, atol=1e-5, rtol=0), (a - e).abs().max()
    if name != "c-maml":  # some rates went below zero: relu matters in the inner (and outer) steps
        assert any(bool((e < 0).any()) for e in alpha)
    if name == "c-maml":
        assert all(torch.equal(a, torch.full_like(a, hp["alpha_init"])) for a in s.alphas)


@pytest.mark.parametrize("name", ["la-maml", "c-maml"])
def test_lamaml_cifar_form_equals_the_official_cifar_code(name):
    """La-MAML's CIFAR glance (model/lamaml_cifar.py): raw alpha, clamped inner gradients, chunks,
    second order; the reference path runs it (the compiled backend does the MNIST form only)."""
    hp = dict(LAMAML_CASES[name], glances=2, replay_batch=3, mem_size=5, grad_clip_norm=0.5)
    if name == "la-maml":
        hp["opt_lr"] = 20.0  # drives some rates below zero
    s = _train(name, True, **hp, inner_rate="alpha", clamp_inner=True, inner_chunks=3, second_order=True)
    assert s.report().backend == "reference" and s.report().inner_steps == 2 * 2 * 2  # batches x glances x chunks
    theta, alpha, memory = _expected_lamaml(name, alpha_init=hp["alpha_init"], opt_lr=hp.get("opt_lr", 0.0),
                                            opt_wt=hp.get("opt_wt", 0.0), glances=hp["glances"],
                                            k=hp["replay_batch"], mem_size=hp["mem_size"], clip=hp["grad_clip_norm"],
                                            cifar=True)
    x, y = _data()
    _check_memory(s, memory, x, y)
    _check_params(s, theta)
    for a, e in zip(s.alphas, alpha):
        assert torch.allclose(a.detach().double(), e, atol=1e-5, rtol=0), (a - e).abs().max()
    if name == "la-maml":  # rates below zero take negative inner steps here (no relu), unlike the MNIST form
        assert any(bool((e < 0).any()) for e in alpha)


def test_mer_clips_each_step_as_la_mamls_cifar_mer():
    """``grad_clip_norm``: each single-example step's gradient scaled to that joint norm first
    (meralg1.py's clip_grad_norm_ before every step); the reference path runs it."""
    hp = dict(MER_CASES["alg1"], lr=0.2, k=3, mem_size=5)
    s = _train("mer", True, lr=hp["lr"], beta=hp["beta"], gamma=hp["gamma"], batches_per_example=hp["s"],
               replay_batch=hp["k"], mem_size=hp["mem_size"], algorithm=1, grad_clip_norm=3.0)
    assert s.report().backend == "reference"  # the kernels do not clip
    expected, memory = _expected_mer(**hp, clip=3.0)
    x, y = _data()
    _check_memory(s, memory, x, y)
    _check_params(s, expected)


# -- continual Reptile ----------------------------------------------------------------
def _expected_reptile(*, lr, k, epsilon, replay, mem_size):
    """Per minibatch: theta_0 = theta; k SGD steps on the mean loss of [minibatch, memory draws
    made afresh per step]; theta = theta_0 + epsilon (theta_k - theta_0); then the minibatch
    enters the memory."""
    x, y = _data()
    xd = x.double()
    theta = _initial_params()
    memory = _AlgorithmR(mem_size)
    replayed = 0
    for start in range(0, N, BATCH):
        batch = list(range(start, min(start + BATCH, N)))
        theta_0 = theta
        for _ in range(k):
            drawn = memory.draw(replay)
            replayed += len(drawn)
            rows = batch + drawn
            params = [p.detach().requires_grad_() for p in theta]
            grads = torch.autograd.grad(_loss(params, xd[rows], y[rows]), params)
            theta = [(p - lr * g).detach() for p, g in zip(params, grads)]
        theta = _interpolate(theta_0, theta, epsilon)
        for i in batch:
            memory.offer(i)
    assert replayed > 0 and memory.seen > mem_size  # replay and replacement both happened
    return theta, memory


def test_reptile_updates_equal_the_papers_equations():
    hp = dict(lr=0.2, k=3, epsilon=0.4, replay=3, mem_size=5)
    s = _train("reptile", False, lr=hp["lr"], inner_steps=hp["k"], epsilon=hp["epsilon"], replay_batch=hp["replay"],
               mem_size=hp["mem_size"])
    expected, memory = _expected_reptile(**hp)
    x, y = _data()
    _check_memory(s, memory, x, y)
    _check_params(s, expected)
    assert s.report().inner_steps == 2 * hp["k"]


# -- VR-MCL ---------------------------------------------------------------------------
def _expected_vrmcl(*, lr, alpha_init, s_momentum, s_lr, chunk, passes, k, mem_size, clip, second_order):
    """Per minibatch, ``passes`` times: support = the minibatch shuffled, query = minibatch +
    k memory draws; from theta (and from the lagged theta_prev, same alpha) inner steps
    phi -= alpha * clamp(grad L(chunk; phi), -clip, clip) over chunks of the support, the query
    loss after each, L = their mean; g = clip(grad_theta L), g~ = clip(grad_prev L~),
    g_alpha = clip(clip(grad_alpha L) + grad_alpha L~); theta_prev = theta; alpha -= lr g_alpha;
    v = g (first) or g + s_momentum (v - g~); theta -= s_lr v. Then the minibatch enters the memory."""
    x, y = _data()
    xd = x.double()
    theta = _initial_params()
    prev = [p.clone() for p in theta]  # the experience starts: theta_prev = theta
    alpha = [torch.full_like(p, alpha_init) for p in theta]
    v = None
    memory = _AlgorithmR(mem_size)
    order = torch.Generator().manual_seed(SEED)
    corrections = []
    for start in range(0, N, BATCH):
        batch = torch.arange(start, min(start + BATCH, N))
        for _ in range(passes):
            support = batch[torch.randperm(len(batch), generator=order)].tolist()
            query = batch.tolist() + memory.draw(k)
            al = [a.clone().requires_grad_() for a in alpha]

            def path(weights):
                fast, losses = weights, []
                for c in range(0, len(support), chunk):
                    rows = support[c:c + chunk]
                    inner = torch.autograd.grad(_loss(fast, xd[rows], y[rows]), fast, create_graph=second_order)
                    fast = [w - a * g.clamp(-clip, clip) for w, a, g in zip(fast, al, inner)]
                    losses.append(_loss(fast, xd[query], y[query]))
                return torch.stack(losses).mean()

            th = [p.clone().requires_grad_() for p in theta]
            pv = [p.clone().requires_grad_() for p in prev]
            grads = torch.autograd.grad(path(th), th + al)
            g, _ = _clipped(grads[:len(th)], clip)
            g_alpha_main, _ = _clipped(grads[len(th):], clip)
            lagged = torch.autograd.grad(path(pv), pv + al)
            g_tilde, _ = _clipped(lagged[:len(th)], clip)
            g_alpha, _ = _clipped([a + b for a, b in zip(g_alpha_main, lagged[len(th):])], clip)
            with torch.no_grad():
                prev = [p.clone() for p in theta]
                alpha = [a - lr * ga for a, ga in zip(alpha, g_alpha)]
                if v is None:
                    v = g
                else:
                    corrections.append(max(float((vv - gt).abs().max()) for vv, gt in zip(v, g_tilde)))
                    v = [gg + s_momentum * (vv - gt) for gg, vv, gt in zip(g, v, g_tilde)]
                theta = [p - s_lr * vv for p, vv in zip(theta, v)]
        for i in batch.tolist():
            memory.offer(i)
    assert corrections and max(corrections) > 1e-3  # the variance-reduction term acted
    return theta, alpha, memory


@pytest.mark.parametrize("second_order,chunk,fast_path", [(False, 2, False), (True, 2, False), (False, 1, True)],
                         ids=["first-order", "second-order", "first-order-single-example-compiled"])
def test_vrmcl_updates_equal_the_papers_equations(second_order, chunk, fast_path):
    """The reference path in chunks of two, first and second order; the compiled backend where it
    applies (first order, one example per inner step)."""
    hp = dict(lr=3.0, alpha_init=0.05, s_momentum=0.3, s_lr=0.2, chunk=chunk, passes=2, k=3, mem_size=5, clip=0.5,
              second_order=second_order)
    s = _train("vr-mcl", fast_path, lr=hp["lr"], alpha_init=hp["alpha_init"], s_momentum=hp["s_momentum"],
               s_lr=hp["s_lr"], inner_batch_size=hp["chunk"], meta_update_per_batch=hp["passes"],
               replay_batch=hp["k"], mem_size=hp["mem_size"], grad_clip_norm=hp["clip"], second_order=second_order)
    _check_path(s, fast_path)
    theta, alpha, memory = _expected_vrmcl(**hp)
    x, y = _data()
    _check_memory(s, memory, x, y)
    _check_params(s, theta)
    for a, e in zip(s.alphas, alpha):
        assert torch.allclose(a.detach().double(), e, atol=1e-5, rtol=0), (a - e).abs().max()
    # minibatches x passes x chunks of 4 examples x (theta and lagged paths)
    assert s.report().inner_steps == 2 * 2 * (4 // chunk) * 2
    assert any(bool((e < 0).any()) for e in alpha)  # some rates went below zero: the inner steps use alpha itself
