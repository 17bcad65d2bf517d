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


def _features(model, x):
    """The input of the MLP's last linear layer, computed from its weights here."""
    w1, b1, w2, b2 = (p.detach() for p in list(model.parameters())[:4])
    h = torch.relu(x.reshape(len(x), -1) @ w1.T + b1)
    return torch.relu(h @ w2.T + b2)


def test_the_ncm_head_predicts_the_nearest_class_mean_of_the_representation():
    from benchmark.evaluation import class_means, ncm_examples, nearest_prototype, penultimate

    stream = scenarios.build("split-mnist", source="digits", seed=0, n_tasks=5, per_task=40, task_incremental=True)
    torch.manual_seed(0)
    model = build_model("mlp", input_shape=stream.input_shape, n_classes=10, hidden=(16, 12))
    x, y = ncm_examples(stream, per_class=7)
    assert sorted(torch.bincount(y).tolist()) == [7] * 10  # the first 7 of every class of the stream
    means = {c: _features(model, x[y == c]).mean(0) for c in range(10)}
    scorer = nearest_prototype(penultimate(model), class_means(penultimate(model), x, y, batch_size=13, device="cpu"),
                               10)
    for test in eval_sets(stream, masked=True):
        f = _features(model, test.x)
        d = torch.stack([((f - means[c]) ** 2).sum(1) for c in range(10)], 1)
        allowed = torch.full((10,), float("inf"))
        allowed[list(test.classes)] = 0.0
        expected = int(((d + allowed).argmin(1) == test.y).sum()) / len(test.y)
        assert accuracy(model, test, batch_size=50, device="cpu", scorer=scorer) == expected


def test_a_prototype_strategy_is_scored_by_its_nearest_prototype():
    import strategies
    from benchmark.runner import _scorer

    stream = scenarios.build("split-mnist", source="digits", seed=0, n_tasks=5, per_task=250)
    torch.manual_seed(0)
    model = build_model("mlp", input_shape=stream.input_shape, n_classes=10)
    ctx = strategies.StrategyContext(batch_size=10, n_classes=10, input_shape=stream.input_shape)
    s = strategies.build("cope", model=model, context=ctx)
    s.train(stream.benchmark.train_stream[0])
    protos = torch.stack([s.prototypes()[c] for c in range(10)])
    tests = eval_sets(stream, masked=False)
    got = evaluate(s.model, tests, batch_size=64, device="cpu",
                   scorer=_scorer(s, s.model, "logits", None, n_classes=10, batch_size=64, device="cpu"))
    with torch.no_grad():
        for acc, test in zip(got, tests):
            e = torch.nn.functional.normalize(s.model(test.x), dim=1)
            assert torch.allclose(e.norm(dim=1), torch.ones(len(e)), atol=1e-5)  # the model ends in a normalisation
            expected = int((torch.cdist(e, protos).argmin(1) == test.y).sum()) / len(test.y)
            assert acc == expected
    assert got[0] > 0.5 and max(got[1:]) < 0.5  # task 0 learned, the others not yet


def test_joined_sets_score_as_the_sets_one_by_one():
    """Continual evaluation scores the tasks seen in one pass (benchmark.evaluation.joined_accuracy):
    the same accuracies as set by set, with each set's class mask, across chunk boundaries."""
    from benchmark.evaluation import JoinedSets, joined_accuracy

    torch.manual_seed(0)
    model = build_model("mlp", input_shape=(12,), n_classes=6, hidden=(16,))
    sets = [EvalSet(torch.randn(n, 12), torch.randint(0, 6, (n,)), classes) for n, classes in
            ((7, (0, 1)), (13, None), (5, (4, 5)), (1, (2, 3)))]
    expected = evaluate(model, sets, batch_size=4, device="cpu")
    assert len(set(expected)) > 1  # the sets differ, so a mix-up would show
    for batch_size in (3, 8, 100):
        joined = JoinedSets.of(sets, 6)
        assert joined_accuracy(model, joined, batch_size=batch_size, device="cpu") == expected
