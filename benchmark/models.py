"""Backbones the harness builds for a stream.

- ``mlp``: the network of the GEM, MER and La-MAML MNIST experiments, an MLP
  D-100-100-n_classes with ReLU (784-100-100-10 on MNIST).
- ``cnn``: a small convolutional network for 32x32 colour images, after the La-MAML CIFAR
  backbone: three 3x3 convolutions of 160 channels (stride 2, ReLU), then two fully
  connected layers of 320 units and the classifier.

Initialisation (``init``, recorded in every run's config as ``model.init``):

- ``torch``: PyTorch's default for ``nn.Linear``/``nn.Conv2d`` (Kaiming-uniform with
  a = sqrt(5) for weights, uniform biases); neither paper's.
- ``xavier``: the GEM and MER MNIST code (``model/common.py``, ``Xavier``): weights uniform in
  [-a, a] with a = sqrt(3) * sqrt(2 / (fan_in + fan_out)) (Glorot and Bengio 2010, gain 1),
  zero biases.
- ``kaiming``: the La-MAML code (``model/meta/learner.py``, without ``--xav_init``):
  ``torch.nn.init.kaiming_normal_`` with its defaults, i.e. normal with standard deviation
  sqrt(2 / fan_in) (He et al. 2015), zero biases.
"""

from __future__ import annotations

import math

import torch
from torch import nn

BACKBONES = ("mlp", "cnn")
INITS = ("torch", "xavier", "kaiming")


class MLP(nn.Module):
    """Fully connected ReLU network over flattened inputs."""

    def __init__(self, *, input_size: int, n_classes: int, hidden: tuple[int, ...] = (100, 100)):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = input_size
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, n_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class ConvNet(nn.Module):
    """Three strided 3x3 convolutions, two hidden linear layers, a linear classifier."""

    def __init__(self, *, in_channels: int, image_size: tuple[int, int], n_classes: int,
                 channels: int = 160, hidden: int = 320):
        super().__init__()
        convs: list[nn.Module] = []
        c, (h, w) = in_channels, image_size
        for _ in range(3):
            convs += [nn.Conv2d(c, channels, kernel_size=3, stride=2, padding=1), nn.ReLU()]
            c, h, w = channels, (h + 1) // 2, (w + 1) // 2
        self.features = nn.Sequential(*convs, nn.Flatten())
        self.classifier = nn.Sequential(
            nn.Linear(c * h * w, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, n_classes)
        )

    def forward(self, x):
        return self.classifier(self.features(x))


@torch.no_grad()
def initialise(model: nn.Module, init: str) -> nn.Module:
    """Re-initialise every ``nn.Linear`` and ``nn.Conv2d`` of ``model`` in place by ``init``
    (module docstring); ``torch`` leaves PyTorch's default as it is. Returns ``model``."""
    if init not in INITS:
        raise ValueError(f"unknown init '{init}'; allowed: {', '.join(INITS)}")
    if init == "torch":
        return model
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            if init == "xavier":
                nn.init.xavier_uniform_(m.weight)
            else:
                nn.init.kaiming_normal_(m.weight)
            if m.bias is not None:
                m.bias.zero_()
    return model


def build_model(name: str, *, input_shape: tuple[int, ...], n_classes: int, hidden: tuple[int, ...] = (100, 100),
                init: str = "torch") -> nn.Module:
    """The backbone ``name`` (one of :data:`BACKBONES`) for inputs of ``input_shape``,
    initialised by ``init`` (one of :data:`INITS`)."""
    if name == "mlp":
        model = MLP(input_size=math.prod(input_shape), n_classes=n_classes, hidden=tuple(hidden))
    elif name == "cnn":
        if len(input_shape) != 3:
            raise ValueError(f"backbone 'cnn' needs image inputs (C, H, W), got shape {input_shape}; use 'mlp'")
        model = ConvNet(in_channels=input_shape[0], image_size=input_shape[1:], n_classes=n_classes)
    else:
        raise ValueError(f"unknown backbone '{name}'; allowed: {', '.join(BACKBONES)}")
    return initialise(model, init)
