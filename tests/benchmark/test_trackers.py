"""``clbench run --log tensorboard|mlflow|wandb`` on a tiny real sweep: what each tracker logged,
read back with the tool's own reader, equals the run records; a tracker that fails is one
line and changes nothing else."""

import json
import struct
from pathlib import Path

import pytest
import yaml

from benchmark.cli import main

TINY = {
    "name": "tiny-trackers",
    "seeds": [0],
    "train": {"batch_size": 10, "epochs": 1, "device": "cpu", "eval_every": 2},
    "scenarios": [{"name": "permuted-mnist", "source": "digits", "n_tasks": 2, "per_task": 60, "test_per_task": 60}],
    "strategies": [{"name": "naive", "lr": 0.1}, {"name": "er", "lr": 0.1, "mem_size": 20, "replay_batch": 5}],
}


def _records(out):
    return {p.parent.name: json.loads(p.read_text()) for p in Path(out).glob("*/run.json")}


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    p = tmp_path_factory.mktemp("cfg") / "tiny.yaml"
    p.write_text(yaml.safe_dump(TINY))
    return p


@pytest.fixture(scope="module")
def logged(config, tmp_path_factory):
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    pytest.importorskip("wandb")
    out = tmp_path_factory.mktemp("logged") / "out"
    import contextlib
    import io

    printed, errors = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(errors):
        code = main(["run", str(config), "--out", str(out), "--no-progress",
                     "--log", "tensorboard", "--log", "mlflow", "--log", "wandb"])
    assert code == 0 and "tracker" not in errors.getvalue(), errors.getvalue()
    assert (f"Logged: tensorboard: 2 runs to {out}/<run_id>/tensorboard/; mlflow: 2 runs to "
            f"sqlite:///{out.resolve()}/mlflow.db; wandb: 2 runs to {out}/wandb/ (offline)") in printed.getvalue()
    records = _records(out)
    assert len(records) == 2 and all(r["status"] == "done" and r["curves"]["iterations"] for r in records.values())
    return out, records


def _leaves(prefix, value):
    """(dotted path, value) of every scalar leaf of a config, independently of the trackers module."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(f"{prefix}.{k}", v)
    elif isinstance(value, (int, float, str)) and not isinstance(value, bool):
        yield prefix, value


def _expected_series(record):
    """tag -> [(step, value)] that the record holds, built from its fields."""
    rows, curves = record["acc_matrix"], record["curves"]
    out = {f"acc/task_{j}": [(i, row[j]) for i, row in enumerate(rows)] for j in range(len(rows))}
    out["acc/average"] = [(i, sum(row[:i + 1]) / (i + 1)) for i, row in enumerate(rows)]
    for name in ("acc", "bwt", "forgetting", "la"):
        out[f"metrics/{name}"] = [(len(rows) - 1, record["metrics"][name])]
    for j in range(len(rows)):
        out[f"curve/task_{j}"] = [(it, acc[j]) for it, acc in zip(curves["iterations"], curves["acc"]) if len(acc) > j]
    out["curve/seen"] = [(it, sum(acc) / len(acc)) for it, acc in zip(curves["iterations"], curves["acc"])]
    return out


def _same(got, want, *, rel=1e-6):
    assert [s for s, _ in got] == [s for s, _ in want]
    assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=rel, abs=1e-7)


def test_tensorboard_event_files_hold_the_records_scalars(logged):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, records = logged
    for run_id, record in records.items():
        acc = EventAccumulator(str(out / run_id / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
        acc.Reload()
        for tag, want in _expected_series(record).items():
            _same([(e.step, e.value) for e in acc.Scalars(tag)], want)
        text = acc.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
        assert f"run_id = {run_id}" in text and f"seed = {record['seed']}" in text


def test_mlflow_has_one_run_per_clbench_run_with_params_and_histories(logged):
    from mlflow.tracking import MlflowClient

    out, records = logged
    client = MlflowClient(tracking_uri=f"sqlite:///{out.resolve() / 'mlflow.db'}")
    exp = client.get_experiment_by_name(TINY["name"])
    runs = client.search_runs([exp.experiment_id])
    assert sorted(r.info.run_name for r in runs) == sorted(records)
    for run in runs:
        record = records[run.info.run_name]
        assert run.info.status == "FINISHED"
        params = run.data.params
        assert params["strategy"] == record["strategy"] and params["seed"] == str(record["seed"])
        leaves = list(_leaves("config", record["config"]))
        assert len(leaves) > 5
        for key, value in leaves:
            assert params[key] == str(value), key
        for tag, want in _expected_series(record).items():
            history = sorted(client.get_metric_history(run.info.run_id, tag), key=lambda m: m.step)
            _same([(m.step, m.value) for m in history], want, rel=1e-12)


def _wandb_records(path):
    """The protobuf records (wandb's own ``wandb.proto`` Record) of an offline ``.wandb`` file.
    wandb 0.31 has no Python reader of these files any more (its datastore moved into the Go
    ``wandb-core``), so the framing is read here: a 7-byte header (':W&B', magic, version), then
    LevelDB-log blocks of 32 KiB, each chunk a 7-byte header (crc32c, length, type 1 full / 2
    first / 3 middle / 4 last)."""
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B"
    pos, block, pending, found = 7, 32768, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a header: padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:
            continue
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            rec = wandb_internal_pb2.Record()
            rec.ParseFromString(pending)
            found.append(rec)
            pending = b""
    return found


def test_wandb_offline_runs_hold_config_and_histories(logged):
    out, records = logged
    files = sorted((out / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == len(records)
    seen = set()
    for f in files:
        recs = _wandb_records(f)
        run = next(r.run for r in recs if r.WhichOneof("record_type") == "run")
        run_id = run.display_name
        seen.add(run_id)
        record = records[run_id]
        updates = [run.config] + [r.config for r in recs if r.WhichOneof("record_type") == "config"]
        config = {item.key: json.loads(item.value_json) for u in updates for item in u.update}
        assert config["run_id"] == run_id and config["strategy"] == record["strategy"]
        for key, value in _leaves("config", record["config"]):
            assert config[key] == str(value), key
        history = [{item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item}
                   for r in recs if r.WhichOneof("record_type") == "history"]
        for tag, want in _expected_series(record).items():
            axis = "iteration" if tag.startswith("curve/") else "task"
            _same([(row[axis], row[tag]) for row in history if tag in row], want, rel=1e-12)
    assert seen == set(records)


def test_a_finished_sweep_rerun_logs_nothing_again(logged, config, capfd):
    from mlflow.tracking import MlflowClient

    out, records = logged
    before = {p: p.stat().st_size for p in (out / "wandb").glob("offline-run-*/run-*.wandb")}
    assert main(["run", str(config), "--out", str(out), "--no-progress", "--log", "mlflow", "--log", "wandb"]) == 0
    assert "Logged: mlflow: 0 runs to " in capfd.readouterr().out
    client = MlflowClient(tracking_uri=f"sqlite:///{out.resolve() / 'mlflow.db'}")
    exp = client.get_experiment_by_name(TINY["name"])
    assert len(client.search_runs([exp.experiment_id])) == len(records)
    assert {p: p.stat().st_size for p in (out / "wandb").glob("offline-run-*/run-*.wandb")} == before


def test_an_unreachable_mlflow_server_is_one_line_and_changes_nothing(config, tmp_path, capfd):
    pytest.importorskip("mlflow")
    out = tmp_path / "out"
    code = main(["run", str(config), "--out", str(out), "--no-progress", "--log", "mlflow",
                 "--log-uri", "http://127.0.0.1:9"])
    err = capfd.readouterr().err
    assert code == 0
    lines = [line for line in err.splitlines() if "mlflow" in line.lower()]
    assert len(lines) == 1 and lines[0].startswith("clbench: tracker mlflow off"), err
    records = _records(out)
    assert len(records) == 2 and all(r["status"] == "done" for r in records.values())
    summary = (out / "summary.csv").read_text()
    assert all(run_id in summary for run_id in records)


def test_a_tracker_that_cannot_be_imported_is_bad_input_and_nothing_runs(config, tmp_path):
    """``sys.modules[name] = None`` is Python's own way to make ``import name`` fail: the
    package stands for one that is not installed."""
    import os
    import subprocess
    import sys

    out = tmp_path / "out"
    code = ("import sys; sys.modules['wandb'] = None; from benchmark.cli import main; "
            f"sys.exit(main(['run', {str(config)!r}, '--out', {str(out)!r}, '--log', 'wandb']))")
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=root,
                          env={**os.environ, "PYTHONPATH": str(root)})
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "--log wandb needs wandb" in lines[0] and "clbench[wandb]" in lines[0]
    assert not out.exists()


def test_a_tracker_failing_on_one_run_is_off_and_the_others_go_on(config, tmp_path, capfd):
    """TensorBoard cannot write the first run's events (a file stands where its folder goes):
    one line, no TensorBoard events for the runs after it, MLflow still logs every run."""
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    from benchmark.config import load_experiment

    out = tmp_path / "out"
    specs = load_experiment(str(config)).specs()
    first = out / specs[0].run_id
    first.mkdir(parents=True)
    (first / "tensorboard").write_text("in the way")
    code = main(["run", str(config), "--out", str(out), "--no-progress", "--log", "tensorboard", "--log", "mlflow"])
    err = capfd.readouterr().err
    assert code == 0, err
    lines = [line for line in err.splitlines() if "tracker" in line]
    assert len(lines) == 1 and lines[0].startswith("clbench: tracker tensorboard off"), err
    records = _records(out)
    assert len(records) == 2 and all(r["status"] == "done" for r in records.values())
    assert not list(out.glob("*/tensorboard/events.*"))
    client = MlflowClient(tracking_uri=f"sqlite:///{out.resolve() / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name(TINY["name"]).experiment_id])
    assert sorted(r.info.run_name for r in runs) == sorted(records)
