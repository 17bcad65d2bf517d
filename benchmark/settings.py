"""The keys of an experiment file outside its scenario and strategy entries: the top level,
``train``, ``model`` and ``tune``, each with its type, allowed values, default and meaning. One
table: :mod:`benchmark.config` and :mod:`benchmark.tune_config` take their key lists and
defaults from it and ``clbench list`` prints it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from benchmark.evaluation import HEADS
from benchmark.models import BACKBONES, INITS
from benchmark.metric_names import METRICS
from benchmark.spec_keys import NOT_IN_RUN_ID

MAX_SEED = 2**32 - 1  # what every generator of a run (Python, NumPy, torch) accepts
MAX_NAME_BYTES = 200  # a folder name: filesystems allow 255 bytes
DEVICES = ("auto", "cpu", "cuda")
SAMPLERS = ("tpe", "random", "grid")  # Optuna's TPESampler, RandomSampler, and a seeded grid (benchmark.tune)
REPORT_ON = ("remaining", "all")


@dataclass(frozen=True)
class Setting:
    """One key of an experiment file: ``section`` is "" (top level), "train", "model" or "tune"."""

    section: str
    name: str
    kind: str  # its type and allowed values, as ``clbench list`` shows them
    default: Any
    help: str
    default_text: str = ""  # the default as ``clbench list`` shows it, where repr(default) would not do

    @property
    def key(self) -> str:
        return f"{self.section}.{self.name}" if self.section else self.name

    @property
    def in_run_id(self) -> bool:
        return not (self.section == "train" and self.name in NOT_IN_RUN_ID)


SETTINGS: tuple[Setting, ...] = (
    Setting("", "name", f"string, at most {MAX_NAME_BYTES} bytes, no '/', '\\' or control characters",
            None, "names the sweep and its default results folder results/<name>", "the config file's stem"),
    Setting("", "seeds", f"list of distinct integers 0 .. {MAX_SEED} (or one integer)", [0],
            "one run per seed of every (scenario, strategy) pair"),
    Setting("", "train", "mapping of the train.* keys", {}, "how every run trains"),
    Setting("", "model", "mapping of the model.* keys", {}, "the backbone every strategy gets"),
    Setting("", "scenarios", "non-empty list of {name: <scenario>, <parameter>: value}", None,
            "the streams; see 'scenarios:' below for each one's parameters", "required"),
    Setting("", "strategies", "non-empty list of {name: <strategy>, <hyperparameter>: value}", None,
            "the strategies; see 'strategies:' below for each one's hyperparameters", "required"),
    Setting("", "description", "string", None, "free text kept with the config", "none"),
    Setting("", "targets", "list of {scenario, strategy, [hparams], metric, value, source}", [],
            "published figures to reproduce; the report shows each beside the measured value "
            "(value in the report's units: % for accuracies)"),
    Setting("", "tune", "mapping of the tune.* keys", None,
            "how `clbench tune` chooses hyperparameters (Chaudhry et al. 2019: on the first tasks, never on "
            "test sets); `clbench run` checks it and does not use it", "none"),
    Setting("", "tuned", "mapping written by `clbench tune`", None,
            "how the hyperparameters of this config were chosen (protocol, budget, study, validation scores); "
            "the report marks those strategies", "none"),
    Setting("train", "batch_size", "integer >= 1", 10, "incoming examples per training iteration"),
    Setting("train", "epochs", "integer >= 1", 1, "passes over each task's training data (1: a single pass)"),
    Setting("train", "eval_batch_size", "integer >= 1", 1000, "examples per forward pass when evaluating"),
    Setting("train", "device", " | ".join(DEVICES), "auto", "where runs train (auto: cuda if there is one)"),
    Setting("train", "task_mask", "true | false", True,
            "task-incremental streams: train and score each task on its own classes' outputs"),
    Setting("train", "eval_head", " | ".join(HEADS), "logits",
            "how accuracy is scored: the largest output (a prototype strategy such as cope: its nearest "
            "prototype), or ncm, the nearest class mean of the representation (benchmark/evaluation.py)"),
    Setting("train", "eval_every", "integer >= 0", 0,
            "continual evaluation: every N training iterations, the accuracy on a fixed subsample of every "
            "task seen so far, and online accuracy on each incoming minibatch (0: only at task ends; "
            "benchmark/continual_eval.py, metrics in benchmark/stream_metrics.py)"),
    Setting("train", "eval_subsample", "integer >= 1", 200,
            "test examples per task that continual evaluation scores (the same positions for every strategy "
            "and seed of a stream)"),
    Setting("model", "name", " | ".join(("auto", *BACKBONES)), "auto",
            "the backbone (auto: the stream's own, mlp for MNIST-like data, cnn for CIFAR)"),
    Setting("model", "hidden", "non-empty list of integers >= 1", [100, 100], "hidden layer widths of the mlp"),
    Setting("model", "init", " | ".join(INITS), "torch",
            "initial weights: torch's defaults, xavier (GEM, MER) or kaiming (La-MAML)"),
    Setting("tune", "first_tasks", "integer >= 1, below the stream's n_tasks", 3,
            "the tasks the choice is made on: the first k of the stream"),
    Setting("tune", "val_fraction", "number > 0 and < 1", 0.1,
            "share of each of those tasks' training examples held out to score a trial (their test sets are "
            "never loaded)"),
    Setting("tune", "trials", "integer >= 1", 20, "trials per strategy entry, the same for every one (--trials)"),
    Setting("tune", "objective", " | ".join(METRICS), "acc",
            "what a trial is scored by, on the validation split (forgetting: lower is better)"),
    Setting("tune", "sampler", " | ".join(SAMPLERS), "tpe",
            "Optuna's TPE, random search, or a grid of the choice lists in a seeded order"),
    Setting("tune", "seed", f"integer 0 .. {MAX_SEED}", 0, "seed of the sampler"),
    Setting("tune", "seeds", f"list of distinct integers 0 .. {MAX_SEED}", None,
            "run seeds of every trial, its score their mean", "the config's first seed"),
    Setting("tune", "report_on", " | ".join(REPORT_ON), "remaining",
            "what best.yaml trains and reports on: the tasks after the first ones (remaining) or all of them"),
    Setting("tune", "spaces", "mapping strategy -> {hyperparameter: {uniform | log_uniform: [low, high]} | "
            "{choice: [values]}}", {},
            "the search space of each strategy; one without gets the float hyperparameters whose declared ranges "
            "are finite, uniformly", "{}"),
)


def keys(section: str) -> tuple[str, ...]:
    """The key names of ``section`` ("" for the top level), in table order."""
    return tuple(s.name for s in SETTINGS if s.section == section)


def defaults(section: str) -> dict[str, Any]:
    """``{key: default}`` of the ``train``, ``model`` or ``tune`` section (fresh lists and
    mappings each call)."""
    return {s.name: type(s.default)(s.default) if isinstance(s.default, (list, dict)) else s.default
            for s in SETTINGS if s.section == section}


def describe(setting: Setting) -> str:
    """One line of ``clbench list``: key = default (type and allowed values): meaning."""
    default = setting.default_text or _yaml_text(setting.default)
    note = "" if setting.in_run_id else "; not part of the run id: it does not change results"
    return f"{setting.key} = {default}  ({setting.kind}): {setting.help}{note}"


def _yaml_text(value: Any) -> str:
    """``value`` as it would be written in the YAML file: true, 10, auto, [100, 100]."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(map(_yaml_text, value)) + "]"
    return str(value)
