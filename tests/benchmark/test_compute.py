"""Compute accounting (benchmark.compute): gradient evaluations counted by hooks on the model
for everything that trains with torch autograd, and reported by the compiled backends, which
must say what their reference path would have been counted."""

from __future__ import annotations

import pytest
import torch

import strategies
from benchmark import runner
from benchmark.compute import GradientCounter
from benchmark.config import validate
from benchmark.models import build_model

N, BATCH, N_IN, N_OUT = 30, 10, 20, 4


def _experiences():
    from avalanche.benchmarks import tensors_benchmark

    g = torch.Generator().manual_seed(0)
    data = [[torch.randn(N, N_IN, generator=g), torch.randint(0, N_OUT, (N,), generator=g)] for _ in range(2)]
    return tensors_benchmark(train_tensors=data, test_tensors=data, task_labels=[0, 0]).train_stream


def _trained(name: str, fast_path: bool, **hp):
    """(examples the hooks counted, the strategy's report) after two experiences."""
    torch.manual_seed(0)
    model = build_model("mlp", input_shape=(N_IN,), n_classes=N_OUT, hidden=(16, 16))
    counter = GradientCounter(model=model)
    ctx = strategies.StrategyContext(batch_size=BATCH, n_classes=N_OUT, input_shape=(N_IN,), seed=0)
    if name == "mer":
        s = strategies.build(name, model=model, context=ctx, fast_path=fast_path, **hp)
    else:  # the La-MAML family and VR-MCL take the path as an attribute (not a hyperparameter)
        s = strategies.build(name, model=model, context=ctx, **hp)
        s.fast_path = fast_path
    for exp in _experiences():
        s.train(exp)
    counter.close()
    return counter.examples, s.report()


@pytest.mark.parametrize("name, hp", [
    ("mer", {"mem_size": 20, "replay_batch": 3, "batches_per_example": 2}),
    ("la-maml", {"mem_size": 20, "replay_batch": 5, "glances": 2}),
    ("c-maml", {"mem_size": 20, "replay_batch": 5, "glances": 2, "meta_loss": "final"}),
    ("vr-mcl", {"mem_size": 20, "replay_batch": 5, "inner_batch_size": 1, "meta_update_per_batch": 2,
                "second_order": False}),
])
def test_compiled_backend_reports_what_the_hooks_count_on_its_reference_path(name, hp):
    counted, reference = _trained(name, False, **hp)
    _, compiled = _trained(name, True, **hp)
    assert reference.backend == "reference" and reference.gradient_examples is None
    assert compiled.backend not in (None, "reference"), "the compiled backend did not run"
    assert counted > 0 and compiled.gradient_examples == counted


def _run(strategy: str, hparams: dict, per_task: int = 100) -> dict:
    config = {"name": "c", "seeds": [0], "train": {"batch_size": BATCH, "device": "cpu"},
              "model": {"name": "mlp", "hidden": [32, 32]},
              "scenarios": [{"name": "permuted-mnist", "source": "mnist5k", "n_tasks": 2, "per_task": per_task}],
              "strategies": [{"name": strategy, **hparams}]}
    rec = runner.run_one(validate(config).specs()[0])
    assert rec["status"] == "done", rec.get("error")
    return rec


def test_plain_sgd_backpropagates_each_incoming_example_once():
    t = _run("naive", {"lr": 0.1})["timing"]
    assert t["incoming_examples"] == 200
    assert t["gradient_examples"] == 200 and t["grad_per_example"] == 1.0


def test_minibatch_replay_counts_the_replayed_examples_too():
    # one step per 10 incoming examples joined with min(10, memory) replayed ones; the memory
    # holds 10 j examples before iteration j (j = 0 .. 19), at most 50
    t = _run("er", {"lr": 0.1, "mem_size": 50, "replay_batch": 10})["timing"]
    expected = sum(10 + min(10, min(50, 10 * j)) for j in range(20))
    assert t["gradient_examples"] == expected


def test_evaluation_is_not_counted():
    model = build_model("mlp", input_shape=(N_IN,), n_classes=N_OUT, hidden=(8,))
    counter = GradientCounter(model=model)
    with torch.no_grad():
        model(torch.randn(5, N_IN))
    out = model(torch.randn(7, N_IN))  # a graph, never backpropagated
    model(torch.randn(3, N_IN)).sum().backward()
    assert counter.examples == 3
    out.sum().backward()  # backpropagated later: counted then
    assert counter.examples == 10
