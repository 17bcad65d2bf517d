"""Every bad input gets one ScenarioError line that names the problem and what is allowed."""

import numpy as np
import pytest

import scenarios
from scenarios import ScenarioError


def _npz(tmp_path, name="bad.npz", **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return str(path)


X = np.zeros((20, 28, 28), dtype=np.uint8)
Y = np.arange(20) % 10

CASES = [
    # (id, stream name, params or a function of tmp_path giving params, pattern the message must match)
    ("unknown stream", "permuted-mnst", {}, r"unknown scenario 'permuted-mnst' \(did you mean 'permuted-mnist'\?\); allowed: .*rotated-mnist"),
    ("unknown source", "permuted-mnist", {"source": "mnits"}, r"parameter 'source' is 'mnits'; allowed: mnist5k, digits, mnist"),
    ("unknown parameter", "permuted-mnist", {"n_task": 3}, r"unknown parameter 'n_task' \(did you mean 'n_tasks'\?\); allowed: "),
    ("zero tasks", "permuted-mnist", {"n_tasks": 0}, r"'n_tasks' must be >= 1, got 0"),
    ("negative tasks", "rotated-mnist", {"n_tasks": -2}, r"'n_tasks' must be >= 1, got -2"),
    ("tasks as text", "permuted-mnist", {"n_tasks": "3"}, r"'n_tasks' must be an integer, got '3'"),
    ("fractional per_task", "permuted-mnist", {"per_task": 1.5}, r"'per_task' must be an integer, got 1.5"),
    ("bool as int", "permuted-mnist", {"per_task": True}, r"'per_task' must be an integer, got True"),
    ("flag as text", "split-mnist", {"task_incremental": "yes"}, r"'task_incremental' must be true or false"),
    ("per_task too large", "permuted-mnist", {"per_task": 5000, "n_tasks": 1}, r"per_task=5000 is larger than the 4000 training examples of source 'mnist5k'; allowed: 1 .. 4000"),
    ("split per_task too large", "split-mnist", {"per_task": 900}, r"per_task=900 is larger than the 800 training examples of classes \[0, 1\]"),
    ("split does not divide", "split-mnist", {"n_tasks": 3}, r"n_tasks=3 does not divide the 10 classes .*; allowed: 1, 2, 5, 10"),
    ("bad class order", "split-mnist", {"class_order": [0, 1, 2]}, r"class_order must list each class 0 .. 9"),
    ("angles and n_tasks disagree", "rotated-mnist", {"angles": [0, 10], "n_tasks": 3}, r"n_tasks=3 but 2 angles"),
    ("empty angles", "rotated-mnist", {"angles": []}, r"angles is empty"),
    ("unknown angle mode", "rotated-mnist", {"angles": "progresive"},
     r"'angles' is 'progresive'; allowed: progressive, uniform or a list of float values \(did you mean 'progressive'\?\)"),
    ("angles as a mapping", "rotated-mnist", {"angles": {"a": 1}}, r"'angles' must be progressive, uniform or a list"),
    ("empty angle range", "rotated-mnist", {"min_angle": 90, "max_angle": 10}, r"max_angle=10 is below min_angle=90"),
    ("bad interpolation", "rotated-mnist", {"interpolation": "cubic"}, r"allowed: nearest, bilinear"),
    ("angle not a number", "rotated-mnist", {"angles": [0, "x"]}, r"'angles' must be a number, got 'x'"),
    ("nan angle", "rotated-mnist", {"angles": [float("nan")]}, r"must be a finite number"),
    ("negative seed", "permuted-mnist", {"seed": -1}, r"seed must be an integer >= 0, got -1"),
    ("npz without path", "permuted-mnist", {"source": "npz"}, r"source 'npz' needs 'path'"),
    ("path for another source", "permuted-mnist", {"path": "x.npz"}, r"'path' is only for source npz"),
    ("missing npz", "permuted-mnist", lambda t: {"source": "npz", "path": str(t / "nope.npz")}, r"file not found: .*nope.npz"),
    ("not an npz", "permuted-mnist", "garbage", r"cannot read .* as an .npz file"),
    ("npz missing y", "permuted-mnist", {"x": X}, r"missing array 'y'"),
    ("npz unexpected key", "permuted-mnist", {"x": X, "y": Y, "labels": Y}, r"unexpected arrays \['labels'\]; allowed: x, y, x_test, y_test"),
    ("npz length mismatch", "permuted-mnist", {"x": X, "y": Y[:5]}, r"'y' has 5 labels for 20 examples"),
    ("npz float labels", "permuted-mnist", {"x": X, "y": Y + 0.5}, r"'y' must hold integer class labels, got dtype float64"),
    ("npz negative labels", "permuted-mnist", {"x": X, "y": Y - 1}, r"negative labels"),
    ("npz nan pixels", "permuted-mnist", {"x": np.full((20, 4, 4), np.nan), "y": Y}, r"'x' holds NaN or infinite values"),
    ("npz text pixels", "permuted-mnist", {"x": np.array(["a"] * 20), "y": Y}, r"'x' must hold numbers"),
    ("npz bad shape", "permuted-mnist", {"x": np.zeros(20), "y": Y}, r"'x' has shape \(20,\); allowed: \(N, D\)"),
    ("npz x_test alone", "permuted-mnist", {"x": X, "y": Y, "x_test": X}, r"x_test and y_test must be given together"),
    ("npz test shape", "permuted-mnist", {"x": X, "y": Y, "x_test": X[:, :5], "y_test": Y}, r"x_test examples have shape"),
    ("npz label of a billion classes", "permuted-mnist", {"x": X, "y": Y * 10**8},
     r"'y' holds the label 900000000; labels must be 0 \.\. n_classes-1 with n_classes <= 1,000,000"),
    ("npz uint64 labels above 2**63", "permuted-mnist", {"x": X, "y": np.full(20, 2**63 + 5, dtype=np.uint64)},
     r"'y' holds the label 9223372036854775813"),
    ("npz with one example", "permuted-mnist", {"x": X[:1], "y": Y[:1]}, r"'x' holds 1 example; at least 2"),
    ("npz pixels of 1e300", "permuted-mnist", {"x": np.full((20, 4, 4), 1e300), "y": Y}, r"beyond float32's range"),
    ("npz examples of no values", "permuted-mnist", {"x": np.zeros((20, 0)), "y": Y}, r"its examples have no values"),
    ("n_tasks of 1e300", "permuted-mnist", {"n_tasks": 1e300}, r"'n_tasks' must be an integer, got 1e\+300 \(a float counts only as a whole number up to 2\*\*53\)"),
    ("rotate flat vectors", "rotated-mnist", {"x": np.zeros((20, 16)), "y": Y}, r"rotated streams need images"),
    ("offline torchvision", "split-mnist", lambda t: {"source": "fashion-mnist", "data_root": str(t), "download": False}, r"no FashionMNIST files under .*download is off"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_line(case, tmp_path):
    _, name, params, pattern = case
    if callable(params):
        params = params(tmp_path)
    elif params == "garbage":
        (tmp_path / "g.npz").write_bytes(b"this is not a zip file")
        params = {"source": "npz", "path": str(tmp_path / "g.npz")}
    elif "x" in params:
        params = {"source": "npz", "path": _npz(tmp_path, **params), "n_tasks": 1, "per_task": 5}
    seed = params.pop("seed", 0)
    with pytest.raises(ScenarioError, match=pattern) as err:
        scenarios.build(name, seed=seed, **params)
    message = str(err.value)
    assert "\n" not in message and len(message) < 400


@pytest.mark.parametrize("params,replay,pattern", [
    ({"n_tasks": 10**9}, 0, r"permuted-mnist: n_tasks=1000000000 need about [\d.e+]+ GiB of memory; this machine has"),
    ({"n_tasks": 10}, 10**12, r"n_tasks=10 and a replay memory of 1000000000000 examples need about"),
    ({"source": "cifar10", "n_tasks": 10**7}, 0, r"n_tasks=10000000 need about"),  # sizes known without a download
])
def test_streams_that_cannot_fit_in_memory_are_refused_with_the_estimate(params, replay, pattern):
    with pytest.raises(scenarios.ScenarioError, match=pattern):
        scenarios.check_data("permuted-mnist", replay_examples=replay, **params)
    scenarios.check_data("permuted-mnist", n_tasks=20, replay_examples=5120)  # the papers' sizes fit
