"""The optimizers and precisions a run may name, each written once: the registry the config schema
lists as choices and the training step builds from."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from omegaconf import DictConfig

from nin_cli.errors import ConfigError

PRECISIONS = ("fp32", "tf32", "bf16")


@dataclass(frozen=True)
class OptimizerKind:
    make: Callable[[DictConfig, object, float], torch.optim.Optimizer]  # (optimizer cfg, params, weight decay)
    stateless: Callable[[DictConfig], bool]  # plain SGD: the update the stacked and fused steps write out


OPTIMIZERS: dict[str, OptimizerKind] = {
    "sgd": OptimizerKind(
        lambda c, params, wd: torch.optim.SGD(params, lr=c.lr, momentum=c.momentum, weight_decay=wd),
        lambda c: float(c.momentum) == 0.0,
    ),
    "adam": OptimizerKind(
        lambda c, params, wd: torch.optim.Adam(params, lr=c.lr, betas=tuple(c.betas), weight_decay=wd),
        lambda c: False,
    ),
}


def plain_sgd(cfg: DictConfig) -> bool:
    """SGD without momentum: the only optimizer whose update the stacked and fused steps write out."""
    kind = OPTIMIZERS.get(cfg.optimizer.name)
    return kind is not None and kind.stateless(cfg.optimizer)


def make_optimizer(cfg: DictConfig, params) -> torch.optim.Optimizer:
    if cfg.optimizer.name not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {cfg.optimizer.name!r}; choose from {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[cfg.optimizer.name].make(cfg.optimizer, params, float(cfg.regularization.weight_decay))
