"""Reservoir memory kept in preallocated tensors.

Reservoir sampling (Vitter 1985, Algorithm R; used by MER, Riemer et al. 2019, Sec. 3.1 and
Algorithm 1, and by ER, Chaudhry et al. 2019): the i-th example of the stream (0-based) is
stored while the memory has room; afterwards it replaces a random slot j with probability
size / (i + 1), j drawn uniformly in [0, i]. After any number of examples the memory is a
uniform sample without replacement of everything seen.
"""

from __future__ import annotations

import numpy as np
import torch


class ReservoirMemory:
    """A fixed-size uniform sample of a stream of (x, y, t) examples."""

    def __init__(self, *, size: int, seed: int = 0, device: str | torch.device = "cpu"):
        if size < 1:
            raise ValueError(f"memory size must be >= 1, got {size}")
        self.size = size
        self.device = torch.device(device)
        self.seen = 0
        self._rng = np.random.default_rng(seed)
        self.x: torch.Tensor | None = None
        self.y = torch.empty(size, dtype=torch.long, device=self.device)
        self.t = torch.empty(size, dtype=torch.long, device=self.device)

    def __len__(self) -> int:
        return min(self.seen, self.size)

    def storage(self, example: torch.Tensor) -> None:
        """Allocate the example buffer for examples shaped like ``example[0]`` (once)."""
        if self.x is None:
            self.x = torch.empty((self.size, *example.shape[1:]), dtype=example.dtype, device=self.device)

    def reserve(self) -> int:
        """Count one more example of the stream; the slot it must be written to, or -1 when
        Algorithm R drops it. Callers that write memory themselves (compiled kernels) use
        this; :meth:`add` is built on it."""
        i = self.seen
        self.seen += 1
        if i < self.size:
            return i
        slot = int(self._rng.integers(0, i + 1))
        return slot if slot < self.size else -1

    def add(self, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> None:
        """Offer every example of a batch to the reservoir, in order."""
        self.storage(x)
        if len(x) == 1:  # the common case of online strategies, without building index tensors
            slot = self.reserve()
            if slot >= 0:
                self.x[slot], self.y[slot], self.t[slot] = x.detach()[0], y.detach()[0], t.detach()[0]
            return
        # a later example of the batch may overwrite the slot of an earlier one: keep the last
        last = {}
        for row in range(len(x)):
            slot = self.reserve()
            if slot >= 0:
                last[slot] = row
        if last:
            idx = torch.tensor(list(last.keys()), device=self.device)
            src = torch.tensor(list(last.values()), device=x.device)
            self.x[idx] = x.detach()[src].to(self.device)
            self.y[idx] = y.detach()[src].to(self.device)
            self.t[idx] = t.detach()[src].to(self.device)

    def draw(self, k: int) -> np.ndarray:
        """Slots of ``min(k, len(self))`` distinct stored examples, drawn uniformly."""
        n = len(self)
        return self._rng.choice(n, size=min(k, n), replace=False)

    def sample(self, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``min(k, len(self))`` distinct stored examples, drawn uniformly."""
        idx = torch.as_tensor(self.draw(k), device=self.device)
        return self.x[idx], self.y[idx], self.t[idx]

    def joined(self, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, k: int, *,
               memory_first: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The batch (x, y, t) joined with :meth:`sample` ``(k)`` (before it with
        ``memory_first``); the batch alone when ``k`` is 0 or the memory is empty."""
        if not k or not len(self):
            return x, y, t
        mx, my, mt = self.sample(k)
        parts = ((mx, x), (my, y), (mt, t)) if memory_first else ((x, mx), (y, my), (t, mt))
        return tuple(torch.cat(pair) for pair in parts)  # type: ignore[return-value]

    # -- checkpoints (strategies.checkpoint) -------------------------------------------
    def checkpoint_state(self) -> dict:
        """Everything that decides the memory's future: the stored examples, the count of
        examples seen, and the state of its generator (as plain data)."""
        from strategies.checkpoint import numpy_rng_state

        return {"size": self.size, "seen": self.seen, "rng": numpy_rng_state(self._rng),
                "x": None if self.x is None else self.x.detach().cpu().clone(),
                "y": self.y.detach().cpu().clone(), "t": self.t.detach().cpu().clone()}

    def load_checkpoint_state(self, state: dict) -> None:
        from strategies.checkpoint import set_numpy_rng_state

        if int(state["size"]) != self.size:
            raise ValueError(f"the checkpoint's memory holds {state['size']} examples, this one {self.size}")
        set_numpy_rng_state(self._rng, state["rng"])
        self.seen = int(state["seen"])
        self.x = None if state["x"] is None else state["x"].to(self.device).clone()
        self.y = state["y"].to(self.device).clone()
        self.t = state["t"].to(self.device).clone()
