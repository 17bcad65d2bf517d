import math

import pytest

from benchmark.tables import comparison, strategy_labels, summary_table, to_latex, to_markdown, welch_p
from benchmark.tidy import long_table


def _rec(run_id, strategy, hp, acc, status="done", seed=0, forgetting=0.2, train_s=2.0):
    return {"run_id": run_id, "scenario": "s", "strategy": strategy, "seed": seed, "status": status,
            "config": {"hparams": hp},
            "metrics": {"acc": acc, "la": acc, "bwt": -0.1, "fwt": None, "forgetting": forgetting},
            "timing": {"train_s": train_s, "eval_s": 0.1, "eval_share": 0.05}}


RECS = [
    _rec("a0", "er", {}, 0.50, seed=0, forgetting=0.30), _rec("a1", "er", {}, 0.70, seed=1, forgetting=0.10),
    _rec("a2", "er", {}, None, status="failed", seed=2),
    _rec("b0", "mer", {}, 0.80, seed=0, forgetting=0.05, train_s=9.0),
    _rec("b1", "mer", {}, 0.82, seed=1, forgetting=0.07, train_s=11.0),
    _rec("c0", "naive", {}, 0.20, seed=0, forgetting=0.6, train_s=1.0),
    _rec("c1", "naive", {}, 0.21, seed=1, forgetting=0.62, train_s=1.0),
]


def test_labels_tell_configurations_apart():
    recs = [_rec("a", "mer", {"algorithm": 1, "lr": 0.1}, 0.5), _rec("b", "mer", {"algorithm": 6, "lr": 0.1}, 0.6),
            _rec("c", "naive", {"lr": 0.1}, 0.3)]
    assert strategy_labels(recs) == {"a": "mer (algorithm=1)", "b": "mer (algorithm=6)", "c": "naive"}


def test_comparison_means_counts_best_and_significance():
    t = comparison(long_table(RECS), "s").set_index("strategy")
    assert t.loc["er", "runs"] == 2 and t.loc["er", "failed"] == 1
    assert t.loc["er", "acc_mean"] == pytest.approx(0.60)  # mean of the runs' ACC
    assert t.loc["er", "acc_std"] == pytest.approx(math.sqrt(0.02))
    assert bool(t.loc["mer", "acc_best"]) and not bool(t.loc["er", "acc_best"])
    assert bool(t.loc["mer", "forgetting_best"])  # lower is better
    assert bool(t.loc["naive", "train_s_best"])  # faster is better
    assert math.isnan(t.loc["mer", "acc_p"])
    assert t.loc["naive", "acc_p"] < 0.05  # 20% vs 81%, tight seeds
    assert t.loc["er", "acc_p"] > 0.05  # 50/70 vs 80/82: too few, too spread
    assert t.loc["naive", "acc_p"] == pytest.approx(welch_p([0.20, 0.21], [0.80, 0.82]))
    assert t.loc["er", "fwt_n"] == 0 and math.isnan(t.loc["er", "fwt_mean"])


def test_welch_edge_cases():
    assert math.isnan(welch_p([0.5], [0.6, 0.7]))
    assert welch_p([0.5, 0.5], [0.5, 0.5]) == 1.0


def test_markdown_and_latex_render_bold_marks_and_missing():
    t = comparison(long_table(RECS), "s")
    md = to_markdown(t)
    assert "| mer | 2 | 0 | **81.0 ± 1.4** |" in md
    assert "20.5 ± 0.7†" in md
    assert "| er | 2 | 1 |" in md and "–" in md
    tex = to_latex(t, caption="Permuted_MNIST & more")
    assert r"\toprule" in tex and r"\bottomrule" in tex and r"\textbf{81.0 $\pm$ 1.4}" in tex
    assert r"$^\dagger$" in tex and r"Permuted\_MNIST \& more" in tex


def test_summary_table_text():
    text = summary_table(RECS)
    row = next(line for line in text.splitlines() if line.startswith("s ") and " er " in line)
    assert row.split()[:4] == ["s", "er", "2", "1"]
    assert "60.0 ± 14.1" in row


@pytest.mark.parametrize("seed", range(8))
def test_welch_p_equals_scipys_unequal_variance_t_test(seed):
    """Samples of 2 to 11 values, spreads and mean differences of several sizes (p from
    0.007 to 0.8), one side without variance."""
    import warnings

    import numpy as np
    from scipy import stats

    rng = np.random.default_rng(seed)
    a = rng.normal(0.6, rng.uniform(0.005, 0.2), size=rng.integers(2, 12))
    b = rng.normal(0.6 + rng.uniform(-0.3, 0.3), rng.uniform(0.005, 0.2), size=rng.integers(2, 12))
    if seed == 0:
        b = np.full(4, 0.55)  # no variance on one side
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # scipy's note on the constant side
        expected = stats.ttest_ind(a, b, equal_var=False).pvalue
    assert welch_p(a, b) == pytest.approx(expected, rel=1e-9, abs=1e-15)
    assert welch_p(list(b), list(a)) == pytest.approx(expected, rel=1e-9, abs=1e-15)  # symmetric
