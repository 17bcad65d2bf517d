"""``clbench run --executor ray --address`` against a real cluster started with ``ray start``:
a head node with no CPUs and a worker node with two, on this machine, each with its own
temporary folder and ports, token authentication on. The worker node's processes start in a
folder of their own and run under an audit hook (a ``sitecustomize`` on their ``PYTHONPATH``)
that refuses any file operation under the driver's folders (the project, except its virtual
environment, and the folder holding the config, the plugin, the data and the results) and
logs the attempt: the workers must get everything through Ray (plugin files and data in the
runtime environment, checkpoints and records streamed back), as on a cluster that shares no
disk with the driver."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

pytest.importorskip("ray", reason="the ray extra is not installed")
if not sys.platform.startswith("linux"):
    pytest.skip("the cluster's processes are found through /proc", allow_module_level=True)

PROJECT = Path(__file__).resolve().parents[2]
GUARD = '''
import os, sys, threading
_FORBIDDEN = [r for r in os.environ.get("CLBENCH_TEST_FORBIDDEN", "").split(os.pathsep) if r]
_ALLOWED = [r for r in os.environ.get("CLBENCH_TEST_ALLOWED", "").split(os.pathsep) if r]
_LOG = os.environ.get("CLBENCH_TEST_GUARD_LOG")
_PATHS = {"open": (0,), "os.mkdir": (0,), "os.listdir": (0,), "os.scandir": (0,), "os.remove": (0,),
          "os.rmdir": (0,), "os.rename": (0, 1), "os.replace": (0, 1), "os.chdir": (0,), "os.truncate": (0,),
          "os.utime": (0,), "os.symlink": (0, 1), "os.link": (0, 1), "shutil.copyfile": (0, 1),
          "os.chmod": (0,), "os.chown": (0,)}
_busy = threading.local()

def _under(p, roots):
    return any(p == r or p.startswith(r.rstrip(os.sep) + os.sep) for r in roots)

def _log(line):
    with open(_LOG, "a") as f:
        f.write(line + "\\n")

def _hook(event, args):
    where = _PATHS.get(event)
    if where is None or getattr(_busy, "on", False):
        return
    _busy.on = True
    try:
        for i in where:
            if i < len(args) and isinstance(args[i], (str, bytes, os.PathLike)):
                p = os.path.abspath(os.fsdecode(args[i]))
                if _under(p, _FORBIDDEN) and not _under(p, _ALLOWED):
                    _log(f"{os.getpid()} {event} {p}")
                    raise PermissionError(f"a worker touched the driver's disk: {event} {p}")
    finally:
        _busy.on = False

if _FORBIDDEN and _LOG:
    _log(f"{os.getpid()} guarded, cwd {os.getcwd()}")
    sys.addaudithook(_hook)
'''
PLUGIN = '''
from typing import Annotated

import torch
from avalanche.benchmarks import nc_benchmark
from avalanche.benchmarks.utils import as_classification_dataset
from avalanche.training import Naive
from torch.utils.data import TensorDataset

import scenarios
import strategies
from strategies import Range


@strategies.register("momentum-sgd")
def momentum_sgd(*, model, context, lr: Annotated[float, Range(gt=0)] = 0.1,
                 momentum: Annotated[float, Range(ge=0, lt=1)] = 0.5):
    """Fine-tuning with SGD and momentum (a plugin strategy)."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    return Naive(model=model, optimizer=opt, **context.template_kwargs())


def _blobs(n_classes, per_class, generator):
    y = torch.arange(n_classes).repeat_interleave(per_class)
    x = torch.randn(len(y), 1, 8, 8, generator=generator) * 0.5 + y.view(-1, 1, 1, 1) / n_classes
    data = TensorDataset(x, y)
    data.targets = y
    return as_classification_dataset(data)


@scenarios.register("blobs")
def blobs(*, seed: int, n_tasks: Annotated[int, Range(ge=1, le=10)] = 3, per_class: Annotated[int, Range(ge=1)] = 20):
    """Random 8x8 blobs, two classes per task (a plugin stream)."""
    g = torch.Generator().manual_seed(seed)
    return nc_benchmark(_blobs(2 * n_tasks, per_class, g), _blobs(2 * n_tasks, 10, g), n_experiences=n_tasks,
                        task_labels=False, seed=seed, class_ids_from_zero_in_each_exp=False)
'''
CONFIG = {
    "name": "cluster",
    "seeds": [0],
    "train": {"batch_size": 10, "epochs": 1, "device": "cpu", "eval_every": 2},
    "scenarios": [
        {"name": "blobs", "n_tasks": 3, "per_class": 20},
        {"name": "permuted-mnist", "source": "npz", "path": "data/arrays.npz", "n_tasks": 3, "per_task": 60},
    ],
    "strategies": [{"name": "momentum-sgd", "lr": 0.1}, {"name": "er", "lr": 0.1, "mem_size": 20, "replay_batch": 5}],
}


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _ray_processes(marker: str) -> list[int]:
    """The processes whose command line names ``marker`` (the cluster's temporary folder)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def _stop(marker: str) -> None:
    """End the cluster's processes (``ray stop`` would end every Ray process of this user)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = _ray_processes(marker)
        for pid in pids:
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        deadline = time.time() + 10
        while _ray_processes(marker) and time.time() < deadline:
            time.sleep(0.2)


def _ray(args: list[str], *, cwd: Path, env: dict[str, str]) -> None:
    ray_cli = Path(sys.executable).parent / "ray"
    proc = subprocess.run([str(ray_cli), "start", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """(address, driver folder, environment for the driver, worker node's guard log)."""
    base = tmp_path_factory.mktemp("cluster")
    driver, home, node, guard = (base / n for n in ("driver", "home", "node", "guard"))
    for d in (driver, home / ".ray", node, guard):
        d.mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text(secrets.token_hex(32))
    (guard / "sitecustomize.py").write_text(GUARD)
    # Ray's sockets live under its temporary folder: a short path (a socket path has 107 bytes at most)
    temp = tempfile.mkdtemp(prefix="clray", dir="/tmp")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "CLBENCH_"))}
    env.update(HOME=str(home), RAY_AUTH_MODE="token", RAY_USAGE_STATS_ENABLED="0")
    gcs, client, agent, node_agent, w0 = _free_ports(5)
    venv = str(Path(sys.prefix).resolve())
    forbidden = [str(PROJECT), str(driver.resolve())]
    node_env = dict(env, PYTHONPATH=os.pathsep.join(filter(None, [str(guard), env.get("PYTHONPATH")])),
                    CLBENCH_TEST_FORBIDDEN=os.pathsep.join(forbidden),
                    CLBENCH_TEST_ALLOWED=venv, CLBENCH_TEST_GUARD_LOG=str(guard / "log"))
    common = ["--temp-dir", temp, "--disable-usage-stats", "--include-dashboard=false"]
    try:
        _ray(["--head", "--port", str(gcs), "--num-cpus", "0", "--ray-client-server-port", str(client),
              "--dashboard-agent-listen-port", str(agent), *common], cwd=base, env=env)
        _ray(["--address", f"127.0.0.1:{gcs}", "--num-cpus", "2", "--min-worker-port", str(w0),
              "--max-worker-port", str(w0 + 40), "--dashboard-agent-listen-port", str(node_agent), *common[:3]],
             cwd=node, env=node_env)
        yield f"127.0.0.1:{gcs}", driver, env, guard / "log"
    finally:
        _stop(temp)
        shutil.rmtree(temp, ignore_errors=True)


def _clbench(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "benchmark", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def _records(out: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in out.glob("*/run.json")}


def _write_inputs(driver: Path, config: dict, name: str) -> None:
    (driver / "plugin.py").write_text(PLUGIN)
    (driver / "data").mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 50)
    x = (rng.random((200, 1, 8, 8)) * 0.5 + y[:, None, None, None] / 8).astype(np.float32)
    np.savez(driver / "data" / "arrays.npz", x=x, y=y)
    (driver / name).write_text(yaml.safe_dump(config))


def _guard_lines(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def test_a_sweep_on_a_cluster_without_the_drivers_disk_equals_the_local_one(cluster):
    address, driver, env, log = cluster
    _write_inputs(driver, CONFIG, "cluster.yaml")
    local = _clbench("run", "cluster.yaml", "--out", "local", "--plugin", "plugin.py", "--no-progress",
                     cwd=driver, env=env)
    assert local.returncode == 0, local.stderr[-3000:]
    remote = _clbench("run", "cluster.yaml", "--out", "remote", "--plugin", "plugin.py", "--no-progress",
                      "--executor", "ray", "--address", address, "--checkpoint-every-task", "--log", "tensorboard",
                      cwd=driver, env=env)
    assert remote.returncode == 0, remote.stderr[-3000:] + "\n".join(_guard_lines(log))
    assert not remote.stderr.strip(), remote.stderr[-3000:]  # Ray's own lines stay off the terminal
    touched = [line for line in _guard_lines(log) if "guarded" not in line]
    assert not touched, touched
    assert any("guarded" in line for line in _guard_lines(log))  # the worker node's processes ran under the guard
    a, b = _records(driver / "local"), _records(driver / "remote")
    assert len(a) == 4 and a.keys() == b.keys()
    for run_id, rec in b.items():
        assert rec["status"] == "done", rec.get("error", "")[:2000]
        assert rec["acc_matrix"] == a[run_id]["acc_matrix"], run_id
        assert rec["metrics"] == a[run_id]["metrics"] and rec["config"] == a[run_id]["config"]
        assert rec["curves"] == a[run_id]["curves"]  # continual evaluation, its state checkpointed in the worker
        # every task but the last was checkpointed in the worker and streamed back; the driver
        # removed its copy when the run was done
        assert rec["checkpoint"]["saved"] == 2 and rec["checkpoint"]["resumed_from_task"] is None
        assert not (driver / "remote" / run_id / "checkpoint.pt").exists()
        # the tracker logs in the driver, from the records that came back
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        events = EventAccumulator(str(driver / "remote" / run_id / "tensorboard"), size_guidance={"scalars": 0})
        events.Reload()
        rows = rec["acc_matrix"]
        for j in range(len(rows)):
            got = [(e.step, e.value) for e in events.Scalars(f"acc/task_{j}")]
            assert got == [(i, pytest.approx(row[j], abs=1e-7)) for i, row in enumerate(rows)]


def test_a_killed_worker_resumes_from_the_checkpoint_the_driver_received(cluster):
    """CLBENCH_FAULT travels in the runtime environment: the worker training the run kills
    itself after its third task (the third arrival at the point in that process; a resumed
    run's first progress report, at its starting task, is one too); the run starts again in
    another worker from the checkpoint of task 3 that the driver got, and ends as the
    uninterrupted run does."""
    address, driver, env, log = cluster
    config = dict(CONFIG, name="killed", scenarios=[dict(CONFIG["scenarios"][0], n_tasks=4)],
                  strategies=CONFIG["strategies"][:1])
    _write_inputs(driver, config, "killed.yaml")
    local = _clbench("run", "killed.yaml", "--out", "killed-local", "--plugin", "plugin.py", "--no-progress",
                     cwd=driver, env=env)
    assert local.returncode == 0, local.stderr[-3000:]
    remote = _clbench("run", "killed.yaml", "--out", "killed-remote", "--plugin", "plugin.py", "--no-progress",
                      "--executor", "ray", "--address", address, "--checkpoint-every-task", cwd=driver,
                      env=dict(env, CLBENCH_FAULT="task-done:3"))
    assert remote.returncode == 0, remote.stderr[-3000:]
    (run_id, rec), = _records(driver / "killed-remote").items()
    assert rec["status"] == "done", rec.get("error", "")[:2000]
    assert rec["checkpoint"]["resumed_from_task"] == 3 and rec["checkpoint"]["saved"] == 0
    assert rec["acc_matrix"] == _records(driver / "killed-local")[run_id]["acc_matrix"]
    assert not [line for line in _guard_lines(log) if "guarded" not in line]


def test_a_plugin_that_loads_here_but_not_on_the_workers_fails_its_run_with_that_error(cluster):
    """A plugin importing a module beside it loads in the driver (its folder is the driver's
    working folder) but not on a worker, which has the plugin file alone: the run is recorded
    failed with the plugin's own one-line error, and the sweep ends with status 1."""
    address, driver, env, log = cluster
    (driver / "helper_here.py").write_text("RATE = 0.1\n")
    (driver / "needs_helper.py").write_text(PLUGIN + "\nimport helper_here  # noqa: F401 (beside this file)\n")
    config = dict(CONFIG, name="helper", scenarios=CONFIG["scenarios"][:1], strategies=CONFIG["strategies"][:1])
    _write_inputs(driver, config, "helper.yaml")
    proc = _clbench("run", "helper.yaml", "--out", "helper-remote", "--plugin", "needs_helper.py", "--no-progress",
                    "--executor", "ray", "--address", address, cwd=driver, env=env)
    assert proc.returncode == 1, proc.stderr[-3000:]
    (rec,) = _records(driver / "helper-remote").values()
    first = rec["error"].splitlines()[0]
    assert rec["status"] == "failed" and "\x1b" not in rec["error"]
    assert first.startswith("StrategyError: its Ray task failed (plugin clbench-plugins/0/needs_helper.py failed to "
                            "load: ModuleNotFoundError: No module named 'helper_here'"), first
    assert not [line for line in _guard_lines(log) if "guarded" not in line]


def test_a_connection_refused_for_its_token_is_one_line_with_the_hint(cluster, tmp_path):
    address, driver, env, _ = cluster
    (driver / "plugin.py").write_text(PLUGIN)
    (tmp_path / "home").mkdir()
    no_token = {k: v for k, v in env.items() if k != "RAY_AUTH_MODE"}
    # Ray retries a refused connection once a second, 20 times unless told otherwise
    no_token.update(HOME=str(tmp_path / "home"), RAY_gcs_server_port_wait_time_s="2")
    _write_inputs(driver, CONFIG, "refused.yaml")
    proc = _clbench("run", "refused.yaml", "--out", str(tmp_path / "out"), "--plugin", "plugin.py", "--no-progress",
                    "--executor", "ray", "--address", address, cwd=driver, env=no_token)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith(f"clbench: error: the Ray cluster at {address} refused the connection")
    assert "RAY_AUTH_MODE=token" in lines[0] and "RAY_AUTH_MODE=disabled" in lines[0]
    assert not list((tmp_path / "out").glob("*/run.json"))


def test_an_address_where_no_cluster_listens_is_one_line(tmp_path):
    (tmp_path / "plugin.py").write_text(PLUGIN)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(dict(CONFIG, scenarios=CONFIG["scenarios"][:1])))
    address = f"127.0.0.1:{_free_ports(1)[0]}"
    # Ray waits about 40 s for an address where nothing answers, unless told otherwise
    env = dict(os.environ, RAY_gcs_server_port_wait_time_s="1", RAY_py_gcs_connect_timeout_s="2",
               RAY_gcs_rpc_server_connect_timeout_s="1")
    proc = _clbench("run", "c.yaml", "--out", "out", "--plugin", "plugin.py", "--no-progress", "--executor", "ray",
                    "--address", address, cwd=tmp_path, env=env)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"clbench: error: cannot connect to the Ray cluster at {address}: ")
    assert "ray start --head" in lines[0] and not list((tmp_path / "out").glob("*/run.json"))
