"""Networks with Noise Injection Nodes.

Every model is a chain of named layers. A NIN at a fully connected layer l adds W_NI * eps to its
pre-activation z(l). A NIN at a convolution joins the convolution's *input*, x(l) + W_NI * eps
with one weight per channel and pixel of x(l), and the noise then passes through the kernels
(cNINR, the NINR paper's Fig. 4; `nin.conv=input`); `nin.conv=output` keeps the older placement
on the convolution's output pre-activation. eps comes in as an argument (one scalar per sample,
None in evaluation), so the forward pass is a pure function of (parameters, x, eps) that
torch.func can batch. `probes` adds a tensor where the noise enters: the Hessian estimator
differentiates through it (H_z is the Hessian at the NIN's injection point).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from nin_cli.errors import ConfigError
from nin_cli.nets import conv_block

# nin.init, the NIW's scale: layer: N(0, 1/fan_in of the layer it joins) (the papers') | input: N(0, 1/size
# of that layer's input, flattened: 784 at an image) | unit: N(0, 1) | a number: that std
NIW_INITS = ("layer", "input", "unit")
CONV_PLACEMENTS = ("input", "output")  # where a NIN joins a convolution (nin.conv)
Tensors = dict[str, torch.Tensor]


@dataclass(frozen=True)
class ModelKind:
    """A model type and what the training steps can do with it (train/steps.py reads these)."""

    build: Callable[..., NINModel] | None = None  # (model_cfg, in_shape, n_out) -> the model, weights not yet drawn
    fused: bool = False  # the hand-written MLP step covers it (without dropout)
    stackable: bool = True  # vmap can stack its members: parameters only, no buffers (batch-norm statistics)
    conv: bool = False  # convolutions: on the CPU a vmapped conv is slower than stepping members in turn
    images: bool = False  # needs (C, H, W) inputs


MODELS: dict[str, ModelKind] = {}


def register_model(*names: str, **capabilities):
    """Decorate a builder `(model_cfg, in_shape, n_out) -> NINModel` to make `model.name=<name>` build it.
    A new model type is this builder (with its class) and a conf/model/<name>.yaml."""

    def register(build):
        for name in names:
            MODELS[name] = ModelKind(build, **capabilities)
        return build

    return register


class NINDict(nn.ModuleDict):
    """The NINs by the name of the layer each joins. A layer of a researcher's network may be named
    with dots (`features.0`), which a module's key may not hold: stored with ':' in their place."""

    @staticmethod
    def key(name: str) -> str:
        return name.replace(".", ":")

    def __getitem__(self, name: str) -> nn.Module:
        return super().__getitem__(self.key(name))

    def __setitem__(self, name: str, module: nn.Module) -> None:
        super().__setitem__(self.key(name), module)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and super().__contains__(self.key(name))

    def keys(self) -> list[str]:  # type: ignore[override]
        return [k.replace(":", ".") for k in super().keys()]

    def __iter__(self):
        return iter(self.keys())

    def items(self):  # type: ignore[override]
        return [(k.replace(":", "."), m) for k, m in super().items()]


class NoiseInjection(nn.Module):
    """W_NI: one trainable weight per unit of the layer's output (per pixel and channel for convs)."""

    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(shape))

    def forward(self, z: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        return z + self.weight * eps.reshape(-1, *([1] * self.weight.ndim))


class NoiseAdd(torch.autograd.Function):
    """z + eps W_NI (eps: one number a sample), added into z where z is contiguous (a layer's fresh
    output, which no backward reads), its backward the NIW's gradient as one matrix-vector product
    eps^T dL/dz and z's passed through: what NoiseInjection computes, with no (batch x units)
    temporary either way. The probe's (NINModel.live); nin's own runs keep NoiseInjection's
    arithmetic, which their records hold."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, eps: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(eps)
        ctx.shape = weight.shape
        if z.is_contiguous():
            z.view(len(z), -1).addmm_(eps[:, None], weight.reshape(1, -1))
            ctx.mark_dirty(z)
            return z
        return torch.addmm(z.reshape(len(z), -1), eps[:, None], weight.reshape(1, -1)).view(z.shape)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (eps,) = ctx.saved_tensors
        return grad, None, (eps @ grad.reshape(len(grad), -1)).view(ctx.shape)


class ConvInputNoise(torch.autograd.Function):
    """The NIW's gradient for noise added at a convolution's input (conv(h + W_NI eps), the
    noise put into h by the caller without a path back to W_NI): identity on the convolution's
    output, and in the backward eps^T dL/dz crossing the convolution back as one image. The
    convolution computes its own weights' gradient from the noisy input, and no gradient of the
    whole batch's input is needed for the NIW. The probe's (NINModel.live), where one pass over
    the layer's input replaces two over its output (NoiseAdd's); nin's own runs keep theirs."""

    @staticmethod
    def forward(ctx, out: torch.Tensor, eps: torch.Tensor, niw: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
        ctx.save_for_backward(eps, conv.weight)
        ctx.shape, ctx.settings = niw.shape, (conv.stride, conv.padding, conv.dilation, conv.groups)
        ctx.mark_dirty(out)  # returned as itself, not a view: a ReLU(inplace=True) may follow
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        eps, weight = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.settings
        summed = (eps @ grad.reshape(len(grad), -1)).view(1, *grad.shape[1:])
        image = summed.new_empty((1, *ctx.shape))
        (niw_grad, _, _) = torch.ops.aten.convolution_backward(
            summed, image, weight, None, list(stride), list(padding), list(dilation), False, [0, 0], groups, [True, False, False]
        )
        return grad, None, niw_grad[0], None

    @staticmethod
    def fits(conv: nn.Module) -> bool:
        """A plain zero-padded Conv2d with numeric padding: what the backward's convolution reproduces."""
        return type(conv).forward is nn.Conv2d.forward and not isinstance(conv.padding, str) and conv.padding_mode == "zeros"


class NINModel(nn.Module):
    """A chain of named layers (`self.layers`, in order) with optional NINs on any of them."""

    conv_layers: tuple[str, ...] = ()  # the layers that are convolutions (or stages of them)
    channels_last = False  # conv weights in NHWC order once initialised (build_model)
    # A researcher's live network (the probe's, nin_cli/probe): its convolutions' outputs stay in the
    # network's own layout, and its NINs add their noise by noise_add, a pass each way
    live = False
    layer_prefix = "layers."  # where a layer's parameters sit in this module's state dict
    kind = ModelKind()  # what the training steps can do with it (set by build_model)
    fused_block = "auto"  # the config's fused_block: whether block() may run conv_block's kernel

    def __init__(self):
        super().__init__()
        self.nins = NINDict()
        self._shapes: dict[str, tuple[int, ...]] | None = None
        self.input_side: frozenset[str] = frozenset()  # layers whose NIN joins their input (convs under nin.conv=input)

    @property
    def layer_names(self) -> list[str]:
        return list(self.layers.keys())

    def layer(self, name: str) -> nn.Module:
        return self.layers[name]

    def weight_names(self, name: str) -> list[str]:
        """The parameter names of layer `name`'s weight tensors (its norm is their joint norm)."""
        return [f"{self.layer_prefix}{name}.{p}" for p, _ in self.layer(name).named_parameters() if p.endswith("weight")]

    @staticmethod
    def niw_name(name: str) -> str:
        """The parameter name of the NIW at layer `name`."""
        return f"nins.{NINDict.key(name)}.weight"

    def affine_names(self, name: str) -> tuple[str, str, str]:
        """The parameter names of a Linear layer's weight and bias and of its NIW (the fused step's)."""
        return f"{self.layer_prefix}{name}.weight", f"{self.layer_prefix}{name}.bias", self.niw_name(name)

    def forward_layer(self, name: str, h: torch.Tensor, eps: Tensors | None, probes: Tensors | None) -> torch.Tensor:
        """Layer `name` on its input `h`, its NIN (and Hessian probe) injected where it joins:
        into the input of a convolution under nin.conv=input, else into the pre-activation."""
        layer = self.layer(name)
        if name not in self.input_side:
            return self.inject(name, layer(h), eps, probes)
        if self.plain(name, probes) and self.noisy(name, eps):
            return self.noise_through(name, layer(h), eps[name])
        return layer(self.inject(name, h, eps, probes))

    def noise_through(self, name: str, out: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """conv(h + W_NI eps) from out = conv(h): conv(h) + eps conv(W_NI) without the bias. The same
        function, but the noise crosses the convolution as one image, so the NIW's gradient needs no
        input gradient of the whole batch (at the image, none is needed otherwise); in NHWC, the
        layout of the channels-last output, the NIW's gradient is one matrix-vector product."""
        if self.live and out.is_contiguous():  # a live network in its own NCHW layout (the probe's): left in it
            return NoiseAdd.apply(out, eps, self.output_noise(name))
        nhwc = out.permute(0, 2, 3, 1)
        noise = self.output_noise(name).permute(1, 2, 0).reshape(1, -1)
        flat = torch.addmm(nhwc.reshape(len(out), -1), eps[:, None], noise)
        return flat.view(nhwc.shape).permute(0, 3, 1, 2)

    def plain(self, name: str, probes: Tensors | None) -> bool:
        """Layer `name` computed as a function of (parameters, input, eps) only: no shapes being
        recorded, no Hessian probe injected there."""
        return isinstance(self.layer(name), nn.Conv2d) and self._shapes is None and not (probes and name in probes)

    def noisy(self, name: str, eps: Tensors | None) -> bool:
        return eps is not None and name in eps and name in self.nins

    def output_noise(self, name: str) -> torch.Tensor:
        """What the NIN of convolution `name` adds to its output per unit of eps, (C_out, H, W):
        conv(W_NI) without the bias where it joins the input, W_NI where it joins the output."""
        weight = self.nins[name].weight
        if name not in self.input_side:
            return weight
        layer = self.layer(name)
        return layer._conv_forward(weight[None], layer.weight, None)[0]

    def inject(self, name: str, z: torch.Tensor, eps: Tensors | None, probes: Tensors | None) -> torch.Tensor:
        if self._shapes is not None:
            self._shapes[name] = tuple(z.shape[1:])
        if eps is not None and name in eps and name in self.nins:
            z = NoiseAdd.apply(z, eps[name], self.nins[name].weight) if self.live else self.nins[name](z, eps[name])
        if probes is not None and name in probes:
            z = z + probes[name]
        return z

    def preactivation_shapes(self, in_shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
        """Shape (without batch) of where each layer's NIN joins (its pre-activation, or a
        convolution's input under nin.conv=input), from one dry forward pass."""
        self._shapes = {}
        was_training = self.training
        try:
            self.eval()
            with torch.no_grad():
                device = next(self.parameters()).device
                self(torch.zeros(2, *in_shape, device=device))
            return dict(self._shapes)
        finally:
            self._shapes = None
            self.train(was_training)

    def attach_nins(
        self, names: list[str], in_shape: tuple[int, ...], gen: torch.Generator, init: str = "layer", conv: str = "input"
    ) -> None:
        """Add a NIN at each named layer. init=layer: NIW ~ N(0, 1/fan_in) with the fan-in of the
        layer it joins, as if the NIN were one more input node of it (the papers' convention, which
        their sigma units assume; for a convolution C_in*k*k, the layer the noise feeds under either
        placement); init=unit: N(0, 1), the NIN's own fan-in of 1. `conv` places the NINs of
        convolutional layers on their input (cNINR) or on their output."""
        if not (init in NIW_INITS or (isinstance(init, (int, float)) and not isinstance(init, bool) and init > 0)):
            raise ConfigError(f"nin.init must be one of {', '.join(NIW_INITS)} or a number > 0 (the NIW's std), got {init!r}")
        if conv not in CONV_PLACEMENTS:
            raise ConfigError(f"nin.conv must be one of {', '.join(CONV_PLACEMENTS)}, got {conv!r}")
        self.input_side = frozenset(n for n in names if n in self.conv_layers) if conv == "input" else frozenset()
        self.wire(names)
        sizes = self.input_sizes(names, in_shape) if init == "input" else {}
        shapes = self.preactivation_shapes(in_shape)
        for name in names:
            nin = NoiseInjection(shapes[name])
            std = self.niw_std(name, init, sizes)
            with torch.no_grad():
                nin.weight.normal_(0.0, std, generator=gen)
            self.nins[name] = nin

    def niw_std(self, name: str, init: str | float, sizes: dict[str, int]) -> float:
        """The std of the NIW at layer `name` under nin.init (NIW_INITS, or a number: the std)."""
        if init == "layer":
            return self.layer_fan_in(name) ** -0.5
        if init == "input":
            return sizes[name] ** -0.5
        return 1.0 if init == "unit" else float(init)

    def input_sizes(self, names: list[str], in_shape: tuple[int, ...]) -> dict[str, int]:
        """Each named layer's input, flattened: its size per sample (a Linear's in_features; C*H*W
        of what a convolution reads), from one dry forward pass."""
        sizes: dict[str, int] = {}

        def record(name: str):
            def pre_hook(module, args) -> None:
                sizes.setdefault(name, args[0][0].numel())

            return pre_hook

        hooks = [self.layer(n).register_forward_pre_hook(record(n)) for n in names]
        try:
            self.preactivation_shapes(in_shape)
        finally:
            for hook in hooks:
                hook.remove()
        return sizes

    def wire(self, names: list[str]) -> None:
        """Connect the NINs at `names` to the forward pass: the shipped models call forward_layer
        themselves; a researcher's network is wired by hooks (user_model.py)."""

    def layer_fan_in(self, name: str) -> int:
        """Inputs per output unit of a layer: in_features, or C_in*k*k for a conv (a ResNet stage: its first conv)."""
        return fan_in(next(p for n, p in self.layer(name).named_parameters() if n.endswith("weight") and p.ndim >= 2))

    def next_layer(self, name: str) -> str | None:
        names = self.layer_names
        i = names.index(name)
        return names[i + 1] if i + 1 < len(names) else None

    def fed_layer(self, name: str) -> str | None:
        """The layer whose weights the NIN's noise passes through first: the convolution itself
        where the NIN joins its input, else the next layer (None after the last)."""
        return name if name in self.input_side else self.next_layer(name)


def fan_in(weight: torch.Tensor) -> int:
    """Inputs feeding one output unit of a linear or conv weight: in_features, or C_in*k*k."""
    return weight[0].numel()


def init_weights(model: nn.Module, gen: torch.Generator) -> None:
    """Weights N(0, 1/fan_in), biases 0, for every linear and conv layer."""
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            with torch.no_grad():
                module.weight.normal_(0.0, 1.0 / math.sqrt(fan_in(module.weight)), generator=gen)
                if module.bias is not None:
                    module.bias.zero_()


class LinearToy(NINModel):
    """f = w1 (w0 x + w_NI eps): the linear model of the phase paper (no biases, no activation)."""

    def __init__(self, in_shape: tuple[int, ...], n_out: int, width: int = 1):
        super().__init__()
        d_in = math.prod(in_shape)
        self.layers = nn.ModuleDict({"w0": nn.Linear(d_in, width, bias=False), "w1": nn.Linear(width, n_out, bias=False)})

    def forward(self, x, eps=None, probes=None):
        return self.forward_layer("w1", self.forward_layer("w0", x.flatten(1), eps, probes), eps, probes)


class MLP(NINModel):
    """ReLU network: hidden layers fc1..fc<depth> of equal width, then `out`."""

    def __init__(self, in_shape: tuple[int, ...], n_out: int, depth: int = 1, width: int = 1024, dropout: float = 0.0):
        super().__init__()
        dims = [math.prod(in_shape)] + [width] * depth + [n_out]
        names = [f"fc{i + 1}" for i in range(depth)] + ["out"]
        self.layers = nn.ModuleDict({n: nn.Linear(a, b) for n, a, b in zip(names, dims[:-1], dims[1:])})
        self.dropout = dropout

    def forward(self, x, eps=None, probes=None):
        h = x.flatten(1)
        *hidden, last = self.layer_names
        for name in hidden:
            h = F.dropout(F.relu(self.forward_layer(name, h, eps, probes)), self.dropout, self.training)
        return self.forward_layer(last, h, eps, probes)


class CNN(NINModel):
    """conv1, conv2 (3x3, padding 1, ReLU, 2x2 max-pool), fc1, out. NINs on convs are pixel-wise.

    Built for speed on the CPU as on a GPU: conv weights in channels-last order (oneDNN's and
    cuDNN's fast convolutions read and write NHWC), and the ReLU after the max-pool, on a quarter
    of the values (max and ReLU commute: the same function, a quarter of the work)."""

    conv_layers = ("conv1", "conv2")
    channels_last = True

    def __init__(self, in_shape, n_out, channels=(32, 64), hidden=128, dropout=0.0):
        super().__init__()
        c_in, h, w = in_shape
        c1, c2 = channels
        flat = c2 * (h // 4) * (w // 4)
        self.layers = nn.ModuleDict(
            {
                "conv1": nn.Conv2d(c_in, c1, 3, padding=1),
                "conv2": nn.Conv2d(c1, c2, 3, padding=1),
                "fc1": nn.Linear(flat, hidden),
                "out": nn.Linear(hidden, n_out),
            }
        )
        self.dropout = dropout

    def forward(self, x, eps=None, probes=None):
        h = x
        for name in self.conv_layers:
            h = self.block(name, h, eps, probes)
        h = F.dropout(F.relu(self.forward_layer("fc1", h.flatten(1), eps, probes)), self.dropout, self.training)
        return self.forward_layer("out", h, eps, probes)

    def block(self, name: str, h: torch.Tensor, eps: Tensors | None, probes: Tensors | None) -> torch.Tensor:
        """relu(max_pool2d(conv + NIN)), through the fused CPU kernel where it applies (the
        first block: the image, whose gradient is not wanted)."""
        layer = self.layers[name]
        if self.fused_block != "off" and self.plain(name, probes) and conv_block.applies(layer, h):
            noisy = self.noisy(name, eps)
            return conv_block.conv_block(layer, h, self.output_noise(name) if noisy else None, eps[name] if noisy else None)
        return F.relu(F.max_pool2d(self.forward_layer(name, h, eps, probes), 2))


class ResNet18(NINModel):
    """torchvision's ResNet-18 with a 3x3 stride-1 stem and no max-pool, for small images. A NIN
    at a stage (layer1..layer4) joins the stage's input or output as at a convolution."""

    conv_layers = ("conv1", "layer1", "layer2", "layer3", "layer4")

    def __init__(self, in_shape, n_out, dropout=0.0):
        super().__init__()
        from torchvision.models import resnet18

        net = resnet18(num_classes=n_out)
        net.conv1 = nn.Conv2d(in_shape[0], 64, 3, stride=1, padding=1, bias=False)
        self.layers = nn.ModuleDict(
            {"conv1": net.conv1, "layer1": net.layer1, "layer2": net.layer2, "layer3": net.layer3, "layer4": net.layer4, "fc": net.fc}
        )
        self.bn1 = net.bn1
        self.dropout = dropout

    def forward(self, x, eps=None, probes=None):
        h = F.relu(self.bn1(self.forward_layer("conv1", x, eps, probes)))
        for name in ("layer1", "layer2", "layer3", "layer4"):
            h = self.forward_layer(name, h, eps, probes)
        h = F.dropout(torch.flatten(F.adaptive_avg_pool2d(h, 1), 1), self.dropout, self.training)
        return self.forward_layer("fc", h, eps, probes)


def resolve_nin_layers(nin_cfg, layer_names: list[str], model_name: str) -> list[str]:
    """Turn a placement preset (none, input, all) or an explicit list into layer names (in the
    order the forward pass reaches them: a shipped model's chain, a researcher's traced network)."""
    preset = nin_cfg.preset
    listed = [str(name) for name in nin_cfg.get("layers") or []]
    if listed and preset != "layers":
        raise ConfigError(
            f"nin={preset} places the NINs itself, and nin.layers names layers ({', '.join(listed)}; from the command or an "
            f"experiment): add nin.layers=[] for nin={preset}, or use nin=layers to place them at the named ones"
        )
    if preset == "none":
        return []
    if preset == "input":
        return layer_names[:1]
    if preset == "all":
        return list(layer_names)
    if preset != "layers":
        raise ConfigError(f"unknown nin preset {preset!r}; choose from none, input, all, layers")
    for name in listed:
        if name not in layer_names:
            close = difflib.get_close_matches(name, layer_names, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise ConfigError(
                f"NIN on layer {name!r}, which model {model_name} does not have; its layers are: {', '.join(layer_names)}{hint}"
            )
    if len(set(listed)) != len(listed):
        raise ConfigError(f"nin.layers lists a layer twice: {listed}")
    return listed


@register_model("linear")
def _linear(cfg, in_shape, n_out) -> NINModel:
    return LinearToy(in_shape, n_out, width=cfg.width)


@register_model("mlp", "fc", fused=True)  # fc: the NINR study's MLP, its own name in tables
def _mlp(cfg, in_shape, n_out) -> NINModel:
    if cfg.depth < 1 or cfg.width < 1:
        raise ConfigError(f"model.depth and model.width must be >= 1, got {cfg.depth}, {cfg.width}")
    return MLP(in_shape, n_out, depth=cfg.depth, width=cfg.width, dropout=cfg.dropout)


@register_model("cnn", conv=True, images=True)
def _cnn(cfg, in_shape, n_out) -> NINModel:
    return CNN(in_shape, n_out, channels=tuple(cfg.channels), hidden=cfg.hidden, dropout=cfg.dropout)


@register_model("resnet18", conv=True, images=True, stackable=False)
def _resnet18(cfg, in_shape, n_out) -> NINModel:
    return ResNet18(in_shape, n_out, dropout=cfg.dropout)


MODEL_INITS = ("fan_in", "factory")  # model.init: the papers' N(0, 1/fan_in) | the builder's own


def model_kind(name: str) -> ModelKind:
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; choose from {', '.join(MODELS)}, or name a factory (model.target=pkg.module:function)")
    return MODELS[name]
