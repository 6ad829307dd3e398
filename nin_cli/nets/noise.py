"""What the NINs emit: unit-variance draws from a distribution, scaled by a per-epoch sigma schedule."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from nin_cli.errors import ConfigError

MODES = ("resample", "fixed")


def _gaussian(n: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.randn(n, generator=gen, device=device)


def _uniform(n, gen, device):
    return (2.0 * torch.rand(n, generator=gen, device=device) - 1.0) * math.sqrt(3.0)


def _rademacher(n, gen, device):
    return torch.where(torch.rand(n, generator=gen, device=device) < 0.5, -1.0, 1.0)


def _laplace(n, gen, device):
    """Scale b = 1/sqrt(2) gives variance 2 b^2 = 1."""
    centred = torch.rand(n, generator=gen, device=device) - 0.5
    return -torch.sign(centred) * torch.log1p(-2.0 * centred.abs().clamp(max=0.5 - 1e-7)) / math.sqrt(2.0)


# name -> (n, generator, device) -> n zero-mean, unit-variance draws
DISTRIBUTIONS: dict[str, Callable[[int, torch.Generator, torch.device], torch.Tensor]] = {
    "gaussian": _gaussian,
    "uniform": _uniform,
    "rademacher": _rademacher,
    "laplace": _laplace,
}

# name -> (sigma, schedule config, k = epochs already trained, epochs) -> the epoch's sigma
SCHEDULES: dict[str, Callable[..., float]] = {
    "constant": lambda sigma, s, k, epochs: sigma,
    "linear": lambda sigma, s, k, epochs: sigma + k / max(epochs - 1, 1) * (float(s.end) - sigma),
    "exponential": lambda sigma, s, k, epochs: sigma * float(s.gamma) ** k,
    "step": lambda sigma, s, k, epochs: sigma * float(s.gamma) ** (k // int(s.step_size)),
}


def unit_noise(distribution: str, n: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """n zero-mean, unit-variance samples."""
    if distribution not in DISTRIBUTIONS:
        raise ConfigError(f"unknown noise distribution {distribution!r}; choose from {', '.join(DISTRIBUTIONS)}")
    return DISTRIBUTIONS[distribution](n, gen, device)


def sigma_at(noise_cfg, epoch: int, epochs: int) -> float:
    """The noise scale used during training epoch `epoch` (1-based)."""
    schedule = noise_cfg.schedule
    if schedule.kind not in SCHEDULES:
        raise ConfigError(f"unknown noise schedule {schedule.kind!r}; choose from {', '.join(SCHEDULES)}")
    return SCHEDULES[schedule.kind](float(noise_cfg.sigma), schedule, max(epoch - 1, 0), epochs)


class NoiseSource:
    """Unit-variance eps for each NIN layer, scaled by sigma where it is used.

    `resample`: fresh values for every sample of every epoch, drawn once per epoch (one call per
    layer rather than one per step: fewer kernel launches, and the batched engine can stack its
    members' draws). `fixed`: one value per training sample drawn before training, so a sample sees
    the same eps every epoch.
    """

    def __init__(self, noise_cfg, layers: list[str], n_train: int, gen: torch.Generator, device: torch.device):
        self.distribution = noise_cfg.distribution
        self.mode = noise_cfg.mode
        self.layers = layers
        self.gen = gen
        self.device = device
        self.table: dict[str, torch.Tensor] = {}
        if self.mode == "fixed":
            self.table = {name: unit_noise(self.distribution, n_train, gen, device) for name in layers}

    def epoch_units(self, perm: torch.Tensor) -> dict[str, torch.Tensor]:
        """Unit eps for one epoch in its sample order: the step over perm[a:b] uses entries a:b."""
        if self.mode == "fixed":
            return {name: self.table[name][perm] for name in self.layers}
        return {name: unit_noise(self.distribution, len(perm), self.gen, self.device) for name in self.layers}

    def fresh(self, n: int, sigma: float) -> dict[str, torch.Tensor] | None:
        """n new draws per layer, scaled: the noise of an evaluation pass."""
        if not self.layers:
            return None
        return {name: sigma * unit_noise(self.distribution, n, self.gen, self.device) for name in self.layers}

    def state_dict(self) -> dict:
        return {"gen": self.gen.get_state(), "table": {k: v.cpu() for k, v in self.table.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.gen.set_state(state["gen"])
        self.table = {k: v.to(self.device) for k, v in state["table"].items()}
