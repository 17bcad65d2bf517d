"""An Avalanche strategy trains on the experiences our streams produce."""

import numpy as np
import pytest
import torch

import scenarios
from benchmark.models import build_model

# (stream, parameters, accuracy that one pass must beat: chance is 0.1, or 0.5 on a split task)
STREAMS = [
    ("permuted-mnist", {"n_tasks": 2}, 0.5),
    ("many-permutations", {"n_tasks": 2}, 0.2),
    ("rotated-mnist", {"n_tasks": 2}, 0.5),
    ("split-mnist", {"n_tasks": 5}, 0.95),
    ("split-mnist", {"n_tasks": 5, "task_incremental": True}, 0.95),
]


def _naive_accuracy(stream, model, *, epochs=1):
    from avalanche.evaluation.metrics import accuracy_metrics
    from avalanche.training import Naive
    from avalanche.training.plugins import EvaluationPlugin

    torch.manual_seed(0)
    evaluator = EvaluationPlugin(accuracy_metrics(experience=True), loggers=[])
    strategy = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), train_mb_size=10,
                     train_epochs=epochs, eval_mb_size=256, evaluator=evaluator)
    first = stream.benchmark.train_stream[0]
    before = [p.detach().clone() for p in model.parameters()]
    strategy.train(first)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    results = strategy.eval([stream.benchmark.test_stream[0]])
    return next(v for k, v in results.items() if k.startswith("Top1_Acc_Exp"))


@pytest.mark.parametrize("name,params,floor", STREAMS, ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(STREAMS)])
def test_naive_learns_the_first_experience(name, params, floor):
    stream = scenarios.build(name, seed=0, **params)
    model = build_model(stream.default_backbone, input_shape=stream.input_shape, n_classes=stream.n_classes)
    acc = _naive_accuracy(stream, model)
    assert acc > floor, acc


def test_cnn_backbone_trains_on_a_colour_split_stream(tmp_path):
    rng = np.random.default_rng(0)
    y = np.arange(200) % 4
    x = rng.random((200, 32, 32, 3)).astype(np.float32) * 0.2
    x[np.arange(200), :, :, y % 3] += 0.8  # the class shows in which colour channel is bright
    np.savez(tmp_path / "colour.npz", x=x, y=y)
    stream = scenarios.build("split-cifar10", source="npz", path=str(tmp_path / "colour.npz"), n_tasks=2)
    assert stream.input_shape == (3, 32, 32)
    model = build_model("cnn", input_shape=stream.input_shape, n_classes=stream.n_classes)
    acc = _naive_accuracy(stream, model, epochs=5)
    assert acc > 0.9, acc  # two classes told apart by their colour
