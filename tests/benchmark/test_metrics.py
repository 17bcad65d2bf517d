import math

import numpy as np
import pytest

from benchmark import metrics

# R[i][j]: accuracy on task j after training task i; task 0 improves after task 1 (0.9 -> 0.95)
R = [[0.90, 0.10, 0.20],
     [0.95, 0.85, 0.15],
     [0.70, 0.60, 0.95]]
B = [0.10, 0.12, 0.08]


def test_acc_is_mean_of_last_row():
    assert metrics.acc(R) == pytest.approx((0.70 + 0.60 + 0.95) / 3)


def test_la_is_mean_of_diagonal():
    assert metrics.la(R) == pytest.approx((0.90 + 0.85 + 0.95) / 3)


def test_bwt_divides_by_t_minus_1():
    assert metrics.bwt(R) == pytest.approx(((0.70 - 0.90) + (0.60 - 0.85)) / 2)


def test_fwt_uses_accuracy_before_training_and_random_init():
    assert metrics.fwt(R, B) == pytest.approx(((0.10 - 0.12) + (0.15 - 0.08)) / 2)


def test_forgetting_uses_the_best_earlier_accuracy_not_the_diagonal():
    # task 0: best before the end is 0.95 (after task 1), not R[0][0] = 0.90
    expected = ((0.95 - 0.70) + (0.85 - 0.60)) / 2
    assert metrics.forgetting(R) == pytest.approx(expected)
    assert metrics.forgetting(R) != pytest.approx(-metrics.bwt(R))


def test_average_accuracy_curve():
    assert metrics.average_accuracy_curve(R) == pytest.approx([0.90, (0.95 + 0.85) / 2, (0.70 + 0.60 + 0.95) / 3])


def test_single_task_defines_acc_and_la_only():
    one = [[0.8]]
    m = metrics.all_metrics(one, [0.1])
    assert m["acc"] == m["la"] == 0.8
    assert all(math.isnan(m[k]) for k in ("bwt", "fwt", "forgetting"))


def test_no_forgetting_when_nothing_drops():
    r = [[0.5, 0.1], [0.6, 0.7]]
    assert metrics.forgetting(r) == pytest.approx(-0.1)  # improvement shows as negative forgetting
    assert metrics.bwt(r) == pytest.approx(0.1)


def test_inputs_are_not_modified():
    r = np.array(R)
    b = np.array(B)
    metrics.all_metrics(r, b)
    metrics.average_accuracy_curve(r)
    assert np.array_equal(r, np.array(R)) and np.array_equal(b, np.array(B))


@pytest.mark.parametrize("bad", [[], [[0.1, 0.2]], [[0.1], [0.2]], [0.3]])
def test_non_square_matrices_are_rejected(bad):
    with pytest.raises(ValueError, match="T x T"):
        metrics.acc(bad)


def test_fwt_needs_one_random_accuracy_per_task():
    with pytest.raises(ValueError, match="length T=3"):
        metrics.fwt(R, [0.1, 0.1])


def test_the_metric_names_are_defined_once_and_every_reader_uses_them():
    from benchmark import metric_names, report, store, tables, tidy

    assert tuple(metrics.all_metrics(R, B)) == metric_names.METRICS
    assert store.METRICS is tidy.METRICS is metric_names.METRICS
    assert store.TIMINGS is metric_names.TIMINGS and set(tidy.TIMES) <= set(store.TIMINGS)
    assert tables.REPORT_METRICS[:len(metric_names.METRICS)] == metric_names.METRICS
    shown = {*metric_names.METRICS, *tables.REPORT_METRICS, *tables.SUMMARY_METRICS}
    assert shown <= set(tables.METRIC_INFO)
    assert [title for title, _ in report.DEFINITIONS] == [tables.METRIC_INFO[m][0] for m in metric_names.METRICS]
