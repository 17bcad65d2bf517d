import json
from pathlib import Path

import pytest

from benchmark.config import ConfigError, RunSpec, apply_override, load_experiment, validate

BASE = {
    "name": "t",
    "seeds": [0, 1],
    "train": {"batch_size": 10, "epochs": 1},
    "scenarios": [{"name": "permuted-mnist", "n_tasks": 2, "per_task": 50}],
    "strategies": [{"name": "naive", "lr": 0.1}, {"name": "er", "mem_size": 20}],
}


def _copy(d):
    import copy

    return copy.deepcopy(d)


def test_specs_cover_every_combination_with_resolved_parameters():
    exp = validate(_copy(BASE))
    specs = exp.specs()
    assert len(specs) == 1 * 2 * 2
    er = next(s for s in specs if s.strategy == "er")
    assert er.hparams == {"lr": 0.1, "mem_size": 20, "replay_batch": 10, "momentum": 0.0, "per_example": False,
                          "glances": 1}
    assert er.scenario_params["source"] == "mnist5k" and er.scenario_params["identity_first"] is False
    assert exp.train == {"batch_size": 10, "epochs": 1, "eval_batch_size": 1000, "device": "auto", "task_mask": True,
                         "eval_head": "logits", "eval_every": 0, "eval_subsample": 200}
    assert exp.model == {"name": "auto", "hidden": [100, 100], "init": "torch"}


def test_run_id_is_stable_and_changes_with_what_changes_results():
    a = validate(_copy(BASE)).specs()
    b = validate(_copy(BASE)).specs()
    assert [s.run_id for s in a] == [s.run_id for s in b]
    assert len({s.run_id for s in a}) == len(a)
    changed = _copy(BASE)
    changed["strategies"][1]["mem_size"] = 30
    c = validate(changed).specs()
    same = {s.run_id for s in a} & {s.run_id for s in c}
    assert same == {s.run_id for s in a if s.strategy == "naive"}
    dev = _copy(BASE)
    dev["train"]["device"] = "cpu"  # where it runs does not change what it computes
    assert [s.run_id for s in validate(dev).specs()] == [s.run_id for s in a]
    explicit = _copy(BASE)
    explicit["strategies"][0]["momentum"] = 0.0  # a default written out is the same spec
    assert [s.run_id for s in validate(explicit).specs()] == [s.run_id for s in a]
    moved = _copy(BASE)  # where the data live and whether they may be downloaded change nothing
    moved["scenarios"][0].update(data_root="/elsewhere/data", download=False)
    moved_specs = validate(moved).specs()
    assert [s.run_id for s in moved_specs] == [s.run_id for s in a]
    assert moved_specs[0].to_dict()["scenario_params"]["data_root"] == "/elsewhere/data"  # still recorded
    for key, value in (("model", {"init": "xavier"}), ("train", {"task_mask": False})):
        other = _copy(BASE)
        other.setdefault(key, {}).update(value)  # what does change results changes the run id
        assert not {s.run_id for s in validate(other).specs()} & {s.run_id for s in a}, key


def test_model_init_and_task_mask_are_checked():
    for key, value, message in (("model", {"init": "he"}, "model.init is 'he'; allowed: torch, xavier, kaiming"),
                                ("train", {"task_mask": "yes"}, "train.task_mask must be true or false")):
        bad = _copy(BASE)
        bad.setdefault(key, {}).update(value)
        with pytest.raises(ConfigError, match=message):
            validate(bad)


def test_run_id_is_a_safe_folder_name():
    spec = RunSpec("../../etc", {}, "a b/c\0d", {}, 3, {}, {})
    rid = spec.run_id
    assert "/" not in rid and "\0" not in rid and ".." not in rid and " " not in rid
    assert rid.startswith("etc__a-b-c-d__s3__")


def test_overrides():
    raw = _copy(BASE)
    apply_override(raw, "train.batch_size=1")
    apply_override(raw, "seeds=[4, 5, 6]")
    apply_override(raw, "strategies.er.mem_size=50")
    apply_override(raw, "scenarios.0.n_tasks=3")
    exp = validate(raw)
    assert exp.train["batch_size"] == 1 and exp.seeds == (4, 5, 6)
    assert dict(exp.strategies)["er"]["mem_size"] == 50
    assert exp.scenarios[0][1]["n_tasks"] == 3


def test_load_experiment_reads_yaml_and_names_it_after_the_file(tmp_path):
    p = tmp_path / "mysweep.yaml"
    p.write_text("seeds: [0]\nscenarios: [split-mnist]\nstrategies: [{name: naive}]\n")
    exp = load_experiment(p, overrides=["strategies.naive.lr=0.05"])
    assert exp.name == "mysweep" and dict(exp.strategies)["naive"]["lr"] == 0.05


BAD = [
    ("unknown top key", {"seed": [0]}, r"unknown key 'seed' \(did you mean 'seeds'\?\)"),
    ("empty seeds", {"seeds": []}, r"'seeds' must be a non-empty list"),
    ("negative seed", {"seeds": [-1]}, r"every seed must be an integer >= 0"),
    ("text seed", {"seeds": ["a"]}, r"every seed must be an integer"),
    ("duplicate seed", {"seeds": [1, 1]}, r"lists a seed twice"),
    ("unknown train key", {"train": {"batchsize": 3}}, r"unknown key 'train.batchsize' \(did you mean 'batch_size'\?\)"),
    ("zero batch", {"train": {"batch_size": 0}}, r"train.batch_size must be an integer >= 1"),
    ("bad device", {"train": {"device": "tpu"}}, r"train.device is 'tpu'; allowed: auto, cpu, cuda"),
    ("bad model", {"model": {"name": "resnet"}}, r"model.name is 'resnet'; allowed: auto, mlp, cnn"),
    ("no strategies", {"strategies": []}, r"'strategies' must be a non-empty list"),
    ("unknown strategy", {"strategies": [{"name": "mr"}]}, r"strategies\[0\]: unknown strategy 'mr'.*allowed: "),
    ("unknown hparam", {"strategies": [{"name": "er", "memsize": 3}]}, r"unknown hyperparameter 'memsize' \(did you mean 'mem_size'\?\)"),
    ("negative lr", {"strategies": [{"name": "naive", "lr": -0.1}]}, r"hyperparameter 'lr' must be > 0 and <= 100, got -0.1"),
    ("zero memory", {"strategies": [{"name": "er", "mem_size": 0}]}, r"'mem_size' must be >= 1, got 0"),
    ("replay above memory", {"strategies": [{"name": "er", "mem_size": 5, "replay_batch": 10}]}, r"replay_batch=10 is larger than mem_size=5"),
    ("lr as text", {"strategies": [{"name": "naive", "lr": "fast"}]}, r"'lr' must be a number, got 'fast'"),
    ("unknown scenario", {"scenarios": [{"name": "rotated"}]}, r"scenarios\[0\]: unknown scenario 'rotated'"),
    ("zero tasks", {"scenarios": [{"name": "permuted-mnist", "n_tasks": 0}]}, r"'n_tasks' must be >= 1"),
    ("entry without name", {"scenarios": [{"n_tasks": 2}]}, r"scenarios\[0\] must be a mapping with a 'name'"),
    ("duplicate strategy", {"strategies": [{"name": "naive"}, {"name": "naive"}]}, r"listed twice"),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_configs_name_the_problem(case):
    _, patch, pattern = case
    raw = _copy(BASE)
    raw.update(patch)
    with pytest.raises(ConfigError, match=pattern) as err:
        validate(raw)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("item,pattern", [
    ("train.batch_sz=3", r"--set key 'train.batch_sz' does not exist \(did you mean 'batch_size'\?\)"),
    ("nonsense=1", r"--set key 'nonsense' does not exist"),
    ("strategies.ewc.lr=1", r"no strategy named 'ewc' in the config"),
    ("strategies.9.lr=1", r"there are only 2 strategies entries"),
    ("train.batch_size", r"must look like KEY=VALUE"),
])
def test_bad_overrides(item, pattern):
    with pytest.raises(ConfigError, match=pattern):
        apply_override(_copy(BASE), item)


def test_malformed_yaml_names_the_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("name: x\nseeds: [0, 1\nstrategies: []\n")
    with pytest.raises(ConfigError, match=r"malformed YAML at line \d+"):
        load_experiment(p)


def test_yaml_never_runs_code(tmp_path):
    p = tmp_path / "evil.yaml"
    p.write_text("name: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(ConfigError, match="malformed YAML"):
        load_experiment(p)


def test_train_keys_added_later_default_to_their_settings_defaults():
    """A key added after runs were recorded stays out of the run id at its default: the
    default there must be the setting's own, or every new run would get a new id."""
    from benchmark.settings import defaults
    from benchmark.spec_keys import TRAIN_ADDED_LATER

    train = defaults("train")
    assert {k: train[k] for k in TRAIN_ADDED_LATER} == TRAIN_ADDED_LATER


def test_stream_parameters_added_later_stay_out_of_run_ids_at_their_default():
    def spec(**extra):
        return validate({"name": "x", "scenarios": [{"name": "permuted-mnist", "source": "digits", "n_tasks": 3,
                                                      "per_task": 10, **extra}],
                         "strategies": ["naive"]}).specs()[0]

    base = spec()
    assert base.scenario_params["task_range"] is None and base.scenario_params["val_fraction"] is None
    assert "task_range" not in base.identity()["scenario_params"]
    assert spec(task_range=None, val_fraction=None).run_id == base.run_id
    assert spec(task_range=[0, 3]).run_id != base.run_id  # the same tasks, said explicitly: another spec
    assert len({base.run_id, spec(task_range=[1, 3]).run_id, spec(val_fraction=0.1).run_id}) == 3


RESULTS = Path(__file__).resolve().parents[2] / "results"


@pytest.mark.parametrize("folder", sorted(p.name for p in RESULTS.iterdir() if (p / "configs").is_dir()))
def test_committed_results_keep_their_run_ids(folder):
    """Every run folder of the committed results is named by the id its recorded spec gets
    today, and every config kept with them gives the ids of recorded runs: settings added since
    (stream parameters, hyperparameters, train settings) did not move any run."""
    root = RESULTS / folder
    recorded = set()
    for path in sorted(root.glob("*/run.json")):
        c = json.loads(path.read_text())["config"]
        spec = RunSpec(c["scenario"], c["scenario_params"], c["strategy"], c["hparams"], c["seed"], c["train"],
                       c["model"])
        assert spec.run_id == path.parent.name
        recorded.add(path.parent.name)
    assert recorded
    for config in sorted((root / "configs").glob("*.yaml")):
        ids = {s.run_id for s in load_experiment(config, check_data=False).specs()}
        assert ids <= recorded, (config.name, sorted(ids - recorded)[:3])
