"""Strategies that fail on purpose, for the failure-isolation tests."""

import torch
from avalanche.core import SupervisedPlugin
from avalanche.training import Naive

import strategies


class RaiseOnSecondTask(SupervisedPlugin):
    def before_training_exp(self, strategy, **kwargs):
        if strategy.clock.train_exp_counter == 1:
            raise RuntimeError("planned failure on the second task")


class PoisonLoss(SupervisedPlugin):
    def after_forward(self, strategy, **kwargs):
        strategy.mb_output = strategy.mb_output * float("nan")


@strategies.register("test-raises")
def raises(*, model, context, lr: float = 0.1):
    """Naive that raises when the second task starts."""
    return Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=lr),
                 **context.template_kwargs(plugins=[RaiseOnSecondTask()]))


@strategies.register("test-nan")
def nan(*, model, context, lr: float = 0.1):
    """Naive whose loss is NaN."""
    return Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=lr),
                 **context.template_kwargs(plugins=[PoisonLoss()]))


class RaiseForSeedOne(SupervisedPlugin):
    def before_training_exp(self, strategy, **kwargs):
        raise RuntimeError("planned failure for seed 1 <b>not bold</b>")


@strategies.register("test-fails-seed-1")
def fails_seed_1(*, model, context, lr: float = 0.1):
    """Naive that fails for seed 1 only."""
    plugins = [RaiseForSeedOne()] if context.seed == 1 else []
    return Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=lr),
                 **context.template_kwargs(plugins=plugins))


@strategies.register("<script>alert('x')</script>")
def scripted(*, model, context, lr: float = 0.05):
    """A plugin whose name is markup."""
    return Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=lr), **context.template_kwargs())


# -- crash-safety tests (tests/benchmark/test_faults.py, test_concurrency.py) ------------------

def _protected() -> bool:
    """True in the test process itself, which a strategy must never kill."""
    import os

    return str(os.getpid()) == os.environ.get("CLBENCH_TEST_PROTECTED_PID")


class KillOwnProcess(SupervisedPlugin):
    """SIGKILL the process that trains, when task ``at_task`` starts, like the out-of-memory
    killer; with ``die_file``, only while that file (one per seed) holds fewer than ``deaths``
    lines, each death adding the line ``<pid>``."""

    def __init__(self, *, at_task, die_file, deaths, seed):
        super().__init__()
        self.at_task, self.deaths = at_task, deaths
        self.die_file = f"{die_file}.s{seed}" if die_file else ""

    def before_training_exp(self, strategy, **kwargs):
        import os
        import signal

        if strategy.clock.train_exp_counter != self.at_task:
            return
        if self.die_file:
            try:
                with open(self.die_file, encoding="ascii") as f:
                    died = len(f.read().split())
            except FileNotFoundError:
                died = 0
            if died >= self.deaths:
                return
        if _protected():
            raise RuntimeError("test-sigkill refuses to kill the test process itself")
        if self.die_file:
            with open(self.die_file, "a", encoding="ascii") as f:
                f.write(f"{os.getpid()}\n")
        os.kill(os.getpid(), signal.SIGKILL)


@strategies.register("test-sigkill")
def sigkill(*, model, context, lr: float = 0.1, at_task: int = 1, die_file: str = "", deaths: int = 1000):
    """Naive whose process kills itself (SIGKILL) when task ``at_task`` starts (see KillOwnProcess)."""
    plugin = KillOwnProcess(at_task=at_task, die_file=die_file, deaths=deaths, seed=context.seed)
    return Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=lr),
                 **context.template_kwargs(plugins=[plugin]))


class InfiniteLoss(SupervisedPlugin):
    def before_backward(self, strategy, **kwargs):
        strategy.loss = strategy.loss * float("inf")


@strategies.register("test-inf")
def inf(*, model, context, lr: float = 0.1):
    """Naive whose loss is +inf."""
    return Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=lr),
                 **context.template_kwargs(plugins=[InfiniteLoss()]))


class PoisonWeights(SupervisedPlugin):
    def after_training_exp(self, strategy, **kwargs):
        with torch.no_grad():
            next(strategy.model.parameters()).view(-1)[0] = float("nan")


@strategies.register("test-nan-weights")
def nan_weights(*, model, context, lr: float = 0.1):
    """Naive whose first weight becomes NaN at the end of the first task (the loss stays finite)."""
    return Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=lr),
                 **context.template_kwargs(plugins=[PoisonWeights()]))


class ExitOnSecondTask(SupervisedPlugin):
    def before_training_exp(self, strategy, **kwargs):
        import sys

        if strategy.clock.train_exp_counter == 1:
            sys.exit(3)


@strategies.register("test-exit")
def exits(*, model, context, lr: float = 0.1):
    """Naive that calls sys.exit(3) when the second task starts."""
    return Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=lr),
                 **context.template_kwargs(plugins=[ExitOnSecondTask()]))


@strategies.register("test-factory-raises")
def factory_raises(*, model, context, lr: float = 0.1):
    """A factory that raises before any training."""
    raise ValueError("planned failure while building the strategy")


@strategies.register("test-odd-metrics")
def odd_metrics(*, model, context, lr: float = 0.1, json_safe: bool = True):
    """Naive that reports extra metrics as a tensor and an array (json_safe) or as an object
    that no JSON can hold."""
    import numpy as np

    extra = ({"tensor": torch.tensor(0.25), "array": np.arange(3), "float32": np.float32("nan")}
             if json_safe else {"thing": object()})

    class OddMetrics(Naive):
        def report(self):
            return strategies.StrategyReport(extra_metrics=extra)

    return OddMetrics(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=lr), **context.template_kwargs())


@strategies.register("test-half-checkpoints")
def half_checkpoints(*, model, context, lr: float = 0.1):
    """Naive with checkpoint_state but no load_checkpoint_state: half a protocol."""

    class Half(Naive):
        def checkpoint_state(self):
            return {}

    return Half(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=lr), **context.template_kwargs())


@strategies.register("test-probed-attributes")
def probed_attributes(*, model, context, lr: float = 0.1):
    """Naive offering the first version's probed attributes (inner_steps) instead of report()."""
    s = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=lr), **context.template_kwargs())
    s.inner_steps = 3
    return s


@strategies.register("test-bad-report")
def bad_report(*, model, context, lr: float = 0.1):
    """Naive whose report() returns a plain dict."""

    class BadReport(Naive):
        def report(self):
            return {"inner_steps": 3}

    return BadReport(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=lr), **context.template_kwargs())


class LogRun(SupervisedPlugin):
    """Appends ``start|task <seed> <pid> <time>`` to a log file (append mode: one line per
    write) when a run starts and after each task; with ``gate``, a run does not go past its
    first task until that file exists, so that sweeps overlap as a test needs."""

    def __init__(self, *, log, seed, sleep_s, gate):
        super().__init__()
        self.log, self.seed, self.sleep_s, self.gate = log, seed, sleep_s, gate

    def _line(self, what):
        import os
        import time

        with open(self.log, "a", encoding="ascii") as f:
            f.write(f"{what} {self.seed} {os.getpid()} {time.time():.6f}\n")

    def before_training_exp(self, strategy, **kwargs):
        if strategy.clock.train_exp_counter == 0:
            self._line("start")

    def after_training_exp(self, strategy, **kwargs):
        import os
        import time

        time.sleep(self.sleep_s)
        deadline = time.monotonic() + 120
        while self.gate and not os.path.exists(self.gate):
            if time.monotonic() > deadline:
                raise RuntimeError(f"gate {self.gate} never opened")
            time.sleep(0.05)
        self._line("task")


@strategies.register("test-logged")
def logged(*, model, context, lr: float = 0.1, log: str = "", sleep_s: float = 0.0, gate: str = ""):
    """Naive that logs when each run starts and each task ends (with its pid) to ``log``."""
    plugins = [LogRun(log=log, seed=context.seed, sleep_s=sleep_s, gate=gate)] if log else []
    return Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=lr),
                 **context.template_kwargs(plugins=plugins))


class OsExitOnSecondTask(SupervisedPlugin):
    """``os._exit(code)`` when the second task starts: the process ends at once, with no
    exception, no cleanup and no record of its own."""

    def __init__(self, code):
        super().__init__()
        self.code = code

    def before_training_exp(self, strategy, **kwargs):
        import os

        if strategy.clock.train_exp_counter == 1:
            if _protected():
                raise RuntimeError("test-os-exit refuses to end the test process itself")
            os._exit(self.code)


@strategies.register("test-os-exit")
def os_exits(*, model, context, lr: float = 0.1, code: int = 3):
    """Naive whose process calls os._exit(code) when the second task starts."""
    return Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=lr),
                 **context.template_kwargs(plugins=[OsExitOnSecondTask(code)]))


class AllocatePastALimit(SupervisedPlugin):
    """When the second task starts, cap the process's address space (``resource.setrlimit``,
    RLIMIT_AS) at what it uses now plus ``headroom_mb``, then allocate ``allocate_mb`` and
    touch it: a run that outgrows the memory it may have, for real, in its own process."""

    def __init__(self, *, headroom_mb, allocate_mb):
        super().__init__()
        self.headroom_mb, self.allocate_mb = headroom_mb, allocate_mb

    def before_training_exp(self, strategy, **kwargs):
        import resource

        if strategy.clock.train_exp_counter != 1:
            return
        if _protected():
            raise RuntimeError("test-memory-hog refuses to limit the test process itself")
        with open("/proc/self/statm", encoding="ascii") as f:
            size = int(f.read().split()[0]) * resource.getpagesize()
        limit = size + self.headroom_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
        hog = torch.empty(self.allocate_mb * 2**20, dtype=torch.uint8)
        hog.fill_(1)


@strategies.register("test-memory-hog")
def memory_hog(*, model, context, lr: float = 0.1, headroom_mb: int = 64, allocate_mb: int = 2048):
    """Naive that limits its own address space and then allocates past the limit (second task)."""
    plugin = AllocatePastALimit(headroom_mb=headroom_mb, allocate_mb=allocate_mb)
    return Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=lr),
                 **context.template_kwargs(plugins=[plugin]))
