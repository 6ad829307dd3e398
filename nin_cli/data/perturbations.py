"""What a robustness evaluation will do, checked before anything runs: the perturbations and
severities of conf/robustness/default.yaml (with `key=value` overrides), in evaluation order, and
which of them this install can run. Below training and evaluation alike, so that a config is
checked once (nin_cli/config/resolve.py) without importing either."""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import sys
from dataclasses import dataclass

from omegaconf import DictConfig, ListConfig, OmegaConf

from nin_cli.data.corruptions import check_corruption
from nin_cli.errors import ConfigError, install_hint

ATTACKS = ("fgsm", "pgd", "apgd", "autoattack")
REFERENCE_ATTACKS = ("apgd", "autoattack")  # from torchattacks


@dataclass(frozen=True)
class Perturbation:
    name: str  # clean, gaussian, an MNIST-C corruption, or an attack
    severity: float  # noise std or epsilon in pixels; MNIST-C severity level for corruptions

    @property
    def is_attack(self) -> bool:
        return self.name in ATTACKS


def available(name: str) -> bool:
    """Whether the libraries a perturbation needs import here (the robustness extra)."""
    module = "torchattacks" if name in REFERENCE_ATTACKS else None if name in ("clean", "gaussian", "fgsm", "pgd") else "skimage"
    if module is None:
        return True
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def plan(rcfg: DictConfig) -> list[Perturbation]:
    """Every perturbation and severity the settings ask for, in evaluation order; checked."""
    gaussian = numbers(rcfg.get("gaussian"), "gaussian", "noise stds, e.g. [0.1, 0.2]")
    epsilons = numbers(rcfg.get("epsilons"), "epsilons", "attack epsilons, e.g. [0.1, 0.2]")
    tasks = [Perturbation("clean", 0.0)] + [Perturbation("gaussian", s) for s in gaussian]
    for name, levels in (rcfg.corruptions or {}).items():
        for level in numbers(levels, f"corruptions.{name}", "MNIST-C severities, e.g. [1, 3, 5]"):
            check_corruption(str(name), level)
            tasks.append(Perturbation(str(name), level))
    for attack in rcfg.attacks:
        if attack not in ATTACKS:
            raise ConfigError(f"unknown attack {attack!r} in robustness.attacks; choose from {', '.join(ATTACKS)}")
        tasks += [Perturbation(str(attack), e) for e in epsilons]
    if any(e < 0 for e in [*epsilons, *gaussian]):
        raise ConfigError("robustness: noise stds and attack epsilons must be >= 0")
    return tasks


def numbers(values, key: str, what: str) -> list[float]:
    """A list of finite numbers of the settings (noise stds, epsilons, severities), or one line naming it."""
    ok = isinstance(values, ListConfig) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    if not ok or not all(math.isfinite(v) for v in values):
        raise ConfigError(f"robustness.{key} must be a list of finite {what}, got {values!r}")
    return [float(v) for v in values]


def missing_extra(tasks: list[Perturbation], warn: bool = False, where: str = "") -> list[Perturbation]:
    """The planned perturbations this install cannot run (without the robustness extra); with
    `warn`, one line on stderr naming them."""
    missing = [t for t in tasks if not available(t.name)]
    if warn and missing:
        names = ", ".join(sorted({t.name for t in missing}))
        print(f"nin: warning: {where}skipping {names}: they need {install_hint('robustness')}", file=sys.stderr)
    return missing


def settings_hash(rcfg: DictConfig) -> str:
    return hashlib.sha1(json.dumps(OmegaConf.to_container(rcfg, resolve=True), sort_keys=True).encode()).hexdigest()[:16]
