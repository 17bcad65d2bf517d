"""Batched, gradient-free accuracy of a model on the test experiences of a stream, by one of two
heads (``train.eval_head``):

- ``logits``: the class with the largest output; a strategy that predicts by prototypes
  (:class:`strategies.contract.Prototypes`, e.g. CoPE) by its nearest prototype instead;
- ``ncm``: nearest class mean, the ProtoNet rule (Snell et al. 2017; iCaRL's classifier,
  Rebuffi et al. 2017): the class whose mean representation is nearest in Euclidean distance.
  The representation is the strategy's embedding where it has one, else the input of the
  model's last linear layer; each class's mean is taken at every evaluation over up to
  :data:`NCM_PER_CLASS` training examples of that class from every task of the stream, the
  same examples for every strategy and seed of a stream. It is a probe of the representation
  (how well it separates all classes now), not a prediction an online learner could make.

Allowed classes (task-incremental streams) restrict every head alike.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Sequence

import torch

HEADS = ("logits", "ncm")
NCM_PER_CLASS = 100  # training examples per class whose mean representation the ncm head uses
Scorer = Callable[[torch.Tensor], torch.Tensor]  # inputs -> (N, n_classes) scores, higher is better


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
def accuracy(model: torch.nn.Module, test: EvalSet, *, batch_size: int, device, scorer: Scorer | None = None) -> float:
    """Fraction of ``test`` classified correctly: the argmax over the allowed classes of
    ``scorer`` (default: the model's logits), with ``model`` in eval mode."""
    was_training = model.training
    model.eval()
    correct = 0
    score = scorer or model
    try:
        for start in range(0, len(test.y), batch_size):
            x = test.x[start:start + batch_size].to(device, non_blocking=True)
            logits = score(x)
            if test.classes is not None:
                mask = torch.full((logits.shape[-1],), float("-inf"), device=logits.device)
                mask[list(test.classes)] = 0.0
                logits = logits + mask
            correct += int((logits.argmax(dim=1).cpu() == test.y[start:start + batch_size]).sum())
    finally:
        model.train(was_training)
    return correct / max(len(test.y), 1)


def evaluate(model: torch.nn.Module, tests: Sequence[EvalSet], *, batch_size: int, device,
             scorer: Scorer | None = None) -> list[float]:
    """Accuracy on every test set, in stream order: one row of the accuracy matrix."""
    return [accuracy(model, t, batch_size=batch_size, device=device, scorer=scorer) for t in tests]


@dataclass(frozen=True)
class JoinedSets:
    """Several test sets as one batch (continual evaluation scores them in one pass): the
    examples joined, where each set starts (``offsets``, with the total at the end), and a
    score mask of 0 / -inf rows for the allowed classes (None: every class everywhere)."""

    x: torch.Tensor
    y: torch.Tensor
    offsets: tuple[int, ...]
    mask: torch.Tensor | None

    @classmethod
    def of(cls, tests: Sequence[EvalSet], n_classes: int) -> JoinedSets:
        offsets = [0]
        for t in tests:
            offsets.append(offsets[-1] + len(t.y))
        mask = None
        if any(t.classes is not None for t in tests):
            mask = torch.zeros(offsets[-1], n_classes)
            for t, start, stop in zip(tests, offsets, offsets[1:]):
                if t.classes is not None:
                    row = torch.full((n_classes,), float("-inf"))
                    row[list(t.classes)] = 0.0
                    mask[start:stop] = row
        return cls(torch.cat([t.x for t in tests]), torch.cat([t.y for t in tests]), tuple(offsets), mask)


@torch.no_grad()
def joined_accuracy(model: torch.nn.Module, joined: JoinedSets, *, batch_size: int, device,
                    scorer: Scorer | None = None) -> list[float]:
    """The accuracy on each set of ``joined`` (as :func:`evaluate` gives it), from one pass over
    their examples in chunks of ``batch_size``, with ``model`` in eval mode once."""
    was_training = model.training
    model.eval()
    score = scorer or model
    hits = []
    try:
        for start in range(0, len(joined.y), batch_size):
            logits = score(joined.x[start:start + batch_size].to(device, non_blocking=True)).cpu()
            if joined.mask is not None:
                logits = logits + joined.mask[start:start + batch_size]
            hits.append(logits.argmax(dim=1) == joined.y[start:start + batch_size])
    finally:
        model.train(was_training)
    right = torch.cat(hits).to(torch.int64).cumsum(0) if hits else torch.zeros(0, dtype=torch.int64)
    out = []
    for a, b in zip(joined.offsets, joined.offsets[1:]):
        total = int(right[b - 1]) - (int(right[a - 1]) if a else 0) if b > a else 0
        out.append(total / max(b - a, 1))
    return out


def nearest_prototype(embed: Callable[[torch.Tensor], torch.Tensor], prototypes: Mapping[int, torch.Tensor],
                      n_classes: int) -> Scorer:
    """Scores ``-||embed(x) - p_c||^2`` for the classes with a prototype, -inf for the others."""
    classes = sorted(prototypes)

    def score(x: torch.Tensor) -> torch.Tensor:
        e = embed(x)
        out = torch.full((len(e), n_classes), float("-inf"), device=e.device)
        if classes:
            protos = torch.stack([prototypes[c].reshape(-1).to(e.device) for c in classes])
            out[:, classes] = -torch.cdist(e, protos).pow(2)
        return out

    return score


def penultimate(model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The input of the model's last ``nn.Linear`` (the representation its classifier reads)."""
    last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    if not last:
        raise ValueError("the ncm head needs a model whose classifier is an nn.Linear")

    def embed(x: torch.Tensor) -> torch.Tensor:
        seen = []
        hook = last[-1].register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
        try:
            model(x)
        finally:
            hook.remove()
        return seen[-1].reshape(len(x), -1)

    return embed


def ncm_examples(stream, *, per_class: int = NCM_PER_CLASS) -> tuple[torch.Tensor, torch.Tensor]:
    """The training examples whose representations the ncm head averages: the first ``per_class``
    of each class over the stream's tasks in order (the streams are drawn by their seed)."""
    xs, ys, counts = [], [], {}
    for exp in stream.benchmark.train_stream:
        x, y, _ = experience_tensors(exp)
        for c in y.unique().tolist():
            take = (y == c).nonzero().squeeze(1)[: max(per_class - counts.get(c, 0), 0)]
            counts[c] = counts.get(c, 0) + len(take)
            xs.append(x[take])
            ys.append(y[take])
    return torch.cat(xs), torch.cat(ys)


@torch.no_grad()
def class_means(embed: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor, *,
                batch_size: int, device) -> dict[int, torch.Tensor]:
    """Class -> mean of ``embed`` over that class's examples of (x, y)."""
    sums: dict[int, torch.Tensor] = {}
    counts: dict[int, int] = {}
    for start in range(0, len(y), batch_size):
        e = embed(x[start:start + batch_size].to(device))
        yy = y[start:start + batch_size].to(e.device)
        for c in yy.unique().tolist():
            rows = e[yy == c]
            sums[c] = sums.get(c, 0) + rows.sum(0)
            counts[c] = counts.get(c, 0) + len(rows)
    return {c: sums[c] / counts[c] for c in sums}
