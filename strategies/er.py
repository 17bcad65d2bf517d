"""Experience replay with one SGD step per incoming example: the ER baseline of the MER paper
(Riemer et al. 2019, Algorithm 4; official ``model/eralg4.py``).

For every incoming example (x, y), in stream order:

1. draw ``replay_batch`` distinct examples from the reservoir memory (none while it is empty);
2. one SGD step on the mean cross-entropy of the batch [memory examples, (x, y)]
   (``theta <- theta - lr * grad (1/|B|) sum_{b in B} L(b; theta)``);
3. offer (x, y) to the reservoir memory (Algorithm R), after the step.

This is what the MER paper's tables call ER (run with ``--batch_size 1``): one update per
incoming example, ten times as many as a minibatch ER at batch size 10 (``er`` with
``per_example: false``: one step per minibatch joined with ``replay_batch`` memory examples,
Chaudhry et al. 2019), which is the weaker baseline. The per-example steps of a minibatch run
inside one Avalanche iteration.

Deviations from the official code, none of which changes the algorithm: memory examples are
drawn without replacement (the official ``getBatch`` reshuffles per draw and can repeat one);
the reservoir uses Vitter's Algorithm R exactly (the official ``randint(0, age)`` is off by one).
On task-incremental streams each example's loss is taken over the classes of its own task.
"""

from __future__ import annotations

from typing import Any

import torch

from strategies.functional import SingleThreadedExperiences, masked_cross_entropy
from strategies.contract import StrategyReport
from strategies.memory import ReservoirMemory
from strategies.mer import _meta_template


class PerExampleReplay(SingleThreadedExperiences, _meta_template()):
    """MER's ER (Algorithm 4) as an Avalanche strategy; ``inner_steps`` counts its SGD steps
    (one per incoming example), reported through :meth:`report`."""

    def __init__(self, *, model: torch.nn.Module, lr: float, mem_size: int, replay_batch: int, momentum: float = 0.0,
                 seed: int = 0, class_mask: torch.Tensor | None = None, **template_kwargs: Any):
        super().__init__(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum),
                         **template_kwargs)
        self.replay_batch, self.lr, self.momentum = replay_batch, lr, momentum
        self._params = [p for p in self.model.parameters() if p.requires_grad]
        self.memory = ReservoirMemory(size=mem_size, seed=seed, device=self.device)
        self.inner_steps = 0
        self._mask = class_mask

    def _before_training_exp(self, **kwargs):
        super()._before_training_exp(**kwargs)
        self._params = [p for p in self.model.parameters() if p.requires_grad]  # Avalanche may adapt the model

    def _inner_updates(self, **kwargs):
        x, y, t = self.mb_x, self.mb_y, self.mb_task_id
        losses = []
        for i in range(len(y)):
            xi, yi, ti = x[i:i + 1], y[i:i + 1], t[i:i + 1]
            bx, by, bt = self.memory.joined(xi, yi, ti, self.replay_batch, memory_first=True)
            loss = masked_cross_entropy(self.model(bx), by, bt, self._mask)
            if self.momentum:
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
            else:  # plain SGD, as eralg4: theta <- theta - lr * grad, without the optimiser's overhead
                grads = torch.autograd.grad(loss, self._params)
                with torch.no_grad():
                    torch._foreach_add_(self._params, grads, alpha=-self.lr)
            self.inner_steps += 1
            self.memory.add(xi, yi, ti)
            losses.append(loss.detach())
        self.loss = torch.stack(losses).mean()

    def _outer_update(self, **kwargs):
        """Nothing: every step is taken in ``_inner_updates``."""

    def report(self) -> StrategyReport:
        return StrategyReport(inner_steps=int(self.inner_steps), backend="reference")

    # -- checkpoints (strategies.checkpoint) -------------------------------------------
    def checkpoint_state(self) -> dict:
        """The reservoir memory, the optimiser's state (momentum) and the step counter."""
        return {"memory": self.memory.checkpoint_state(), "optimizer": self.optimizer.state_dict(),
                "inner_steps": int(self.inner_steps)}

    def load_checkpoint_state(self, state: dict) -> None:
        self.memory.load_checkpoint_state(state["memory"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.inner_steps = int(state["inner_steps"])
