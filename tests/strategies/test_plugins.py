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
