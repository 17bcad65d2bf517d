"""Parts of a stream (``task_range``) and validation splits (``val_fraction``): the same tasks
as in the whole stream, a held-out slice of each task's training examples in place of its test
split, and no test example or label anywhere in such a stream."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import scenarios
from scenarios.selection import held_out


def _tensors(exp):
    x = torch.stack([exp.dataset[i][0] for i in range(len(exp.dataset))])
    y = torch.tensor([int(exp.dataset[i][1]) for i in range(len(exp.dataset))])
    return x, y


def _rows(x: torch.Tensor) -> set[bytes]:
    return {r.numpy().tobytes() for r in x.reshape(len(x), -1)}


@pytest.mark.parametrize("name,params", [
    ("permuted-mnist", {"n_tasks": 5, "per_task": 40}),
    ("rotated-mnist", {"n_tasks": 5, "per_task": 40}),
    ("split-mnist", {"n_tasks": 5, "per_task": 40}),
])
def test_a_task_range_is_the_same_tasks_as_in_the_whole_stream(name, params):
    whole = scenarios.build(name, seed=3, source="digits", **params)
    part = scenarios.build(name, seed=3, source="digits", task_range=[2, 5], **params)
    assert part.n_tasks == 3 and part.classes_per_task == whole.classes_per_task[2:]
    for i in range(3):
        for stream in ("train_stream", "test_stream"):
            a = _tensors(getattr(whole.benchmark, stream)[i + 2])
            b = _tensors(getattr(part.benchmark, stream)[i])
            assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_task_labels_are_renumbered_in_a_part_of_a_task_incremental_stream():
    part = scenarios.build("split-mnist", seed=0, source="digits", n_tasks=5, task_incremental=True, task_range=[3, 5])
    assert part.classes_per_task == ((6, 7), (8, 9))
    assert [e.task_label for e in part.benchmark.train_stream] == [0, 1]
    single = scenarios.build("permuted-mnist", seed=0, source="digits", n_tasks=4, per_task=20, task_range=[1, 3])
    assert [e.task_label for e in single.benchmark.train_stream] == [0, 0]


@pytest.mark.parametrize("fraction", [0.1, 0.25])
def test_the_validation_split_is_held_out_of_each_tasks_training_examples(fraction):
    whole = scenarios.build("permuted-mnist", seed=1, source="digits", n_tasks=4, per_task=60)
    val = scenarios.build("permuted-mnist", seed=1, source="digits", n_tasks=4, per_task=60, task_range=[0, 3],
                          val_fraction=fraction)
    assert val.n_tasks == 3
    k = held_out(fraction, 60)
    for i in range(3):
        x_all, y_all = _tensors(whole.benchmark.train_stream[i])
        x_tr, y_tr = _tensors(val.benchmark.train_stream[i])
        x_va, y_va = _tensors(val.benchmark.test_stream[i])
        assert len(y_va) == k and len(y_tr) == 60 - k
        assert not _rows(x_tr) & _rows(x_va)  # disjoint (digits are distinct examples)
        assert _rows(x_tr) | _rows(x_va) == _rows(x_all)  # together: the task's training examples
        # the kept examples stay in the order the stream draws them
        order = [next(j for j in range(60) if torch.equal(x_all[j], x)) for x in x_tr]
        assert order == sorted(order)
    other_seed = scenarios.build("permuted-mnist", seed=2, source="digits", n_tasks=4, per_task=60, task_range=[0, 3],
                                 val_fraction=fraction)
    assert not torch.equal(_tensors(other_seed.benchmark.test_stream[0])[0], _tensors(val.benchmark.test_stream[0])[0])


def _npz(tmp_path, name, *, shuffle_test: bool):
    from sklearn.datasets import load_digits

    d = load_digits()
    x, y = (d.data / 16.0).reshape(-1, 8, 8).astype(np.float32), d.target.astype(np.int64)
    rng = np.random.default_rng(0)
    y_test = y[1400:].copy()
    if shuffle_test:
        y_test = rng.permutation(y_test)
        assert (y_test != y[1400:]).mean() > 0.5
    path = tmp_path / name
    np.savez(path, x=x[:1400], y=y[:1400], x_test=x[1400:], y_test=y_test)
    return str(path)


def test_a_validation_stream_holds_no_test_example_or_label(tmp_path):
    clean, shuffled = _npz(tmp_path, "clean.npz", shuffle_test=False), _npz(tmp_path, "shuffled.npz", shuffle_test=True)
    params = {"n_tasks": 3, "per_task": 50, "task_range": [0, 2], "val_fraction": 0.2}
    a = scenarios.build("rotated-mnist", seed=0, source="npz", path=clean, **params)
    b = scenarios.build("rotated-mnist", seed=0, source="npz", path=shuffled, **params)
    for stream in ("train_stream", "test_stream"):
        for ea, eb in zip(getattr(a.benchmark, stream), getattr(b.benchmark, stream)):
            xa, ya = _tensors(ea)
            xb, yb = _tensors(eb)
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
    # the same streams without the validation split do see the test labels
    plain = {k: v for k, v in params.items() if k != "val_fraction"}
    ya = _tensors(scenarios.build("rotated-mnist", seed=0, source="npz", path=clean, **plain).benchmark.test_stream[0])[1]
    yb = _tensors(scenarios.build("rotated-mnist", seed=0, source="npz", path=shuffled, **plain).benchmark.test_stream[0])[1]
    assert not torch.equal(ya, yb)


@pytest.mark.parametrize("params,pattern", [
    ({"task_range": [2, 2]}, r"task_range=\[2, 2\] is not a range of the 4 tasks; allowed: \[start, stop\] with 0 <= start < stop <= 4"),
    ({"task_range": [3, 1]}, r"task_range=\[3, 1\] is not a range"),
    ({"task_range": [0, 5]}, r"task_range=\[0, 5\] is not a range of the 4 tasks"),
    ({"task_range": [-1, 2]}, r"task_range=\[-1, 2\] is not a range"),
    ({"task_range": [1]}, r"parameter 'task_range' must be \[start, stop\], two integers, got \[1\]"),
    ({"task_range": "all"}, r"parameter 'task_range' must be a list of int values, got 'all'"),
    ({"val_fraction": 0.0}, r"parameter 'val_fraction' must be > 0 and < 1, got 0.0"),
    ({"val_fraction": 1}, r"parameter 'val_fraction' must be > 0 and < 1, got 1.0"),
    ({"val_fraction": 0.99}, r"val_fraction=0.99 of per_task=20 leaves no training example"),
])
def test_bad_parts_and_fractions_are_one_line(params, pattern):
    with pytest.raises(scenarios.ScenarioError, match=pattern) as info:
        scenarios.resolve_params("permuted-mnist", source="digits", n_tasks=4, per_task=20, **params)
    assert "\n" not in str(info.value)
