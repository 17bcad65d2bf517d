"""Plugin streams: ``@scenarios.register`` on a builder of our Stream or any Avalanche
benchmark, loaded by ``clbench run --plugin`` together with strategies, validated, listed, and
adapted (input shape, classes, task labels read from the benchmark)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import yaml

import scenarios
import strategies
from benchmark.cli import main

README = Path(__file__).resolve().parents[2] / "README.md"


def _readme_example() -> tuple[str, str]:
    section = README.read_text().split("## Write your own stream", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    config = re.search(r"```yaml\n(.*?)```", section, re.S).group(1)
    return code, config


def _records(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in out.glob("*/run.json")]


def test_readme_stream_example_runs_la_maml_and_mer_through_clbench(tmp_path, capsys):
    code, config = _readme_example()
    (tmp_path / "my_stream.py").write_text(code)
    (tmp_path / "blobs.yaml").write_text(config)
    out = tmp_path / "out"
    assert main(["run", str(tmp_path / "blobs.yaml"), "--out", str(out), "--plugin", str(tmp_path / "my_stream.py"),
                 "--no-progress", "--in-process"]) == 0
    recs = _records(out)
    assert sorted((r["strategy"], r["scenario"]) for r in recs) == [("la-maml", "blobs")] * 2 + [("mer", "blobs")] * 2
    assert all(r["status"] == "done" for r in recs), [r.get("error") for r in recs]
    assert all(len(r["acc_matrix"]) == 3 and len(r["acc_matrix"][0]) == 3 for r in recs)
    assert sorted(r["config"]["scenario_params"]["task_incremental"] for r in recs) == [False, False, True, True]


# -- one file, a stream and a strategy -------------------------------------------------------
PLUGIN = '''
from typing import Annotated

import torch
from avalanche.benchmarks import nc_benchmark
from avalanche.benchmarks.utils import as_classification_dataset
from avalanche.training import Naive
from torch.utils.data import TensorDataset

import scenarios
import strategies
from strategies import Choice, Range


def _data(n_classes, per_class, g):
    y = torch.arange(n_classes).repeat_interleave(per_class)
    x = torch.randn(len(y), 1, 28, 28, generator=g) + y.view(-1, 1, 1, 1).float()
    d = TensorDataset(x, y)
    d.targets = y
    return as_classification_dataset(d)


@scenarios.register("tiny-blobs")
def tiny_blobs(*, seed: int, n_tasks: Annotated[int, Range(ge=1, le=4)] = 2,
               per_class: Annotated[int, Range(ge=1)] = 10, task_incremental: bool = False,
               order: Annotated[str, Choice("fixed", "shuffled")] = "fixed"):
    """Blobs in a few lines."""
    g = torch.Generator().manual_seed(seed)
    return nc_benchmark(_data(2 * n_tasks, per_class, g), _data(2 * n_tasks, 5, g), n_experiences=n_tasks,
                        task_labels=task_incremental, seed=seed, fixed_class_order=None if order == "shuffled"
                        else list(range(2 * n_tasks)), class_ids_from_zero_in_each_exp=False)


@strategies.register("plain-sgd")
def plain_sgd(*, model, context, lr: Annotated[float, Range(gt=0)] = 0.05):
    """SGD, nothing else."""
    return Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=lr), **context.template_kwargs())
'''


def _config(tmp_path, scenario: dict, strategies_: list | None = None) -> Path:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"name": "plug", "seeds": [0], "train": {"device": "cpu"},
                                   "scenarios": [scenario], "strategies": strategies_ or [{"name": "plain-sgd"}]}))
    return cfg


@pytest.fixture
def plugin(tmp_path) -> Path:
    p = tmp_path / "both.py"
    p.write_text(PLUGIN)
    return p


def test_a_stream_and_a_strategy_from_one_file_run_together(tmp_path, plugin):
    cfg = _config(tmp_path, {"name": "Tiny_Blobs", "n_tasks": 2, "task_incremental": True})
    out = tmp_path / "out"
    assert main(["run", str(cfg), "--out", str(out), "--plugin", str(plugin), "--no-progress"]) == 0  # worker processes
    (rec,) = _records(out)
    assert rec["status"] == "done", rec.get("error")
    assert (rec["strategy"], rec["scenario"]) == ("plain-sgd", "tiny-blobs")
    assert len(rec["acc_matrix"]) == 2
    assert rec["config"]["scenario_params"] == {"n_tasks": 2, "per_class": 10, "task_incremental": True,
                                                "order": "fixed", "task_range": None, "val_fraction": None}
    # the blobs are easy: training the first task lifts its accuracy above the untrained model's
    assert rec["acc_matrix"][0][0] > rec["random_init_acc"][0]


def test_clbench_list_shows_the_plugin_stream_with_its_parameters(plugin, capsys):
    assert main(["list", "--plugin", str(plugin)]) == 0
    text = capsys.readouterr().out
    streams = text.split("\nscenarios:", 1)[1]
    assert "  tiny-blobs: Blobs in a few lines." in streams
    assert "      n_tasks = 2  (int, >= 1 and <= 4)" in streams
    assert "      order = 'fixed'  (str, one of fixed, shuffled)" in streams
    assert "plain-sgd: SGD, nothing else." in text.split("\nscenarios:", 1)[0]


@pytest.mark.parametrize("params, pattern", [
    ({"n_tasks": 5}, r"tiny-blobs: parameter 'n_tasks' must be >= 1 and <= 4, got 5"),
    ({"n_tasks": "two"}, r"tiny-blobs: parameter 'n_tasks' must be an integer, got 'two'"),
    ({"per_class": 0}, r"tiny-blobs: parameter 'per_class' must be >= 1, got 0"),
    ({"order": "fixd"}, r"parameter 'order' is 'fixd'; allowed: fixed, shuffled \(did you mean 'fixed'\?\)"),
    ({"n_task": 2}, r"tiny-blobs: unknown parameter 'n_task' \(did you mean 'n_tasks'\?\)"),
    ({"task_incremental": 1}, r"parameter 'task_incremental' must be true or false, got 1"),
])
def test_bad_stream_parameters_fail_in_one_line_before_any_run(tmp_path, plugin, capsys, params, pattern):
    cfg = _config(tmp_path, {"name": "tiny-blobs", **params})
    out = tmp_path / "out"
    assert main(["run", str(cfg), "--out", str(out), "--plugin", str(plugin), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(pattern, err), err
    assert not list(out.glob("*/run.json"))


BROKEN = {
    "raises.py": ("import scenarios\nraise RuntimeError('no data here')\n",
                  r"plugin .*raises\.py failed to load: RuntimeError: no data here"),
    "not_a_stream.py": ("import scenarios\n@scenarios.register('nothing')\ndef nothing(*, seed: int):\n"
                        "    return [1, 2, 3]\n",
                        r"scenario 'nothing' \(plugin .*not_a_stream\.py\): its builder returned list, not a stream"),
    "fails.py": ("import scenarios\n@scenarios.register('fails')\ndef fails(*, seed: int, n: int = 1):\n"
                 "    return 1 / 0\n",
                 r"scenario 'fails' \(plugin .*fails\.py\): its builder failed: ZeroDivisionError"),
    "untyped.py": ("import scenarios\n@scenarios.register('untyped')\ndef f(*, seed: int, n: dict = None):\n"
                   "    pass\n", r"plugin .*untyped\.py failed to load: ScenarioError: scenario 'untyped': parameter 'n' must be annotated "
                   r"int, float, bool, str, list\[int\] or list\[float\] \(optionally '\| None'\), got dict"),
    "positional.py": ("import scenarios\n@scenarios.register('positional')\ndef f(seed, n=1):\n    pass\n",
                      r"scenario 'positional': argument 'n' must be keyword-only with a default"),
    "builtin_name.py": ("import scenarios\n@scenarios.register('Split_MNIST')\ndef f(*, seed: int):\n    pass\n",
                        r"scenario name 'split-mnist' is already registered \(by clbench\)"),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_a_broken_stream_plugin_fails_in_one_line_naming_it_and_runs_nothing(tmp_path, capsys, name):
    text, pattern = BROKEN[name]
    plugin = tmp_path / name
    plugin.write_text(text)
    stream = re.search(r"register\('(\w+)'\)", text)
    cfg = _config(tmp_path, {"name": stream.group(1) if stream else "split-mnist"}, [{"name": "naive"}])
    out = tmp_path / "out"
    assert main(["run", str(cfg), "--out", str(out), "--plugin", str(plugin), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(pattern, err), err
    assert not list(out.glob("*/run.json"))


# -- what is read from an Avalanche benchmark ----------------------------------------------------
def _split_mnist_like(*, task_labels: bool):
    """A SplitMNIST-like benchmark built by Avalanche's own generator on real mnist5k digits."""
    from avalanche.benchmarks import nc_benchmark
    from avalanche.benchmarks.utils import as_classification_dataset
    from torch.utils.data import TensorDataset

    data = scenarios.load_source("mnist5k")

    def dataset(x, y):
        keep = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))[:500]  # every class, shuffled
        d = TensorDataset(x[keep], y[keep])
        d.targets = y[keep]
        return as_classification_dataset(d)

    return nc_benchmark(dataset(data.x_train, data.y_train), dataset(data.x_test, data.y_test), n_experiences=5,
                        task_labels=task_labels, seed=0, fixed_class_order=[3, 1, 4, 0, 5, 9, 2, 6, 8, 7],
                        class_ids_from_zero_in_each_exp=False)


@pytest.mark.parametrize("task_labels", [False, True])
def test_shape_classes_and_task_labels_are_read_from_an_avalanche_benchmark(task_labels):
    scenarios.register("mnist-pairs")(lambda *, seed: _split_mnist_like(task_labels=task_labels))
    stream = scenarios.build("mnist-pairs", seed=0)
    assert stream.input_shape == tuple(scenarios.load_source("mnist5k").input_shape)
    assert stream.n_classes == 10
    assert stream.task_labels is task_labels
    assert stream.classes_per_task == ((1, 3), (0, 4), (5, 9), (2, 6), (7, 8))
    assert stream.default_backbone == "mlp"
    assert [e.task_label for e in stream.benchmark.train_stream] == ([0, 1, 2, 3, 4] if task_labels else [0] * 5)
    # each experience keeps exactly its classes' examples
    for exp, classes in zip(stream.benchmark.test_stream, stream.classes_per_task):
        assert set(torch.as_tensor(exp.dataset.targets).tolist()) == set(classes)


def test_colour_images_get_the_cnn_and_builds_are_deterministic_per_seed():
    from avalanche.benchmarks import benchmark_from_datasets
    from avalanche.benchmarks.utils import as_classification_dataset
    from torch.utils.data import TensorDataset

    @scenarios.register("colour", description="3x8x8 noise")
    def colour(*, seed: int, n: int = 20):
        g = torch.Generator().manual_seed(seed)

        def d(k):
            x, y = torch.rand(n, 3, 8, 8, generator=g), torch.arange(n) % 2 + 2 * k
            ds = TensorDataset(x, y)
            ds.targets = y
            return as_classification_dataset(ds)

        return benchmark_from_datasets(train=[d(0), d(1)], test=[d(0), d(1)])

    torch.manual_seed(7)
    a, b, c = (scenarios.build("colour", seed=s) for s in (1, 1, 2))
    drawn = torch.rand(3)
    torch.manual_seed(7)
    assert torch.equal(drawn, torch.rand(3))  # building left the caller's generator as it was
    assert (a.input_shape, a.n_classes, a.task_labels, a.default_backbone) == ((3, 8, 8), 4, False, "cnn")
    assert a.params == scenarios.available()["colour"] == {"n": 20, "task_range": None, "val_fraction": None}
    xa, xb, xc = (s.benchmark.train_stream[1].dataset[3][0] for s in (a, b, c))
    assert torch.equal(xa, xb) and not torch.equal(xa, xc)


def test_a_stream_registered_by_code_here_runs_in_process_or_is_refused_in_one_line(tmp_path):
    """Workers load plugin files and entry points; a stream registered by code in this process
    alone cannot reach them: run_sweep refuses it before anything runs, and in_process runs it."""
    from benchmark.config import load_experiment
    from benchmark.sweep import run_sweep

    scenarios.register("pairs-here")(lambda *, seed: _split_mnist_like(task_labels=False))
    exp = load_experiment(_config(tmp_path, {"name": "pairs-here"}, [{"name": "naive"}]))
    with pytest.raises(scenarios.ScenarioError, match=r"^scenario 'pairs-here' is registered by plugin .*"
                                                      r"test_plugin_streams\.py, in this process only"):
        run_sweep(exp, out=tmp_path / "refused", show_progress=False)
    assert not (tmp_path / "refused").exists()
    outcome = run_sweep(exp, out=tmp_path / "here", show_progress=False, in_process=True)
    assert outcome.ok and len(outcome.done) == 1


def test_an_installed_entry_point_registers_its_stream_and_a_broken_one_is_named(tmp_path, monkeypatch):
    site = tmp_path / "site"
    dist = site / "fakestreams-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fakestreams\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[clbench.scenarios]\nfake-pairs = fakestreams:pairs\nbroken = fakestreams_broken\n")
    (site / "fakestreams.py").write_text(
        "from tests.scenarios.test_plugin_streams import _split_mnist_like\n"
        "def pairs(*, seed: int, task_labels: bool = True):\n    return _split_mnist_like(task_labels=task_labels)\n")
    (site / "fakestreams_broken.py").write_text("raise ImportError('missing dependency')\n")
    monkeypatch.syspath_prepend(str(site))
    from scenarios import registry

    registry.restore()  # entry points not loaded yet
    stream = scenarios.build("fake-pairs", seed=0)
    assert stream.task_labels is True and stream.n_tasks == 5
    assert registry.definition("fake-pairs").plugin.origin == "entry point fakestreams:pairs"
    with pytest.raises(scenarios.ScenarioError, match=r"unknown scenario 'nope'.*\(plugins that failed to load: "
                                                      r"broken: ImportError: missing dependency\)"):
        scenarios.build("nope")



# -- task_range and val_fraction on plugin streams (scenarios.selection) ---------------------

def _tensors(stream, split: str) -> list[tuple[torch.Tensor, torch.Tensor, int]]:
    out = []
    for exp in getattr(stream.benchmark, f"{split}_stream"):
        xs, ys = zip(*[(item[0], item[1]) for item in exp.dataset])
        out.append((torch.stack(xs), torch.as_tensor(ys), exp.task_label))
    return out


@pytest.mark.parametrize("task_labels", [False, True])
def test_a_task_range_of_a_plugin_stream_is_the_same_tasks_as_in_the_whole_stream(task_labels):
    scenarios.register("pairs")(lambda *, seed: _split_mnist_like(task_labels=task_labels))
    whole, part = scenarios.build("pairs", seed=0), scenarios.build("pairs", seed=0, task_range=[1, 4])
    assert part.classes_per_task == whole.classes_per_task[1:4]
    assert (part.n_classes, part.input_shape, part.task_labels) == (whole.n_classes, whole.input_shape, task_labels)
    for split in ("train", "test"):
        w, p = _tensors(whole, split)[1:4], _tensors(part, split)
        assert len(p) == 3
        for i, ((wx, wy, _), (px, py, label)) in enumerate(zip(w, p)):
            assert torch.equal(wx, px) and torch.equal(wy, py)
            assert label == (i if task_labels else 0)  # task labels renumbered from 0 where they are meaningful


def test_val_fraction_of_a_plugin_stream_evaluates_on_held_out_training_examples(tmp_path):
    scenarios.register("pairs")(lambda *, seed: _split_mnist_like(task_labels=False))
    whole = _tensors(scenarios.build("pairs", seed=3), "train")
    test_set = {tuple(x.flatten().tolist()) for x, _, _ in _tensors(scenarios.build("pairs", seed=3), "test")
                for x in x}
    val = scenarios.build("pairs", seed=3, val_fraction=0.2, task_range=[2, 5])
    again = scenarios.build("pairs", seed=3, val_fraction=0.2, task_range=[2, 5])
    for (wx, wy, _), (tx, ty, _), (vx, vy, _) in zip(whole[2:], _tensors(val, "train"), _tensors(val, "test")):
        n = len(wy)
        assert len(vy) == round(0.2 * n) and len(ty) == n - len(vy)
        rows = {tuple(x.flatten().tolist()): y for x, y in zip(wx, wy.tolist())}
        held, kept = [tuple(x.flatten().tolist()) for x in vx], [tuple(x.flatten().tolist()) for x in tx]
        assert set(held) | set(kept) == set(rows) and not set(held) & set(kept)  # a split of the training examples
        assert all(rows[h] == y for h, y in zip(held, vy.tolist()))
        assert not set(held) & test_set  # none of the builder's test examples reaches the stream
    assert all(torch.equal(a[0], b[0]) for a, b in zip(_tensors(val, "test"), _tensors(again, "test")))


def test_a_plugin_stream_task_range_beyond_its_tasks_and_a_reserved_parameter_are_one_line():
    scenarios.register("pairs")(lambda *, seed: _split_mnist_like(task_labels=False))
    with pytest.raises(scenarios.ScenarioError, match=r"^pairs: task_range=\[3, 6\] is not a range of the 5 tasks "
                                                      r"its builder made; allowed: \[start, stop\] with "
                                                      r"0 <= start < stop <= 5$"):
        scenarios.build("pairs", seed=0, task_range=[3, 6])
    with pytest.raises(scenarios.ScenarioError, match=r"^pairs: task_range=\[2, 2\] is not a range of tasks"):
        scenarios.resolve_params("pairs", task_range=[2, 2])
    with pytest.raises(scenarios.ScenarioError, match=r"^scenario 'cut': parameter 'val_fraction' is one every stream "
                                                      r"takes \(task_range, val_fraction"):
        @scenarios.register("cut")
        def cut(*, seed: int, val_fraction: float = 0.1):
            return _split_mnist_like(task_labels=False)
    assert scenarios.task_count("pairs") == 5 and scenarios.task_count("pairs", task_range=[1, 3]) == 2


def test_a_plugin_stream_returning_our_stream_is_cut_too():
    scenarios.register("ours")(lambda *, seed: scenarios.build("split-mnist", seed=seed))
    whole, part = scenarios.build("ours", seed=1), scenarios.build("ours", seed=1, task_range=[3, 5], val_fraction=0.1)
    assert part.classes_per_task == whole.classes_per_task[3:5] and part.name == "ours"
    held = [len(y) for _, y, _ in _tensors(part, "test")]
    assert held == [round(0.1 * len(y)) for _, y, _ in _tensors(whole, "train")[3:]]


def test_clbench_tune_chooses_on_a_plugin_streams_first_tasks(tmp_path, plugin):
    """A plugin stream without an n_tasks of its own: the tune counts its tasks by building it,
    chooses on the first one with a held-out validation split, and best.yaml cuts the rest."""
    (tmp_path / "pairs.py").write_text(
        "import scenarios\n"
        "from tests.scenarios.test_plugin_streams import _split_mnist_like\n"
        "scenarios.register('pairs')(lambda *, seed: _split_mnist_like(task_labels=False))\n")
    cfg = tmp_path / "t.yaml"
    cfg.write_text(yaml.safe_dump({
        "name": "tune-plug", "seeds": [0], "train": {"device": "cpu", "batch_size": 10},
        "scenarios": [{"name": "pairs"}], "strategies": [{"name": "plain-sgd"}],
        "tune": {"first_tasks": 1, "val_fraction": 0.2, "trials": 2, "sampler": "random",
                 "spaces": {"plain-sgd": {"lr": {"log_uniform": [0.01, 0.1]}}}}}))
    out = tmp_path / "out"
    assert main(["tune", str(cfg), "--out", str(out), "--plugin", str(plugin), "--plugin", str(tmp_path / "pairs.py"),
                 "--in-process"]) == 0
    best = yaml.safe_load((out / "best.yaml").read_text())
    assert best["scenarios"] == [{"name": "pairs", "task_range": [1, 5]}]
    assert best["tuned"]["n_tasks"] == 5
    recs = _records(out)
    assert len(recs) == 2 and all(r["status"] == "done" for r in recs)
    assert all(r["config"]["scenario_params"]["task_range"] == [0, 1] and len(r["acc_matrix"]) == 1 for r in recs)
