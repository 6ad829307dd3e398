"""Finding and reading run directories, unfinished and damaged ones included."""

from __future__ import annotations

import csv
import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

MARKERS = ("metrics.csv", "status.json")


@dataclass
class Run:
    path: Path
    config: dict
    status: dict
    metrics: pd.DataFrame
    steps: pd.DataFrame | None
    warnings: list[str] = field(default_factory=list)

    @property
    def sigma(self) -> float:
        return float(self.config.get("noise.sigma", math.nan))

    @property
    def nin_layers(self) -> list[str]:
        return [c.removeprefix("niw_norm_") for c in self.metrics.columns if c.startswith("niw_norm_")]

    def steps_per_epoch(self) -> float:
        m = self.metrics
        if len(m) >= 2 and m["epoch"].iloc[-1] > 0:
            return float(m["step"].iloc[-1] / m["epoch"].iloc[-1])
        return math.nan


def find_runs(paths: list[str | Path]) -> list[Path]:
    """Every directory under `paths` that holds a run (a metrics.csv or a status.json)."""
    found: set[Path] = set()
    for root in map(Path, paths):
        if not root.exists():
            warnings.warn(f"{root}: no such file or directory", stacklevel=2)
            continue
        candidates = [root] if root.is_file() else [root, *root.rglob("*")]
        for p in candidates:
            if p.is_dir() and any((p / m).exists() for m in MARKERS):
                found.add(p)
            elif p.is_file() and p.name in MARKERS:
                found.add(p.parent)
    return sorted(found)


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, f"{key}."))
        else:
            out[key] = tuple(v) if isinstance(v, list) else v
    return out


def read_table(path: Path, key: str, problems: list[str]) -> pd.DataFrame | None:
    """A run's CSV, keeping only complete numeric rows; what was dropped becomes a warning.

    A row is damaged when it has the wrong number of fields or a cell that is not a number
    ("nan" and "inf" are numbers: a regression run has no accuracy, a diverged one a NaN loss).
    """
    if not path.exists():
        return None
    try:
        with open(path, newline="", errors="replace") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            lines = list(reader)
    except (OSError, csv.Error) as exc:
        problems.append(f"{path.name} unreadable ({type(exc).__name__})")
        return None
    if not header or key not in header:
        problems.append(f"{path.name} has no {key} column")
        return None
    rows, bad = [], 0
    for line in lines:
        try:
            if len(line) != len(header):
                raise ValueError
            rows.append([float(v) for v in line])
        except ValueError:
            bad += 1
    if bad:
        problems.append(f"{path.name}: skipped {bad} damaged row(s)")
    return pd.DataFrame(rows, columns=header)


def load_run(path: Path) -> Run:
    problems: list[str] = []
    config: dict = {}
    for name in ("config.yaml", ".hydra/config.yaml"):
        if (path / name).exists():
            try:
                config = flatten(OmegaConf.to_container(OmegaConf.load(path / name), resolve=False))
                break
            except Exception as exc:  # a damaged YAML must not stop a summary of 500 runs
                problems.append(f"{name} unreadable ({type(exc).__name__})")
    else:
        problems.append("no config.yaml")
    try:
        status = json.loads((path / "status.json").read_text())
    except FileNotFoundError:
        status = {"status": "unknown"}
        problems.append("no status.json")
    except (json.JSONDecodeError, UnicodeDecodeError):
        status = {"status": "unknown"}
        problems.append("status.json damaged")
    metrics = read_table(path / "metrics.csv", "epoch", problems)
    if metrics is None:
        metrics = pd.DataFrame({"epoch": [], "step": []})
        problems.append("no usable metrics.csv")
    steps = read_table(path / "steps.csv", "step", problems)
    return Run(path, config, status, metrics, steps, problems)


def load_runs(paths: list[str | Path]) -> list[Run]:
    return [load_run(p) for p in find_runs(paths)]
