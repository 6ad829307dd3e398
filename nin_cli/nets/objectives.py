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


# The MSE's forms, each L = c / |B| sum_i ||f_i - y_i||^2 with c (the probe paper's phase units assume
# one of them; docs/phases.md maps which):
#   mean      c = 1/C     (torch's MSELoss, Keras's default: mean over the batch and the C outputs)
#   half_mean c = 1/(2C)
#   sum       c = 1       (summed over the outputs, mean over the batch)
#   half_sum  c = 1/2     (the linear toy model's theory)
MSE_FACTORS = {"mean": lambda c: 1.0 / c, "half_mean": lambda c: 0.5 / c, "sum": lambda c: 1.0, "half_sum": lambda c: 0.5}
REDUCTIONS = tuple(MSE_FACTORS)
OUTPUTS = ("logits", "softmax")  # what the MSE compares with the one-hot targets: the network's outputs, or their softmax


def one_hot_targets(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Class labels become one-hot targets; regression targets pass through."""
    return F.one_hot(target, out.shape[-1]).to(out.dtype) if target.dtype == torch.long else target


def mse(reduction: str, outputs: str = "logits") -> LossFn:
    """The MSE in one of its forms (MSE_FACTORS), on the outputs or on their softmax."""
    if reduction not in MSE_FACTORS:
        raise ConfigError(f"loss.reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")
    if outputs not in OUTPUTS:
        raise ConfigError(f"loss.outputs must be one of {', '.join(OUTPUTS)}, got {outputs!r}")
    factor = MSE_FACTORS[reduction]
    squash = outputs == "softmax"

    def loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        f = out.softmax(dim=-1) if squash else out
        return factor(out.shape[-1]) * (f - one_hot_targets(out, target)).pow(2).sum(dim=-1).mean()

    return loss


mse_half = mse("half_sum")  # L = 1/(2|B|) sum ||f - y||^2: the form the linear toy model's theory is written for


def mse_output_scale(reduction: str, n_out: int) -> float:
    """dL/df = scale * (f - y) / |B| for the MSE forms on the outputs (the fused MLP step writes the gradient out)."""
    return 2.0 * MSE_FACTORS[reduction](n_out)


@dataclass(frozen=True)
class LossKind:
    """A loss and what the training steps can do with it."""

    make: Callable[[str, str], LossFn]  # (reduction, outputs) -> the loss
    labels: bool = False  # needs class labels
    fused: bool = True  # the hand-written MLP step writes its gradient out (on the outputs, not their softmax)


LOSSES: dict[str, LossKind] = {
    "ce": LossKind(lambda reduction, outputs: F.cross_entropy, labels=True),
    "mse": LossKind(mse),
}


def make_loss(name: str, task: str, reduction: str = "mean", outputs: str = "logits") -> LossFn:
    if name not in LOSSES:
        raise ConfigError(f"unknown loss {name!r}; choose from {', '.join(LOSSES)}")
    kind = LOSSES[name]
    if kind.labels and task != "classification":
        raise ConfigError(f"loss={name} needs class labels; use loss=mse for a regression dataset")
    return kind.make(reduction, outputs)


def fused_loss(loss_cfg) -> bool:
    """Whether the fused MLP step writes this loss's gradient out."""
    return LOSSES[loss_cfg.name].fused and loss_cfg.get("outputs", "logits") == "logits"


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


def mean_and_se(values: torch.Tensor, population: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """mean_and_error on the values' device, as 0-dim float64 tensors (NaN where undefined), with
    nothing transferred: a measurement's estimates leave the device together."""
    n = values.numel()
    nan = torch.full((), math.nan, dtype=torch.float64, device=values.device)
    if n == 0:
        return nan, nan
    mean = values.mean().double()
    if n < 2:
        return mean, nan
    fpc = max(0.0, 1.0 - n / population) if population else 1.0
    return mean, (values.var().double() / n * fpc).sqrt()


def mean_and_error(values: torch.Tensor, population: int | None = None) -> Estimate:
    """The mean of per-sample values (N,) and its standard error as an estimate of the mean over a
    `population` of which they are a sample (finite-population corrected: 0 when N is all of it;
    None: an infinite one)."""
    mean, se = torch.stack(mean_and_se(values, population)).tolist()  # one transfer from the device
    return Estimate(mean, se)
