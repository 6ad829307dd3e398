"""nin's own networks, as factories like a researcher's (conf/model/<name>.yaml names each:
`target: nin_cli.nets.shipped:<function>`). They get their NINs as any network does (nets/nin.py);
their layers' names (w0, w1; fc1.., out; conv1, conv2, fc1, out; conv1, layer1..layer4, fc) are
the metric columns of every run directory nin wrote. Written as Sequentials where they can be, so
the engine's accelerators recognise them by their structure (nets/structure.py)."""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from nin_cli.errors import ConfigError


def _images(name: str, in_shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(in_shape) != 3:
        raise ConfigError(f"model {name} needs image data; use model=mlp or model=linear for vector datasets")
    return tuple(in_shape)  # type: ignore[return-value]


def linear(in_shape: tuple[int, ...], n_out: int, width: int = 1) -> nn.Sequential:
    """f = w1 (w0 x + w_NI eps): the linear model of the phase paper (no biases, no activation)."""
    d_in = math.prod(in_shape)
    return nn.Sequential(OrderedDict(flatten=nn.Flatten(), w0=nn.Linear(d_in, width, bias=False), w1=nn.Linear(width, n_out, bias=False)))


def mlp(in_shape: tuple[int, ...], n_out: int, depth: int = 1, width: int = 1024, dropout: float = 0.0) -> nn.Sequential:
    """ReLU network: hidden layers fc1..fc<depth> of equal width, then `out` (a dropout after each
    hidden ReLU where dropout > 0)."""
    if depth < 1 or width < 1:
        raise ConfigError(f"model.depth and model.width must be >= 1, got {depth}, {width}")
    dims = [math.prod(in_shape)] + [width] * depth
    layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
    for i in range(depth):
        layers[f"fc{i + 1}"] = nn.Linear(dims[i], dims[i + 1])
        layers[f"relu{i + 1}"] = nn.ReLU()
        if dropout > 0:
            layers[f"dropout{i + 1}"] = nn.Dropout(dropout)
    layers["out"] = nn.Linear(width, n_out)
    return nn.Sequential(layers)


def cnn(in_shape: tuple[int, ...], n_out: int, channels=(32, 64), hidden: int = 128, dropout: float = 0.0) -> nn.Sequential:
    """conv1, conv2 (3x3, padding 1, 2x2 max-pool, ReLU), fc1 (ReLU), out. The ReLU after the
    max-pool, on a quarter of the values (max and ReLU commute: the same function, a quarter of
    the work); the first block is what the C kernel computes on the CPU."""
    c_in, h, w = _images("cnn", in_shape)
    c1, c2 = channels
    layers: OrderedDict[str, nn.Module] = OrderedDict(
        conv1=nn.Conv2d(c_in, c1, 3, padding=1),
        pool1=nn.MaxPool2d(2),
        relu1=nn.ReLU(),
        conv2=nn.Conv2d(c1, c2, 3, padding=1),
        pool2=nn.MaxPool2d(2),
        relu2=nn.ReLU(),
        flatten=nn.Flatten(),
        fc1=nn.Linear(c2 * (h // 4) * (w // 4), hidden),
        relu3=nn.ReLU(),
    )
    if dropout > 0:
        layers["dropout"] = nn.Dropout(dropout)
    layers["out"] = nn.Linear(hidden, n_out)
    return nn.Sequential(layers)


class SmallResNet18(nn.Module):
    """torchvision's ResNet-18 with a 3x3 stride-1 stem and no max-pool, for small images. Its NINs
    sit at the stem, at each stage (layer1..layer4: a stage's NIN joins its input or output as at a
    convolution) and at fc: `nin_sites`."""

    nin_sites = ("conv1", "layer1", "layer2", "layer3", "layer4", "fc")

    def __init__(self, in_shape: tuple[int, ...], n_out: int, dropout: float = 0.0):
        super().__init__()
        from torchvision.models import resnet18  # torchvision is imported by this network only

        net = resnet18(num_classes=n_out)
        self.conv1 = nn.Conv2d(_images("resnet18", in_shape)[0], 64, 3, stride=1, padding=1, bias=False)
        self.layer1, self.layer2, self.layer3, self.layer4, self.fc = net.layer1, net.layer2, net.layer3, net.layer4, net.fc
        self.bn1 = net.bn1
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            h = stage(h)
        h = F.dropout(torch.flatten(F.adaptive_avg_pool2d(h, 1), 1), self.dropout, self.training)
        return self.fc(h)


def resnet18(in_shape: tuple[int, ...], n_out: int, dropout: float = 0.0) -> SmallResNet18:
    return SmallResNet18(in_shape, n_out, dropout)
