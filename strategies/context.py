"""What the harness hands a strategy factory besides the model and the hyperparameters."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any


def quiet_evaluator():
    """An Avalanche EvaluationPlugin with no metrics and no loggers: the harness measures
    accuracy itself, so nothing is computed twice or printed."""
    from avalanche.training.plugins import EvaluationPlugin

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return EvaluationPlugin(loggers=[])


@dataclass(frozen=True, kw_only=True)
class StrategyContext:
    """Training settings and facts about the stream, fixed by the harness for one run.

    ``plugins`` are Avalanche plugins the harness needs inside the training loop (progress,
    divergence checks); a factory must pass them on, most simply through
    :meth:`template_kwargs`.

    Training on task-incremental streams (``task_labels``) follows one rule for every strategy
    while ``mask_training`` holds (the harness's ``train.task_mask``, default true): each
    example's loss is taken over the classes of its own task, as evaluation scores it.
    :attr:`class_mask` is that mask by task label (our meta strategies index it with each
    example's task label, in their own loops and compiled kernels); :meth:`criterion` is the
    same mask read through the label (:class:`strategies.functional.TaskMaskedCrossEntropy`),
    the criterion :meth:`template_kwargs` hands every Avalanche template, whose loops (also
    those of Avalanche's MER, LaMAML, A-GEM and LwF) compute their losses with it.
    """

    device: Any = "cpu"
    batch_size: int = 10
    epochs: int = 1
    eval_batch_size: int = 1000
    n_classes: int = 10
    input_shape: tuple[int, ...] = (1, 28, 28)
    task_labels: bool = False
    classes_per_task: tuple[tuple[int, ...], ...] = ()
    seed: int = 0
    mask_training: bool = True
    plugins: tuple[Any, ...] = field(default_factory=tuple)
    evaluator: Any = None

    @property
    def masks_training(self) -> bool:
        """True when training losses are masked to each task's classes (class docstring)."""
        return bool(self.task_labels and self.mask_training and self.classes_per_task)

    @property
    def class_mask(self):
        """(T, n_classes) additive mask by task label (0 on task t's classes, -inf elsewhere),
        or None when training is not masked."""
        if not self.masks_training:
            return None
        from strategies.functional import task_mask

        return task_mask(self.classes_per_task, self.n_classes, self.device)

    def criterion(self):
        """The training loss of Avalanche templates: cross-entropy, masked to each example's
        task's classes when training is masked."""
        import torch

        if not self.masks_training:
            return torch.nn.CrossEntropyLoss()
        from strategies.functional import TaskMaskedCrossEntropy

        return TaskMaskedCrossEntropy(classes_per_task=self.classes_per_task, n_classes=self.n_classes,
                                      device=self.device)

    def template_kwargs(self, **extra_plugins_and_overrides: Any) -> dict[str, Any]:
        """Keyword arguments for an Avalanche template: the criterion (:meth:`criterion`), device, batch
        sizes, epochs, plugins, evaluator. Extra plugins go in ``plugins=[...]``; they run after the harness's."""
        extra = list(extra_plugins_and_overrides.pop("plugins", []))
        kwargs = dict(
            criterion=self.criterion(),
            device=self.device,
            train_mb_size=self.batch_size,
            train_epochs=self.epochs,
            eval_mb_size=self.eval_batch_size,
            plugins=[*self.plugins, *extra],
            evaluator=self.evaluator if self.evaluator is not None else quiet_evaluator(),
        )
        kwargs.update(extra_plugins_and_overrides)
        return kwargs
