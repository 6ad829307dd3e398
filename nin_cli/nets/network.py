"""A run's network, built: a shipped model by name (models.py) or the network a researcher's
factory returns (user_model.py), its weights drawn from the run's seed and its NINs attached."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import torch
from omegaconf import OmegaConf

from nin_cli.data.datasets import input_output_shape
from nin_cli.errors import ConfigError
from nin_cli.factories import factory_target, seeded
from nin_cli.nets import user_model
from nin_cli.nets.models import MODEL_INITS, NINModel, fan_in, init_weights, model_kind, resolve_nin_layers
from nin_cli.seeding import generator


def build_model(model_cfg, nin_cfg, in_shape: tuple[int, ...], n_out: int, seed: int, records: Path | None = None) -> NINModel:
    """Build on the CPU from the seed's init stream (so every device starts from the same weights), NINs attached:
    a shipped model by name, or the network a researcher's factory returns (user_model.py).
    model.init=fan_in draws every Linear and Conv2d weight N(0, 1/fan_in) with zero biases (the
    papers'); model.init=factory keeps the builder's own initialisation, drawn from `seed`.
    `records`: the run directory the model is rebuilt for (resume, evaluate, load_model): its
    factory is imported from the installed environment, never from there, and a line says which."""
    gen = generator(int(seed), "init")
    name = model_cfg.name
    init = str(model_cfg.get("init", "fan_in"))
    if init not in MODEL_INITS:
        raise ConfigError(f"model.init must be one of {', '.join(MODEL_INITS)}, got {init!r}")
    if not 0.0 <= float(model_cfg.get("dropout", 0.0)) < 1.0:
        raise ConfigError(f"model.dropout must lie in [0, 1), got {model_cfg.dropout}")
    if factory_target(model_cfg) is not None:
        model: NINModel = user_model.build(model_cfg, in_shape, n_out, seed, records)
    else:
        kind = model_kind(name)
        if kind.images and len(in_shape) != 3:
            raise ConfigError(f"model {name} needs image data; use model=mlp or model=linear for vector datasets")
        if init == "factory":
            with seeded(seed):
                model = kind.build(model_cfg, in_shape, n_out)
        else:
            model = kind.build(model_cfg, in_shape, n_out)
        model.kind = kind
    if isinstance(model, user_model.ModuleNINModel) and nin_cfg.preset == "layers":
        model.check_layers([str(n) for n in nin_cfg.get("layers") or []])  # says what a named module is, if not a layer
    layers = resolve_nin_layers(nin_cfg, model.layer_names, name)
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
