"""A researcher's own network with NINs: any `nn.Module` a factory returns, NINs at its modules by name.

A model config names a factory, Hydra's way (`_target_: pkg.module.function` with its arguments)
or nin's short form (`target: pkg.module:function`); every other key of the model config but nin's
own (name, init, ninr_sigma, ninr_init) is an argument, and `in_shape` / `n_out` are passed where the
factory takes them and the config does not set them. The network is left as it is: the NINs are
wired by forward hooks, with the method's wiring (models.py's docstring): at a Linear, W_NI of its output
width on its output (the pre-activation); at a Conv2d, W_NI of its input's shape on its input
(`nin.conv=output`: on its output). The forward pass stays a pure function of
(parameters, x, eps), so torch.func can stack members of an ensemble as for the shipped models.

The layers that can carry a NIN are the Linear and Conv2d modules the forward pass reaches, in the
order it reaches them (one dry pass at build time): `nin=input` is the first, `nin=all` every
one, and the layer a NIN "feeds" (its weight_norm_ column) is the next one reached.
"""

from __future__ import annotations

import functools
import inspect
import sys
from pathlib import Path

import torch
from torch import nn

from nin_cli.errors import ConfigError
from nin_cli.factories import factory_arguments, factory_target, locate, seeded
from nin_cli.nets.models import ConvInputNoise, ModelKind, NINModel, Tensors

NIN_TYPES = (nn.Linear, nn.Conv2d)  # what the method defines a NIN's wiring for
OWN_KEYS = ("name", "_target_", "target", "init", "ninr_sigma", "ninr_init")  # nin's keys of a model config, not the factory's


def network(model_cfg, in_shape: tuple[int, ...], n_out: int, seed: int, records: Path | None = None) -> nn.Module:
    """The researcher's network: the factory called with the config's arguments (its own init
    drawn from the run's seed). `records`: the run directory it is rebuilt for (resume, evaluate,
    load_model): the factory is imported as installed, never from there, and one line says which."""
    target = factory_target(model_cfg)
    fn = locate(target, records)
    if records is not None:
        print(f"nin: note: {records}: model {model_cfg.name} from factory {target} ({source_file(fn)}), as installed here", file=sys.stderr)
    kwargs = factory_arguments(model_cfg, OWN_KEYS)
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    for key, value in (("in_shape", tuple(in_shape)), ("n_out", int(n_out))):
        if key not in kwargs and (key in params or takes_any):
            kwargs[key] = value
    if "dropout" in kwargs and "dropout" not in params and not takes_any:  # method=dropout sets it for the shipped models
        if float(kwargs.pop("dropout") or 0.0) > 0:
            raise ConfigError(f"model.dropout={model_cfg.dropout}, but model factory {target} takes no dropout argument")
    try:
        with seeded(seed):
            net = fn(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"model factory {target} does not take its arguments ({', '.join(kwargs) or 'none'}): {exc}") from None
    except Exception as exc:
        given = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        raise ConfigError(
            f"model factory {target}({given}) failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from None
    if not isinstance(net, nn.Module):
        raise ConfigError(f"model factory {target} returned {type(net).__name__}, not a torch.nn.Module")
    return net


def source_file(fn) -> str:
    try:
        return inspect.getsourcefile(fn) or "?"
    except TypeError:  # a builtin or a C extension's
        return "?"


def reached_layers(net: nn.Module, in_shape: tuple[int, ...]) -> tuple[list[str], dict[str, int]]:
    """The Linear and Conv2d modules one forward pass reaches, in the order it reaches them, and
    how often each runs. The pass is a dry one: eval mode, no gradients, two zero inputs."""
    order: list[str] = []
    calls: dict[str, int] = {}
    handles = []
    for name, module in net.named_modules():
        if isinstance(module, NIN_TYPES):

            def seen(module, args, name=name):
                calls[name] = calls.get(name, 0) + 1
                if name not in order:
                    order.append(name)

            handles.append(module.register_forward_pre_hook(seen))
    was_training = net.training
    device = next((p.device for p in net.parameters()), torch.device("cpu"))  # a live network (the probe's) may be on a GPU
    try:
        net.eval()
        with torch.no_grad():
            net(torch.zeros(2, *in_shape, device=device))
    except Exception as exc:
        shape = "x".join(str(d) for d in in_shape)
        raise ConfigError(
            f"the model's forward pass fails on inputs of shape {shape}: {type(exc).__name__}: {str(exc).splitlines()[0]}"
        ) from None
    finally:
        for handle in handles:
            handle.remove()
        net.train(was_training)
    return order, calls


def sequential_leaves(net: nn.Module) -> list[nn.Module] | None:
    """The modules an exact nn.Sequential (nested ones opened) applies in turn; None for any other
    module, whose forward may do anything."""
    if type(net) is not nn.Sequential:
        return None
    leaves: list[nn.Module] = []
    for child in net:
        inner = sequential_leaves(child) if type(child) is nn.Sequential else [child]
        if inner is None:
            return None
        leaves += inner
    return leaves


def plain_mlp(net: nn.Module, in_shape: tuple[int, ...]) -> bool:
    """Whether a network is the MLP the fused step computes (train/fused_mlp.py): a Sequential of
    a flattening of the input (or inputs already flat), then Linear layers with biases, a ReLU
    between each two. Its ensembles and single runs then take that step, as the shipped MLP's do."""
    leaves = sequential_leaves(net)
    if not leaves:
        return False
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


class ModuleNINModel(NINModel):
    """A researcher's network (`self.net`, untouched) with NINs wired in by hooks at named modules."""

    layer_prefix = "net."

    def __init__(self, net: nn.Module, in_shape: tuple[int, ...], model_name: str):
        super().__init__()
        self.net = net
        self.model_name = model_name
        order, self.calls = reached_layers(net, in_shape)
        self.modules_by_name = dict(net.named_modules())
        self._layers = {name: self.modules_by_name[name] for name in order}
        self.conv_layers = tuple(n for n in order if isinstance(self._layers[n], nn.Conv2d))
        self.channels_last = bool(self.conv_layers)  # conv weights NHWC, as the shipped CNN's (oneDNN's and cuDNN's fast layout)
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
        has_buffers = any(True for _ in net.buffers())
        fused = plain_mlp(net, in_shape)
        self.kind = ModelKind(fused=fused, stackable=not has_buffers, conv=bool(self.conv_layers))

    @property
    def layer_names(self) -> list[str]:
        return list(self._layers)

    def layer(self, name: str) -> nn.Module:
        return self._layers[name]

    def forward(self, x: torch.Tensor, eps: Tensors | None = None, probes: Tensors | None = None) -> torch.Tensor:
        self._eps, self._probes, self._done, self._inside = eps, probes, set(), True
        try:
            return self.net(x)
        finally:
            self._eps, self._probes, self._inside, self._done = None, None, False, set()

    def check_layers(self, names: list[str]) -> None:
        """Each named module exists, can carry a NIN, and runs once in the forward pass."""
        for name in names:
            module = self.modules_by_name.get(name)
            if module is None:
                import difflib

                candidates = [n for n, m in self.modules_by_name.items() if isinstance(m, NIN_TYPES)]
                close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
                hint = (f"; did you mean {close[0]}?" if close else "") + f"; its Linear and Conv2d modules are: {', '.join(candidates)}"
                raise ConfigError(f"NIN on module {name!r}, which model {self.model_name} does not have{hint}")
            if not isinstance(module, NIN_TYPES):
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
            return (torch.addcmul(x, noise, self.nins[name].weight.detach()), *args[1:])
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


def build(model_cfg, in_shape: tuple[int, ...], n_out: int, seed: int, records: Path | None = None) -> ModuleNINModel:
    """The researcher's network wrapped for NINs (attach_nins wires them; build_model does)."""
    return ModuleNINModel(network(model_cfg, in_shape, n_out, seed, records), tuple(in_shape), str(model_cfg.name))
