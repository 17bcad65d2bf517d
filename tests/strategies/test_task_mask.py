"""Task-incremental training follows one rule for every strategy: each example's loss over the
classes of its own task (StrategyContext.mask_training, the harness's train.task_mask)."""

import pytest
import torch

import scenarios
import strategies
from benchmark.models import build_model
from strategies.functional import TaskMaskedCrossEntropy, label_mask, task_mask

# every strategy family: Avalanche templates (criterion), our meta strategies (class mask),
# and Avalanche's own meta strategies (their inner loops call the criterion)
CASES = [
    ("naive", {}), ("er", {}), ("er", {"per_example": True}), ("ewc", {}), ("agem", {}),
    ("mer", {"batches_per_example": 2}), ("mer", {"batches_per_example": 2, "fast_path": False}),
    ("c-maml", {"glances": 1}), ("la-maml", {"glances": 1}), ("la-maml", {"glances": 1, "second_order": True}),
    ("sync-la-maml", {"glances": 1}),
    ("avalanche-mer", {"n_inner_steps": 1}), ("avalanche-la-maml", {"second_order": False}),
]


@pytest.fixture(scope="module")
def stream():
    return scenarios.build("split-mnist", seed=0, task_incremental=True, per_task=30, test_per_task=50)


def _train_second_task(stream, name, hp, *, mask_training):
    torch.manual_seed(0)
    model = build_model("mlp", input_shape=stream.input_shape, n_classes=10)
    ctx = strategies.StrategyContext(batch_size=10, n_classes=10, input_shape=stream.input_shape, task_labels=True,
                                     classes_per_task=stream.classes_per_task, mask_training=mask_training)
    head = model.net[-1]
    before = (head.weight.detach().clone(), head.bias.detach().clone())
    s = strategies.build(name, model=model, context=ctx, **hp)
    s.train(stream.benchmark.train_stream[1])  # task 1: classes 2 and 3
    return before, (head.weight.detach(), head.bias.detach())


@pytest.mark.parametrize("name,hp", CASES, ids=[f"{n}{'-' + '-'.join(f'{k}={v}' for k, v in h.items()) if h else ''}"
                                                  for n, h in CASES])
def test_masked_training_leaves_other_tasks_outputs_untouched(stream, name, hp):
    (w0, b0), (w, b) = _train_second_task(stream, name, hp, mask_training=True)
    others = [c for c in range(10) if c not in stream.classes_per_task[1]]
    own = list(stream.classes_per_task[1])
    assert torch.equal(w[others], w0[others]) and torch.equal(b[others], b0[others])
    assert not torch.equal(w[own], w0[own])


@pytest.mark.parametrize("name,hp", [("naive", {}), ("er", {}), ("mer", {"batches_per_example": 2}),
                                     ("la-maml", {"glances": 1})])
def test_unmasked_training_moves_every_output(stream, name, hp):
    (w0, b0), (w, b) = _train_second_task(stream, name, hp, mask_training=False)
    others = [c for c in range(10) if c not in stream.classes_per_task[1]]
    assert not torch.equal(b[others], b0[others])  # the softmax over all classes pushes the others down
    assert bool((b[others] < b0[others]).all())


def test_label_mask_is_the_task_mask_read_through_the_label():
    classes = ((0, 1), (2, 3), (4, 5))
    by_task, by_label = task_mask(classes, 6, "cpu"), label_mask(classes, 6, "cpu")
    for t, cls in enumerate(classes):
        for c in cls:
            assert torch.equal(by_label[c], by_task[t])
    logits, y = torch.randn(4, 6), torch.tensor([0, 3, 5, 2])
    t = torch.tensor([0, 1, 2, 1])
    expected = torch.nn.functional.cross_entropy(logits + by_task[t], y)
    got = TaskMaskedCrossEntropy(classes_per_task=classes, n_classes=6)(logits, y)
    assert torch.allclose(got, expected)
    with pytest.raises(ValueError, match="class 1 belongs to tasks with different classes"):
        label_mask(((0, 1), (1, 2)), 3, "cpu")


def test_permuted_task_labels_need_no_mask():
    s = scenarios.build("permuted-mnist", seed=0, n_tasks=2, per_task=10, test_per_task=10, task_labels=True)
    assert torch.equal(label_mask(s.classes_per_task, 10, "cpu"), torch.zeros(10, 10))


@pytest.mark.parametrize("name", sorted(strategies.available()))
def test_every_strategy_starts_from_the_weights_it_is_given(stream, name):
    """Same initialisation for every strategy of a table (Avalanche's LaMAML re-initialises its
    model in its constructor; the factory puts the given weights back)."""
    torch.manual_seed(0)
    model = build_model("mlp", input_shape=stream.input_shape, n_classes=10)
    given = {k: v.detach().clone() for k, v in model.state_dict().items()}
    ctx = strategies.StrategyContext(batch_size=10, n_classes=10, input_shape=stream.input_shape, task_labels=True,
                                     classes_per_task=stream.classes_per_task)
    s = strategies.build(name, model=model, context=ctx)
    inner = [p for p in s.model.parameters()]
    assert len(inner) == len(given)
    for p, q in zip(inner, given.values()):
        assert torch.equal(p.detach(), q)
