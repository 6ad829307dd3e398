"""Losses and accuracy, shared by training, evaluation and the Hessian estimate."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.func import vmap

from nin_cli.errors import ConfigError

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


REDUCTIONS = ("mean", "half_sum")


def one_hot_targets(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Class labels become one-hot targets; regression targets pass through."""
    return F.one_hot(target, out.shape[-1]).to(out.dtype) if target.dtype == torch.long else target


def mse_half(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L = 1/(2|B|) sum ||f - y||^2: the form the linear toy model's theory is written for."""
    return 0.5 * (out - one_hot_targets(out, target)).pow(2).sum(dim=-1).mean()


def mse_mean(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L = 1/(|B| C) sum ||f - y||^2 (torch's MSELoss): the papers' MSE for networks."""
    return (out - one_hot_targets(out, target)).pow(2).mean()


def mse_output_scale(reduction: str, n_out: int) -> float:
    """dL/df = scale * (f - y) / |B| for the MSE forms (the fused MLP step writes the gradient out)."""
    return 2.0 / n_out if reduction == "mean" else 1.0


@dataclass(frozen=True)
class LossKind:
    """A loss and what the training steps can do with it."""

    make: Callable[[str], LossFn]  # reduction -> the loss
    labels: bool = False  # needs class labels
    fused: bool = True  # the hand-written MLP step writes its gradient out


def _mse(reduction: str) -> LossFn:
    if reduction not in REDUCTIONS:
        raise ConfigError(f"loss.reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")
    return mse_mean if reduction == "mean" else mse_half


LOSSES: dict[str, LossKind] = {
    "ce": LossKind(lambda reduction: F.cross_entropy, labels=True),
    "mse": LossKind(_mse),
}


def make_loss(name: str, task: str, reduction: str = "mean") -> LossFn:
    if name not in LOSSES:
        raise ConfigError(f"unknown loss {name!r}; choose from {', '.join(LOSSES)}")
    kind = LOSSES[name]
    if kind.labels and task != "classification":
        raise ConfigError(f"loss={name} needs class labels; use loss=mse for a regression dataset")
    return kind.make(reduction)


def sample_losses(loss_fn: LossFn, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Each sample's own loss, (N,): every loss here is the mean of per-sample terms over the batch."""
    return vmap(lambda o, t: loss_fn(o[None], t[None]))(out, target)


def correct_samples(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1.0 where a sample is classified right, (N,); NaN where targets are not class labels."""
    if target.dtype != torch.long:
        return torch.full((len(out),), float("nan"), device=out.device)
    return (out.argmax(dim=-1) == target).float()


@dataclass(frozen=True)
class Estimate:
    """A mean over samples and its standard error."""

    mean: float
    se: float


def mean_and_error(values: torch.Tensor, population: int | None = None) -> Estimate:
    """The mean of per-sample values (N,) and its standard error as an estimate of the mean over a
    `population` of which they are a sample (finite-population corrected: 0 when N is all of it;
    None: an infinite one)."""
    n = values.numel()
    if n < 2:
        return Estimate(float(values.mean()) if n else math.nan, math.nan)
    fpc = max(0.0, 1.0 - n / population) if population else 1.0
    mean, var = float(values.mean()), float(values.var())
    return Estimate(mean, math.sqrt(var / n * fpc))
