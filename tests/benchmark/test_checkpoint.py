"""Resumable runs: ``run_one(spec, checkpoint_dir=...)`` checkpoints after every task, and a
run killed with SIGKILL and started again in a fresh process ends with the same accuracy
matrix (and the same weights, bit for bit, on the CPU) as a run never interrupted.

The kill is real: a child process runs ``run_one`` and is SIGKILLed once the checkpoint of
task 2 is on disk (the child holds still after writing it, so the point is deterministic; one
slow case kills at whatever point the child has reached). A second child resumes the run and
then runs it again uninterrupted, for the comparison. The children record a digest of the
model's weights at every evaluation.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from benchmark import run_checkpoint, runner
from benchmark.config import validate

ROOT = Path(__file__).resolve().parents[2]
N_TASKS = 4
STREAM = {"name": "permuted-mnist", "source": "digits", "n_tasks": N_TASKS, "per_task": 60, "test_per_task": 100}

# every strategy whose state is checkpointed, with small settings (the replay ones replay
# from the first task on, so the memory and its generator matter from task 1)
CHECKPOINTED = {
    "naive": {"lr": 0.1, "momentum": 0.5},  # momentum: the optimizer's state must be restored
    "er": {"mem_size": 20, "replay_batch": 5},
    "er-per-example": {"mem_size": 20, "replay_batch": 5, "per_example": True, "momentum": 0.5},
    "ewc": {"ewc_lambda": 10.0},
    "si": {},
    "lwf": {},
    "gem": {"patterns_per_exp": 20},
    "mer": {"mem_size": 20, "replay_batch": 3, "batches_per_example": 2},
    "mer-alg7": {"mem_size": 20, "replay_batch": 3, "batches_per_example": 2, "algorithm": 7},
    "c-maml": {"mem_size": 20, "replay_batch": 5, "glances": 2},
    "la-maml": {"mem_size": 20, "replay_batch": 5, "glances": 2},
    "sync-la-maml": {"mem_size": 20, "replay_batch": 5, "glances": 2},
}
FAST = ("naive", "mer")
NOT_CHECKPOINTED = {
    "agem": {"patterns_per_exp": 20, "sample_size": 10},
    "avalanche-mer": {"mem_size": 20},
    "avalanche-la-maml": {"mem_size": 20, "n_inner_updates": 2},
    "joint": {},
}

CHILD = r'''
import hashlib, json, sys, time
from pathlib import Path

args = json.loads(sys.argv[1])
import benchmark.run_checkpoint as run_checkpoint
import benchmark.runner as runner
from benchmark.config import validate

spec = validate(args["config"]).specs()[0]
digests = []
evaluate = runner.evaluate


def recording_evaluate(model, *a, **k):
    blob = b"".join(v.detach().cpu().numpy().tobytes() for v in model.state_dict().values())
    digests.append(hashlib.sha256(blob).hexdigest())
    return evaluate(model, *a, **k)


runner.evaluate = recording_evaluate
hold_after = args.get("hold_after")
if hold_after is not None:  # stand still after writing the checkpoint of task `hold_after`
    write, writes = run_checkpoint.write_atomic, []

    def write_then_hold(path, data):
        write(path, data)
        if path.name == "checkpoint.pt":
            writes.append(path)
            if len(writes) == hold_after:
                time.sleep(600)

    run_checkpoint.write_atomic = write_then_hold

results = []
for ckpt in args["runs"]:
    digests.clear()
    rec = runner.run_one(spec, checkpoint_dir=None if ckpt is None else Path(ckpt))
    results.append({k: rec.get(k) for k in ("status", "error", "acc_matrix", "random_init_acc", "metrics",
                                            "timing", "checkpoint", "curves")} | {"digests": list(digests)})
Path(args["out"]).write_text(json.dumps(results))
'''


def _config(strategy: str, hparams: dict, *, n_tasks: int = N_TASKS, seed: int = 0, eval_every: int = 0) -> dict:
    name = "mer" if strategy.startswith("mer") else "er" if strategy.startswith("er-") else strategy
    return {"name": "ckpt", "seeds": [seed],
            "train": {"batch_size": 10, "epochs": 1, "device": "cpu", "eval_every": eval_every},
            "model": {"name": "mlp", "hidden": [32, 32]}, "scenarios": [{**STREAM, "n_tasks": n_tasks}],
            "strategies": [{"name": name, **hparams}]}


def _child(tmp: Path, args: dict, *, kill_at: int | None = None, ckpt: Path | None = None,
           timeout: float = 300) -> list[dict] | None:
    """Run the child script; with ``kill_at``, SIGKILL it as soon as ``ckpt`` holds the
    checkpoint whose next task is ``kill_at`` or later (then nothing comes back)."""
    script = tmp / "child.py"
    script.write_text(CHILD)
    out = tmp / f"out-{time.monotonic_ns()}.json"
    log = tmp / f"log-{time.monotonic_ns()}.txt"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    with open(log, "wb") as logf:
        proc = subprocess.Popen([sys.executable, str(script), json.dumps({**args, "out": str(out)})], cwd=ROOT,
                                stdout=logf, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        try:
            while kill_at is not None:
                assert proc.poll() is None, f"the child ended before it was killed:\n{log.read_text()[-3000:]}"
                assert time.monotonic() < deadline, "no checkpoint appeared in time"
                if ckpt.exists():
                    try:
                        nxt = torch.load(ckpt, weights_only=True)["next_task"]
                    except Exception:  # noqa: BLE001 (replaced while read: read the new one)
                        nxt = -1
                    if nxt >= kill_at:
                        os.kill(proc.pid, signal.SIGKILL)
                        assert proc.wait(timeout=60) == -signal.SIGKILL
                        return None
                time.sleep(0.01)
            rc = proc.wait(timeout=timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert rc == 0, log.read_text()[-3000:]
    return json.loads(out.read_text())


def _kill_and_resume(tmp: Path, strategy: str, hparams: dict, *, n_tasks: int = N_TASKS, hold: bool = True,
                     eval_every: int = 0):
    config = _config(strategy, hparams, n_tasks=n_tasks, eval_every=eval_every)
    folder = tmp / "run"
    ckpt = folder / "checkpoint.pt"
    # 1. a run killed with SIGKILL once the checkpoint of task 2 (next task 2) is written
    _child(tmp, {"config": config, "runs": [str(folder)], "hold_after": 2 if hold else None}, kill_at=2, ckpt=ckpt)
    assert ckpt.exists()
    killed_at = torch.load(ckpt, weights_only=True)["next_task"]
    # 2. a fresh process resumes it, then runs the same spec uninterrupted
    resumed, reference = _child(tmp, {"config": config, "runs": [str(folder), None]})
    return resumed, reference, killed_at, ckpt


def _check_same(resumed: dict, reference: dict, killed_at: int, ckpt: Path, n_tasks: int = N_TASKS, *,
                digests: bool = True) -> None:
    assert reference["status"] == "done", reference["error"]
    assert resumed["status"] == "done", resumed["error"]
    info = resumed["checkpoint"]
    assert info["resumed_from_task"] == killed_at and info["warnings"] == [], info
    assert not ckpt.exists(), "the checkpoint is removed once the run is done"
    assert resumed["acc_matrix"] == reference["acc_matrix"]  # exact
    assert resumed["random_init_acc"] == reference["random_init_acc"]
    # the weights after every task the resumed run trained, bit for bit
    if digests:
        assert len(resumed["digests"]) == n_tasks - killed_at
        assert resumed["digests"] == reference["digests"][-(n_tasks - killed_at):]
    for k in ("iterations", "inner_steps", "gradient_examples"):
        assert resumed["timing"][k] == reference["timing"][k]
    assert resumed["metrics"] == reference["metrics"]  # includes La-MAML's mean learned rate
    assert resumed["curves"] == reference["curves"]


@pytest.mark.parametrize("strategy", [
    pytest.param(s, marks=() if s in FAST else pytest.mark.slow) for s in CHECKPOINTED])
def test_killed_run_resumes_to_the_same_results(tmp_path, strategy):
    resumed, reference, killed_at, ckpt = _kill_and_resume(tmp_path, strategy, CHECKPOINTED[strategy])
    assert killed_at == 2
    _check_same(resumed, reference, killed_at, ckpt)


def test_killed_run_keeps_its_curves_and_compute_counts(tmp_path):
    """Continual evaluation across a kill: the resumed run's curves, online counts, curve
    metrics and gradient evaluations are those of a run never interrupted."""
    resumed, reference, killed_at, ckpt = _kill_and_resume(tmp_path, "er", CHECKPOINTED["er"], eval_every=4)
    assert reference["curves"]["task_ends"] == [6 * (k + 1) for k in range(N_TASKS)]
    _check_same(resumed, reference, killed_at, ckpt, digests=False)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["mer", "la-maml"])
def test_run_killed_at_any_point_resumes_to_the_same_results(tmp_path, strategy):
    """No holding still: SIGKILL lands wherever the child is once the checkpoint of task 2 is
    on disk (training task 2, evaluating, or writing the next checkpoint)."""
    n_tasks = 6
    hp = {**CHECKPOINTED[strategy], "mem_size": 50}
    resumed, reference, killed_at, ckpt = _kill_and_resume(tmp_path, strategy, hp, n_tasks=n_tasks, hold=False)
    assert 2 <= killed_at < n_tasks
    _check_same(resumed, reference, killed_at, ckpt, n_tasks=n_tasks)


# -- in-process cases: checkpoints that must not be used ----------------------------------
class _Stop(BaseException):
    """Ends a run from inside (run_one catches Exception only), like a kill after a write."""


def _spec(strategy="naive", **hparams):
    return validate(_config(strategy, hparams or {"lr": 0.1})).specs()[0]


def _interrupted(monkeypatch, spec, folder: Path, after_writes: int = 1) -> Path:
    """Run ``spec`` until its checkpoint has been written ``after_writes`` times."""
    write, n = run_checkpoint.write_atomic, []

    def write_then_stop(path, data):
        write(path, data)
        n.append(path)
        if len(n) == after_writes:
            raise _Stop

    monkeypatch.setattr(run_checkpoint, "write_atomic", write_then_stop)
    with pytest.raises(_Stop):
        runner.run_one(spec, checkpoint_dir=folder)
    monkeypatch.setattr(run_checkpoint, "write_atomic", write)
    path = folder / run_checkpoint.CHECKPOINT_FILE
    assert path.exists()
    return path


@pytest.fixture(scope="module")
def naive_reference():
    rec = runner.run_one(_spec())
    assert rec["status"] == "done"
    return rec


def _started_over(rec, reference, path: Path, warning: str) -> None:
    assert rec["status"] == "done", rec.get("error")
    info = rec["checkpoint"]
    assert info["resumed_from_task"] is None
    assert any(warning in w for w in info["warnings"]), info["warnings"]
    assert rec["acc_matrix"] == reference["acc_matrix"]
    assert not path.exists()


def test_checkpoint_of_another_run_is_ignored(tmp_path, monkeypatch, naive_reference):
    other = _spec(lr=0.05)
    path = _interrupted(monkeypatch, other, tmp_path)
    rec = runner.run_one(_spec(), checkpoint_dir=tmp_path)
    _started_over(rec, naive_reference, path, f"belongs to run '{other.run_id}'")


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_corrupt_checkpoint_is_ignored_and_the_run_starts_over(tmp_path, monkeypatch, naive_reference, damage):
    path = _interrupted(monkeypatch, _spec(), tmp_path)
    data = path.read_bytes()
    path.write_bytes({"garbage": b"not a checkpoint\x00" * 50, "truncated": data[:len(data) // 2],
                      "empty": b""}[damage])
    rec = runner.run_one(_spec(), checkpoint_dir=tmp_path)
    _started_over(rec, naive_reference, path, "cannot be read")


def test_checkpoint_that_does_not_fit_the_strategy_is_ignored(tmp_path, monkeypatch, naive_reference):
    path = _interrupted(monkeypatch, _spec(), tmp_path)
    state = torch.load(path, weights_only=True)
    state["strategy_state"]["plugins"] = state["strategy_state"]["plugins"][:1]
    torch.save(state, path)
    rec = runner.run_one(_spec(), checkpoint_dir=tmp_path)
    _started_over(rec, naive_reference, path, "does not fit the strategy")


class _Payload:
    """Unpickled unsafely, this creates a folder: the proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_checkpoint_is_loaded_weights_only_and_code_in_it_never_runs(tmp_path, monkeypatch, naive_reference):
    path = _interrupted(monkeypatch, _spec(), tmp_path / "run")
    state = torch.load(path, weights_only=True)
    marker = tmp_path / "code-ran"
    state["strategy_state"]["own"] = _Payload(marker)  # a valid checkpoint, but for this object
    torch.save(state, path)
    rec = runner.run_one(_spec(), checkpoint_dir=tmp_path / "run")
    assert not marker.exists(), "loading the checkpoint ran code from it"
    _started_over(rec, naive_reference, path, "cannot be read")
    # the file was really dangerous: an unsafe load runs the code
    torch.save(state, path)
    torch.load(path, weights_only=False)
    assert marker.is_dir()


def test_checkpoints_are_written_after_each_task_and_removed_when_done(tmp_path, monkeypatch, naive_reference):
    write, seen = run_checkpoint.write_atomic, []

    def spy(path, data):
        write(path, data)
        seen.append(torch.load(path, weights_only=True))

    monkeypatch.setattr(run_checkpoint, "write_atomic", spy)
    rec = runner.run_one(_spec(), checkpoint_dir=tmp_path)
    assert rec["status"] == "done" and rec["acc_matrix"] == naive_reference["acc_matrix"]
    assert [s["next_task"] for s in seen] == list(range(1, N_TASKS))  # none after the last task
    for s in seen:
        assert s["run_id"] == rec["run_id"] and s["rows"] == rec["acc_matrix"][:s["next_task"]]
        assert s["random_init_acc"] == rec["random_init_acc"]
        assert {"python", "numpy", "torch"} <= set(s["rng"])
    info = rec["checkpoint"]
    assert info["enabled"] and info["saved"] == N_TASKS - 1 and info["resumed_from_task"] is None
    assert not (tmp_path / run_checkpoint.CHECKPOINT_FILE).exists() and list(tmp_path.iterdir()) == []


def test_without_checkpoint_dir_nothing_changes(naive_reference):
    assert "checkpoint" not in naive_reference


@pytest.mark.slow
@pytest.mark.parametrize("strategy", list(NOT_CHECKPOINTED))
def test_strategies_that_cannot_be_restored_exactly_are_not_checkpointed(tmp_path, strategy):
    spec = validate(_config(strategy, NOT_CHECKPOINTED[strategy])).specs()[0]
    rec = runner.run_one(spec, checkpoint_dir=tmp_path)
    assert rec["status"] == "done", rec.get("error")
    info = rec["checkpoint"]
    assert info["enabled"] is False and info["saved"] == 0
    assert f"strategy '{strategy}' is not checkpointed" in info["disabled_reason"]
    assert list(tmp_path.iterdir()) == []


def test_a_checkpoint_that_cannot_be_written_does_not_fail_the_run(tmp_path, monkeypatch, naive_reference):
    def full_disk(path, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(run_checkpoint, "write_atomic", full_disk)
    rec = runner.run_one(_spec(), checkpoint_dir=tmp_path)
    assert rec["status"] == "done" and rec["acc_matrix"] == naive_reference["acc_matrix"]
    assert rec["checkpoint"]["enabled"] is False
    assert "checkpointing stopped after task 0: OSError" in rec["checkpoint"]["disabled_reason"]


def test_plugin_state_round_trips_through_a_weights_only_file(tmp_path):
    """The generic encoding of plugin attributes: what Avalanche's plugins hold comes back
    equal, through torch.save and torch.load(weights_only=True)."""
    from collections import defaultdict

    import numpy as np
    from avalanche.training.utils import ParamData

    from strategies.checkpoint import NotCheckpointable, _Context, decode, encode

    model = torch.nn.Sequential(torch.nn.Linear(3, 2))
    gen = np.random.default_rng(5)
    gen.random(3)
    value = {
        "big": 2**100, "tuple": (1, "a", None), "classes": defaultdict(set, {0: {1, 2}}),
        "importances": {0: [ParamData("w", init_tensor=torch.arange(4.0).reshape(2, 2))]},
        "array": np.arange(6, dtype=np.int32).reshape(2, 3), "rng": gen, "prev_model": model,
        "order": torch.Generator().manual_seed(3), "t": torch.ones(2, requires_grad=True),
    }
    path = tmp_path / "state.pt"
    torch.save(encode(value, "test"), path)

    class Strategy:
        pass

    strategy = Strategy()
    strategy.model, strategy.device = model, torch.device("cpu")
    back = decode(torch.load(path, weights_only=True), None, _Context(strategy))
    assert back["big"] == 2**100 and back["tuple"] == (1, "a", None)
    assert isinstance(back["classes"], defaultdict) and back["classes"] == {0: {1, 2}} and back["classes"][9] == set()
    pd = back["importances"][0][0]
    assert isinstance(pd, ParamData) and pd.name == "w" and torch.equal(pd.data, torch.arange(4.0).reshape(2, 2))
    assert back["array"].dtype == np.int32 and (back["array"] == np.arange(6).reshape(2, 3)).all()
    assert back["rng"].random() == gen.random()
    assert back["prev_model"] is not model and all(
        torch.equal(a, b) for a, b in zip(back["prev_model"].state_dict().values(), model.state_dict().values()))
    assert torch.equal(torch.randperm(9, generator=back["order"]), torch.randperm(9, generator=value["order"]))
    assert back["t"].requires_grad
    with pytest.raises(NotCheckpointable, match=r"test\['it'\] is a builtins\.list_iterator"):
        encode({"it": iter([])}, "test")  # nothing executable or stateful-by-code is ever stored
