"""CoPE (Avalanche's CoPEPlugin, run one minibatch-experience at a time): the prototype update
checked against the paper's momentum rule computed here, and training on every kind of stream."""

import pytest
import torch
import torch.nn.functional as F

import scenarios
import strategies
from benchmark.models import build_model


def _ctx(stream, **kw):
    return strategies.StrategyContext(batch_size=10, n_classes=stream.n_classes, input_shape=stream.input_shape,
                                      task_labels=stream.task_labels, classes_per_task=stream.classes_per_task, **kw)


def test_prototypes_move_by_the_momentum_rule_after_a_batch():
    """With lr 1e-12 the weights stay (to float precision), so the embeddings of the first batch
    (before anything is in memory) are known here: p_c = normalise(alpha p_c + (1 - alpha)
    normalise(mean of the batch's class-c embeddings)) for every class in the batch (De Lange and
    Tuytelaars 2021, Sec. 3.2); the other prototypes stay."""
    stream = scenarios.build("split-mnist", source="digits", seed=0, n_tasks=5, per_task=10)
    torch.manual_seed(0)
    model = build_model("mlp", input_shape=stream.input_shape, n_classes=10, hidden=(20,))
    alpha = 0.7
    s = strategies.build("cope", model=model, context=_ctx(stream, seed=3), lr=1e-12, alpha=alpha)
    start = {c: p.clone() for c, p in s.prototypes().items()}
    assert sorted(start) == list(range(10)) and all(torch.allclose(p.norm(), torch.tensor(1.0)) for p in start.values())
    exp = stream.benchmark.train_stream[0]
    x = torch.stack([exp.dataset[i][0] for i in range(len(exp.dataset))])
    y = torch.tensor([int(exp.dataset[i][1]) for i in range(len(exp.dataset))])
    expected = {c: p.clone() for c, p in start.items()}
    with torch.no_grad():
        emb = F.normalize(model(x), dim=1)
    for b in range(0, len(y), 10):  # the stream's order: one online experience per minibatch
        ey, ee = y[b:b + 10], emb[b:b + 10]
        for c in ey.unique().tolist():
            mean = F.normalize(ee[ey == c].mean(0, keepdim=True), dim=1)[0]
            expected[c] = F.normalize((alpha * expected[c] + (1 - alpha) * mean)[None], dim=1)[0]
    s.train(exp)
    got = s.prototypes()
    for c in range(10):
        assert torch.allclose(got[c], expected[c], atol=1e-5), c
    assert any(not torch.allclose(got[c], start[c]) for c in y.unique().tolist())
    assert all(torch.equal(got[c], start[c]) for c in range(10) if c not in y.unique().tolist())


@pytest.mark.parametrize("name, params", [
    ("permuted-mnist", {"n_tasks": 2, "per_task": 40}),
    ("rotated-mnist", {"n_tasks": 2, "per_task": 40}),
    ("split-mnist", {"n_tasks": 5, "per_task": 40}),
    ("split-mnist", {"n_tasks": 5, "per_task": 40, "task_incremental": True}),
])
def test_cope_trains_on_every_kind_of_stream(name, params):
    stream = scenarios.build(name, source="digits", seed=0, **params)
    torch.manual_seed(0)
    model = build_model("mlp", input_shape=stream.input_shape, n_classes=stream.n_classes)
    before = [p.detach().clone() for p in model.parameters()]
    s = strategies.build("cope", model=model, context=_ctx(stream))
    for exp in list(stream.benchmark.train_stream)[:2]:
        s.train(exp)
    assert len(s.cope.storage_policy.buffer) > 0  # the class-balanced memory filled online
    assert any(not torch.equal(a, b) for a, b in zip(before, s.model.parameters()))
    assert all(torch.isfinite(p).all() for p in s.model.parameters())


def test_cope_trains_on_the_cnn_backbone(tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "c.npz", x=rng.random((40, 32, 32, 3)).astype(np.float32), y=np.arange(40) % 4)
    stream = scenarios.build("split-cifar10", source="npz", path=str(tmp_path / "c.npz"), n_tasks=2)
    model = build_model("cnn", input_shape=stream.input_shape, n_classes=4)
    before = [p.detach().clone() for p in model.parameters()]
    s = strategies.build("cope", model=model, context=_ctx(stream))
    s.train(stream.benchmark.train_stream[0])
    assert any(not torch.equal(a, b) for a, b in zip(before, s.model.parameters()))
    assert s.embed(torch.zeros(2, 3, 32, 32)).shape == (2, 4)
