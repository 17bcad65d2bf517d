"""The speed benchmark's figures and their JSON layout (no timing is asserted)."""

import json

import pytest
import torch

from benchmark.cli import main
from benchmark.speed import mlp_floor


def test_speed_benchmark_writes_the_documented_json(tmp_path, capsys):
    out = tmp_path / "speed.json"
    assert main(["speed", "--size", "tiny", "--only", "mer", "avalanche-mer", "--repeat", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "mer_vs_avalanche-mer" in printed and "hardware floor" in printed
    data = json.loads(out.read_text())
    assert {"machine", "strategies", "ratios"} <= set(data)
    assert {"cpu", "cores", "torch"} <= set(data["machine"])
    for name in ("mer", "avalanche-mer"):
        s = data["strategies"][name]
        assert {"us_per_step", "examples_per_s", "peak_rss_mb", "inner_steps"} <= set(s)
        assert s["inner_steps"] > 0 and s["us_per_step"] > 0
    # ours: 100 examples, each 1 step plus min(seen, 10) replayed; theirs: minibatch (+ memory in task 2)
    assert data["strategies"]["mer"]["inner_steps"] == sum(1 + min(n, 10) for n in range(100))
    assert data["strategies"]["avalanche-mer"]["inner_steps"] == 5 * 10 + 5 * (10 + 10)
    ratio = data["strategies"]["avalanche-mer"]["us_per_step"] / data["strategies"]["mer"]["us_per_step"]
    assert data["ratios"]["mer_vs_avalanche-mer"] == pytest.approx(ratio)


def test_floor_counts_flops_and_bytes_of_one_step():
    f = mlp_floor((4, 3, 2), rates={"matmul_gflops": 1.0, "cache_gbs": 1.0})
    assert f["params"] == 4 * 3 + 3 + 3 * 2 + 2
    assert f["flops_per_step"] == 2 * (12 + 6) + 2 * 6 + 2 * (12 + 6)
    assert f["floor_us"] == max(f["compute_us"], f["cache_memory_us"])


def test_sparse_floor_counts_only_the_rows_of_nonzero_inputs():
    dense = mlp_floor((4, 3, 2), rates={"matmul_gflops": 1.0, "cache_gbs": 1.0})
    half = mlp_floor((4, 3, 2), rates={"matmul_gflops": 1.0, "cache_gbs": 1.0}, input_density=0.5)
    assert half["params"] == 2 * 3 + 3 + 3 * 2 + 2
    assert dense["flops_per_step"] - half["flops_per_step"] == 2 * 6 + 2 * 6  # forward and update of 2 rows
    assert half["bytes_per_step"] < dense["bytes_per_step"]


def test_median_of_repeated_runs_is_reported(tmp_path):
    from benchmark.speed import run

    result = run(size="tiny", only=["mer"], repeat=3)
    mer = result["strategies"]["mer"]
    assert len(mer["runs_us_per_step"]) == 3
    assert mer["us_per_step"] == sorted(mer["runs_us_per_step"])[1]


def test_meta_losses_are_counted_on_both_sides_and_equal_work_is_said_only_when_true(tmp_path, capsys):
    out = tmp_path / "speed.json"
    assert main(["speed", "--size", "tiny", "--only", "la-maml", "la-maml-final", "avalanche-la-maml", "--repeat", "1",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    data = json.loads(out.read_text())
    s = data["strategies"]
    # 2 tasks x 50 examples in minibatches of 10, one glance: every-step = one meta-loss per example;
    # lamaml_v2 with n_inner_updates 10 = one per single-example chunk; final = one per minibatch
    assert s["la-maml"]["meta_losses"] == 100 and s["avalanche-la-maml"]["meta_losses"] == 100
    assert s["la-maml-final"]["meta_losses"] == 10
    assert s["la-maml"]["inner_steps"] == s["avalanche-la-maml"]["inner_steps"] == 100
    # examples of the meta-losses: ours replay from the second minibatch on (10 + 10 draws), lamaml_v2 only in
    # the second task (its buffer is filled at the end of the first)
    assert s["la-maml"]["meta_examples"] == 10 * 10 + 90 * 20
    assert s["avalanche-la-maml"]["meta_examples"] == 50 * 10 + 50 * 20
    assert s["la-maml-final"]["meta_examples"] == 10 + 9 * 20
    assert data["equal_work"] == {"la-maml_vs_avalanche-la-maml": False, "la-maml-final_vs_avalanche-la-maml": False}
    assert "ours 1.00x the inner steps, 1.27x the meta-loss examples" in printed


def test_equal_work_is_said_when_inner_steps_meta_losses_and_their_examples_match():
    from benchmark.speed import render

    row = {"us_per_step": 1.0, "examples_per_s": 1.0, "peak_rss_mb": 1.0, "inner_steps": 10, "meta_losses": 10,
           "meta_examples": 200, "times_floor": 2.0}
    result = {"machine": {}, "floor": {"flops_per_step": 1, "bytes_per_step": 1, "matmul_gflops": 1, "cache_gbs": 1,
                                       "compute_us": 1, "cache_memory_us": 1, "floor_us": 1, "input_density": 0.2,
                                       "sparse_bytes_per_step": 1, "sparse_floor_us": 1},
              "examples_per_task": 50, "glances": 1, "repeat": 1, "jit_load_s": 0.0,
              "strategies": {"la-maml": row, "avalanche-la-maml": row},
              "ratios": {"la-maml_vs_avalanche-la-maml": 2.0}, "equal_work": {"la-maml_vs_avalanche-la-maml": True}}
    assert "2.0x  (per incoming example)  (equal work: same inner steps, meta-losses and meta-loss examples)" \
        in render(result)


def test_work_floor_counts_inner_steps_and_every_meta_loss_over_its_meta_batch():
    from benchmark.speed import work_floor_us

    # MER-like: 600 single-example steps of max(1 us compute, 8 us weight traffic), no meta-loss
    assert work_floor_us(inner_steps=600, meta_losses=0, meta_examples=0, step_compute_us=1.0,
                         step_memory_us=8.0) == 600 * 8.0
    # La-MAML every-step: plus 600 meta-losses over 20 examples sharing one pass over the weights
    assert work_floor_us(inner_steps=600, meta_losses=600, meta_examples=600 * 20, step_compute_us=1.0,
                         step_memory_us=8.0) == 600 * 8.0 + 600 * 20.0
    # small meta-batches are bound by the weight traffic, not by their compute
    assert work_floor_us(inner_steps=0, meta_losses=60, meta_examples=60 * 4, step_compute_us=1.0,
                         step_memory_us=8.0) == 60 * 8.0


def test_model_floor_counts_an_mlp_as_the_mlp_floor_does_and_a_convolution_by_its_outputs():
    from benchmark.models import MLP
    from benchmark.speed import model_floor

    rates = {"matmul_gflops": 1.0, "cache_gbs": 1.0}
    mlp, generic = mlp_floor((4, 3, 2), rates=rates), model_floor(MLP(input_size=4, n_classes=2, hidden=(3,)), (4,),
                                                                  rates=rates)
    assert (generic["params"], generic["flops_per_step"], generic["bytes_per_step"]) == \
        (mlp["params"], mlp["flops_per_step"], mlp["bytes_per_step"])
    conv = torch.nn.Sequential(torch.nn.Conv2d(2, 3, kernel_size=3, stride=2, padding=1), torch.nn.Flatten(),
                               torch.nn.Linear(3 * 4 * 4, 5))
    f = model_floor(conv, (2, 8, 8), rates=rates)
    first, second = 2 * (2 * 9) * 3 * 4 * 4, 2 * 48 * 5  # each output of the conv: 2 x 9 inputs
    assert f["forward_flops"] == first + second
    assert f["flops_per_step"] == 3 * (first + second) - first  # no gradient for the input image
    assert f["params"] == 3 * 2 * 9 + 3 + 48 * 5 + 5


def test_cnn_backbone_times_the_general_path_on_32x32_colour_images(tmp_path, capsys):
    out = tmp_path / "speed.json"
    assert main(["speed", "--backbone", "cnn", "--only", "c-maml", "avalanche-la-maml", "--repeat", "1",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["backbone"] == "cnn" and data["examples_per_task"] == 50  # tiny by default for the CNN
    assert data["strategies"]["c-maml"]["backend"] == "reference"  # no compiled backend for convolutions
    assert data["strategies"]["c-maml"]["inner_steps"] == data["strategies"]["avalanche-la-maml"]["inner_steps"] == 100
    # the La-MAML CIFAR network on 3x32x32: three stride-2 3x3 convolutions of 160 channels (16, 8, 4 pixels a side)
    convs = 2 * (3 * 9) * 160 * 16 * 16 + 2 * (160 * 9) * 160 * 8 * 8 + 2 * (160 * 9) * 160 * 4 * 4
    linears = 2 * (160 * 4 * 4 * 320 + 320 * 320 + 320 * 10)
    assert data["floor"]["forward_flops"] == convs + linears
    assert "c-maml_vs_avalanche-la-maml" in printed and "CNN 3x32x32" in printed


def test_vr_mcl_row_counts_both_of_its_paths(tmp_path):
    """VR-MCL's row: per minibatch of 10 single-example chunks, an inner step and a meta-loss at
    theta_t and again at theta_{t-1} (the variance-reduction term), each meta-loss over the
    minibatch and, from the second minibatch on, 10 replayed examples."""
    out = tmp_path / "speed.json"
    assert main(["speed", "--size", "tiny", "--only", "vr-mcl", "--repeat", "1", "--out", str(out)]) == 0
    s = json.loads(out.read_text())["strategies"]["vr-mcl"]
    assert s["inner_steps"] == s["meta_losses"] == 2 * 100
    assert s["meta_examples"] == 2 * 10 * (10 + 9 * 20)
    assert s["backend"] == "numba" and s["us_per_step"] > 0 and s["times_floor"] > 1
