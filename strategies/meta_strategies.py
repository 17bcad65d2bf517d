"""Registration of our meta-learning continual strategies: mer, c-maml, la-maml, sync-la-maml,
reptile, vr-mcl.

Defaults are the official MNIST settings for a memory of 200 (DESIGN.md): MER as for
Permutations (lr 0.03, beta 0.03, gamma 1.0, replay 10, 10 batches per example); La-MAML
opt_lr 0.3, alpha_init 0.15; C-MAML opt_wt 0.1, alpha_init 0.1 (Rotations; 0.03 for
Permutations); Sync-La-MAML opt_lr 0.1, opt_wt 0.1, alpha_init 0.15; glances 5, replay 10;
first-order meta-gradients and clipping norm 2.0 (the official parser's defaults); the MNIST
code's glance (``inner_rate: relu``, no inner clamp, one example per inner step), with the CIFAR
code's as options (``inner_rate: alpha``, ``clamp_inner``, ``inner_chunks``). Reptile's
defaults are ours (:mod:`strategies.reptile`); VR-MCL's are the official README's CIFAR-100
command (:mod:`strategies.vrmcl`).
"""

from __future__ import annotations

from typing import Annotated

from strategies.context import StrategyContext
from strategies.errors import StrategyError
from strategies.hparams import MAX_RATE, AddedLater, Choice, Range, replay_within_memory
from strategies.registry import Registry

RATE = Annotated[float, Range(gt=0, le=MAX_RATE)]
NON_NEGATIVE_RATE = Annotated[float, Range(ge=0, le=MAX_RATE)]
CLIP = Annotated[float, Range(gt=0)]  # a norm, not a rate: no upper bound
FRACTION = Annotated[float, Range(ge=0, le=1)]
POSITIVE = Annotated[int, Range(ge=1)]
COUNT = Annotated[int, Range(ge=0)]
# La-MAML's meta-loss: after every inner step (official code) or once after the last (paper, Alg. 1)
META_LOSS = Annotated[str, Choice("every-step", "final")]
# La-MAML's CIFAR code (strategies/lamaml.py): inner steps with alpha itself, the inner clamp applied, chunks
INNER_RATE = Annotated[str, Choice("relu", "alpha"), AddedLater()]
LATER_BOOL = Annotated[bool, AddedLater()]
LATER_COUNT = Annotated[int, Range(ge=0), AddedLater()]


def _mer_check(hp: dict) -> None:
    replay_within_memory(hp)
    if hp["algorithm"] not in (1, 6, 7):
        raise StrategyError(f"strategy 'mer': hyperparameter 'algorithm' is {hp['algorithm']}; allowed: 1, 6, 7 "
                            "(Riemer et al. 2019, Algorithms 1, 6 and 7)")


def register_meta_strategies(registry: Registry) -> None:
    """Register mer, c-maml (alias online-maml), la-maml, sync-la-maml, reptile and vr-mcl into ``registry``."""
    reg = registry.register

    @reg("mer", aliases=("meta-experience-replay",), check=_mer_check)
    def mer(*, model, context: StrategyContext, lr: RATE = 0.03, beta: FRACTION = 0.03, gamma: FRACTION = 1.0,
            mem_size: POSITIVE = 200, replay_batch: COUNT = 10, batches_per_example: POSITIVE = 10,
            algorithm: Annotated[int, Range(ge=1, le=7)] = 1,
            alg6_form: Annotated[str, Choice("official", "paper")] = "official", fast_path: bool = True,
            grad_clip_norm: Annotated[float, Range(ge=0), AddedLater()] = 0.0):
        """Meta-Experience Replay (Riemer et al. 2019), Algorithm 1 by default; Algorithm 6 as the
        official meralg6.py runs it unless ``alg6_form: paper`` (see strategies/mer.py);
        ``grad_clip_norm`` > 0 clips each step's gradient to that norm (La-MAML's CIFAR MER: 10)."""
        from strategies.mer import MER

        return MER(model=model, lr=lr, beta=beta, gamma=gamma, mem_size=mem_size, replay_batch=replay_batch,
                   batches_per_example=batches_per_example, algorithm=algorithm, alg6_form=alg6_form,
                   grad_clip_norm=grad_clip_norm,
                   seed=context.seed, fast_path=fast_path,
                   class_mask=context.class_mask, **context.template_kwargs())

    def _lamaml(model, context, **kw):
        from strategies.lamaml import LookAheadMAML

        return LookAheadMAML(model=model, seed=context.seed, class_mask=context.class_mask, **kw,
                             **context.template_kwargs())

    @reg("c-maml", aliases=("online-maml", "cmaml"), check=replay_within_memory)
    def c_maml(*, model, context: StrategyContext, opt_wt: RATE = 0.1, alpha_init: RATE = 0.1,
               glances: POSITIVE = 5, mem_size: POSITIVE = 200, replay_batch: COUNT = 10,
               second_order: bool = False, grad_clip_norm: CLIP = 2.0, meta_loss: META_LOSS = "every-step",
               inner_rate: INNER_RATE = "relu", clamp_inner: LATER_BOOL = False, inner_chunks: LATER_COUNT = 0):
        """Continual MAML (Gupta et al. 2020): fixed inner rate, synchronous SGD meta-update."""
        return _lamaml(model, context, alpha_init=alpha_init, opt_lr=0.0, opt_wt=opt_wt, learn_lr=False,
                       sync_update=True, glances=glances, mem_size=mem_size, replay_batch=replay_batch,
                       second_order=second_order, grad_clip_norm=grad_clip_norm, meta_loss=meta_loss,
                       inner_rate=inner_rate, clamp_inner=clamp_inner, inner_chunks=inner_chunks)

    @reg("la-maml", aliases=("lamaml",), check=replay_within_memory)
    def la_maml(*, model, context: StrategyContext, opt_lr: NON_NEGATIVE_RATE = 0.3, alpha_init: RATE = 0.15,
                learn_lr: bool = True, glances: POSITIVE = 5, mem_size: POSITIVE = 200, replay_batch: COUNT = 10,
                second_order: bool = False, grad_clip_norm: CLIP = 2.0, meta_loss: META_LOSS = "every-step",
                inner_rate: INNER_RATE = "relu", clamp_inner: LATER_BOOL = False, inner_chunks: LATER_COUNT = 0):
        """La-MAML (Gupta et al. 2020): learned per-parameter rates, asynchronous update."""
        return _lamaml(model, context, alpha_init=alpha_init, opt_lr=opt_lr, opt_wt=0.0, learn_lr=learn_lr,
                       sync_update=False, glances=glances, mem_size=mem_size, replay_batch=replay_batch,
                       second_order=second_order, grad_clip_norm=grad_clip_norm, meta_loss=meta_loss,
                       inner_rate=inner_rate, clamp_inner=clamp_inner, inner_chunks=inner_chunks)

    @reg("sync-la-maml", aliases=("sync-lamaml",), check=replay_within_memory)
    def sync_la_maml(*, model, context: StrategyContext, opt_lr: NON_NEGATIVE_RATE = 0.1, opt_wt: RATE = 0.1,
                     alpha_init: RATE = 0.15, glances: POSITIVE = 5, mem_size: POSITIVE = 200,
                     replay_batch: COUNT = 10, second_order: bool = False, grad_clip_norm: CLIP = 2.0,
                     meta_loss: META_LOSS = "every-step", inner_rate: INNER_RATE = "relu", clamp_inner: LATER_BOOL = False,
                     inner_chunks: LATER_COUNT = 0):
        """Sync-La-MAML (Gupta et al. 2020): learned rates, synchronous SGD weight update."""
        return _lamaml(model, context, alpha_init=alpha_init, opt_lr=opt_lr, opt_wt=opt_wt, learn_lr=True,
                       sync_update=True, glances=glances, mem_size=mem_size, replay_batch=replay_batch,
                       second_order=second_order, grad_clip_norm=grad_clip_norm, meta_loss=meta_loss,
                       inner_rate=inner_rate, clamp_inner=clamp_inner, inner_chunks=inner_chunks)

    @reg("reptile", aliases=("continual-reptile",), check=replay_within_memory)
    def reptile(*, model, context: StrategyContext, lr: RATE = 0.1, inner_steps: POSITIVE = 5,
                epsilon: Annotated[float, Range(gt=0, le=1)] = 0.2, mem_size: POSITIVE = 200,
                replay_batch: COUNT = 10):
        """Continual Reptile (Nichol et al. 2018): k SGD steps per minibatch on it plus replay draws,
        then theta <- theta_0 + epsilon (theta_k - theta_0); the first-order ablation of MER."""
        from strategies.reptile import ContinualReptile

        return ContinualReptile(model=model, lr=lr, inner_steps=inner_steps, epsilon=epsilon, mem_size=mem_size,
                                replay_batch=replay_batch, seed=context.seed, class_mask=context.class_mask,
                                **context.template_kwargs())

    @reg("vr-mcl", aliases=("vrmcl",), check=replay_within_memory)
    def vr_mcl(*, model, context: StrategyContext, lr: NON_NEGATIVE_RATE = 0.25, alpha_init: RATE = 0.1,
               s_momentum: FRACTION = 0.15, s_lr: RATE = 0.35, inner_batch_size: POSITIVE = 8,
               meta_update_per_batch: POSITIVE = 1, mem_size: POSITIVE = 1000, replay_batch: COUNT = 32,
               second_order: bool = True, grad_clip_norm: CLIP = 1.0):
        """VR-MCL (Wu et al. 2024): La-MAML's learned rates and inner loop, a one-step-lagged copy of
        the weights and a STORM momentum of the meta-gradient (see strategies/vrmcl.py)."""
        from strategies.vrmcl import VarianceReducedMCL

        return VarianceReducedMCL(model=model, lr=lr, alpha_init=alpha_init, s_momentum=s_momentum, s_lr=s_lr,
                                  inner_batch_size=inner_batch_size, meta_update_per_batch=meta_update_per_batch,
                                  mem_size=mem_size, replay_batch=replay_batch, second_order=second_order,
                                  grad_clip_norm=grad_clip_norm, seed=context.seed, class_mask=context.class_mask,
                                  **context.template_kwargs())
