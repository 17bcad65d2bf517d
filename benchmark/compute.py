"""Compute accounting in units that compare across strategies: gradient evaluations, the
examples whose loss gradient was backpropagated through the model.

:class:`GradientCounter` counts them for any strategy that trains the model with torch
autograd: a forward hook on the model marks every output that carries a graph, and a hook on
that output counts its examples when a backward pass (``loss.backward()`` or
``torch.autograd.grad``) reaches it. A forward that is never backpropagated (the logits a
template keeps for its metrics) is not counted; an output backpropagated twice (a second-order
meta-gradient through an inner step) counts twice. Evaluation runs without gradients and is
never counted. A strategy whose compiled backend bypasses torch reports its own count
(:attr:`strategies.contract.StrategyReport.gradient_examples`); the run record says which
source it took, and a test checks that a backend's count equals the hooks' count of its
reference path.
"""

from __future__ import annotations

from functools import partial

import torch


class GradientCounter:
    """Counts the examples backpropagated through ``model`` from now until :meth:`close`."""

    def __init__(self, *, model: torch.nn.Module, start: int = 0):
        self.examples = start
        self._handle = model.register_forward_hook(self._on_forward)

    def _on_forward(self, module, inputs, output) -> None:
        if isinstance(output, torch.Tensor) and output.requires_grad:
            output.register_hook(partial(self._on_backward, int(output.shape[0]) if output.dim() else 1))

    def _on_backward(self, n: int, grad: torch.Tensor) -> None:
        self.examples += n

    def close(self) -> None:
        self._handle.remove()


def per_incoming(gradient_examples: int | None, incoming: int) -> float | None:
    """Gradient evaluations per incoming training example (the x axis of "ACC at equal compute")."""
    return None if gradient_examples is None or incoming <= 0 else gradient_examples / incoming
