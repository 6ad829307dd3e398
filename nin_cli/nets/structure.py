"""What a network's structure says, read from the module itself: the layers one forward pass
reaches, and which of the engine's accelerators compute it (the fused MLP step,
train/fused_mlp.py; the C first block, nets/conv_block.py). The same rule for nin's networks and a
researcher's identical one: nothing is declared by hand."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from nin_cli.errors import ConfigError

NIN_TYPES = (nn.Linear, nn.Conv2d)  # what the method defines a NIN's wiring for


def reached_layers(
    net: nn.Module, in_shape: tuple[int, ...], sites: tuple[str, ...] = ()
) -> tuple[list[str], dict[str, int], dict[str, int]]:
    """The modules that can carry a NIN (Linear and Conv2d, or the network's `sites`) in the order
    one forward pass reaches them, how often each runs, and the dimensions of each one's input.
    The pass is a dry one: eval mode, no gradients, two zero inputs."""
    order: list[str] = []
    calls: dict[str, int] = {}
    dims: dict[str, int] = {}
    handles = []
    for name, module in net.named_modules():
        if (name in sites) if sites else isinstance(module, NIN_TYPES):

            def seen(module, args, name=name):
                calls[name] = calls.get(name, 0) + 1
                dims.setdefault(name, args[0].dim())
                if name not in order:
                    order.append(name)

            handles.append(module.register_forward_pre_hook(seen))
    was_training = net.training
    device = next((p.device for p in net.parameters()), torch.device("cpu"))  # a live network (the probe's) may be on a GPU
    try:
        net.eval()
        with torch.no_grad():
            net(torch.zeros(2, *in_shape, device=device))
    except ConfigError:
        raise
    except Exception as exc:
        shape = "x".join(str(d) for d in in_shape)
        raise ConfigError(
            f"the model's forward pass fails on inputs of shape {shape}: {type(exc).__name__}: {str(exc).splitlines()[0]}"
        ) from None
    finally:
        for handle in handles:
            handle.remove()
        net.train(was_training)
    return order, calls, dims


def sequential_leaves(net: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]] | None:
    """The modules an exact nn.Sequential (nested ones opened) applies in turn, with their names in
    it; None for any other module, whose forward may do anything."""
    if type(net) is not nn.Sequential:
        return None
    leaves: list[tuple[str, nn.Module]] = []
    for key, child in net.named_children():
        name = f"{prefix}{key}"
        inner = sequential_leaves(child, f"{name}.") if type(child) is nn.Sequential else [(name, child)]
        if inner is None:
            return None
        leaves += inner
    return leaves


# Modules whose function is piecewise linear in their input (their second derivative zero almost
# everywhere); the dropout and batch-norm ones only in evaluation, where they are the identity and
# an affine map. Exact types: a subclass may compute anything.
PIECEWISE_LINEAR = (
    nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ReLU, nn.LeakyReLU, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d,
    nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.Flatten, nn.Unflatten, nn.Identity,
)  # fmt: skip
LINEAR_IN_EVALUATION = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.BatchNorm1d, nn.BatchNorm2d)


def piecewise_linear(net: nn.Module) -> bool:
    """Whether the network, as it is now (training or evaluation), is a Sequential of piecewise-linear
    modules: then its Hessian w.r.t. an inner activation is J^T H_loss J exactly (the network's own
    second derivative vanishes almost everywhere), which forward mode gives without a second
    backward pass (nets/hessian.py)."""
    leaves = sequential_leaves(net)
    return bool(leaves) and all(
        type(m) in PIECEWISE_LINEAR or (type(m) in LINEAR_IN_EVALUATION and not m.training and getattr(m, "track_running_stats", True))
        for _, m in leaves
    )


def plain_mlp(net: nn.Module, in_shape: tuple[int, ...]) -> bool:
    """Whether a network is the MLP the fused step computes (train/fused_mlp.py): a Sequential of
    a flattening of the input (or inputs already flat), then Linear layers with biases, a ReLU
    between each two."""
    named = sequential_leaves(net)
    if not named:
        return False
    leaves = [m for _, m in named]
    if isinstance(leaves[0], nn.Flatten):
        if (leaves[0].start_dim, leaves[0].end_dim) != (1, -1):
            return False
        leaves = leaves[1:]
    elif len(in_shape) != 1:
        return False
    linear = leaves[0::2]
    if not leaves or len(leaves) % 2 == 0 or not all(type(m) is nn.Linear and m.bias is not None for m in linear):
        return False
    return all(type(m) is nn.ReLU for m in leaves[1::2])


@dataclass(frozen=True)
class FirstBlock:
    """A Sequential's first block that the C kernel computes, relu(max_pool2x2(conv(x))): the
    convolution's name and module, and the modules that follow the block, applied in turn."""

    conv: str
    layer: nn.Conv2d
    rest: tuple[nn.Module, ...]


def first_block(net: nn.Module, in_shape: tuple[int, ...]) -> FirstBlock | None:
    """The network's first block where the C kernel can compute it: a Sequential on images that
    begins Conv2d, MaxPool2d(2) (stride 2, no padding), ReLU, in this order (max and ReLU commute:
    pooling first is the same function at a quarter of the work). Whether the kernel applies to
    the convolution itself (3x3, an image's few channels) is conv_block.applies's, at each call."""
    named = sequential_leaves(net)
    if not named or len(named) < 3 or len(in_shape) != 3:
        return None
    (name, conv), (_, pool), (_, relu) = named[:3]
    if type(conv) is not nn.Conv2d or type(pool) is not nn.MaxPool2d or type(relu) is not nn.ReLU:
        return None
    pooled = (pool.kernel_size, pool.stride or pool.kernel_size, pool.padding, pool.dilation)
    if pooled not in ((2, 2, 0, 1), ((2, 2), (2, 2), (0, 0), (1, 1))) or pool.ceil_mode or pool.return_indices:
        return None
    return FirstBlock(name, conv, tuple(m for _, m in named[3:]))
