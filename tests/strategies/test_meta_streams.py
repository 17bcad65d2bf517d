"""Our meta strategies train on our streams and on streams built with Avalanche's own
generators, with the MLP and the CNN backbones, class- and task-incremental."""

import pytest
import torch

import scenarios
import strategies
from benchmark.evaluation import EvalSet, accuracy
from benchmark.models import build_model

META = {
    "mer": {"batches_per_example": 2, "replay_batch": 3},
    "c-maml": {"glances": 2},
    "la-maml": {"glances": 2},
    "sync-la-maml": {"glances": 2},
    "reptile": {"inner_steps": 2, "replay_batch": 3},
    "vr-mcl": {"inner_batch_size": 5, "mem_size": 100, "replay_batch": 5, "second_order": False},
}


def _check_learns(name, benchmark, model, ctx, *, tasks):
    before = [p.detach().clone() for p in model.parameters()]
    torch.manual_seed(0)
    s = strategies.build(name, model=model, context=ctx, **META[name])
    for exp in list(benchmark.train_stream)[:tasks]:
        s.train(exp)
    assert s.report().inner_steps > 0
    assert all(torch.isfinite(p).all() for p in s.model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, s.model.parameters()))
    return s


@pytest.mark.parametrize("name", sorted(META))
def test_task_incremental_split_stream(name):
    stream = scenarios.build("split-mnist", seed=0, n_tasks=5, per_task=50, task_incremental=True, test_per_task=300)
    torch.manual_seed(0)
    model = build_model("mlp", input_shape=stream.input_shape, n_classes=10)
    ctx = strategies.StrategyContext(batch_size=10, n_classes=10, input_shape=stream.input_shape, task_labels=True,
                                     classes_per_task=stream.classes_per_task)
    s = _check_learns(name, stream.benchmark, model, ctx, tasks=2)
    # the loss is taken over each task's own classes: outputs of other tasks' classes never learn
    from torch.utils.data import DataLoader

    x, y, _ = next(iter(DataLoader(stream.benchmark.test_stream[0].dataset, batch_size=300)))
    acc = accuracy(s.model, EvalSet(x, y, stream.classes_per_task[0]), batch_size=300, device="cpu")
    assert acc > 0.8, acc


@pytest.mark.parametrize("name", sorted(META))
def test_stream_from_avalanche_generators(name):
    from avalanche.benchmarks import nc_benchmark
    from avalanche.benchmarks.utils import _make_taskaware_tensor_classification_dataset as tensor_dataset

    g = torch.Generator().manual_seed(0)
    x = torch.rand(120, 1, 8, 8, generator=g)
    y = torch.arange(120) % 4
    train = tensor_dataset(x[:80], y[:80])
    test = tensor_dataset(x[80:], y[80:])
    bm = nc_benchmark(train, test, n_experiences=2, task_labels=True, seed=0, fixed_class_order=[0, 1, 2, 3])
    model = build_model("mlp", input_shape=(1, 8, 8), n_classes=4)
    ctx = strategies.StrategyContext(batch_size=10, n_classes=4, input_shape=(1, 8, 8))
    _check_learns(name, bm, model, ctx, tasks=2)


@pytest.mark.parametrize("name", sorted(META))
def test_cnn_backbone(name, tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    xs = rng.random((40, 32, 32, 3)).astype(np.float32)
    np.savez(tmp_path / "c.npz", x=xs, y=np.arange(40) % 4)
    stream = scenarios.build("split-cifar10", source="npz", path=str(tmp_path / "c.npz"), n_tasks=2)
    model = build_model("cnn", input_shape=stream.input_shape, n_classes=4)
    ctx = strategies.StrategyContext(batch_size=10, n_classes=4, input_shape=stream.input_shape)
    _check_learns(name, stream.benchmark, model, ctx, tasks=1)


@pytest.mark.parametrize("stream_name, params", [
    ("permuted-mnist", {"n_tasks": 2, "per_task": 30}),
    ("rotated-mnist", {"n_tasks": 2, "per_task": 30}),
    ("split-mnist", {"n_tasks": 5, "per_task": 30}),  # class-incremental: one head over all classes
], ids=["permuted", "rotated", "split-class-incremental"])
@pytest.mark.parametrize("name", sorted(META))
def test_permuted_rotated_and_class_incremental_streams(name, stream_name, params):
    stream = scenarios.build(stream_name, source="digits", seed=0, **params)
    torch.manual_seed(0)
    model = build_model("mlp", input_shape=stream.input_shape, n_classes=stream.n_classes)
    ctx = strategies.StrategyContext(batch_size=10, n_classes=stream.n_classes, input_shape=stream.input_shape,
                                     task_labels=stream.task_labels, classes_per_task=stream.classes_per_task)
    _check_learns(name, stream.benchmark, model, ctx, tasks=2)
