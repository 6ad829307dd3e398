"""The papers' conventions that change what a number means: the units of sigma^2, and what a
config written before a convention existed meant (so old run directories read as what they are)."""

from __future__ import annotations

import math
from collections.abc import Mapping

from omegaconf import DictConfig, OmegaConf, open_dict

from nin_cli.errors import ConfigError
from nin_cli.schema import flatten

# Input dimension of each image dataset (the linear-regression one has dataset.dim).
INPUT_DIMS = {"fashion_mnist": 784, "fashion_mnist_mini": 784, "mnist": 784, "cifar10": 3072}


def legacy_defaults(flat: Mapping) -> dict[str, str]:
    """Values a config written before nin.init, loss.reduction and hessian.niw_curvature existed ran with."""
    return {
        "nin.init": "unit",
        "loss.reduction": "half_sum" if flat.get("loss.name") == "mse" else "mean",
        "hessian.niw_curvature": False,
    }


def fill_legacy(cfg: DictConfig) -> DictConfig:
    """A run's saved config with the keys it predates set to the behaviour it was trained with."""
    flat = flat_config(cfg)
    filled = fill_legacy_flat(dict(flat))
    with open_dict(cfg):
        for key in filled.keys() - flat.keys():
            OmegaConf.update(cfg, key, filled[key], merge=True)
    return cfg


def fill_legacy_flat(flat: dict) -> dict:
    """fill_legacy for a flattened config (analysis reads configs flat)."""
    for key, value in legacy_defaults(flat).items():
        if any(k.startswith(key.split(".")[0] + ".") for k in flat):
            flat.setdefault(key, value)
    return flat


def flat_config(cfg: DictConfig) -> dict:
    return flatten(OmegaConf.to_container(cfg, resolve=True))


def sigma2_per_paper_unit(flat: Mapping) -> float:
    """sigma^2 of one paper unit: d_in / eta for cross-entropy, d_in / (N_w eta) for MSE, with d_in
    the input dimension and N_w the hidden width of the run (NaN where the run has no such width)."""
    name = flat.get("dataset.name")
    d_in = int(flat.get("dataset.dim", 1)) if name == "linear_regression" else INPUT_DIMS.get(str(name))
    eta = float(flat.get("optimizer.lr", math.nan))
    if d_in is None or not eta > 0:
        return math.nan
    if flat.get("loss.name") == "mse":
        n_w = flat.get("model.width")
        return d_in / (int(n_w) * eta) if n_w else math.nan
    return d_in / eta


def paper_units(flat: Mapping) -> float:
    """The run's sigma^2 in the papers' units (sigma^2 eta / d_in for CE, sigma^2 eta N_w / d_in for MSE)."""
    return float(flat.get("noise.sigma", math.nan)) ** 2 / sigma2_per_paper_unit(flat)


def resolve_paper_sigma(cfg: DictConfig) -> DictConfig:
    """`noise.sigma2_paper=u` writes the run in the papers' units: noise.sigma becomes sqrt(u x unit)."""
    u = cfg.noise.get("sigma2_paper")
    if u is None:
        return cfg
    try:
        u = float(u)
    except (TypeError, ValueError):
        raise ConfigError(f"noise.sigma2_paper must be a number, got {u!r}") from None
    unit = sigma2_per_paper_unit(flat_config(cfg))
    if not (math.isfinite(u) and u >= 0 and math.isfinite(unit)):
        raise ConfigError(f"noise.sigma2_paper={u!r} cannot be converted for this run (needs a finite u >= 0, a known dataset and width)")
    cfg.noise.sigma = math.sqrt(u * unit)
    return cfg
