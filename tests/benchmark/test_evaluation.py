"""Our per-task accuracies equal Avalanche's own accuracy metric on the same model."""

import torch

import scenarios
from benchmark.evaluation import EvalSet, accuracy, evaluate, eval_sets
from benchmark.models import build_model


def test_accuracies_equal_avalanche_accuracy_metric():
    from avalanche.evaluation.metrics import accuracy_metrics
    from avalanche.training import Naive
    from avalanche.training.plugins import EvaluationPlugin

    stream = scenarios.build("permuted-mnist", seed=0, n_tasks=3, per_task=300, test_per_task=400)
    torch.manual_seed(0)
    model = build_model("mlp", input_shape=stream.input_shape, n_classes=10)
    strategy = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                     criterion=torch.nn.CrossEntropyLoss(), train_mb_size=10, eval_mb_size=128,
                     evaluator=EvaluationPlugin(accuracy_metrics(experience=True), loggers=[]))
    strategy.train(stream.benchmark.train_stream[0])
    theirs = strategy.eval(stream.benchmark.test_stream)
    ours = evaluate(model, eval_sets(stream, masked=False), batch_size=1000, device="cpu")
    for j, acc in enumerate(ours):
        key = f"Top1_Acc_Exp/eval_phase/test_stream/Task000/Exp{j:03d}"
        assert acc == theirs[key], (j, acc, theirs[key])
    assert ours[0] > ours[1]  # trained on task 0 only


def test_task_incremental_masking_restricts_predictions_to_the_task():
    model = torch.nn.Linear(2, 4, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[5.0, 0], [0, 1.0], [0, 0], [1.0, 0]]))
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([3, 1])
    assert accuracy(model, EvalSet(x, y), batch_size=1, device="cpu") == 0.5  # unit 0 wins on the first
    assert accuracy(model, EvalSet(x, y, classes=(1, 3)), batch_size=1, device="cpu") == 1.0


def test_evaluation_leaves_train_mode_and_gradients_alone():
    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Dropout(0.5))
    model.train()
    accuracy(model, EvalSet(torch.randn(5, 2), torch.zeros(5, dtype=torch.long)), batch_size=2, device="cpu")
    assert model.training
    assert all(p.grad is None for p in model.parameters())
