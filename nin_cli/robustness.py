"""Robustness of a trained run: clean test accuracy, additive Gaussian noise, MNIST-C style
corruptions and FGSM/PGD attacks. Perturbations act on pixels in [0, 1] (the standardization is
undone first and redone after), are seeded, and are the same for every run evaluated with one seed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from nin_cli.conventions import fill_legacy
from nin_cli.data import Dataset, Split
from nin_cli.errors import ConfigError
from nin_cli.objectives import LossFn
from nin_cli.records import ROBUSTNESS, RunRecords, atomic_write_text
from nin_cli.schema import check_overrides, file_schema
from nin_cli.seeding import generator
from nin_cli.train.setup import build

Corruption = Callable[[torch.Tensor, float, torch.Generator], torch.Tensor]


def _affine(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Warp each image by its 2x3 matrix (output -> input coordinates), black outside."""
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


def _signs(n: int, gen: torch.Generator, device) -> torch.Tensor:
    return torch.randint(0, 2, (n,), generator=gen, device=device).float() * 2 - 1


def _eye(n: int, device) -> torch.Tensor:
    return torch.eye(2, 3, device=device).repeat(n, 1, 1)


def rotate(x, degrees, gen):
    a = torch.deg2rad(degrees * _signs(len(x), gen, x.device))
    theta = _eye(len(x), x.device)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = a.cos(), -a.sin(), a.sin(), a.cos()
    return _affine(x, theta)


def shear(x, factor, gen):
    theta = _eye(len(x), x.device)
    theta[:, 0, 1] = factor * _signs(len(x), gen, x.device)
    return _affine(x, theta)


def scale(x, factor, gen):
    return _affine(x, _eye(len(x), x.device) / factor * torch.tensor([1.0, 1.0, 0.0], device=x.device))


def translate(x, pixels, gen):
    theta = _eye(len(x), x.device)
    shift = 2 * pixels / x.shape[-1]
    theta[:, 0, 2] = shift * _signs(len(x), gen, x.device)
    theta[:, 1, 2] = shift * _signs(len(x), gen, x.device)
    return _affine(x, theta)


def shot_noise(x, photons, gen):
    return torch.poisson(x * photons, generator=gen) / photons


def impulse_noise(x, amount, gen):
    u = torch.rand(x.shape, generator=gen, device=x.device)
    salt = torch.rand(x.shape, generator=gen, device=x.device) < 0.5
    return torch.where(u < amount, salt.float(), x)


def motion_blur(x, length, gen):
    """Average along a line of `length` pixels at one random angle per batch."""
    k = int(length) | 1
    angle = float(torch.rand((), generator=gen, device=gen.device)) * math.pi
    kernel = torch.zeros(k, k, device=x.device)
    c = k // 2
    for t in torch.linspace(-c, c, 4 * k):
        kernel[round(c + float(t) * math.sin(angle)), round(c + float(t) * math.cos(angle))] = 1.0
    kernel = (kernel / kernel.sum()).expand(x.shape[1], 1, k, k)
    return F.conv2d(x, kernel, padding=c, groups=x.shape[1])


def brightness(x, delta, gen):
    return x + delta


def fog(x, strength, gen):
    """Smooth low-frequency haze (coarse noise upsampled), then contrast restored as in MNIST-C."""
    n, c, h, w = x.shape
    haze = sum(
        F.interpolate(torch.rand(n, 1, s, s, generator=gen, device=x.device), size=(h, w), mode="bicubic", align_corners=False) / s
        for s in (2, 4, 8)
    )
    haze = (haze - haze.amin((2, 3), keepdim=True)) / (haze.amax((2, 3), keepdim=True) - haze.amin((2, 3), keepdim=True) + 1e-8)
    peak = x.amax((1, 2, 3), keepdim=True)
    return (x + strength * haze) * peak / (peak + strength)


def stripe(x, width, gen):
    """A white vertical band of `width` pixels at a random column per image."""
    n, _, _, w = x.shape
    start = torch.randint(0, w - int(width) + 1, (n, 1), generator=gen, device=x.device)
    cols = torch.arange(w, device=x.device)[None]
    band = ((cols >= start) & (cols < start + int(width))).float()[:, None, None, :]
    return torch.maximum(x, band)


def gaussian_noise(x, std, gen):
    return x + std * torch.randn(x.shape, generator=gen, device=x.device)


CORRUPTIONS: dict[str, Corruption] = {
    "shot_noise": shot_noise,
    "impulse_noise": impulse_noise,
    "motion_blur": motion_blur,
    "rotate": rotate,
    "shear": shear,
    "scale": scale,
    "translate": translate,
    "brightness": brightness,
    "fog": fog,
    "stripe": stripe,
}


class PixelSpace:
    """Moves between the model's standardized inputs and [0, 1] pixels."""

    def __init__(self, data: Dataset):
        self.mean, self.std = data.mean, data.std

    def to_pixels(self, x):
        return x * self.std + self.mean

    def to_model(self, p):
        return (p.clamp(0, 1) - self.mean) / self.std


@torch.no_grad()
def _accuracy(model, x, y, loss_fn) -> tuple[float, float]:
    out = model(x)
    return float((out.argmax(-1) == y).float().sum()), float(loss_fn(out, y)) * len(y)


def _attack(model, x, y, loss_fn: LossFn, space: PixelSpace, eps: float, steps: int, gen) -> torch.Tensor:
    """FGSM (steps=0) or PGD with a random start, in the L-inf ball of radius eps around the pixels."""
    pix = space.to_pixels(x)
    adv = pix if steps == 0 else (pix + eps * (2 * torch.rand(pix.shape, generator=gen, device=pix.device) - 1)).clamp(0, 1)
    alpha = eps if steps == 0 else 2.5 * eps / steps
    for _ in range(max(steps, 1)):
        adv = adv.detach().requires_grad_(True)
        with torch.enable_grad():
            loss = loss_fn(model(space.to_model(adv)), y)
            (grad,) = torch.autograd.grad(loss, adv)
        adv = torch.min(torch.max(adv + alpha * grad.sign(), pix - eps), pix + eps).clamp(0, 1)
    return space.to_model(adv.detach())


def evaluate_robustness(model, data: Dataset, loss_fn: LossFn, rcfg: DictConfig, seed: int, batch_size: int = 1000) -> pd.DataFrame:
    """Accuracy and loss on the test set under every configured perturbation and severity."""
    model.eval()
    test = data.test if not rcfg.test_size else Split(data.test.x[: rcfg.test_size], data.test.y[: rcfg.test_size])
    space = PixelSpace(data)
    device = test.x.device
    tasks: list[tuple[str, float, Callable]] = [("clean", 0.0, lambda x, y, g: x)]
    tasks += [("gaussian", float(s), lambda x, y, g, s=s: space.to_model(gaussian_noise(space.to_pixels(x), s, g))) for s in rcfg.gaussian]
    for name in rcfg.corruptions:
        if name not in CORRUPTIONS:
            raise ConfigError(f"unknown corruption {name!r}; choose from {', '.join(CORRUPTIONS)}")
        for s in rcfg.corruptions[name]:
            tasks.append((name, float(s), lambda x, y, g, f=CORRUPTIONS[name], s=s: space.to_model(f(space.to_pixels(x), float(s), g))))
    tasks += [("fgsm", float(e), lambda x, y, g, e=e: _attack(model, x, y, loss_fn, space, float(e), 0, g)) for e in rcfg.fgsm]
    tasks += [
        ("pgd", float(e), lambda x, y, g, e=e: _attack(model, x, y, loss_fn, space, float(e), int(rcfg.pgd_steps), g)) for e in rcfg.pgd
    ]
    rows = []
    for name, severity, perturb in tasks:
        gen = generator(seed, f"robustness/{name}/{severity}", device)
        correct = loss_sum = 0.0
        for start in range(0, len(test), batch_size):
            x, y = test.x[start : start + batch_size], test.y[start : start + batch_size]
            c, lo = _accuracy(model, perturb(x, y, gen), y, loss_fn)
            correct, loss_sum = correct + c, loss_sum + lo
        rows.append({"perturbation": name, "severity": severity, "accuracy": correct / len(test), "loss": loss_sum / len(test)})
    return pd.DataFrame(rows)


def evaluate_run(run_dir: Path, rcfg: DictConfig, device: str | None = None) -> pd.DataFrame:
    """Rebuild a finished run's model from config.yaml + checkpoint.pt and write robustness.csv."""
    records = RunRecords(run_dir)
    if not records.config_path.exists():
        raise ConfigError(f"{run_dir} has no config.yaml: not a run directory")
    cfg = fill_legacy(OmegaConf.load(records.config_path))
    if device:
        cfg.device = device
    state = records.load_checkpoint()
    if state is None:
        raise ConfigError(f"{run_dir} has no checkpoint.pt to evaluate")
    setup = build(cfg)  # a trained run, rebuilt as it was trained: no training-time validation
    if setup.data.task != "classification" or len(setup.data.in_shape) != 3:
        raise ConfigError(f"{run_dir}: robustness needs an image classification run")
    setup.model.load_state_dict(state["model"])
    table = evaluate_robustness(setup.model, setup.data, setup.loss_fn, rcfg, int(rcfg.seed))
    atomic_write_text(records.dir / ROBUSTNESS, table.to_csv(index=False))
    return table


def robustness_config(conf: Path, overrides: list[str] | None = None) -> DictConfig:
    """conf/robustness/default.yaml with `key=value` overrides, checked against its keys and types."""
    path = conf / "robustness" / "default.yaml"
    cfg = OmegaConf.load(path)
    for key, value in check_overrides(file_schema(path, open_prefixes=("corruptions.",)), overrides or []).items():
        OmegaConf.update(cfg, key, list(value) if isinstance(value, tuple) else value)
    return cfg


def evaluate_after_training(cfg: DictConfig, run_dir: Path, status: str) -> None:
    """`evaluate=true`: a run that finished training gets its robustness.csv straight away."""
    if cfg.get("evaluate") and status == "completed" and not (Path(run_dir) / ROBUSTNESS).exists():
        evaluate_run(Path(run_dir), cfg.robustness)
