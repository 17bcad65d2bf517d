"""Batched, gradient-free accuracy of a model on the test experiences of a stream."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch


@dataclass(frozen=True)
class EvalSet:
    """The tensors of one test experience, and the classes its task may predict (None: all)."""

    x: torch.Tensor
    y: torch.Tensor
    classes: tuple[int, ...] | None = None


def experience_tensors(experience, *, batch_size: int = 4096) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x, y, t) of an Avalanche experience, read once through a DataLoader."""
    from torch.utils.data import DataLoader

    xs, ys, ts = [], [], []
    for batch in DataLoader(experience.dataset, batch_size=batch_size, shuffle=False):
        xs.append(batch[0])
        ys.append(batch[1])
        ts.append(batch[-1])
    return torch.cat(xs), torch.cat(ys).long(), torch.cat(ts).long()


def eval_sets(stream, *, masked: bool) -> list[EvalSet]:
    """One :class:`EvalSet` per test experience of a built stream; task-incremental streams
    (``masked``) restrict each task's prediction to its own classes."""
    out = []
    for i, exp in enumerate(stream.benchmark.test_stream):
        x, y, _ = experience_tensors(exp)
        out.append(EvalSet(x, y, tuple(stream.classes_per_task[i]) if masked else None))
    return out


@torch.no_grad()
def accuracy(model: torch.nn.Module, test: EvalSet, *, batch_size: int, device) -> float:
    """Fraction of ``test`` that ``model`` classifies correctly (argmax over the allowed classes)."""
    was_training = model.training
    model.eval()
    correct = 0
    try:
        for start in range(0, len(test.y), batch_size):
            x = test.x[start:start + batch_size].to(device, non_blocking=True)
            logits = model(x)
            if test.classes is not None:
                mask = torch.full((logits.shape[-1],), float("-inf"), device=logits.device)
                mask[list(test.classes)] = 0.0
                logits = logits + mask
            correct += int((logits.argmax(dim=1).cpu() == test.y[start:start + batch_size]).sum())
    finally:
        model.train(was_training)
    return correct / max(len(test.y), 1)


def evaluate(model: torch.nn.Module, tests: Sequence[EvalSet], *, batch_size: int, device) -> list[float]:
    """Accuracy on every test set, in stream order: one row of the accuracy matrix."""
    return [accuracy(model, t, batch_size=batch_size, device=device) for t in tests]
