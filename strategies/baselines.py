"""Baselines from Avalanche, with their usual hyperparameters, and Avalanche's own meta
strategies under ``avalanche-*`` names so that a sweep can set them beside ours."""

from __future__ import annotations

from typing import Annotated

import torch

from strategies.context import StrategyContext
from strategies.errors import StrategyError
from strategies.hparams import MAX_RATE, AddedLater, Choice, Range, replay_within_memory
from strategies.memory import ReservoirMemory
from strategies.registry import Registry

LR = Annotated[float, Range(gt=0, le=MAX_RATE)]
MOMENTUM = Annotated[float, Range(ge=0, lt=1)]
POSITIVE = Annotated[int, Range(ge=1)]
NON_NEGATIVE = Annotated[float, Range(ge=0)]


def _sgd(model: torch.nn.Module, lr: float, momentum: float = 0.0) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)


def make_online_replay_plugin(*, mem_size: int, replay_batch: int, seed: int, device):
    """An Avalanche plugin for experience replay with a reservoir memory updated online.

    ER (Chaudhry et al. 2019, "On Tiny Episodic Memories in Continual Learning", Alg. 1):
    every SGD step is taken on the incoming minibatch joined with ``replay_batch`` examples
    drawn from the memory; the incoming examples then enter the reservoir, so replay starts
    during the first task (unlike Avalanche's ``Replay``, which fills its buffer at the end of
    each experience).
    """
    from avalanche.core import SupervisedPlugin

    class OnlineReservoirReplay(SupervisedPlugin):
        def __init__(self):
            super().__init__()
            self.memory = ReservoirMemory(size=mem_size, seed=seed, device=device)
            self._incoming = None

        def before_forward(self, strategy, **kwargs):
            x, y, t = strategy.mbatch[0], strategy.mbatch[1], strategy.mbatch[-1]
            self._incoming = (x, y, t)
            if len(self.memory):
                mx, my, mt = self.memory.sample(replay_batch)
                strategy.mbatch = [torch.cat([x, mx.to(x.device)]), torch.cat([y, my.to(y.device)]),
                                   torch.cat([t, mt.to(t.device)])]

        def after_training_iteration(self, strategy, **kwargs):
            self.memory.add(*self._incoming)
            self._incoming = None

        def checkpoint_state(self) -> dict:
            return {"memory": self.memory.checkpoint_state()}

        def load_checkpoint_state(self, state: dict) -> None:
            self.memory.load_checkpoint_state(state["memory"])

    return OnlineReservoirReplay()


class TaskLabelTolerant(torch.nn.Module):
    """Lets a model that takes only ``x`` be called as ``model(x, t)``, as Avalanche's
    lamaml_v2 calls every model; the task labels are ignored."""

    def __init__(self, *, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x, task_labels=None):
        return self.model(x)


def _er_check(hp: dict) -> None:
    replay_within_memory(hp)
    if hp["glances"] > 1 and (hp["per_example"] or hp["momentum"]):
        raise StrategyError("strategy 'er': glances > 1 is the minibatch ER without momentum (La-MAML's eralg4.py); "
                            "set per_example: false and momentum: 0, or glances: 1")


def register_baselines(registry: Registry) -> None:
    """Register the Avalanche baselines into ``registry``."""
    reg = registry.register

    @reg("naive", aliases=("finetune", "sgd"))
    def naive(*, model, context: StrategyContext, lr: LR = 0.1, momentum: MOMENTUM = 0.0):
        """Fine-tuning with SGD: the lower bound, no protection against forgetting."""
        from avalanche.training import Naive

        return Naive(model=model, optimizer=_sgd(model, lr, momentum), **context.template_kwargs())

    @reg("er", aliases=("experience-replay",), check=_er_check)
    def er(*, model, context: StrategyContext, lr: LR = 0.1, mem_size: POSITIVE = 200,
           replay_batch: POSITIVE = 10, momentum: MOMENTUM = 0.0, per_example: bool = False,
           glances: Annotated[int, Range(ge=1), AddedLater()] = 1):
        """Experience replay with a reservoir memory updated online: one SGD step per minibatch
        joined with replay_batch memory examples (Chaudhry et al. 2019), or with ``per_example``
        one step per incoming example, MER's ER baseline (Riemer et al. 2019, Alg. 4, eralg4.py).
        ``glances`` > 1 (minibatch ER only): that many steps per minibatch, each with a fresh
        memory draw, the memory updated after them: La-MAML's CIFAR ER (its eralg4.py with
        ``--glances``), which is continual Reptile with epsilon 1 and is run as that."""
        from avalanche.training import Naive

        if glances > 1:
            from strategies.reptile import ContinualReptile

            return ContinualReptile(model=model, lr=lr, inner_steps=glances, epsilon=1.0, mem_size=mem_size,
                                    replay_batch=replay_batch, seed=context.seed, class_mask=context.class_mask,
                                    **context.template_kwargs())
        if per_example:
            from strategies.er import PerExampleReplay

            return PerExampleReplay(model=model, lr=lr, mem_size=mem_size, replay_batch=replay_batch, momentum=momentum,
                                    seed=context.seed, class_mask=context.class_mask, **context.template_kwargs())
        plugin = make_online_replay_plugin(mem_size=mem_size, replay_batch=replay_batch, seed=context.seed,
                                           device=context.device)
        return Naive(model=model, optimizer=_sgd(model, lr, momentum), **context.template_kwargs(plugins=[plugin]))

    @reg("ewc")
    def ewc(*, model, context: StrategyContext, lr: LR = 0.1, ewc_lambda: NON_NEGATIVE = 100.0,
            mode: Annotated[str, Choice("separate", "online")] = "separate",
            decay_factor: Annotated[float, Range(ge=0, le=1)] = 0.9, momentum: MOMENTUM = 0.0):
        """Elastic Weight Consolidation (Kirkpatrick et al. 2017), Avalanche's EWC."""
        from avalanche.training import EWC

        return EWC(model=model, optimizer=_sgd(model, lr, momentum), ewc_lambda=ewc_lambda, mode=mode,
                   decay_factor=decay_factor if mode == "online" else None, **context.template_kwargs())

    @reg("si", aliases=("synaptic-intelligence",))
    def si(*, model, context: StrategyContext, lr: LR = 0.1, si_lambda: NON_NEGATIVE = 1.0,
           eps: Annotated[float, Range(gt=0)] = 1e-7, momentum: MOMENTUM = 0.0):
        """Synaptic Intelligence (Zenke et al. 2017), Avalanche's SynapticIntelligence."""
        from avalanche.training import SynapticIntelligence

        return SynapticIntelligence(model=model, optimizer=_sgd(model, lr, momentum), si_lambda=si_lambda, eps=eps,
                                    **context.template_kwargs())

    @reg("lwf")
    def lwf(*, model, context: StrategyContext, lr: LR = 0.1, alpha: NON_NEGATIVE = 1.0,
            temperature: Annotated[float, Range(gt=0)] = 2.0, momentum: MOMENTUM = 0.0):
        """Learning without Forgetting (Li and Hoiem 2016), Avalanche's LwF."""
        from avalanche.training import LwF

        return LwF(model=model, optimizer=_sgd(model, lr, momentum), alpha=alpha, temperature=temperature,
                   **context.template_kwargs())

    @reg("agem", aliases=("a-gem",))
    def agem(*, model, context: StrategyContext, lr: LR = 0.1, patterns_per_exp: POSITIVE = 250,
             sample_size: POSITIVE = 256, momentum: MOMENTUM = 0.0):
        """Averaged GEM (Chaudhry et al. 2019), Avalanche's AGEM (memory filled at task end)."""
        from avalanche.training import AGEM

        return AGEM(model=model, optimizer=_sgd(model, lr, momentum), patterns_per_exp=patterns_per_exp,
                    sample_size=sample_size, **context.template_kwargs())

    @reg("gem")
    def gem(*, model, context: StrategyContext, lr: LR = 0.1, patterns_per_exp: POSITIVE = 256,
            memory_strength: NON_NEGATIVE = 0.5, momentum: MOMENTUM = 0.0):
        """Gradient Episodic Memory (Lopez-Paz and Ranzato 2017), Avalanche's GEM."""
        from avalanche.training import GEM

        return GEM(model=model, optimizer=_sgd(model, lr, momentum), patterns_per_exp=patterns_per_exp,
                   memory_strength=memory_strength, **context.template_kwargs())

    @reg("joint", aliases=("offline", "iid"))
    def joint(*, model, context: StrategyContext, lr: LR = 0.1, momentum: MOMENTUM = 0.0):
        """Upper bound: one model trained on all tasks at once (Avalanche's JointTraining)."""
        from avalanche.training import JointTraining

        class Joint(JointTraining):
            trains_on_whole_stream = True

        return Joint(model=model, optimizer=_sgd(model, lr, momentum), **context.template_kwargs())

    @reg("cope", aliases=("prototype-evolution",))
    def cope(*, model, context: StrategyContext, lr: LR = 0.1, momentum: MOMENTUM = 0.0, mem_size: POSITIVE = 200,
             alpha: Annotated[float, Range(ge=0, le=1)] = 0.99, temperature: Annotated[float, Range(gt=0)] = 0.1,
             iterations: POSITIVE = 1):
        """Continual Prototype Evolution (De Lange and Tuytelaars 2021): Avalanche's CoPEPlugin,
        one online experience per minibatch, scored by its nearest prototype (strategies/cope.py).
        Defaults: the plugin's (memory 200, prototype momentum 0.99, temperature 0.1, one
        iteration per batch); lr 0.1 as every other baseline here (not tuned)."""
        from strategies.cope import build_cope

        return build_cope(model=model, optimizer=_sgd(model, lr, momentum), n_classes=context.n_classes,
                          mem_size=mem_size, alpha=alpha, temperature=temperature, iterations=iterations,
                          seed=context.seed, **context.template_kwargs())

    @reg("avalanche-mer", check=replay_within_memory)
    def avalanche_mer(*, model, context: StrategyContext, lr: LR = 0.1, mem_size: POSITIVE = 200,
                      replay_batch: POSITIVE = 10, n_inner_steps: POSITIVE = 5,
                      beta: Annotated[float, Range(gt=0, le=1)] = 0.1,
                      gamma: Annotated[float, Range(gt=0, le=1)] = 0.1):
        """Avalanche 0.6's MER, as it ships (memory filled only at the end of each experience)."""
        from avalanche.training import MER

        return MER(model=model, optimizer=_sgd(model, lr), mem_size=mem_size, batch_size_mem=replay_batch,
                   n_inner_steps=n_inner_steps, beta=beta, gamma=gamma, **context.template_kwargs())

    @reg("avalanche-la-maml", aliases=("avalanche-lamaml",), check=replay_within_memory)
    def avalanche_la_maml(*, model, context: StrategyContext, n_inner_updates: POSITIVE = 5,
                          second_order: bool = True, grad_clip_norm: Annotated[float, Range(gt=0)] = 1.0,
                          learn_lr: bool = True, lr_alpha: NON_NEGATIVE = 0.3, sync_update: bool = False,
                          alpha_init: NON_NEGATIVE = 0.15, mem_size: POSITIVE = 200, replay_batch: POSITIVE = 10,
                          lr: LR = 0.1):
        """Avalanche 0.6's LaMAML (lamaml_v2), as it ships (memory filled at experience end);
        ``lr`` is the weight step of its synchronous mode. Its constructor re-initialises the
        model (``self.model.apply(init_kaiming_normal)``); the weights the harness gave it are
        put back, so that it starts from the same initialisation as every other strategy."""
        from avalanche.training.supervised.lamaml_v2 import LaMAML

        given = {k: v.detach().clone() for k, v in model.state_dict().items()}
        strategy = LaMAML(model=TaskLabelTolerant(model=model), optimizer=_sgd(model, lr), n_inner_updates=n_inner_updates,
                      second_order=second_order, grad_clip_norm=grad_clip_norm, learn_lr=learn_lr,
                      lr_alpha=lr_alpha, sync_update=sync_update, alpha_init=alpha_init,
                      max_buffer_size=mem_size, buffer_mb_size=replay_batch, **context.template_kwargs())
        model.load_state_dict(given)
        return strategy
