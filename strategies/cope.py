"""Continual Prototype Evolution, CoPE (De Lange and Tuytelaars 2021, "Continual Prototype
Evolution: Learning Online from Non-Stationary Data Streams", ICCV), as Avalanche 0.6 ships it
(``avalanche.training.plugins.CoPEPlugin`` on a plain SGD template), run online.

What Avalanche's plugin does, read in its code: the model's last linear layer is followed by an
L2 normalisation, so the network outputs a unit embedding; one prototype per class, initialised
as a random unit vector; the loss is the pseudo-prototypical proxy (PPP) loss with temperature
``T`` (attractor and repellor terms over the prototypes and the batch's other examples, Eq. 4-6
of the paper); each incoming batch is joined with as many examples from a class-balanced replay
memory and used for ``max_it_cnt`` iterations; after them every class's prototype moves by
``p_c <- normalise(alpha p_c + (1 - alpha) normalise(mean of its batch embeddings))`` (the paper's
momentum update) and the batch enters the memory. Prediction is the nearest prototype.

One fix: the plugin's own set-up (``before_training``) puts the normalisation in with
``avalanche.training.utils.swap_last_fc_layer``, which for a classifier nested in a submodule
(``net.5`` of an ``nn.Sequential``, as in every backbone here) sets a new attribute named
``"net.5"`` on the model instead of replacing the layer, so the forward pass never normalises and
the PPP loss sees raw outputs (and overflows to NaN at lr 0.01 on split MNIST). Here the set-up is
done before training with the layer replaced where it sits; the plugin's own is then skipped.

The plugin treats every Avalanche experience as one incoming batch (it stops training after
``max_it_cnt`` iterations and updates prototypes and memory at the experience's end). The
harness hands a strategy a whole task at once, so :meth:`CoPE.train` cuts each task into online
experiences of one minibatch (``split_online_stream``, in order) and trains on them one by one:
the data-incremental protocol of the paper. The embedding size is the model's output size
(``n_classes`` units here; the paper's embeddings are wider). CoPE takes no task labels: its loss
and prediction are over all classes in every stream. Through :class:`strategies.contract.Prototypes`
the harness scores it by its nearest prototype.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch


def build_cope(*, model: torch.nn.Module, optimizer: torch.optim.Optimizer, n_classes: int, mem_size: int,
               alpha: float, temperature: float, iterations: int, seed: int, **template_kwargs: Any):
    """A :class:`CoPE` strategy (the class is made here, so that importing this module does not
    import Avalanche)."""
    from avalanche.benchmarks.scenarios.online import split_online_stream
    from avalanche.training import Naive
    from avalanche.training.plugins import CoPEPlugin

    class CoPE(Naive):
        """Naive SGD with Avalanche's CoPEPlugin, trained one minibatch-experience at a time."""

        def __init__(self):
            self.cope = CoPEPlugin(mem_size=mem_size, n_classes=n_classes, p_size=n_classes, alpha=alpha,
                                   T=temperature, max_it_cnt=iterations)
            plugins = [*template_kwargs.pop("plugins", []), self.cope]
            template_kwargs.pop("criterion", None)  # the plugin sets its PPP loss
            super().__init__(model=model, optimizer=optimizer, plugins=plugins, **template_kwargs)
            with torch.random.fork_rng(devices=[]):  # the prototypes' random start, by the run's seed
                torch.manual_seed(seed)
                self.cope._init_new_prototypes(torch.arange(n_classes))
            _normalise_output(self.model)
            self._criterion = self.cope.ppp_loss
            self.cope.initialized = True  # what its before_training would do, done right above

        def train(self, experiences, eval_streams=None, **kwargs):
            experiences = experiences if isinstance(experiences, (list, tuple)) else [experiences]
            for online in split_online_stream(experiences, experience_size=self.train_mb_size, shuffle=False):
                super().train(online, eval_streams=eval_streams, **kwargs)

        # -- strategies.contract.Prototypes ------------------------------------------
        @torch.no_grad()
        def embed(self, x: torch.Tensor) -> torch.Tensor:
            return self.model(x)  # unit vectors: the model ends in L2Normalization

        def prototypes(self) -> Mapping[int, torch.Tensor]:
            return {int(c): p.reshape(-1) for c, p in self.cope.p_mem.items()}

    return CoPE()


def _normalise_output(model: torch.nn.Module) -> None:
    """Replace the model's last ``nn.Linear`` where it sits by that layer followed by Avalanche's
    ``L2Normalization`` (what ``CoPEPlugin.before_training`` means to do)."""
    from avalanche.training.plugins.cope import L2Normalization

    name = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)][-1]
    parent_name, _, leaf = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, leaf, torch.nn.Sequential(getattr(parent, leaf), L2Normalization()))
