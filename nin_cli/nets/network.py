"""A run's network, built: the network its model config's factory returns (nin's own,
nets/shipped.py, or a researcher's), its weights drawn from the run's seed and its NINs wired in
(nets/nin.py), one way for every network.

A model config names a factory, Hydra's way (`_target_: pkg.module.function` with its arguments)
or nin's short form (`target: pkg.module:function`); every other key of the model config but nin's
own (name, init, ninr_sigma, ninr_init) is an argument, and `in_shape` / `n_out` are passed where the
factory takes them and the config does not set them.
"""

from __future__ import annotations

import functools
import inspect
import json
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch import nn

from nin_cli.data.datasets import input_output_shape
from nin_cli.errors import ConfigError
from nin_cli.factories import factory_arguments, factory_target, locate, seeded
from nin_cli.nets.nin import MODEL_INITS, NINModel, fan_in, init_weights
from nin_cli.seeding import generator

OWN_KEYS = ("name", "_target_", "target", "init", "ninr_sigma", "ninr_init")  # nin's keys of a model config, not the factory's


def network(model_cfg, in_shape: tuple[int, ...], n_out: int, seed: int, records: Path | None = None) -> nn.Module:
    """The factory's network, called with the config's arguments (its own init drawn from the
    run's seed). `records`: the run directory it is rebuilt for (resume, evaluate, load_model): a
    researcher's factory is imported as installed, never from there, and one line says which."""
    target = factory_target(model_cfg)
    if target is None:
        raise ConfigError(f"model {model_cfg.get('name')!r} names no factory; give model.target=pkg.module:function")
    fn = locate(target, records)
    if records is not None and not target.startswith("nin_cli."):
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
    if "dropout" in kwargs and "dropout" not in params and not takes_any:  # method=dropout sets it for nin's networks
        if float(kwargs.pop("dropout") or 0.0) > 0:
            raise ConfigError(f"model.dropout={model_cfg.dropout}, but model factory {target} takes no dropout argument")
    try:
        with seeded(seed):
            net = fn(**kwargs)
    except ConfigError:
        raise
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


def resolve_nin_layers(nin_cfg, layer_names: list[str], model_name: str) -> list[str]:
    """Turn a placement preset (none, input, all) or an explicit list into layer names (in the
    order the forward pass reaches them)."""
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
    if len(set(listed)) != len(listed):
        raise ConfigError(f"nin.layers lists a layer twice: {listed}")
    return listed


def build_model(model_cfg, nin_cfg, in_shape: tuple[int, ...], n_out: int, seed: int, records: Path | None = None) -> NINModel:
    """Build on the CPU from the seed's init stream (so every device starts from the same weights),
    NINs attached. model.init=fan_in draws every Linear and Conv2d weight N(0, 1/fan_in) with zero
    biases (the papers'); model.init=factory keeps the factory's own initialisation, drawn from
    `seed`. `records`: the run directory the model is rebuilt for (resume, evaluate, load_model)."""
    init = str(model_cfg.get("init", "fan_in"))
    if init not in MODEL_INITS:
        raise ConfigError(f"model.init must be one of {', '.join(MODEL_INITS)}, got {init!r}")
    if not 0.0 <= float(model_cfg.get("dropout", 0.0)) < 1.0:
        raise ConfigError(f"model.dropout must lie in [0, 1), got {model_cfg.dropout}")
    net = network(model_cfg, in_shape, n_out, seed, records)
    gen = generator(int(seed), "init")  # with the factory's seeding: wiring the NINs below needs nothing under nets/
    model = NINModel(net, tuple(in_shape), str(model_cfg.name))
    layers = resolve_nin_layers(nin_cfg, model.layer_names, str(model_cfg.name))
    model.check_layers(layers)  # says what a named module is, if not a layer
    if init == "fan_in":
        init_weights(model, gen)
    model.attach_nins(layers, in_shape, gen, nin_cfg.get("init", "layer"), nin_cfg.get("conv", "input"))
    if model.channels_last:  # after the draws, so the weights are those of the default layout
        model.to(memory_format=torch.channels_last)
    return model


def nin_record(model: NINModel, nin_layers: list[str]) -> dict:
    """network.json: each NIN in the order the forward pass reaches it, with the layer its noise
    feeds first (whose weight_norm_ column is beside its niw_norm_), the fan-in and the width
    (output units) of the layer it joins: what a per-NIN phase and the papers' units read."""
    nins = []
    for name in nin_layers:
        weight = next(p for n, p in model.layer(name).named_parameters() if n.endswith("weight") and p.ndim >= 2)
        nins.append({"layer": name, "feeds": model.fed_layer(name), "fan_in": fan_in(weight), "width": int(weight.shape[0])})
    unit = nins[0] if nins else None
    return {"nins": nins, "paper_unit": {"nin": unit["layer"], "fan_in": unit["fan_in"], "width": unit["width"]} if unit else None}


def built_from(model_cfg, nin_cfg, dataset_cfg, seed: int, probe: bool = False) -> tuple[NINModel, tuple] | None:
    """A run's network built from its configs on the CPU at its seed's initialisation, with the
    data's (input shape, outputs) read without loading the data (a dataset factory is called only
    with `probe`; None without it): what the pre-flight's checks build."""
    shape = input_output_shape(dataset_cfg, probe=probe)
    if shape is None:
        return None
    return build_model(model_cfg, nin_cfg, shape[0], shape[1], int(seed)), shape


@functools.lru_cache(maxsize=64)
def _record(key: str) -> dict | None:
    model_cfg, nin_cfg, dataset_cfg, seed, probe = (OmegaConf.create(part) if isinstance(part, dict) else part for part in json.loads(key))
    built = built_from(model_cfg, nin_cfg, dataset_cfg, seed, probe)
    return nin_record(built[0], list(built[0].nins)) if built else None


def record_of(model_cfg, nin_cfg, dataset_cfg, seed: int, probe: bool = False) -> dict | None:
    """network.json of a configuration before it trains (built_from; once per configuration)."""
    parts = [OmegaConf.to_container(c, resolve=True) for c in (model_cfg, nin_cfg, dataset_cfg)]
    return _record(json.dumps([*parts, int(seed), probe], sort_keys=True, default=str))


def unit_layer(model_cfg, nin_cfg, dataset_cfg, seed: int) -> dict | None:
    """{"nin", "fan_in", "width"} of the layer the papers' units refer to for a network of one's
    own or data of one's own (its first NIN's)."""
    record = record_of(model_cfg, nin_cfg, dataset_cfg, seed, probe=True)
    return record.get("paper_unit") if record else None
