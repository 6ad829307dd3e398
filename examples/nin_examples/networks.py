"""Plain PyTorch networks, written as anyone would, with nothing of nin in them.

nin builds each through its config (`_target_: nin_examples.networks.cnn` and the arguments) and
wires NINs in by module name: `features.0` is the CNN's first convolution, `classifier.1` its first
Linear layer.
"""

from __future__ import annotations

import math
from collections import OrderedDict

from torch import nn


def mlp(in_shape: tuple[int, ...], n_out: int, depth: int = 1, width: int = 1024) -> nn.Sequential:
    """ReLU MLP: Linear layers `1, 3, ...` of `width`, then the output layer."""
    dims = [math.prod(in_shape)] + [width] * depth
    layers: list[nn.Module] = [nn.Flatten()]
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(dims[-1], n_out))


def cnn(in_shape: tuple[int, ...], n_out: int, channels: tuple[int, int] = (32, 64), hidden: int = 128) -> nn.Sequential:
    """Two 3x3 conv blocks (conv, 2x2 max-pool, ReLU), then two Linear layers."""
    c_in, h, w = in_shape
    c1, c2 = channels
    features = nn.Sequential(
        nn.Conv2d(c_in, c1, 3, padding=1), nn.MaxPool2d(2), nn.ReLU(), nn.Conv2d(c1, c2, 3, padding=1), nn.MaxPool2d(2), nn.ReLU()
    )
    classifier = nn.Sequential(nn.Flatten(), nn.Linear(c2 * (h // 4) * (w // 4), hidden), nn.ReLU(), nn.Linear(hidden, n_out))
    return nn.Sequential(OrderedDict(features=features, classifier=classifier))


def bn_mlp(in_shape: tuple[int, ...], n_out: int, width: int = 256) -> nn.Sequential:
    """An MLP with batch normalisation: its running statistics are buffers, so an ensemble of it
    steps its members in turn."""
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(in_shape), width), nn.BatchNorm1d(width), nn.ReLU(), nn.Linear(width, n_out))


def resnet18_gray(num_classes: int = 10) -> nn.Module:
    """torchvision's ResNet-18 for small grey images: one input channel, a 3x3 stride-1 stem, no max-pool."""
    from torchvision.models import resnet18

    net = resnet18(num_classes=num_classes)
    net.conv1 = nn.Conv2d(1, 64, 3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    return net
