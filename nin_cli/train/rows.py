"""What a run records: the columns of metrics.csv and steps.csv, and how their values are measured.

Norms are measured one way for every step and every row: from parameters stacked along a leading
member axis (a single model's are views with K = 1).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from omegaconf import DictConfig, OmegaConf

from nin_cli.data.datasets import Split
from nin_cli.nets.hessian import ProbedLoss, rademacher
from nin_cli.nets.nin import NINModel
from nin_cli.nets.noise import NoiseSource
from nin_cli.nets.objectives import Estimate, LossFn, correct_samples, mean_and_error, mean_and_se, sample_losses
from nin_cli.seeding import generator
from nin_cli.train.graphs import graphed_measurement
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


def model_norms(model: NINModel, groups: list[list[str]], device=None) -> torch.Tensor:
    """One model's norm columns, on its device: the stacked measure with K = 1."""
    return stacked_norms(lambda n: model.get_parameter(n)[None], groups, 1, device)[0]


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
def sample_values(model, split: Split, loss_fn: LossFn, batch_size: int, eps_fn=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Each sample's loss and correctness (1.0 or 0.0; NaN without class labels) over a split, on
    its device; eps = 0 unless `eps_fn(n)` supplies noise."""
    was_training = model.training
    model.eval()
    losses, correct = [], []
    for start in range(0, len(split), batch_size):
        x, y = split.x[start : start + batch_size], split.y[start : start + batch_size]
        out = model(x, eps_fn(len(x)) if eps_fn else None)
        losses.append(sample_losses(loss_fn, out, y))
        correct.append(correct_samples(out, y))
    model.train(was_training)
    return torch.cat(losses), torch.cat(correct)


def evaluate(model, split: Split, loss_fn: LossFn, batch_size: int, eps_fn=None, population: int | None = None) -> Evaluation:
    """Loss and accuracy over a split, from per-sample values; eps = 0 unless `eps_fn(n)` supplies noise."""
    losses, correct = sample_values(model, split, loss_fn, batch_size, eps_fn)
    return Evaluation(mean_and_error(losses, population), mean_and_error(correct, population))


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
    on the first hessian.samples; each estimate's standard error goes beside it (se_<column>).
    Everything measured is computed on the device (on CUDA, replayed as one graph: measured_on)
    and leaves it in one transfer."""
    cfg = s.cfg
    probes = probe_vectors(s, generator(cfg.seed, f"hutchinson/{epoch}", s.device))
    values = measured_on(s)(probes)
    names = list(values)
    row = dict(zip(names, torch.stack([values[n].double() for n in names]).tolist()))
    return {"epoch": epoch, "step": step, "sigma": sigma, "train_loss": train_loss, **row, "lr": lr, "seconds": seconds}


def initial_row(s: Setup, sigma: float, lr: float) -> dict:
    """Epoch 0: the state before training; its noisy loss on the clean metrics' subsample uses a
    noise stream of its own (eval_noise), so that training's draws are those of a run without it."""
    cfg = s.cfg
    eval_noise = NoiseSource(
        OmegaConf.merge(cfg.noise, {"mode": "resample"}), s.nin_layers, 0, generator(cfg.seed, "eval_noise", s.device), s.device
    )
    sub = train_subset(s.data.train, cfg.eval.train_samples)
    with matmul_autocast(cfg, s.device):
        noisy = evaluate(s.model, sub, s.loss_fn, eval_batch_size(cfg, s.device), lambda n: eval_noise.fresh(n, sigma))
    return epoch_row(s, 0, 0, sigma, noisy.loss.mean, 0.0, lr)


def hessian_measured(s: Setup) -> bool:
    cfg = s.cfg
    return bool(s.nin_layers) and (cfg.hessian.probes > 0 or bool(cfg.hessian.get("niw_curvature", False)))


def probe_vectors(s: Setup, gen: torch.Generator) -> list[dict[str, torch.Tensor]]:
    """The epoch's Hutchinson probes (hessian.probes Rademacher vectors per sample over every NIN
    layer), drawn from the epoch's own stream before the measurement runs."""
    if not hessian_measured(s) or s.cfg.hessian.probes <= 0:
        return []
    n = len(train_subset(s.data.train, s.cfg.hessian.samples))
    return rademacher(n, {name: s.shapes[name] for name in s.nin_layers}, int(s.cfg.hessian.probes), gen, s.device)


def measure(s: Setup, probes: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Every measured column of an epoch's row, as 0-dim tensors on the device: the clean train
    metrics on the subsample (with their standard errors), the test metrics, the norms, and Tr H_z,
    the NIW curvature and the gradient's moment on the Hessian's samples (with theirs)."""
    cfg, model = s.cfg, s.model
    out: dict[str, torch.Tensor] = {}
    with matmul_autocast(cfg, s.device):
        size = eval_batch_size(cfg, s.device)
        population = s.data.population or len(s.data.train)
        losses, correct = sample_values(model, train_subset(s.data.train, cfg.eval.train_samples), s.loss_fn, size)
        out["train_loss_clean"], out["se_train_loss_clean"] = mean_and_se(losses, population)
        out["train_acc"], out["se_train_acc"] = mean_and_se(correct, population)
        if len(s.data.test):
            losses, correct = sample_values(model, s.data.test, s.loss_fn, size)
            out["test_loss"], out["test_acc"] = mean_and_se(losses)[0], mean_and_se(correct)[0]
    out.update(zip(norm_columns(model, s.nin_layers), model_norms(model, norm_groups(model, s.nin_layers), s.device)))
    if hessian_measured(s):  # one probed backward pass for every second-order measure
        h = train_subset(s.data.train, cfg.hessian.samples)
        model.eval()
        probed = ProbedLoss(model, h.x, h.y, s.loss_fn, s.shapes)
        per_sample = {f"hessian_trace_{n}": v for n, v in probed.sample_traces(probes).items()} if probes else {}
        if cfg.hessian.get("niw_curvature", False):
            for n, (curvature, moment) in probed.sample_curvatures().items():
                per_sample.update({f"niw_curvature_{n}": curvature, f"niw_gradsq_{n}": moment})
        for col, values in per_sample.items():
            out[col], out[f"se_{col}"] = mean_and_se(values)
        model.train()
    return out


def measured_on(s: Setup):
    """The setup's measurement: `measure` itself, or on CUDA (unless cuda_graphs=false) the same
    replayed as one captured graph, made once per setup: an epoch's measurement is hundreds of
    small kernels whose launches, not their arithmetic, cost the time."""
    if s.measurement is None:
        s.measurement = graphed_measurement(functools.partial(measure, s), s.cfg, s.device)
    return s.measurement


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
