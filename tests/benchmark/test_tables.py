from benchmark.tables import strategy_labels, summary_table


def _rec(run_id, strategy, hp, acc, status="done", seed=0):
    return {"run_id": run_id, "scenario": "s", "strategy": strategy, "seed": seed, "status": status,
            "config": {"hparams": hp}, "metrics": {"acc": acc, "bwt": -0.1, "forgetting": 0.2},
            "timing": {"train_s": 2.0, "eval_share": 0.05}}


def test_labels_tell_configurations_apart():
    recs = [_rec("a", "mer", {"algorithm": 1, "lr": 0.1}, 0.5), _rec("b", "mer", {"algorithm": 6, "lr": 0.1}, 0.6),
            _rec("c", "naive", {"lr": 0.1}, 0.3)]
    assert strategy_labels(recs) == {"a": "mer (algorithm=1)", "b": "mer (algorithm=6)", "c": "naive"}


def test_summary_table_means_over_seeds_and_counts_failures():
    recs = [_rec("a", "er", {}, 0.50, seed=0), _rec("b", "er", {}, 0.70, seed=1),
            _rec("c", "er", {}, None, status="failed", seed=2)]
    text = summary_table(recs)
    row = next(line for line in text.splitlines() if line.startswith("s "))
    cells = row.split()
    assert cells[:4] == ["s", "er", "2", "1"]
    assert "60.0 ± 14.1" in row  # mean and sample sd of 50 and 70, in %
