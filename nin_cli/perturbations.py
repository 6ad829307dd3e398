"""What a robustness evaluation will do, checked before anything runs: the perturbations and
severities of conf/robustness/default.yaml (with `key=value` overrides), in evaluation order, and
which of them this install can run. Below training and evaluation alike, so that a config is
checked once (nin_cli/config.py) without importing either."""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from nin_cli.corruptions import check_corruption
from nin_cli.errors import ConfigError, install_hint
from nin_cli.schema import ROBUSTNESS_RULES, check_overrides, file_schema

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
    import importlib

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
    tasks = [Perturbation("clean", 0.0)] + [Perturbation("gaussian", float(s)) for s in rcfg.gaussian]
    for name, levels in (rcfg.corruptions or {}).items():
        for level in levels:
            check_corruption(str(name), float(level))
            tasks.append(Perturbation(str(name), float(level)))
    for attack in rcfg.attacks:
        if attack not in ATTACKS:
            raise ConfigError(f"unknown attack {attack!r} in robustness.attacks; choose from {', '.join(ATTACKS)}")
        tasks += [Perturbation(str(attack), float(e)) for e in rcfg.epsilons]
    if any(float(e) < 0 for e in [*rcfg.epsilons, *rcfg.gaussian]):
        raise ConfigError("robustness: noise stds and attack epsilons must be >= 0")
    return tasks


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


def robustness_config(conf: Path, overrides: list[str] | None = None) -> DictConfig:
    """conf/robustness/default.yaml with `key=value` overrides, checked against its keys and types."""
    path = conf / "robustness" / "default.yaml"
    cfg = OmegaConf.load(path)
    schema = file_schema(path, open_prefixes=("corruptions.",), rules=ROBUSTNESS_RULES)
    for key, value in check_overrides(schema, overrides or []).items():
        # as Hydra does for `nin train robustness.KEY=...`: a table merges into the default one
        # (corruptions={rotate: [1, 5]} changes rotate's levels), a list replaces a list
        OmegaConf.update(cfg, key, list(value) if isinstance(value, tuple) else value)
    plan(cfg)  # unknown corruptions, levels and attacks: one line before any run is evaluated
    return cfg
