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
