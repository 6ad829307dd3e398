"""The NIN mechanism, one for every network: nin's own (nets/shipped.py) and a researcher's alike.

A network is any `nn.Module` (a factory's); `NINModel` wraps it, untouched, and wires NINs into it
by forward hooks at modules named by their path in it. The wiring is the method's: at a Linear,
W_NI of its output width on its output (the pre-activation z(l) + W_NI eps); at a Conv2d, W_NI of
its input's shape on its input, x(l) + W_NI eps with one weight per channel and pixel, the noise
then passing through the kernels (cNINR, the NINR paper's Fig. 4; `nin.conv=output`: on its
output). A network may name other modules that carry a NIN (`nin_sites`, the ResNet's stages):
their NIN joins their input as a convolution's does. eps comes in as an argument (one scalar per
sample, None in evaluation), so the forward pass is a pure function of (parameters, x, eps) that
torch.func can batch; `probes` adds a tensor where the noise enters, which the Hessian estimator
differentiates through (H_z is the Hessian at the NIN's injection point).

What the engine may accelerate is read from the network's structure (nets/structure.py): the
fused MLP step for a Sequential of Linear and ReLU layers, the C first block (nets/conv_block.py)
for a Sequential that begins conv 3x3, 2x2 max-pool, ReLU on an image.
"""

from __future__ import annotations

import difflib
import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from nin_cli.errors import ConfigError
from nin_cli.nets import conv_block
from nin_cli.nets.structure import FirstBlock, first_block, plain_mlp, reached_layers

# nin.init, the NIW's scale: layer: N(0, 1/fan_in of the layer it joins) (the papers') | input: N(0, 1/size
# of that layer's input, flattened: 784 at an image) | unit: N(0, 1) | a number: that std
NIW_INITS = ("layer", "input", "unit")
CONV_PLACEMENTS = ("input", "output")  # where a NIN joins a convolution (nin.conv)
MODEL_INITS = ("fan_in", "factory")  # model.init: the papers' N(0, 1/fan_in) | the factory's own
Tensors = dict[str, torch.Tensor]


@dataclass(frozen=True)
class ModelKind:
    """What the training steps can do with a network (train/steps.py reads these), derived from it."""

    fused: bool = False  # the hand-written MLP step covers it (a Sequential of Linear and ReLU: structure.plain_mlp)
    stackable: bool = True  # vmap can stack its members: parameters only, no buffers (batch-norm statistics)
    conv: bool = False  # convolutions: on the CPU a vmapped conv is slower than stepping members in turn
    dropout: bool = False  # draws inside its forward pass (a Dropout module): each member's own masks, stepped in turn


class NINDict(nn.ModuleDict):
    """The NINs by the name of the layer each joins. A layer may be named with dots
    (`features.0`), which a module's key may not hold: stored with ':' in their place."""

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


def batch_rows(t: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """t (batch first) as a (batch, rest) matrix without a copy where its layout allows: a
    channels-last image batch read in its own (N, H, W, C) order (True beside it), so that a
    network laid out NHWC, as oneDNN and cuDNN run convolutions fastest, keeps its layout."""
    nhwc = t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)
    return (t.permute(0, 2, 3, 1) if nhwc else t).reshape(len(t), -1), nhwc


def unit_order(t: torch.Tensor, nhwc: bool) -> torch.Tensor:
    """A (C, H, W) tensor in the order of batch_rows' columns: (H, W, C) where they are NHWC."""
    return t.permute(1, 2, 0) if nhwc else t


def from_unit_order(flat: torch.Tensor, shape: torch.Size, nhwc: bool) -> torch.Tensor:
    """A vector in batch_rows' column order as a (C, H, W) = `shape` tensor (unit_order undone)."""
    if not nhwc:
        return flat.view(shape)
    c, h, w = shape
    return flat.view(h, w, c).permute(2, 0, 1)


class NoiseAdd(torch.autograd.Function):
    """z + eps W_NI (eps: one number a sample), added into z where z is contiguous in its layout
    (a layer's fresh output, which no backward reads; NCHW or channels-last), its backward the NIW's
    gradient as one matrix-vector product eps^T dL/dz and z's passed through: what NoiseInjection
    computes, with no (batch x units) temporary either way. The probe's (NINModel.live); nin's own
    runs keep NoiseInjection's arithmetic, which their records hold."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, eps: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(eps)
        ctx.shape = weight.shape
        rows, nhwc = batch_rows(z)
        noise = unit_order(weight, nhwc).reshape(1, -1)
        if z.is_contiguous() or nhwc:  # rows is a view of z: the noise goes into it
            rows.addmm_(eps[:, None], noise)
            ctx.mark_dirty(z)
            return z
        return torch.addmm(rows, eps[:, None], noise).view(z.shape)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (eps,) = ctx.saved_tensors
        rows, nhwc = batch_rows(grad)
        return grad, None, from_unit_order(eps @ rows, ctx.shape, nhwc).contiguous()


def add_noise(z: torch.Tensor, eps: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The probe's z + eps W_NI. A (batch, units) matrix of its own (a Linear's fresh output) takes
    it in place by torch's addmm_, whose derivative is NoiseAdd's (z's gradient passed through, the
    NIW's one product eps^T dL/dz), the same numbers, from autograd's C++ rather than a Python
    Function: 0.16 ms a step less on the Fig. 3 MLP (batch 1000, one CPU thread). Images go through
    NoiseAdd, which reads them in their layout as a matrix: an in-place change of such a view of z
    would copy z's whole gradient in the backward. The noise is added in z's dtype (bfloat16 or
    float16 in an autocast region, or in a network cast to it), the NIW's gradient returned in its own."""
    if eps.dtype != z.dtype or weight.dtype != z.dtype:
        eps, weight = eps.to(z.dtype), weight.to(z.dtype)  # the cast's backward returns the NIW's gradient in its dtype
    if z.dim() == 2 and z.is_contiguous() and z._base is None:
        return z.addmm_(eps[:, None], weight[None])
    return NoiseAdd.apply(z, eps, weight)


def image_through(summed: torch.Tensor, shape: torch.Size, nhwc: bool, weight: torch.Tensor, image: torch.Size, settings: tuple):
    """One image's gradient crossing a convolution back: the `image`-shaped (C_in, H, W) input
    gradient of the output gradient `summed` (of `shape`, a vector in batch_rows' column order).
    Channels-last and ungrouped, as the kernel's matrix times the gradient's (C_out, H_out W_out)
    and the columns summed into the image (F.fold, col2im): under half the time of aten's
    convolution_backward, which for one channels-last image on the CPU takes a slow general path
    (`bench/probe_overhead.py --crossing`); else by aten's, the faster in NCHW."""
    kernel, stride, padding, dilation, groups = settings
    out = from_unit_order(summed, shape, nhwc)  # (C_out, H_out, W_out), a view in either order
    if groups == 1 and nhwc:
        columns = torch.mm(weight.reshape(shape[0], -1).t(), out.reshape(shape[0], -1))  # (C_in k k, H_out W_out), no copy of out
        return F.fold(columns[None], image[1:], kernel, dilation, padding, stride)[0]
    return image_by_aten(out, weight, image, settings)


def image_by_aten(out: torch.Tensor, weight: torch.Tensor, image: torch.Size, settings: tuple) -> torch.Tensor:
    """The same crossing by aten's convolution_backward, for the (C_out, H_out, W_out) output
    gradient `out` in its layout: image_through's way in NCHW and for grouped kernels."""
    _, stride, padding, dilation, groups = settings
    (grad, _, _) = torch.ops.aten.convolution_backward(
        out[None], out.new_empty((1, *image)), weight, None, list(stride), list(padding), list(dilation), False, [0, 0], groups,
        [True, False, False],
    )  # fmt: skip
    return grad[0]


def crossing_settings(conv: nn.Conv2d) -> tuple:
    """What image_through reads of a convolution, in its order: kernel, stride, padding, dilation, groups."""
    return conv.kernel_size, conv.stride, conv.padding, conv.dilation, conv.groups


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
        ctx.shape, ctx.settings = niw.shape, crossing_settings(conv)
        ctx.mark_dirty(out)  # returned as itself, not a view: a ReLU(inplace=True) may follow
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        eps, weight = ctx.saved_tensors
        rows, nhwc = batch_rows(grad)  # a channels-last gradient summed in its own layout, not copied
        # in the gradient's dtype (a half-precision one under autocast), crossing back in the kernel's
        summed = (eps.to(rows.dtype) @ rows).to(weight.dtype)
        return grad, None, image_through(summed, grad.shape[1:], nhwc, weight, ctx.shape, ctx.settings), None

    @staticmethod
    def fits(conv: nn.Module) -> bool:
        """A plain zero-padded Conv2d with numeric padding: what the backward's convolution reproduces."""
        return type(conv).forward is nn.Conv2d.forward and not isinstance(conv.padding, str) and conv.padding_mode == "zeros"


def fan_in(weight: torch.Tensor) -> int:
    """Inputs feeding one output unit of a linear or conv weight: in_features, or C_in*k*k."""
    return weight[0].numel()


def init_weights(model: nn.Module, gen: torch.Generator) -> None:
    """Weights N(0, 1/fan_in), biases 0, for every linear and conv layer (in the order of model.modules())."""
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            with torch.no_grad():
                module.weight.normal_(0.0, 1.0 / math.sqrt(fan_in(module.weight)), generator=gen)
                if module.bias is not None:
                    module.bias.zero_()


class NINModel(nn.Module):
    """A network (`self.net`, untouched) with NINs wired in by hooks at its layers, by name.

    Its layers are the modules that can carry a NIN (the Linear and Conv2d modules, or the
    network's `nin_sites`) in the order one forward pass reaches them: `nin=input` is the first,
    `nin=all` every one, and the layer a NIN "feeds" (its weight_norm_ column) is the next one."""

    layer_prefix = "net."  # where a layer's parameters sit in this module's state dict

    def __init__(self, net: nn.Module, in_shape: tuple[int, ...], model_name: str):
        super().__init__()
        self.nins = NINDict()  # registered first: the parameters' order (nins, then the network's) is the optimizer state's
        self.net = net
        self.model_name = model_name
        self.modules_by_name = dict(net.named_modules())
        self.sites = tuple(str(s) for s in getattr(net, "nin_sites", ()))  # a network's own choice of NIN layers
        order, self.calls, dims = reached_layers(net, in_shape, self.sites)
        self._layers = {name: self.modules_by_name[name] for name in order}
        # layers that read images: their NIN joins the input under nin.conv=input (a Conv2d, or a site such as a ResNet stage)
        self.conv_layers = tuple(n for n in order if isinstance(self._layers[n], nn.Conv2d) or (n in self.sites and dims[n] == 4))
        self.channels_last = bool(self.conv_layers)  # conv weights NHWC (oneDNN's and cuDNN's fast layout), once drawn
        # A researcher's live network (the probe's, nin_cli/probe): its convolutions' outputs stay in the
        # network's own layout, and its NINs add their noise by add_noise, a pass each way
        self.live = False
        self.fused_block = "auto"  # the config's fused_block: whether the first block may run conv_block's kernel
        self.first_block: FirstBlock | None = first_block(net, in_shape)
        self.kind = ModelKind(
            fused=plain_mlp(net, in_shape),
            stackable=not any(True for _ in net.buffers()),
            conv=bool(self.conv_layers),
            dropout=any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 for m in net.modules()),
        )
        self.input_side: frozenset[str] = frozenset()  # layers whose NIN joins their input (convs under nin.conv=input)
        self._shapes: dict[str, tuple[int, ...]] | None = None
        self._eps: Tensors | None = None
        self._probes: Tensors | None = None
        self._done: set[str] = set()
        self._at_input: set[str] = set()  # a live network's convolutions whose noise joined their input this pass
        self._inside = False  # in forward(), which hands the pass its eps; else the network is called directly
        self._drawn: dict[str, Tensors | None] = {}  # a direct call's eps, from the pre-hook to the hook of its layer
        self._handles: list = []
        # (layer, batch size) -> that layer's eps for a direct call of the network while it trains:
        # the researcher's own loop calls the network, not this wrapper (nin_cli/probe)
        self.live_noise = None

    # -- layers -------------------------------------------------------------------------------

    @property
    def layer_names(self) -> list[str]:
        return list(self._layers)

    def layer(self, name: str) -> nn.Module:
        return self._layers[name]

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

    def check_layers(self, names: list[str]) -> None:
        """Each named module exists, can carry a NIN, and runs once in the forward pass."""
        for name in names:
            module = self.modules_by_name.get(name)
            if module is None:
                close = difflib.get_close_matches(name, self.layer_names, n=1, cutoff=0.6)
                raise ConfigError(
                    f"NIN on layer {name!r}, which model {self.model_name} does not have; its layers are: {', '.join(self.layer_names)}"
                    + (f"; did you mean {close[0]}?" if close else "")
                )
            if name not in self.sites and not isinstance(module, (nn.Linear, nn.Conv2d)):
                raise ConfigError(
                    f"NIN on module {name!r} of model {self.model_name}, a {type(module).__name__}: a NIN joins a Linear or a Conv2d"
                )
            if name not in self._layers:
                raise ConfigError(f"NIN on module {name!r} of model {self.model_name}, which its forward pass never reaches")
            if self.calls.get(name, 0) > 1:
                raise ConfigError(
                    f"NIN on module {name!r} of model {self.model_name}, which runs {self.calls[name]} times in one forward pass: "
                    "a NIN joins a layer that runs once"
                )

    # -- the forward pass ---------------------------------------------------------------------

    def forward(self, x: torch.Tensor, eps: Tensors | None = None, probes: Tensors | None = None) -> torch.Tensor:
        self._eps, self._probes, self._done, self._inside = eps, probes, set(), True
        try:
            block = self.first_block
            if block is not None and self.fused_block != "off" and self.plain(block.conv, probes) and conv_block.applies(block.layer, x):
                noisy = self.noisy(block.conv, eps)
                h = conv_block.conv_block(
                    block.layer, x, self.output_noise(block.conv) if noisy else None, eps[block.conv] if noisy else None
                )
                for module in block.rest:
                    h = module(h)
                return h
            return self.net(x)
        finally:
            self._eps, self._probes, self._inside, self._done = None, None, False, set()

    def plain(self, name: str, probes: Tensors | None) -> bool:
        """Layer `name` a convolution computed as a function of (parameters, input, eps) only: no
        shapes being recorded, no Hessian probe injected there."""
        return isinstance(self.layer(name), nn.Conv2d) and self._shapes is None and not (probes and name in probes)

    def noisy(self, name: str, eps: Tensors | None) -> bool:
        return eps is not None and name in eps and name in self.nins

    def inject(self, name: str, z: torch.Tensor, eps: Tensors | None, probes: Tensors | None) -> torch.Tensor:
        if self._shapes is not None:
            self._shapes[name] = tuple(z.shape[1:])
        if eps is not None and name in eps and name in self.nins:
            z = add_noise(z, eps[name], self.nins[name].weight) if self.live else self.nins[name](z, eps[name])
        if probes is not None and name in probes:
            z = z + probes[name]
        return z

    def output_noise(self, name: str) -> torch.Tensor:
        """What the NIN of convolution `name` adds to its output per unit of eps, (C_out, H, W):
        conv(W_NI) without the bias where it joins the input, W_NI where it joins the output."""
        weight = self.nins[name].weight
        if name not in self.input_side:
            return weight
        layer = self.layer(name)
        return layer._conv_forward(weight[None], layer.weight, None)[0]

    def noise_through(self, name: str, out: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """conv(h + W_NI eps) from out = conv(h): conv(h) + eps conv(W_NI) without the bias. The same
        function, but the noise crosses the convolution as one image, so the NIW's gradient needs no
        input gradient of the whole batch (at the image, none is needed otherwise); in NHWC, the
        layout of the channels-last output, the NIW's gradient is one matrix-vector product."""
        if self.live:  # a live network in its own layout, NCHW or channels-last (the probe's): left in it
            return add_noise(out, eps, self.output_noise(name))
        nhwc = out.permute(0, 2, 3, 1)
        noise = self.output_noise(name).permute(1, 2, 0).reshape(1, -1)
        flat = torch.addmm(nhwc.reshape(len(out), -1), eps[:, None], noise)
        return flat.view(nhwc.shape).permute(0, 3, 1, 2)

    # -- wiring -------------------------------------------------------------------------------

    def wire(self, names: list[str]) -> None:
        self.check_layers(names)
        for name in names:
            module = self._layers[name]
            # partials of bound methods, not closures: a deep copy of the model (copy.deepcopy) rebinds
            # them to the copy, whose own eps they then read
            self._handles.append(module.register_forward_pre_hook(functools.partial(self._inject_input, name)))
            self._handles.append(module.register_forward_hook(functools.partial(self._inject_output, name)))

    def unwire(self) -> None:
        """Remove the hooks: the network computes as it did before its NINs were wired."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _pass_eps(self, name: str, module, x: torch.Tensor) -> Tensors | None:
        """This pass's eps at layer `name`: what forward() was handed, or, where the network is
        called directly (a researcher's loop), a draw from live_noise while the layer trains."""
        if self._inside:
            return self._eps
        if self.live_noise is None or not module.training:
            return None
        return {name: self.live_noise(name, len(x))}

    def _inject_input(self, name: str, module, args):
        # The noise joins the convolution's input where it is probed, or while shapes are read;
        # else it crosses the convolution as one image (the same function: _inject_output).
        eps = self._drawn[name] = self._pass_eps(name, module, args[0])
        if (
            self.live
            and name in self.input_side
            and self.noisy(name, eps)
            and self.plain(name, self._probes)
            and ConvInputNoise.fits(module)
        ):
            self._at_input.add(name)  # the probe's: the noise joins the input, the NIW's gradient the output (ConvInputNoise)
            x, noise = args[0], eps[name].view(-1, *[1] * (args[0].dim() - 1))
            return (torch.addcmul(x, noise.to(x.dtype), self.nins[name].weight.detach().to(x.dtype)), *args[1:])
        if name in self.input_side and not self.plain(name, self._probes):
            self._done.add(name)
            return (self.inject(name, args[0], eps, self._probes), *args[1:])
        return None

    def _inject_output(self, name: str, module, args, out):
        eps = self._drawn.pop(name, None)
        if name in self._at_input:
            self._at_input.discard(name)
            return ConvInputNoise.apply(out, eps[name], self.nins[name].weight, module)
        if name in self._done:
            return None
        if name in self.input_side:  # conv(h + W_NI eps) = conv(h) + eps conv(W_NI) without the bias
            if not self.noisy(name, eps):
                return None
            return self.noise_through(name, out, eps[name])
        return self.inject(name, out, eps, self._probes)

    # -- attaching NINs -----------------------------------------------------------------------

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
            with torch.no_grad():
                nin.weight.normal_(0.0, self.niw_std(name, init, sizes), generator=gen)
            self.nins[name] = nin

    def niw_std(self, name: str, init: str | float, sizes: dict[str, int]) -> float:
        """The std of the NIW at layer `name` under nin.init (NIW_INITS, or a number: the std)."""
        if init == "layer":
            return self.layer_fan_in(name) ** -0.5
        if init == "input":
            return sizes[name] ** -0.5
        return 1.0 if init == "unit" else float(init)

    def preactivation_shapes(self, in_shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
        """Shape (without batch) of where each NIN joins (its pre-activation, or a convolution's
        input under nin.conv=input), from one dry forward pass."""
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
