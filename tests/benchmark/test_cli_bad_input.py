"""Bad input to the real ``clbench`` command: exit status 2, one line on stderr that names what
is wrong and what is allowed, no traceback (unless ``--debug``), no training, and nothing written
anywhere: not in the output folder, not beside it, not where a path trick in a name points.

Most cases call ``benchmark.cli.main(argv)`` in this process (fast); a few run the command in a
real process to show the process-level behaviour (exit status, stderr, no traceback).
"""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from benchmark.cli import main

REPO = Path(__file__).resolve().parents[2]

# A small valid experiment: every case below breaks one thing of it. The digits source is
# loaded in a blink, and no case reaches training (see the `no_training` fixture).
BASE: dict[str, Any] = {
    "name": "bad-input",
    "seeds": [0],
    "train": {"batch_size": 10, "epochs": 1, "device": "cpu"},
    "model": {"name": "auto", "hidden": [20]},
    "scenarios": [{"name": "permuted-mnist", "source": "digits", "n_tasks": 2, "per_task": 50}],
    "strategies": [
        {"name": "naive", "lr": 0.1},
        {"name": "er", "lr": 0.1, "mem_size": 20, "replay_batch": 5},
        {"name": "mer", "lr": 0.1, "beta": 0.1, "gamma": 1.0, "mem_size": 20, "replay_batch": 5,
         "batches_per_example": 2},
    ],
}
RUN = ["run", "{cfg}", "--out", "{out}", "--no-progress"]
DELETE = object()


def edit(*changes: tuple[str, Any]) -> Callable[[Path], dict]:
    """BASE with ``(dotted.path, value)`` changes; list entries by index, DELETE removes a key."""

    def make(_tmp: Path) -> dict:
        cfg = copy.deepcopy(BASE)
        for path, value in changes:
            *parents, last = path.split(".")
            node = cfg
            for part in parents:
                node = node[int(part)] if isinstance(node, list) else node[part]
            key = int(last) if isinstance(node, list) else last
            if value is DELETE:
                del node[key]
            else:
                node[key] = value
        return cfg

    return make


def npz_source(stream: str = "permuted-mnist", per_task: int = 5, **arrays) -> Callable[[Path], dict]:
    """BASE whose one scenario reads an npz file holding ``arrays``."""

    def make(tmp: Path) -> dict:
        path = tmp / "in" / "data.npz"
        np.savez(path, **arrays)
        cfg = copy.deepcopy(BASE)
        cfg["scenarios"] = [{"name": stream, "source": "npz", "path": str(path), "n_tasks": 1, "per_task": per_task}]
        return cfg

    return make


def npz_path(path: str | Callable[[Path], str]) -> Callable[[Path], dict]:
    """BASE whose one scenario reads the npz ``path`` (or ``path(tmp)``)."""

    def make(tmp: Path) -> dict:
        cfg = copy.deepcopy(BASE)
        given = path(tmp) if callable(path) else path
        cfg["scenarios"] = [{"name": "permuted-mnist", "source": "npz", "path": given, "n_tasks": 1, "per_task": 5}]
        return cfg

    return make


def in_file(name: str, content: str | bytes | None) -> Callable[[Path], Path]:
    """A file (or, with content None, a folder) under the case's input folder."""

    def make(tmp: Path) -> Path:
        p = tmp / "in" / name
        if content is None:
            p.mkdir(parents=True)
        elif isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content)
        return p

    return make


X = np.zeros((20, 8, 8), dtype=np.uint8)
Y = np.arange(20) % 10


@dataclass(frozen=True)
class Case:
    id: str
    pattern: str  # what stderr must match: the offending key or value, and what is allowed
    config: Any = None  # None: BASE; a dict maker; YAML text; bytes
    args: tuple[str, ...] = tuple(RUN)
    files: tuple[tuple[str, Callable[[Path], Path]], ...] = ()  # extra placeholders: name -> maker


def c(id, pattern, config=None, args=RUN, **files):
    return Case(id, pattern, config, tuple(args), tuple(files.items()))


ALLOWED_STRATEGIES = r"allowed: (.*, )?agem, .*\ber, ewc, .*\bmer, naive\b"  # plugins of other tests may come first
ALLOWED_SCENARIOS = r"allowed: permuted-mnist, many-permutations, rotated-mnist, split-mnist"

CASES = [
    # -- malformed YAML ----------------------------------------------------------------------
    c("yaml syntax error", r"\.yaml: malformed YAML at line 3, column 11: expected ',' or '\]', but got ':'",
      "name: x\nseeds: [0, 1\nstrategies: []\n"),
    c("yaml top level is a list", r"the top level is a list; it must be a mapping with keys name, seeds, train",
      "- name: x\n- seeds: [0]\n"),
    c("yaml top level is a scalar", r"the top level is an integer; it must be a mapping with keys name, seeds",
      "42\n"),
    c("yaml top level is a string", r"the top level is a string; it must be a mapping with keys name, seeds",
      "just some words\n"),
    c("empty yaml file", r"the file is empty; it must be a mapping with keys name, seeds", ""),
    c("yaml indented with tabs", r"malformed YAML at line 3, column 1: found character '\\t' that cannot start any token",
      "name: x\nseeds:\n\t- 0\n"),
    c("yaml key given twice", r"malformed YAML at line 2, column 1: the key 'seeds' is given twice in one mapping",
      "seeds: [0]\nseeds: [1]\nscenarios: [permuted-mnist]\nstrategies: [naive]\n"),
    c("yaml not utf-8", r"not UTF-8 text \(byte 6\); save it as UTF-8 YAML", b"name: \xff\xfe\n"),
    c("yaml with a NUL character", r"malformed YAML: unacceptable character #x0000", "name: a\x00b\n"),
    # -- unknown keys at every level ----------------------------------------------------------
    c("unknown top-level key", r"unknown key 'seed' \(did you mean 'seeds'\?\); allowed: name, seeds, train",
      edit(("seed", [0]))),
    c("unknown train key", r"unknown key 'train.epoch' \(did you mean 'epochs'\?\); allowed: batch_size, epochs",
      edit(("train.epoch", 2))),
    c("unknown model key", r"unknown key 'model.hiden' \(did you mean 'hidden'\?\); allowed: name, hidden",
      edit(("model.hiden", [10]))),
    c("unknown scenario parameter", r"scenarios\[0\]: permuted-mnist: unknown parameter 'n_task' \(did you mean 'n_tasks'\?\); allowed: source",
      edit(("scenarios.0.n_task", 3))),
    c("unknown strategy parameter", r"strategies\[1\]: strategy 'er': unknown hyperparameter 'memsize' \(did you mean 'mem_size'\?\); allowed: lr, mem_size",
      edit(("strategies.1.memsize", 5))),
    c("unknown mer hyperparameter", r"strategy 'mer': unknown hyperparameter 'betta' \(did you mean 'beta'\?\); allowed: lr, beta, gamma",
      edit(("strategies.2.betta", 0.1))),
    # -- wrong types ---------------------------------------------------------------------------
    c("batch_size as a string", r"train.batch_size must be an integer >= 1, got '10'", edit(("train.batch_size", "10"))),
    c("epochs as a list", r"train.epochs must be an integer >= 1, got \[1\]", edit(("train.epochs", [1]))),
    c("bool where an int goes", r"train.batch_size must be an integer >= 1, got True", edit(("train.batch_size", True))),
    c("seeds as a mapping", r"'seeds' must be a non-empty list of integers >= 0, got \{'first': 0\}",
      edit(("seeds", {"first": 0}))),
    c("train as a list", r"'train' is a list; it must be a mapping with keys batch_size, epochs", edit(("train", [10]))),
    c("scenarios as a mapping", r"'scenarios' must be a non-empty list of entries",
      edit(("scenarios", {"name": "permuted-mnist"}))),
    c("no strategies", r"'strategies' must be a non-empty list of entries", edit(("strategies", DELETE))),
    c("lr as a string", r"strategy 'naive': hyperparameter 'lr' must be a number, got 'fast'",
      edit(("strategies.0.lr", "fast"))),
    c("hidden as a number", r"model.hidden must be a non-empty list of integers >= 1, got 100", edit(("model.hidden", 100))),
    c("name as a number", r"'name' must be a non-empty string, got 5", edit(("name", 5))),
    c("description as a mapping", r"'description' must be a string, got a mapping", edit(("description", {"a": 1}))),
    c("per_task as a float", r"parameter 'per_task' must be an integer, got 1.5", edit(("scenarios.0.per_task", 1.5))),
    # -- out-of-range values --------------------------------------------------------------------
    c("negative learning rate", r"strategy 'naive': hyperparameter 'lr' must be > 0 and <= 100, got -0.1",
      edit(("strategies.0.lr", -0.1))),
    c("learning rate of 1e300", r"strategy 'naive': hyperparameter 'lr' must be > 0 and <= 100, got 1e\+300",
      edit(("strategies.0.lr", 1e300))),
    c("memory of 1e30 examples", r"strategy 'er': hyperparameter 'mem_size' must be an integer, got 1e\+30",
      edit(("strategies.1.mem_size", 1e30))),
    c("memory larger than the machine", r"n_tasks=2 and a replay memory of 1000000000000 examples need about "
      r"[\d.e+]+ GiB of memory; this machine has", edit(("strategies.1.mem_size", 10**12))),
    c("a billion tasks", r"n_tasks=1000000000 and a replay memory of 20 examples need about",
      edit(("scenarios.0.n_tasks", 10**9))),
    c("n_tasks of 1e300", r"'n_tasks' must be an integer, got 1e\+300", edit(("scenarios.0.n_tasks", 1e300))),
    c("negative mer learning rate", r"strategy 'mer': hyperparameter 'lr' must be > 0 and <= 100, got -0.03",
      edit(("strategies.2.lr", -0.03))),
    c("nan learning rate", r"strategy 'naive': hyperparameter 'lr' must be a finite number, got nan",
      edit(("strategies.0.lr", float("nan")))),
    c("er memory size 0", r"strategies\[1\]: strategy 'er': hyperparameter 'mem_size' must be >= 1, got 0",
      edit(("strategies.1.mem_size", 0))),
    c("mer memory size 0", r"strategies\[2\]: strategy 'mer': hyperparameter 'mem_size' must be >= 1, got 0",
      edit(("strategies.2.mem_size", 0))),
    c("er replay above memory", r"strategy 'er': replay_batch=50 is larger than mem_size=20; allowed: replay_batch <= mem_size",
      edit(("strategies.1.replay_batch", 50))),
    c("mer replay above memory", r"strategy 'mer': replay_batch=30 is larger than mem_size=20; allowed: replay_batch <= mem_size",
      edit(("strategies.2.replay_batch", 30))),
    c("avalanche la-maml replay above memory",
      r"strategy 'avalanche-la-maml': replay_batch=300 is larger than mem_size=200; allowed: replay_batch <= mem_size",
      edit(("strategies.0", {"name": "avalanche-la-maml", "replay_batch": 300}))),
    c("mer beta above 1", r"strategy 'mer': hyperparameter 'beta' must be >= 0 and <= 1, got 1.5",
      edit(("strategies.2.beta", 1.5))),
    c("mer algorithm that does not exist", r"strategy 'mer': hyperparameter 'algorithm' is 3; allowed: 1, 6, 7",
      edit(("strategies.2.algorithm", 3))),
    c("momentum of 1", r"hyperparameter 'momentum' must be >= 0 and < 1, got 1.0", edit(("strategies.0.momentum", 1.0))),
    c("zero tasks", r"scenarios\[0\]: permuted-mnist: parameter 'n_tasks' must be >= 1, got 0",
      edit(("scenarios.0.n_tasks", 0))),
    c("negative epochs", r"train.epochs must be an integer >= 1, got -1", edit(("train.epochs", -1))),
    c("batch_size 0", r"train.batch_size must be an integer >= 1, got 0", edit(("train.batch_size", 0))),
    c("more examples per task than the source has",
      r"scenarios\[0\]: per_task=5000 is larger than the 1438 training examples of source 'digits'; allowed: 1 .. 1438",
      edit(("scenarios.0.per_task", 5000))),
    c("split into a number of tasks that does not divide the classes",
      r"scenarios\[0\]: n_tasks=3 does not divide the 10 classes of source 'digits'; allowed: 1, 2, 5, 10",
      edit(("scenarios.0", {"name": "split-mnist", "source": "digits", "n_tasks": 3}))),
    # -- unknown names ----------------------------------------------------------------------------
    c("unknown strategy", rf"strategies\[0\]: unknown strategy 'nave' \(did you mean 'naive'\?\); {ALLOWED_STRATEGIES}",
      edit(("strategies.0", {"name": "nave"}))),
    c("unknown strategy close to mer", rf"unknown strategy 'merr' \(did you mean 'mer'\?\); {ALLOWED_STRATEGIES}",
      edit(("strategies.2.name", "merr"))),
    c("unknown scenario", rf"scenarios\[0\]: unknown scenario 'permuted-mnst' \(did you mean 'permuted-mnist'\?\); {ALLOWED_SCENARIOS}",
      edit(("scenarios.0.name", "permuted-mnst"))),
    c("unknown source", r"parameter 'source' is 'digts'; allowed: mnist5k, digits, mnist, .*, npz \(did you mean 'digits'\?\)",
      edit(("scenarios.0.source", "digts"))),
    c("unknown device", r"train.device is 'cdu'; allowed: auto, cpu, cuda \(did you mean 'cpu'\?\)", edit(("train.device", "cdu"))),
    c("unknown model", r"model.name is 'mpl'; allowed: auto, mlp, cnn \(did you mean 'mlp'\?\)", edit(("model.name", "mpl"))),
    c("unknown eval head", r"train.eval_head is 'nmc'; allowed: logits, ncm \(did you mean 'ncm'\?\)",
      edit(("train.eval_head", "nmc"))),
    c("negative eval_every", r"train.eval_every must be an integer >= 0, got -1", edit(("train.eval_every", -1))),
    c("zero eval_subsample", r"train.eval_subsample must be an integer >= 1, got 0", edit(("train.eval_subsample", 0))),
    c("fractional eval_every", r"train.eval_every must be an integer >= 0, got 2.5", edit(("train.eval_every", 2.5))),
    c("unknown ewc mode", r"strategy 'ewc': hyperparameter 'mode' is 'onlin'; allowed: separate, online \(did you mean 'online'\?\)",
      edit(("strategies.0", {"name": "ewc", "mode": "onlin"}))),
    c("unknown interpolation", r"parameter 'interpolation' is 'bilinar'; allowed: nearest, bilinear \(did you mean 'bilinear'\?\)",
      edit(("scenarios.0", {"name": "rotated-mnist", "source": "digits", "n_tasks": 2, "per_task": 50,
                            "interpolation": "bilinar"}))),
    # -- seeds ------------------------------------------------------------------------------------
    c("empty seed list", r"'seeds' must be a non-empty list of integers >= 0, got \[\]", edit(("seeds", []))),
    c("duplicate seeds", r"'seeds' lists a seed twice: \[1, 2, 1\]", edit(("seeds", [1, 2, 1]))),
    c("negative seed", r"every seed must be an integer >= 0, got -3", edit(("seeds", [0, -3]))),
    c("fractional seed", r"every seed must be an integer >= 0, got 1.5", edit(("seeds", [1.5]))),
    c("seed too large", r"seed 1099511627776 is too large; allowed: integers 0 .. 4294967295", edit(("seeds", [2**40]))),
    # -- npz files --------------------------------------------------------------------------------
    c("text file named .npz", r"source 'npz': cannot read .*notes\.npz as an \.npz file \(not a zip archive\)",
      npz_path(lambda t: str(in_file("notes.npz", "x,y\n1,2\n")(t)))),
    c("npz missing the arrays", r"npz file .*data\.npz: missing array 'y'; it must hold x, y", npz_source(x=X)),
    c("npz with other arrays", r"npz file .*: unexpected arrays \['images', 'labels'\]; allowed: x, y, x_test, y_test",
      npz_source(images=X, labels=Y)),
    c("npz images of a wrong shape", r"npz file .*: 'x' has shape \(20,\); allowed: \(N, D\), \(N, H, W\)",
      npz_source(x=np.zeros(20), y=Y)),
    c("npz labels and images of different lengths", r"npz file .*: 'y' has 5 labels for 20 examples", npz_source(x=X, y=Y[:5])),
    c("npz flat vectors for a rotated stream", r"rotated streams need images \(N, H, W\) or \(N, C, H, W\); source 'npz' gives flat vectors",
      npz_source("rotated-mnist", x=np.zeros((20, 16)), y=Y)),
    c("npz more examples per task than the file has", r"per_task=500 is larger than the 10 training examples of source 'npz'; allowed: 1 \.\. 10",
      npz_source(per_task=500, x=X, y=Y)),
    c("npz path is a folder", r"source 'npz': .*[/\\]in[/\\]folder\.npz is a folder; 'path' must be an \.npz file",
      npz_path(lambda t: str(in_file("folder.npz", None)(t)))),
    c("npz file missing", r"source 'npz': file not found: .*nothing-here\.npz", npz_path(lambda t: str(t / "nothing-here.npz"))),
    c("npz source without a path", r"source 'npz' needs 'path': an \.npz file with arrays x, y", npz_path(None)),
    c("npz path given for another source", r"'path' is only for source npz, not 'digits'",
      edit(("scenarios.0.path", "x.npz"))),
    # -- path tricks --------------------------------------------------------------------------------
    c("name climbing out with ../", r"'name' is '\.\./\.\./escaped'; it names the results folder, so it may not contain '/'",
      edit(("name", "../../escaped")), args=["run", "{cfg}", "--no-progress"]),
    c("name that is an absolute path", r"'name' is '/tmp/clbench-escaped'; it names the results folder",
      edit(("name", "/tmp/clbench-escaped")), args=["run", "{cfg}", "--no-progress"]),
    c("name with a NUL byte", r"'name' is 'a\\x00b'; it names the results folder, so it may not contain .*control characters",
      edit(("name", "a\x00b")), args=["run", "{cfg}", "--no-progress"]),
    c("name with a line break", r"'name' is 'first\\nsecond'; it names the results folder",
      edit(("name", "first\nsecond")), args=["run", "{cfg}", "--no-progress"]),
    c("strategy name climbing out", rf"unknown strategy '\.\./\.\./naive' \(did you mean 'naive'\?\); {ALLOWED_STRATEGIES}",
      edit(("strategies.0.name", "../../naive"))),
    c("strategy name with a NUL byte", rf"unknown strategy 'na\\x00ive' \(did you mean 'naive'\?\); {ALLOWED_STRATEGIES}",
      edit(("strategies.0.name", "na\x00ive"))),
    c("scenario name that is a path", rf"unknown scenario '/etc/passwd'; {ALLOWED_SCENARIOS}",
      edit(("scenarios.0.name", "/etc/passwd"))),
    c("npz path with a NUL byte", r"source 'npz': path 'a\\x00\.npz' contains a NUL byte", npz_path("a\x00.npz")),
    c("--out with a NUL byte", r"--out 'out\\x00dir' is not a folder name", args=["run", "{cfg}", "--out", "out\x00dir"]),
    c("--out empty", r"--out '' is not a folder name", args=["run", "{cfg}", "--out", ""]),
    c("--out is a file", r"output folder .*taken\.txt exists and is not a folder",
      args=["run", "{cfg}", "--out", "{taken}"], taken=in_file("taken.txt", "x")),
    c("--out under a file", r"cannot create the output folder .*taken\.txt[/\\]sub: Not a directory",
      args=["run", "{cfg}", "--out", "{taken}/sub"], taken=in_file("taken.txt", "x")),
    c("config path with a NUL byte", r"config file name 'c\\x00\.yaml' contains a NUL byte", args=["run", "c\x00.yaml"]),
    # -- --set ------------------------------------------------------------------------------------
    c("--set key that does not exist", r"--set key 'train.batchsize' does not exist \(did you mean 'batch_size'\?\); allowed: train.batch_size",
      args=[*RUN, "--set", "train.batchsize=2"]),
    c("--set top-level key that does not exist", r"--set key 'seed' does not exist \(did you mean 'seeds'\?\); top-level keys: name, seeds",
      args=[*RUN, "--set", "seed=1"]),
    c("--set without '='", r"--set 'train.batch_size' must look like KEY=VALUE", args=[*RUN, "--set", "train.batch_size"]),
    c("--set strategy not in the config", r"--set key 'strategies.ewc.lr': no strategy named 'ewc' in the config; present: naive, er, mer",
      args=[*RUN, "--set", "strategies.ewc.lr=1"]),
    c("--set value out of range", r"strategy 'er': hyperparameter 'mem_size' must be >= 1, got 0",
      args=[*RUN, "--set", "strategies.er.mem_size=0"]),
    c("--set on an entry written as a bare name", r"scenarios\[0\]: permuted-mnist: parameter 'n_tasks' must be >= 1, got 0",
      edit(("scenarios", ["permuted-mnist"])), args=[*RUN, "--set", "scenarios.0.n_tasks=0"]),
    c("--set value that is not YAML", r"--set train.batch_size: value '\[1' is not valid YAML", args=[*RUN, "--set", "train.batch_size=[1"]),
    c("--set empty key part", r"--set key 'train\.' is malformed; use dotted names like train.batch_size",
      args=[*RUN, "--set", "train.=1"]),
    # -- files and folders --------------------------------------------------------------------------
    c("config that does not exist", r"config file not found: .*missing\.yaml", args=["run", "{tmp}/missing.yaml"]),
    c("config that is a folder", r"config .*[/\\]in[/\\]conf\.d is a folder; give an experiment YAML file",
      args=["run", "{confdir}"], confdir=in_file("conf.d", None)),
    c("report on a folder that does not exist", r"results folder not found: .*no-such-results", args=["report", "{tmp}/no-such-results"]),
    c("report on a file", r"results folder .*taken\.txt is a file; give the --out folder of a sweep",
      args=["report", "{taken}"], taken=in_file("taken.txt", "x")),
    c("report on a folder without runs", r"no run records in .*[/\\]in[/\\]empty; a results folder holds <run_id>/run\.json",
      args=["report", "{empty}"], empty=in_file("empty", None)),
    # -- options ------------------------------------------------------------------------------------
    c("--jobs 0", r"--jobs must be >= 1, got 0", args=[*RUN, "--jobs", "0"]),
    c("--jobs negative", r"--jobs must be >= 1, got -2", args=[*RUN, "--jobs", "-2"]),
    c("--jobs not a number", r"argument --jobs: invalid int value: 'two'", args=[*RUN, "--jobs", "two"]),
    c("--executor unknown", r"argument --executor: invalid choice: 'slurm'; allowed: local, ray", args=[*RUN, "--executor", "slurm"]),
    c("--executor misspelt", r"invalid choice: 'locl'; allowed: local, ray \(did you mean 'local'\?\)", args=[*RUN, "--executor", "locl"]),
    c("--address without ray", r"--address is only for --executor ray", args=[*RUN, "--address", "10.0.0.1:6379"]),
    c("--log unknown", r"argument --log: invalid choice: 'comet'; allowed: tensorboard, mlflow, wandb", args=[*RUN, "--log", "comet"]),
    c("--log-uri without --log mlflow", r"--log-uri is the MLflow tracking URI; it goes with --log mlflow",
      args=[*RUN, "--log", "tensorboard", "--log-uri", "http://127.0.0.1:5000"]),
    c("--log-uri empty", r"--log-uri '' is not a URI", args=[*RUN, "--log", "mlflow", "--log-uri", ""]),
    c("--plugin missing", r"plugin file not found: .*nope\.py", args=[*RUN, "--plugin", "{tmp}/nope.py"]),
    c("--plugin with a syntax error", r"plugin .*broken\.py failed to load: SyntaxError: .* \(line 2\); it must be valid Python",
      args=[*RUN, "--plugin", "{plug}"], plug=in_file("broken.py", "import strategies\ndef oops(:\n")),
    c("--plugin that is not a .py file", r"plugin file .*plugin\.txt must be a Python file ending in \.py",
      args=[*RUN, "--plugin", "{plug}"], plug=in_file("plugin.txt", "x = 1\n")),
    c("--plugin that is a folder", r"plugin .*plugins\.py is a folder; give a Python file ending in \.py",
      args=[*RUN, "--plugin", "{plug}"], plug=in_file("plugins.py", None)),
    c("--plugin that calls sys.exit", r"plugin .*quits\.py failed to load: it called sys\.exit\(0\); a plugin must only register",
      args=[*RUN, "--plugin", "{plug}"], plug=in_file("quits.py", "import sys\nsys.exit(0)\n")),
    c("--plugin registering a taken name", r"plugin .*clash\.py: strategy name 'naive' is already registered \(by clbench\)",
      args=[*RUN, "--plugin", "{plug}"],
      plug=in_file("clash.py", "import strategies\n\n@strategies.register('naive')\ndef mine(*, model, context):\n    return None\n")),
    c("unknown subcommand", r"argument command: invalid choice: 'rnu'; allowed: run, tune, list, report, eval-cost, speed \(did you mean 'run'\?\)",
      args=["rnu", "{cfg}"]),
    c("no subcommand", r"^clbench: error: a command is required: run, tune, list, report, eval-cost, speed \(see `clbench --help`\)$",
      args=[]),
    c("run without a config", r"^clbench: error: run: the following arguments are required: config$", args=["run"]),
    c("unknown option", r"unrecognized arguments: --jbos 2 \(did you mean '--jobs'\?\)", args=[*RUN, "--jbos", "2"]),
]


@pytest.fixture(autouse=True)
def no_training(monkeypatch):
    """Bad input never reaches the sweep: a case that did would fail here, at once."""
    import benchmark.sweep

    def refuse(*args, **kwargs):
        raise AssertionError("a bad-input case reached run_sweep")

    monkeypatch.setattr(benchmark.sweep, "run_sweep", refuse)


def _tree(root: Path) -> set[str]:
    """Every path under ``root`` (bytecode caches aside: importing a plugin file may write one)."""
    found = set()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        found.update(os.path.join(dirpath, n) for n in dirnames + filenames)
    return found


def _prepare(case: Case, tmp: Path) -> list[str]:
    """Write the case's files under ``tmp/in`` and return its argv."""
    (tmp / "in").mkdir()
    (tmp / "cwd").mkdir()
    config = case.config if case.config is not None else edit()
    if callable(config):
        config = config(tmp)
    cfg = tmp / "in" / "experiment.yaml"
    if isinstance(config, bytes):
        cfg.write_bytes(config)
    elif isinstance(config, str):
        cfg.write_text(config)
    else:
        cfg.write_text(yaml.safe_dump(config, sort_keys=False))
    names = {"cfg": str(cfg), "out": str(tmp / "out"), "tmp": str(tmp)}
    for name, make in case.files:
        names[name] = str(make(tmp))
    return [a.format(**names) for a in case.args]


def _check_one_line(code: int, out: str, err: str, pattern: str) -> None:
    assert code == 2, (code, out, err)
    assert "Traceback" not in out + err, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("clbench: error: "), err
    assert re.search(pattern, lines[0]), f"{pattern!r} not in {lines[0]!r}"


def test_the_base_config_is_valid(tmp_path, capsys):
    """Each case breaks one thing of BASE, so BASE itself must pass every check and reach the
    sweep (which the `no_training` fixture stops)."""
    from benchmark.config import load_experiment

    argv = _prepare(Case("base", ""), tmp_path)
    exp = load_experiment(argv[1])
    assert [s for s, _ in exp.strategies] == ["naive", "er", "mer"]
    assert main(argv) == 1
    assert "a bad-input case reached run_sweep" in capsys.readouterr().err


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_exits_2_with_one_clear_line(case, tmp_path, monkeypatch, capsys):
    argv = _prepare(case, tmp_path)
    monkeypatch.chdir(tmp_path / "cwd")  # where relative paths (and the default --out) point
    everything = tmp_path.parent  # this test's folder and its neighbours: what ../ can reach
    before = _tree(everything)
    code = main(argv)
    captured = capsys.readouterr()
    _check_one_line(code, captured.out, captured.err, case.pattern)
    assert captured.out == ""
    assert _tree(everything) == before, "bad input wrote files"
    assert not Path("/tmp/clbench-escaped").exists()


def test_yaml_tags_never_run_code(tmp_path, monkeypatch, capsys):
    """Configs and --set values are read by YAML's safe loader: a python/object tag is refused
    and its command never runs."""
    monkeypatch.chdir(tmp_path)
    victim = tmp_path / "pwned"
    evil = tmp_path / "evil.yaml"
    evil.write_text(f'name: !!python/object/apply:os.system ["touch {victim}"]\n'
                    "scenarios: [permuted-mnist]\nstrategies: [naive]\n")
    code = main(["run", str(evil), "--out", str(tmp_path / "out")])
    _check_one_line(code, *capsys.readouterr(), r"malformed YAML at line 1, column 7: .*python/object/apply:os\.system")
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(BASE))
    code = main(["run", str(good), "--out", str(tmp_path / "out"),
                 "--set", f'name=!!python/object/apply:os.system ["touch {victim}"]'])
    _check_one_line(code, *capsys.readouterr(), r"--set name: value '!!python/object/apply:os\.system.*' is not valid YAML")
    assert not victim.exists() and not (tmp_path / "out").exists()


def test_debug_shows_the_traceback(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({**BASE, "seed": [0]}))
    from benchmark.config import ConfigError

    with pytest.raises(ConfigError, match=r"unknown key 'seed'"):
        main(["--debug", "run", str(cfg), "--out", str(tmp_path / "out")])
    with pytest.raises(ConfigError, match=r"unknown key 'seed'"):  # after the subcommand too
        main(["run", str(cfg), "--out", str(tmp_path / "out"), "--debug"])


# -- in a real process: status, stderr and no traceback, as a shell sees them -------------------

def _clbench(args: list[str], cwd: Path, *, entry_point: bool = False) -> subprocess.CompletedProcess:
    script = Path(sys.executable).parent / "clbench"
    cmd = [str(script)] if entry_point else [sys.executable, "-m", "benchmark"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([*cmd, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
                          check=False)


@pytest.mark.parametrize("case_id", ["yaml syntax error", "unknown strategy", "npz labels and images of different lengths"])
def test_bad_input_in_a_real_process(case_id, tmp_path):
    case = next(c for c in CASES if c.id == case_id)
    argv = _prepare(case, tmp_path)
    before = _tree(tmp_path.parent)
    proc = _clbench(argv, tmp_path / "cwd")
    _check_one_line(proc.returncode, proc.stdout, proc.stderr, case.pattern)
    assert _tree(tmp_path.parent) == before


def test_entry_point_and_debug_in_a_real_process(tmp_path):
    if not (Path(sys.executable).parent / "clbench").exists():
        pytest.skip("the clbench console script is not installed beside this Python")
    case = next(c for c in CASES if c.id == "unknown subcommand")
    proc = _clbench(_prepare(case, tmp_path), tmp_path / "cwd", entry_point=True)
    _check_one_line(proc.returncode, proc.stdout, proc.stderr, case.pattern)
    (tmp_path / "debug").mkdir()
    argv = _prepare(next(c for c in CASES if c.id == "unknown top-level key"), tmp_path / "debug")
    proc = _clbench(["--debug", *argv], tmp_path / "cwd", entry_point=True)
    assert proc.returncode != 0
    assert "Traceback (most recent call last)" in proc.stderr
    assert re.search(r"ConfigError: .*unknown key 'seed'", proc.stderr)


# -- paths, nesting, names and --set values that used to be internal errors or misleading --------

def _deep_yaml(tmp: Path) -> Path:
    p = tmp / "deep.yaml"
    p.write_text("name: deep\nseeds: " + "[" * 20000 + "0" + "]" * 20000 + "\n")
    return p


def _fifo(tmp: Path) -> Path:
    p = tmp / "config.fifo"
    os.mkfifo(p)
    return p


def _loop(tmp: Path) -> Path:
    a, b = tmp / "a.yaml", tmp / "b.yaml"
    a.symlink_to(b)
    b.symlink_to(a)
    return a


def _good(tmp: Path) -> Path:
    p = tmp / "good.yaml"
    p.write_text(yaml.safe_dump(BASE))
    return p


def _long_name(tmp: Path) -> Path:
    p = tmp / "long.yaml"
    p.write_text(yaml.safe_dump({**BASE, "name": "n" * 300}))
    return p


PATH_CASES = {
    "empty config path": (lambda t: ["run", ""], r"^clbench: error: config file name is empty; give an experiment YAML file$"),
    "config is /dev/null": (lambda t: ["run", "/dev/null"], r"config /dev/null is a device, not a file"),
    "config is a FIFO": (lambda t: ["run", str(_fifo(t))], r"config .*config\.fifo is a FIFO, not a file"),
    "config is a symlink loop": (lambda t: ["run", str(_loop(t))], r"a\.yaml is a symbolic link loop"),
    "config path too long": (lambda t: ["run", str(t / ("x" * 300 + ".yaml"))],
                             r"config path is too long for the filesystem \(\d+ characters\)"),
    "config nested 20,000 levels": (lambda t: ["run", str(_deep_yaml(t))], r"deep\.yaml: nested too deeply"),
    "name longer than a folder name": (lambda t: ["run", str(_long_name(t))],
                                       r"'name' is 300 bytes long; at most 200 \(it names the results folder\)"),
    "--set with a non-ASCII digit": (lambda t: ["run", str(_good(t)), "--set", "strategies.\u00b2.lr=0.2"],
                                     r"--set key 'strategies\.\u00b2\.lr': no strategy named '\u00b2' in the config"),
    "bad --set value is blamed on --set": (lambda t: ["run", str(_good(t)), "--set", "train.batch_size=abc"],
                                           r"^clbench: error: --set train\.batch_size=abc: train\.batch_size must be an "
                                           r"integer >= 1, got 'abc'$"),
    "speed with an unknown --only": (lambda t: ["speed", "--only", "foo"],
                                     r"^clbench: error: speed: --only 'foo' is not a strategy of the benchmark; allowed: mer,"),
    "speed with a bad --size": (lambda t: ["speed", "--size", "huge"],
                                r"^clbench: error: speed: argument --size: invalid choice: 'huge'; allowed: tiny, small"),
    "speed with --repeat 0": (lambda t: ["speed", "--repeat", "0"], r"^clbench: error: speed: --repeat must be >= 1, got 0$"),
}


@pytest.mark.parametrize("case", list(PATH_CASES), ids=list(PATH_CASES))
def test_paths_nesting_names_and_overrides_are_bad_input(case, tmp_path, monkeypatch, capsys):
    make_argv, pattern = PATH_CASES[case]
    monkeypatch.chdir(tmp_path)
    argv = make_argv(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    code = main([*argv, "--out", str(tmp_path / "out")] if argv[0] == "run" and len(argv) > 1 and argv[1] else argv)
    captured = capsys.readouterr()
    _check_one_line(code, captured.out, captured.err, pattern)
    assert sorted(p.name for p in tmp_path.iterdir()) == before, "bad input wrote files"


def test_ray_executor_without_ray_is_bad_input(tmp_path):
    """``sys.modules['ray'] = None`` is Python's own way to make ``import ray`` fail: Ray stands
    for not installed. One line, exit 2, nothing run or written."""
    cfg, out = tmp_path / "c.yaml", tmp_path / "out"
    cfg.write_text(yaml.safe_dump({"name": "c", "scenarios": [{"name": "permuted-mnist", "source": "digits",
                                                                 "n_tasks": 2, "per_task": 20}],
                                   "strategies": [{"name": "naive"}]}))
    code = ("import sys; sys.modules['ray'] = None; from benchmark.cli import main; "
            f"sys.exit(main(['run', {str(cfg)!r}, '--out', {str(out)!r}, '--executor', 'ray']))")
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=root,
                          env={**os.environ, "PYTHONPATH": str(root)})
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == ["clbench: error: --executor ray needs Ray: pip install 'clbench[ray]'"]
    assert not out.exists()
