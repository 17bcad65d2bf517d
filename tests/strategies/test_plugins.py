"""The README's plugin example runs through `clbench run --plugin`."""

import json
import re
from pathlib import Path

import yaml

from benchmark.cli import main

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
