"""What a run records: the columns of metrics.csv and steps.csv, and how their values are measured.

Norms are measured one way for every step and every row: from parameters stacked along a leading
member axis (a single model's are views with K = 1).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from omegaconf import DictConfig

from nin_cli.data import Split
from nin_cli.hessian import ProbedLoss
from nin_cli.models import NINModel
from nin_cli.objectives import Estimate, LossFn, correct_samples, mean_and_error, sample_losses
from nin_cli.seeding import generator
from nin_cli.train.setup import Setup, matmul_autocast


def fed_layers(model: NINModel, nin_layers: list[str]) -> list[str]:
    """The layers the NINs' noise passes through first (each once, in NIN order)."""
    return list(dict.fromkeys(fed for n in nin_layers if (fed := model.fed_layer(n))))


def norm_columns(model: NINModel, nin_layers: list[str]) -> list[str]:
    return [f"niw_norm_{n}" for n in nin_layers] + [f"weight_norm_{fed}" for fed in fed_layers(model, nin_layers)]


def norm_groups(model: NINModel, nin_layers: list[str]) -> list[list[str]]:
    """The parameters behind each norm column: a NIW, or all weight tensors of a layer a NIN feeds."""
    return [[model.niw_name(n)] for n in nin_layers] + [model.weight_names(fed) for fed in fed_layers(model, nin_layers)]


def stacked_norms(param: Callable[[str], torch.Tensor], groups: list[list[str]], k: int, device) -> torch.Tensor:
    """(K, n_norm_columns) Frobenius norms of stacked parameters `param(name)` (K, ...), on the device."""
    norm = torch.linalg.vector_norm
    cols = [norm(torch.stack([norm(param(p).detach().flatten(1), dim=1) for p in group]), dim=0) for group in groups]
    return torch.stack(cols, dim=1) if cols else torch.zeros(k, 0, device=device)


def model_norms(model: NINModel, groups: list[list[str]]) -> list[float]:
    """One model's norm columns: the stacked measure with K = 1."""
    return stacked_norms(lambda n: model.get_parameter(n)[None], groups, 1, None)[0].tolist()


def metric_columns(model: NINModel, nin_layers: list[str], curvature: bool = True, errors: bool = True) -> list[str]:
    """metrics.csv's columns; `curvature` (hessian.niw_curvature) adds niw_curvature_<layer> and
    niw_gradsq_<layer>, `errors` (eval.standard_errors) the standard error of each estimate taken on
    a subsample, as se_<column> (runs recorded before those columns existed keep theirs on resume)."""
    cols = ["epoch", "step", "sigma", "train_loss", "train_loss_clean", "train_acc", "test_loss", "test_acc"]
    cols += norm_columns(model, nin_layers)
    estimated = [f"hessian_trace_{n}" for n in nin_layers]
    if curvature:
        estimated += [f"niw_curvature_{n}" for n in nin_layers] + [f"niw_gradsq_{n}" for n in nin_layers]
    cols += estimated
    if errors:
        cols += [f"se_{c}" for c in ("train_loss_clean", "train_acc", *estimated)]
    return cols + ["lr", "seconds"]


def step_columns(model: NINModel, nin_layers: list[str]) -> list[str]:
    """steps.csv: the noisy batch loss and the norms every `log.every_steps` steps, for fast dynamics."""
    return ["step", "epoch", "sigma", "train_loss", *norm_columns(model, nin_layers)]


def step_rows(columns: list[str], steps: list[int], values: list[list[float]], epoch: int, sigma: float) -> list[dict]:
    """steps.csv rows from the values logged at `steps` (noisy loss, then the norms)."""
    names = columns[3:]
    return [{"step": st, "epoch": epoch, "sigma": sigma, **dict(zip(names, vals))} for st, vals in zip(steps, values)]


@dataclass(frozen=True)
class Evaluation:
    """Mean loss and accuracy over a split, each with its standard error as an estimate of the mean
    over the `population` the split was drawn from (0 when it is the whole of it)."""

    loss: Estimate
    acc: Estimate


@torch.no_grad()
def evaluate(model, split: Split, loss_fn: LossFn, batch_size: int, eps_fn=None, population: int | None = None) -> Evaluation:
    """Loss and accuracy over a split, from per-sample values; eps = 0 unless `eps_fn(n)` supplies noise."""
    was_training = model.training
    model.eval()
    losses, correct = [], []
    for start in range(0, len(split), batch_size):
        x, y = split.x[start : start + batch_size], split.y[start : start + batch_size]
        out = model(x, eps_fn(len(x)) if eps_fn else None)
        losses.append(sample_losses(loss_fn, out, y))
        correct.append(correct_samples(out, y))
    model.train(was_training)
    return Evaluation(mean_and_error(torch.cat(losses), population), mean_and_error(torch.cat(correct), population))


def eval_batch_size(cfg: DictConfig, device: torch.device) -> int:
    """eval.batch_size, with `auto` made concrete: 1000 on a CPU, 10,000 on CUDA (a split in one
    pass: an evaluation of small batches there is bound by kernel launches, not arithmetic)."""
    size = cfg.eval.batch_size
    if size == "auto":
        return 1000 if device.type == "cpu" else 10_000
    return int(size)


def train_subset(split: Split, n: int | None) -> Split:
    """The first n training samples: the fixed subsample every epoch's clean metrics are taken on."""
    return split if not n else Split(split.x[:n], split.y[:n])


def epoch_row(s: Setup, epoch: int, step: int, sigma: float, train_loss: float, seconds: float, lr: float) -> dict:
    """The metrics.csv row for the model's current state (clean metrics use eps = 0). The clean
    train metrics are taken on the first eval.train_samples training samples, the Hessian measures
    on the first hessian.samples; each estimate's standard error goes beside it (se_<column>)."""
    cfg, model = s.cfg, s.model
    with matmul_autocast(cfg, s.device):
        subsample = train_subset(s.data.train, cfg.eval.train_samples)
        size = eval_batch_size(cfg, s.device)
        train = evaluate(model, subsample, s.loss_fn, size, population=len(s.data.train))
        test = evaluate(model, s.data.test, s.loss_fn, size)
    row = {
        "epoch": epoch,
        "step": step,
        "sigma": sigma,
        "train_loss": train_loss,
        "train_loss_clean": train.loss.mean,
        "train_acc": train.acc.mean,
        "test_loss": test.loss.mean,
        "test_acc": test.acc.mean,
        "se_train_loss_clean": train.loss.se,
        "se_train_acc": train.acc.se,
        "lr": lr,
        "seconds": seconds,
    }
    row.update(zip(norm_columns(model, s.nin_layers), model_norms(model, norm_groups(model, s.nin_layers))))
    curvature = bool(cfg.hessian.get("niw_curvature", False))
    if s.nin_layers and (cfg.hessian.probes > 0 or curvature):  # one probed backward pass for both
        h = train_subset(s.data.train, cfg.hessian.samples)
        model.eval()
        probed = ProbedLoss(model, h.x, h.y, s.loss_fn, s.shapes)
        traces = probed.traces(cfg.hessian.probes, generator(cfg.seed, f"hutchinson/{epoch}", s.device))
        estimates = {f"hessian_trace_{n}": v for n, v in traces.items()}
        if curvature:
            for n, c in probed.niw_curvatures().items():
                estimates.update({f"niw_curvature_{n}": c.curvature, f"niw_gradsq_{n}": c.grad_moment})
        for col, estimate in estimates.items():
            row.update({col: estimate.mean, f"se_{col}": estimate.se})
        model.train()
    return row


def divergence_reason(row: dict, ref_loss: float, cfg: DictConfig, model: NINModel) -> str | None:
    """Why the run counts as diverged, or None. The noisy loss only counts when non-finite: a
    catapult's noisy loss can climb by orders of magnitude and still recover."""
    for key in ("train_loss", "train_loss_clean"):
        if not math.isfinite(row[key]):
            return f"{key} is {row[key]}"
    clean = row["train_loss_clean"]
    if clean > cfg.divergence.max_loss:
        return f"train_loss_clean {clean:.3g} > divergence.max_loss {cfg.divergence.max_loss:g}"
    if clean > cfg.divergence.factor * ref_loss:
        return f"train_loss_clean {clean:.3g} > {cfg.divergence.factor:g} x its epoch-0 value {ref_loss:.3g}"
    if not bool(torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all()):  # one sync, not one a tensor
        return "non-finite weights"
    return None
