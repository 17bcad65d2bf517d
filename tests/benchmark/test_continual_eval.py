"""Continual evaluation on real streams (mnist5k): the curves show the stability gap where it
is known to exist, they do not change training, every run of a stream is scored on the same
examples, and the record's metrics are those of its curves."""

from __future__ import annotations

import pytest

from benchmark import runner
from benchmark.config import validate
from benchmark.continual_eval import subsample_positions
from benchmark.store import problem
from benchmark.stream_metrics import Curves, curve_metrics


def _record(strategy: str, hparams: dict, *, eval_every: int = 0, seed: int = 0, n_tasks: int = 2,
            per_task: int | None = 300, name: str = "permuted-mnist", stream: dict | None = None, **train) -> dict:
    config = {"name": "ce", "seeds": [seed], "model": {"name": "mlp", "hidden": [100, 100]},
              "train": {"batch_size": 10, "epochs": 1, "device": "cpu", "eval_every": eval_every, **train},
              "scenarios": [{"name": name, "source": "mnist5k", "n_tasks": n_tasks, "per_task": per_task,
                             **(stream or {})}],
              "strategies": [{"name": strategy, **hparams}]}
    rec = runner.run_one(validate(config).specs()[0])
    assert rec["status"] == "done", rec.get("error")
    return rec


SPLIT = {"name": "split-mnist", "per_task": None, "n_tasks": 5, "eval_every": 1}


def test_naive_fine_tuning_loses_the_old_task_within_the_first_iterations():
    """De Lange et al. 2023 on class-incremental Split-MNIST: fine-tuning on the second task
    drops the first task's accuracy within a few iterations. Evaluated after every iteration,
    task 0 falls from its end-of-task value to nearly nothing within 10 iterations of the
    switch, and the record's gap says so (and that it never recovers)."""
    rec = _record("naive", {"lr": 0.1}, **SPLIT)
    curves = Curves.from_record(rec["curves"])
    switch = curves.task_ends[0]
    assert curves.iterations == tuple(range(1, curves.task_ends[-1] + 1))
    end_of_task_0 = curves.at(switch)[0]
    first = [row[0] for _, row in curves.points(switch, switch + 10)]
    assert end_of_task_0 > 0.9 and min(first) < 0.1, (end_of_task_0, first)
    gap = rec["curves"]["gaps"][0]
    assert gap["task"] == 1 and gap["depth"] == pytest.approx(end_of_task_0 - min(
        row[0] for _, row in curves.points(switch, curves.task_ends[1])))
    assert gap["trough"] <= 10 and gap["recovery"] is None
    assert rec["metrics"]["gap_depth"] == pytest.approx(sum(g["depth"] for g in rec["curves"]["gaps"]) / 4)


def test_replay_drops_after_the_switch_and_recovers_part_of_it():
    """The stability gap proper (ibid.): with replay, old-task accuracy still drops right after
    the switch, then climbs back while the new task trains."""
    rec = _record("er", {"lr": 0.1, "mem_size": 200, "replay_batch": 10}, **SPLIT)
    curves = Curves.from_record(rec["curves"])
    gap = rec["curves"]["gaps"][0]
    switch, end = curves.task_ends[0], curves.task_ends[1]
    trough = curves.at(switch + gap["trough"])[0]
    assert gap["depth"] > 0.1 and gap["trough"] < end - switch
    assert curves.at(end)[0] > trough + 0.05  # recovered part of the drop by the end of task 1


@pytest.mark.parametrize("strategy, hparams", [
    ("er", {"mem_size": 50, "replay_batch": 5, "per_example": True}),
    ("mer", {"mem_size": 50, "replay_batch": 3, "batches_per_example": 2}),
    ("la-maml", {"mem_size": 50, "replay_batch": 5, "glances": 2}),
    ("cope", {"mem_size": 50}),
])
def test_continual_evaluation_does_not_change_training(strategy, hparams):
    """The same seed with and without evaluation every 3 iterations: the same accuracy matrix,
    bit for bit (evaluation draws no random number and restores the model's mode)."""
    plain = _record(strategy, hparams, per_task=150)
    measured = _record(strategy, hparams, eval_every=3, per_task=150)
    assert plain["curves"] is None and measured["curves"] is not None
    assert measured["acc_matrix"] == plain["acc_matrix"]
    assert measured["timing"]["gradient_examples"] == plain["timing"]["gradient_examples"]
    # online accuracy scores each incoming example once (not the replayed ones CoPE's loader adds)
    assert measured["curves"]["online"]["seen"] == [150, 150]


def test_every_run_of_a_stream_is_scored_on_the_same_positions():
    digests = {(s, seed): _record(s, hp, eval_every=50, seed=seed, per_task=100)["curves"]["subsample_digest"]
               for s, hp in (("naive", {"lr": 0.1}), ("er", {"mem_size": 20, "replay_batch": 5}))
               for seed in (0, 1)}
    assert len(set(digests.values())) == 1, digests
    # and the positions are a real subsample: fewer than the test set, different per task
    a, b = subsample_positions(1000, 200, task=0), subsample_positions(1000, 200, task=1)
    assert len(a) == 200 and len(set(a.tolist())) == 200 and a.tolist() != b.tolist()


def test_record_of_a_run_with_curves():
    rec = _record("er", {"mem_size": 50, "replay_batch": 5}, eval_every=7, n_tasks=3, per_task=100,
                  eval_subsample=50)
    c = rec["curves"]
    assert c["subsample"] == [50, 50, 50]
    assert c["task_ends"] == [10, 20, 30]
    # every 7th iteration and every task end, each with the tasks seen so far
    assert c["iterations"] == [7, 10, 14, 20, 21, 28, 30]
    assert [len(row) for row in c["acc"]] == [1, 1, 2, 2, 3, 3, 3]
    # online accuracy: every incoming example scored once, before training on it
    assert c["online"]["seen"] == [100, 100, 100]
    assert rec["metrics"]["online_acc"] == pytest.approx(sum(c["online"]["correct"]) / 300)
    expected = curve_metrics(Curves.from_record(c), c["online"])
    assert {k: rec["metrics"][k] for k in expected} == pytest.approx(expected)
    assert problem(rec) is None
    # a record whose curve metric was edited is refused, naming the metric
    edited = {**rec, "metrics": {**rec["metrics"], "aaa": rec["metrics"]["aaa"] + 0.1}}
    assert "metric 'aaa'" in problem(edited)


def test_task_incremental_stream_scores_each_task_on_its_own_classes():
    kw = {"eval_every": 5, "name": "split-mnist", "per_task": 100, "n_tasks": 5}
    task_il = _record("naive", {"lr": 0.1}, stream={"task_incremental": True}, **kw)
    class_il = _record("naive", {"lr": 0.1}, **kw)
    # class-incremental fine-tuning forgets task 0 entirely by the end; scored over its own two
    # classes only (task-incremental), task 0 keeps far more than chance among ten
    assert class_il["curves"]["acc"][-1][0] < 0.2
    assert task_il["curves"]["acc"][-1][0] > 0.6
    assert task_il["curves"]["online"]["seen"] == [100] * 5


def test_eval_cost_reports_the_measured_seconds(tmp_path, capsys):
    import json

    import yaml

    from benchmark.cli import main
    from benchmark.eval_cost import eval_costs, overall_share

    sweep = {"name": "cost", "seeds": [0, 1], "train": {"batch_size": 10, "device": "cpu", "eval_every": 2},
             "scenarios": [{"name": "permuted-mnist", "n_tasks": 2, "per_task": 60, "test_per_task": 100}],
             "strategies": [{"name": "naive"}, {"name": "er", "mem_size": 30, "replay_batch": 5}]}
    cfg, out = tmp_path / "cost.yaml", tmp_path / "out"
    cfg.write_text(yaml.safe_dump(sweep))
    assert main(["run", str(cfg), "--out", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    records = [json.loads(p.read_text()) for p in out.glob("*/run.json")]
    costs = {c.strategy: c for c in eval_costs(records)}
    for strategy in ("naive", "er"):
        timings = [r["timing"] for r in records if r["strategy"] == strategy]
        curve = sum(t["curve_eval_s"] for t in timings) / 2
        assert costs[strategy].runs == 2 and costs[strategy].curve_eval_s == pytest.approx(curve)
        assert costs[strategy].end_eval_s == pytest.approx(sum(t["eval_s"] for t in timings) / 2 - curve)
        assert 0 < costs[strategy].share < 1
    total = sum(t["train_s"] + t["eval_s"] for t in (r["timing"] for r in records))
    assert overall_share(list(costs.values())) == pytest.approx(sum(r["timing"]["curve_eval_s"] for r in records) / total)
    assert main(["eval-cost", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"{100 * overall_share(list(costs.values())):.1f}% of the time of all 4 runs" in printed
    assert main(["eval-cost", str(tmp_path / "missing")]) == 2
    assert "not a results folder" in capsys.readouterr().err


def test_points_are_taken_after_every_plugin_finished_the_iteration():
    """A strategy whose own plugin, after each iteration, sets the classifier to predict one class
    everywhere, class 0 after odd iterations and class 1 after even ones (as CoPE updates its
    prototypes after each iteration): every point of the curve sees that state, so each task's
    accuracy is the share of that class in its subsample (a point taken before the plugin ran
    would see the other class: the previous reset, one SGD step cannot move a bias of 100)."""
    import torch
    from avalanche.core import SupervisedPlugin
    from avalanche.training import Naive

    import scenarios
    import strategies
    from benchmark.continual_eval import subsample
    from benchmark.evaluation import eval_sets

    class PredictOneClass(SupervisedPlugin):
        def __init__(self):
            super().__init__()
            self.calls = 0

        def after_training_iteration(self, strategy, **kwargs):
            self.calls += 1
            last = [m for m in strategy.model.modules() if isinstance(m, torch.nn.Linear)][-1]
            with torch.no_grad():
                last.weight.zero_()
                last.bias.zero_()
                last.bias[(self.calls + 1) % 2] = 100.0

    @strategies.register("test-predict-one-class")
    def predict_one_class(*, model, context, lr: float = 0.1):
        """Naive whose plugin resets the classifier to one class after every iteration."""
        return Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=lr),
                     **context.template_kwargs(plugins=[PredictOneClass()]))

    rec = _record("test-predict-one-class", {}, eval_every=3, per_task=60)
    spec = validate({"name": "ce", "seeds": [0], "scenarios": [{"name": "permuted-mnist", "source": "mnist5k",
                                                                  "n_tasks": 2, "per_task": 60}],
                     "strategies": [{"name": "naive"}]}).specs()[0]
    stream = scenarios.build(spec.scenario, seed=0, **spec.scenario_params)
    sets = subsample(eval_sets(stream, masked=False), 200).sets
    share = [[float((t.y == c).float().mean()) for t in sets] for c in (0, 1)]
    assert share[0] != share[1]
    assert rec["curves"]["iterations"] == [3, 6, 9, 12]
    for it, row in zip(rec["curves"]["iterations"], rec["curves"]["acc"]):
        assert row == pytest.approx(share[(it + 1) % 2][:len(row)], abs=1e-6), it
