"""Backbones the harness builds for a stream.

- ``mlp``: the network of the GEM, MER and La-MAML MNIST experiments, an MLP
  D-100-100-n_classes with ReLU (784-100-100-10 on MNIST).
- ``cnn``: a small convolutional network for 32x32 colour images, after the La-MAML CIFAR
  backbone: three 3x3 convolutions of 160 channels (stride 2, ReLU), then two fully
  connected layers of 320 units and the classifier.
"""

from __future__ import annotations

import math

from torch import nn

BACKBONES = ("mlp", "cnn")


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


def build_model(name: str, *, input_shape: tuple[int, ...], n_classes: int, hidden: tuple[int, ...] = (100, 100)) -> nn.Module:
    """The backbone ``name`` (one of :data:`BACKBONES`) for inputs of ``input_shape``."""
    if name == "mlp":
        return MLP(input_size=math.prod(input_shape), n_classes=n_classes, hidden=tuple(hidden))
    if name == "cnn":
        if len(input_shape) != 3:
            raise ValueError(f"backbone 'cnn' needs image inputs (C, H, W), got shape {input_shape}; use 'mlp'")
        return ConvNet(in_channels=input_shape[0], image_size=input_shape[1:], n_classes=n_classes)
    raise ValueError(f"unknown backbone '{name}'; allowed: {', '.join(BACKBONES)}")
