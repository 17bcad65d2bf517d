"""The README's plugin example runs through `clbench run --plugin`."""

import json
import re
from pathlib import Path

import pytest
import yaml

from benchmark.cli import main

PLUGIN = str(Path(__file__).parents[1] / "benchmark" / "plugins" / "faulty.py")

README = Path(__file__).resolve().parents[2] / "README.md"


def _readme_plugin() -> str:
    text = README.read_text()
    section = text.split("## Write your own strategy", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_plugin_runs_through_clbench(tmp_path, capsys):
    plugin = tmp_path / "my_replay.py"
    plugin.write_text(_readme_plugin())
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({
        "name": "plug", "seeds": [0], "train": {"device": "cpu"},
        "scenarios": [{"name": "permuted-mnist", "n_tasks": 2, "per_task": 100, "test_per_task": 200}],
        "strategies": [{"name": "My_Replay", "k": 5, "mem_size": 50}, {"name": "naive"}],
    }))
    out = tmp_path / "out"
    assert main(["run", str(cfg), "--out", str(out), "--plugin", str(plugin), "--no-progress"]) == 0
    recs = {r["strategy"]: r for r in (json.loads(p.read_text()) for p in out.glob("*/run.json"))}
    assert recs["my-replay"]["status"] == "done"
    assert recs["my-replay"]["config"]["hparams"] == {"lr": 0.1, "mem_size": 50, "k": 5}
    # replay changes training: the two strategies do not end with the same accuracies
    assert recs["my-replay"]["acc_matrix"] != recs["naive"]["acc_matrix"]
    capsys.readouterr()
    assert main(["list", "--plugin", str(plugin)]) == 0
    assert "my-replay: Reservoir replay in a few lines." in capsys.readouterr().out


# -- plugin files checked when they load or first build: one line naming the plugin ------------
HEADER = "from typing import Annotated\nimport strategies\nfrom strategies import Range\n"
BAD_PLUGINS = {
    "factory without model and context": (
        "@strategies.register('nomodel')\ndef f(*, lr: float = 0.1):\n    pass\n",
        r"plugin .*bad\.py: strategy 'nomodel': its factory must take the keyword arguments model and context "
        r"\(missing: model, context\)"),
    "default of the wrong type": (
        "@strategies.register('fast')\ndef f(*, model, context, lr: float = 'fast'):\n    pass\n",
        r"plugin .*bad\.py: strategy 'fast': hyperparameter 'lr' must be a number, got 'fast' \(its default\)"),
    "default outside its range": (
        "@strategies.register('ranged')\ndef f(*, model, context, lr: Annotated[float, Range(gt=0)] = -1.0):\n"
        "    pass\n",
        r"strategy 'ranged': hyperparameter 'lr' must be > 0, got -1\.0 \(its default\)"),
    "name with a newline": (
        "@strategies.register('two\\nlines')\ndef f(*, model, context):\n    pass\n",
        r"plugin .*bad\.py: strategy name 'two\\nlines' must be a non-empty string of printable characters"),
    "KeyboardInterrupt at import": (
        "raise KeyboardInterrupt\n", r"plugin .*bad\.py failed to load: it raised KeyboardInterrupt \(bad\.py:4\); a plugin must only"),
    "BaseException subclass at import": (
        "class Stop(BaseException):\n    pass\nraise Stop('halt')\n",
        r"plugin .*bad\.py failed to load: it raised Stop: halt"),
    "duplicate of a plugin's name": (
        "@strategies.register('twice')\ndef f(*, model, context):\n    pass\n",
        r"strategy name 'twice' is already registered \(by plugin .*first\.py\)"),
}


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(HEADER + text)
    return p


def test_bad_plugins_fail_at_load_with_one_line(tmp_path, capsys):
    _write(tmp_path, "first.py", "@strategies.register('twice')\ndef f(*, model, context):\n    pass\n")
    for case, (text, pattern) in BAD_PLUGINS.items():
        folder = tmp_path / case.replace(" ", "-").replace("'", "")
        folder.mkdir()
        bad = _write(folder, "bad.py", text)
        plugins = ["--plugin", str(tmp_path / "first.py")] if "duplicate" in case else []
        code = main(["list", *plugins, "--plugin", str(bad)])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1, (case, err)
        assert re.search(pattern, err[0]), (case, err[0])


def test_a_factory_that_returns_no_strategy_fails_its_first_build(tmp_path):
    import pytest
    import strategies

    _write(tmp_path, "nothing.py", "@strategies.register('nothing')\ndef f(*, model, context):\n    return 42\n")
    strategies.load_plugin(tmp_path / "nothing.py")
    with pytest.raises(strategies.StrategyError,
                       match=r"strategy 'nothing' \(plugin .*nothing\.py\): its factory returned int, not an Avalanche"):
        strategies.build("nothing", model=None, context=strategies.StrategyContext())


@pytest.mark.parametrize("name, pattern", [
    ("test-half-checkpoints", r"^strategy 'test-half-checkpoints': it has checkpoint_state but not "
                              r"load_checkpoint_state; implement all of strategies\.contract\.Checkpoints or none of it"
                              r" \(plugin .*faulty\.py\)$"),
    ("test-probed-attributes", r"^strategy 'test-probed-attributes': it offers inner_steps, which the harness no "
                               r"longer reads; return them from report\(\)"),
    ("test-bad-report", r"^strategy 'test-bad-report': report\(\) returned dict; it must return a "
                        r"strategies\.StrategyReport"),
])
def test_a_strategy_that_breaks_the_contract_fails_its_build_in_one_line(name, pattern):
    """The strategy contract (strategies.contract) is checked when the strategy is built."""
    import torch

    import strategies
    from benchmark.models import build_model

    strategies.load_plugin(PLUGIN)
    model = build_model("mlp", input_shape=(1, 8, 8), n_classes=10)
    with pytest.raises(strategies.StrategyError, match=pattern) as err:
        strategies.build(name, model=model, context=strategies.StrategyContext(device=torch.device("cpu")))
    assert "\n" not in str(err.value)


def test_the_harness_reads_what_a_strategy_reports_through_the_contract(tmp_path):
    """The run record takes inner steps, meta-losses, the backend and extra metrics from
    report(), and a plain Avalanche strategy gets none of them."""
    import json

    import yaml

    from benchmark.config import load_experiment
    from benchmark.sweep import run_sweep

    cfg = {"name": "contract", "seeds": [0], "train": {"batch_size": 10, "device": "cpu"}, "model": {"hidden": [20]},
           "scenarios": [{"name": "permuted-mnist", "source": "digits", "n_tasks": 2, "per_task": 30}],
           "strategies": [{"name": "la-maml", "glances": 1}, {"name": "naive"}]}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "out"
    assert run_sweep(load_experiment(path), out=out, show_progress=False, in_process=True).ok
    recs = {r["strategy"]: r for r in (json.loads(p.read_text()) for p in out.glob("*/run.json"))}
    lamaml, naive = recs["la-maml"], recs["naive"]
    assert lamaml["timing"]["inner_steps"] == lamaml["timing"]["meta_losses"] == 60
    assert lamaml["backend"] == "numba" and 0 < lamaml["metrics"]["strategy_mean_alpha"]
    assert naive["timing"]["inner_steps"] is None and naive["backend"] is None
