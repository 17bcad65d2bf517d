import torch

import scenarios
import strategies
from benchmark.models import build_model


def _context(stream, **kw):
    return strategies.StrategyContext(batch_size=10, n_classes=stream.n_classes, input_shape=stream.input_shape,
                                      classes_per_task=stream.classes_per_task, **kw)


def test_er_replays_from_the_first_task_on():
    stream = scenarios.build("permuted-mnist", seed=0, n_tasks=1, per_task=100)
    torch.manual_seed(0)
    model = build_model("mlp", input_shape=stream.input_shape, n_classes=10)
    strategy = strategies.build("er", model=model, context=_context(stream), mem_size=30, replay_batch=7)
    sizes = []

    from avalanche.core import SupervisedPlugin

    class Spy(SupervisedPlugin):
        def after_forward(self, strategy, **kwargs):
            sizes.append(len(strategy.mb_y))

    strategy.plugins.append(Spy())
    strategy.train(stream.benchmark.train_stream[0])
    replay = next(p for p in strategy.plugins if hasattr(p, "memory"))
    assert replay.memory.seen == 100 and len(replay.memory) == 30
    assert sizes[0] == 10 and sizes[1] == 10 + 7 and set(sizes[1:]) == {17}


def test_every_baseline_trains_on_a_task_incremental_split_stream():
    stream = scenarios.build("split-mnist", seed=0, n_tasks=5, per_task=60, task_incremental=True, test_per_task=200)
    for name in ("naive", "er", "ewc", "si", "lwf", "agem", "gem", "avalanche-mer", "avalanche-la-maml"):
        torch.manual_seed(0)
        model = build_model("mlp", input_shape=stream.input_shape, n_classes=10)
        before = [p.detach().clone() for p in model.parameters()]
        hp = {"patterns_per_exp": 20} if name in ("agem", "gem") else {}
        if name == "agem":
            hp["sample_size"] = 20
        s = strategies.build(name, model=model, context=_context(stream), **hp)
        for exp in list(stream.benchmark.train_stream)[:2]:
            s.train(exp)
        after = list(s.model.parameters())
        assert any(not torch.equal(a, b) for a, b in zip(before, after[-len(before):])), name
