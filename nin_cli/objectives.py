"""Losses and accuracy, shared by training, evaluation and the Hessian estimate."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from nin_cli.errors import ConfigError

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def mse_half(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L = 1/(2|B|) sum ||f - y||^2; class labels become one-hot targets."""
    if target.dtype == torch.long:
        target = F.one_hot(target, out.shape[-1]).to(out.dtype)
    return 0.5 * (out - target).pow(2).sum(dim=-1).mean()


def make_loss(name: str, task: str) -> LossFn:
    if name == "ce":
        if task != "classification":
            raise ConfigError("loss=ce needs class labels; use loss=mse for a regression dataset")
        return F.cross_entropy
    if name == "mse":
        return mse_half
    raise ConfigError(f"unknown loss {name!r}; choose from ce, mse")


def accuracy(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Fraction correct, or NaN where targets are not class labels."""
    if target.dtype != torch.long:
        return torch.tensor(float("nan"))
    return (out.argmax(dim=-1) == target).float().mean()
