"""The metrics across the stream (benchmark.stream_metrics) on curves small enough to work out by
hand: every expected value below is computed in the test from the definitions, point by point."""

import math

import pytest

from benchmark.stream_metrics import (
    Curves,
    average_anytime_accuracy,
    curve_metrics,
    min_acc,
    online_accuracy,
    stability_gaps,
    wc_acc,
)

# Two tasks of 4 iterations, evaluated every 2: points at 2, 4 (end of task 0), 6, 8 (end of task 1)
TWO = Curves(iterations=(2, 4, 6, 8), acc=((0.5,), (0.9,), (0.3, 0.6), (0.7, 0.8)), task_ends=(4, 8))

# Three tasks; task 0 drops after the first switch and recovers, drops again after the second
THREE = Curves(
    iterations=(3, 6, 9, 12, 15, 18),
    acc=((0.6,), (0.8,), (0.4, 0.5), (0.85, 0.7), (0.5, 0.9, 0.2), (0.6, 0.5, 0.9)),
    task_ends=(6, 12, 18),
)


def test_aaa_is_the_mean_over_points_of_the_mean_over_tasks_seen():
    expected = (0.5 + 0.9 + (0.3 + 0.6) / 2 + (0.7 + 0.8) / 2) / 4
    assert average_anytime_accuracy(TWO) == pytest.approx(expected)


def test_min_acc_takes_each_old_task_lowest_point_after_its_own_end():
    # task 0 after its end (iteration 6): 0.4, 0.85, 0.5, 0.6 -> 0.4; task 1 after 12: 0.9, 0.5 -> 0.5
    assert min_acc(THREE) == pytest.approx((0.4 + 0.5) / 2)
    # after task 1 only: task 0 over (6, 12] -> min(0.4, 0.85)
    assert min_acc(THREE, 1) == pytest.approx(0.4)
    assert min_acc(TWO) == pytest.approx(0.3)


def test_wc_acc_weighs_the_current_task_by_one_over_tasks_seen():
    assert wc_acc(THREE) == pytest.approx(0.9 / 3 + (2 / 3) * (0.4 + 0.5) / 2)
    assert wc_acc(TWO) == pytest.approx(0.8 / 2 + 0.5 * 0.3)
    assert wc_acc(THREE, 0) == pytest.approx(0.8)  # one task: its own accuracy at its end


def test_stability_gap_depth_trough_and_recovery():
    gaps = stability_gaps(THREE)
    assert [g.task for g in gaps] == [1, 2]
    first, second = gaps
    # switch to task 1 at iteration 6: level 0.8, points 9 (0.4) and 12 (0.85)
    assert first.level == pytest.approx(0.8)
    assert first.depth == pytest.approx(0.4)
    assert (first.trough, first.recovery) == (3, 6)
    # switch to task 2 at 12: level mean(0.85, 0.7); old mean at 15 = 0.7, at 18 = 0.55 -> trough at 18, never back
    assert second.level == pytest.approx(0.775)
    assert second.depth == pytest.approx(0.775 - 0.55)
    assert (second.trough, second.recovery) == (6, None)


def test_no_drop_is_a_gap_of_zero_recovered_at_once():
    rising = Curves(iterations=(1, 2, 3), acc=((0.5,), (0.6, 0.1), (0.7, 0.2)), task_ends=(1, 3))
    (gap,) = stability_gaps(rising)
    assert (gap.depth, gap.recovery) == (0.0, 0)


def test_recovery_is_counted_from_the_trough_on():
    # back above the level once before the trough (iteration 5), then down, then up again at 7
    c = Curves(iterations=(4, 5, 6, 7), acc=((0.8,), (0.85, 0.1), (0.3, 0.2), (0.9, 0.3)), task_ends=(4, 7))
    (gap,) = stability_gaps(c)
    assert (gap.trough, gap.recovery) == (2, 3)
    assert gap.depth == pytest.approx(0.5)


def test_min_acc_leaves_out_the_point_at_the_old_task_own_end():
    # task 0 is at its lowest exactly when its training ends; after that it is 0.7
    c = Curves(iterations=(2, 4, 6), acc=((0.9,), (0.5,), (0.7, 0.2)), task_ends=(4, 6))
    assert min_acc(c) == pytest.approx(0.7)


def test_run_summary_of_the_gaps():
    m = curve_metrics(THREE, {"correct": [3, 5, 0], "seen": [10, 10, 0]})
    assert m["gap_depth"] == pytest.approx((0.4 + 0.225) / 2)
    assert m["gap_recovered"] == pytest.approx(0.5)
    assert m["online_acc"] == pytest.approx(8 / 20)


def test_one_task_stream():
    one = Curves(iterations=(5, 10), acc=((0.4,), (0.7,)), task_ends=(10,))
    m = curve_metrics(one, {"correct": [6], "seen": [10]})
    assert m["aaa"] == pytest.approx(0.55)
    assert m["min_acc"] is None  # no old task
    assert m["wc_acc"] == pytest.approx(0.7)
    assert m["gap_depth"] is None and m["gap_recovered"] is None
    assert m["online_acc"] == pytest.approx(0.6)


def test_missing_points_are_skipped_not_counted_as_zero():
    holes = Curves(iterations=(2, 4, 6, 8), acc=((0.5,), (0.9,), (None, 0.6), (0.7, None)), task_ends=(4, 8))
    assert average_anytime_accuracy(holes) == pytest.approx((0.5 + 0.9 + 0.6 + 0.7) / 4)
    assert min_acc(holes) == pytest.approx(0.7)  # task 0 only has the point at 8 after its end
    assert wc_acc(holes) is None  # the current task's value at its end is missing
    (gap,) = stability_gaps(holes)  # the point at 6 has no old-task value: only 8 counts
    assert (gap.depth, gap.trough, gap.recovery) == (pytest.approx(0.2), 4, None)


def test_a_task_without_points_after_the_switch_has_no_gap():
    # evaluated only at the end of task 0: the switch to task 1 has no point after it
    sparse = Curves(iterations=(4,), acc=((0.9,),), task_ends=(4, 8))
    assert stability_gaps(sparse) == []
    assert min_acc(sparse) is None


def test_online_accuracy_and_empty_counts():
    assert online_accuracy([1, 2], [4, 4]) == pytest.approx(3 / 8)
    assert online_accuracy([], []) is None


def test_curves_refuse_what_is_not_a_curve():
    with pytest.raises(ValueError, match="increase"):
        Curves(iterations=(2, 2), acc=((0.1,), (0.2,)), task_ends=(2,))
    with pytest.raises(ValueError, match="accuracy rows"):
        Curves(iterations=(2,), acc=(), task_ends=(2,))
    parsed = Curves.from_record({"iterations": [2, 4], "acc": [[0.5], [None]], "task_ends": [4]})
    assert parsed.acc[1] == (None,) and math.isclose(average_anytime_accuracy(parsed), 0.5)
