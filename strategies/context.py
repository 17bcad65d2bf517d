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
    plugins: tuple[Any, ...] = field(default_factory=tuple)
    evaluator: Any = None

    def template_kwargs(self, **extra_plugins_and_overrides: Any) -> dict[str, Any]:
        """Keyword arguments for an Avalanche template: cross-entropy criterion, device, batch
        sizes, epochs, plugins, evaluator. Extra plugins go in ``plugins=[...]``; they run after the harness's."""
        extra = list(extra_plugins_and_overrides.pop("plugins", []))
        import torch

        kwargs = dict(
            criterion=torch.nn.CrossEntropyLoss(),
            device=self.device,
            train_mb_size=self.batch_size,
            train_epochs=self.epochs,
            eval_mb_size=self.eval_batch_size,
            plugins=[*self.plugins, *extra],
            evaluator=self.evaluator if self.evaluator is not None else quiet_evaluator(),
        )
        kwargs.update(extra_plugins_and_overrides)
        return kwargs
