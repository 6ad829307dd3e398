"""The papers' units of sigma^2: what noise.sigma2_paper means, and a run's noise in those units.
(What a config written before a convention existed meant is nin_cli/config/legacy.py's.)"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

# Input dimension of each image dataset (the linear-regression one has dataset.dim).
INPUT_DIMS = {"fashion_mnist": 784, "fashion_mnist_mini": 784, "mnist": 784, "cifar10": 3072}


def _value(config: Mapping, key: str) -> Any:
    """A dotted key of a flat record ({"dataset.name": ...}) or of a nested config alike: the
    units are read where the config is, never from a flattened copy made for them."""
    if key in config:
        return config[key]
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def sigma2_per_paper_unit(config: Mapping, layer: Mapping | None = None) -> float:
    """sigma^2 of one paper unit: d_in / eta for cross-entropy, d_in / (N_w eta) for MSE. With
    `layer` ({"fan_in", "width"} of the layer the unit refers to: a run's first NIN's, network.json)
    d_in is its fan-in and N_w its width, for any network and data; without it, the papers' rule
    for nin's own networks on nin's data: d_in the input dimension, N_w model.width (NaN where the
    run has neither; for an MLP's first layer the two rules agree). `config`: a run's flat record
    or its nested config."""
    flat = {k: _value(config, k) for k in ("dataset.name", "dataset.dim", "optimizer.lr", "loss.name", "model.width")}
    flat = {k: v for k, v in flat.items() if v is not None}
    name = flat.get("dataset.name")
    eta = float(flat.get("optimizer.lr", math.nan))
    if layer is not None:
        d_in, n_w = layer.get("fan_in"), layer.get("width")
    else:
        d_in = int(flat.get("dataset.dim", 1)) if name == "linear_regression" else INPUT_DIMS.get(str(name))
        n_w = flat.get("model.width")
    if d_in is None or not eta > 0:
        return math.nan
    if flat.get("loss.name") == "mse":
        return d_in / (int(n_w) * eta) if n_w else math.nan
    return d_in / eta


def paper_units(flat: Mapping, layer: Mapping | None = None) -> float:
    """The run's sigma^2 in the papers' units (sigma^2 eta / d_in for CE, sigma^2 eta N_w / d_in for
    MSE), by the papers' rule where it applies, else from `layer` (the run's first NIN's)."""
    unit = sigma2_per_paper_unit(flat)
    if not math.isfinite(unit) and layer is not None:
        unit = sigma2_per_paper_unit(flat, layer)
    return float(flat.get("noise.sigma", math.nan)) ** 2 / unit
