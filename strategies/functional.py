"""Small functional helpers shared by the meta strategies: parameter lists, in-place
interpolation (Reptile), task masks, and a cross-entropy over task-masked logits."""

from __future__ import annotations

import contextlib
from typing import Sequence

import torch
import torch.nn.functional as F


def trainable(model: torch.nn.Module) -> tuple[list[str], list[torch.nn.Parameter]]:
    """(names, parameters) of the parameters that require gradients, in module order."""
    pairs = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [n for n, _ in pairs], [p for _, p in pairs]


def same_parameters(model: torch.nn.Module, previous: Sequence[torch.Tensor], *,
                    owner: str) -> tuple[list[str], list[torch.nn.Parameter]]:
    """:func:`trainable` of ``model`` again (Avalanche may have replaced the parameters between
    experiences), refusing a change of shape: per-parameter state (learned rates) cannot follow."""
    names, params = trainable(model)
    if [p.shape for p in params] != [p.shape for p in previous]:
        raise RuntimeError(f"the model's parameters changed shape between experiences; {owner} keeps one "
                           "learning rate per parameter and cannot follow")
    return names, params


@torch.no_grad()
def copy_into(dst: Sequence[torch.Tensor], src: Sequence[torch.Tensor]) -> None:
    """dst <- src, tensor by tensor, without allocating."""
    torch._foreach_copy_(list(dst), list(src))


@torch.no_grad()
def reptile(params: Sequence[torch.Tensor], before: Sequence[torch.Tensor], rate: float) -> None:
    """Reptile interpolation in place: theta <- before + rate * (theta - before)
    (Nichol et al. 2018; MER, Riemer et al. 2019, Alg. 1 lines 11 and 13). rate = 1 keeps
    theta; rate = 0 restores ``before``."""
    if rate != 1.0:
        torch._foreach_lerp_(list(params), list(before), 1.0 - rate)


@torch.no_grad()
def clip_joint_norm_(grads: list[torch.Tensor], max_norm: float) -> None:
    """Scale ``grads`` in place so that their joint L2 norm is at most ``max_norm``
    (``torch.nn.utils.clip_grad_norm_`` semantics: factor max_norm / (norm + 1e-6), capped at 1)."""
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    factor = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
    torch._foreach_mul_(grads, factor)


@contextlib.contextmanager
def single_threaded():
    """Run torch and BLAS on one thread inside the block, restoring both after it.

    Single-example steps are far too small to split across threads: with several threads
    each tiny operator pays the thread pool's overhead (4-5x slower on 2 busy cores).
    Limiting BLAS threads (threadpoolctl) costs milliseconds, so callers enter this once per
    experience, not per step."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        threadpool_limits = None
    limits = threadpool_limits(limits=1, user_api="blas") if threadpool_limits else None
    try:
        yield
    finally:
        if limits is not None:
            limits.restore_original_limits()
        torch.set_num_threads(threads)


class SingleThreadedExperiences:
    """Mixin for Avalanche templates whose training is made of single-example steps: each
    training experience runs inside :func:`single_threaded`."""

    def _train_exp(self, *args, **kwargs):
        with single_threaded():
            return super()._train_exp(*args, **kwargs)


class OutputsWithoutGraph:
    """Mixin for Avalanche meta-learning templates, whose training loop takes the model's logits
    on the minibatch after every meta-update (``mb_output``, for plugins and metrics): here they
    are taken without an autograd graph. Every update has happened by then, so nothing
    differentiates them. (In a py-spy profile of La-MAML on the MLP that forward pass was 10% of the
training time with its graph and 7% without.)"""

    def forward(self):
        with torch.no_grad():
            return super().forward()


def task_mask(classes_per_task: Sequence[Sequence[int]], n_classes: int, device) -> torch.Tensor:
    """(T, n_classes) additive mask: 0 on the classes of task t, -inf elsewhere."""
    mask = torch.full((max(len(classes_per_task), 1), n_classes), float("-inf"), device=device)
    for t, classes in enumerate(classes_per_task):
        mask[t, list(classes)] = 0.0
    return mask


def label_mask(classes_per_task: Sequence[Sequence[int]], n_classes: int, device) -> torch.Tensor:
    """(n_classes, n_classes) additive mask by label: row c is 0 on the classes of the task that
    holds class c and -inf elsewhere (0 everywhere for a class of no task). This is the task mask
    of :func:`task_mask` read through the label instead of the task label, so that a loss that
    sees only (logits, labels), as Avalanche's criteria do, masks each example by its own task.
    It is the same mask whenever the tasks that share a class have the same classes (split
    streams: each class in one task; permuted streams: every task has all classes); anything
    else raises ValueError."""
    mask = torch.zeros((n_classes, n_classes), device=device)
    owner: dict[int, tuple[int, ...]] = {}
    for classes in classes_per_task:
        group = tuple(sorted(int(c) for c in classes))
        for c in group:
            if owner.setdefault(c, group) != group:
                raise ValueError(f"class {c} belongs to tasks with different classes ({list(owner[c])} and "
                                 f"{list(group)}): a label does not tell which task's classes to mask")
    for c, group in owner.items():
        mask[c] = float("-inf")
        mask[c, list(group)] = 0.0
    return mask


class TaskMaskedCrossEntropy(torch.nn.Module):
    """Cross-entropy with each example scored among the classes of its own task (task-incremental
    training with a single head used as a multi-head): ``CE(logits + M[y], y)`` with ``M`` from
    :func:`label_mask`. The criterion the harness gives every Avalanche template on
    task-incremental streams, so that their losses, inner loops included, are masked as ours."""

    def __init__(self, *, classes_per_task: Sequence[Sequence[int]], n_classes: int, device="cpu"):
        super().__init__()
        self.register_buffer("by_label", label_mask(classes_per_task, n_classes, device))

    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits + self.by_label.to(logits.device)[y], y)


def masked_cross_entropy(logits: torch.Tensor, y: torch.Tensor, t: torch.Tensor, mask: torch.Tensor | None,
                         weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean cross-entropy; with a task ``mask`` each example is scored only among the classes
    of its own task (the single head used as a multi-head, task-incremental learning).
    ``weight`` scales each example's loss (MER Algorithm 7)."""
    if mask is not None:
        logits = logits + mask[t]
    if weight is None:
        return F.cross_entropy(logits, y)
    return (F.cross_entropy(logits, y, reduction="none") * weight).mean()
