"""Shared helpers: compose a config the way `nin train` does, and run the CLI in a subprocess."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from nin_cli.schema import conf_dir

# Small, quick settings on the embedded slice of real Fashion-MNIST.
QUICK = ["dataset=fashion_mnist_mini", "progress=false", "model.width=128", "hessian.samples=300", "hessian.probes=2"]


def make_cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def read_rows(run_dir: Path, table: str = "metrics.csv") -> list[dict[str, str]]:
    with open(Path(run_dir) / table, newline="") as f:
        return list(csv.DictReader(f))


def column(run_dir: Path, name: str, table: str = "metrics.csv") -> list[float]:
    return [float(r[name]) for r in read_rows(run_dir, table)]


def without_timing(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """Drop the wall-clock column: the only one two identical runs may differ in."""
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def nin_cli(*args: str, cwd: Path | None = None, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "nin_cli", *args], cwd=cwd, env=full_env, capture_output=True, text=True, **kwargs)


@pytest.fixture
def quick():
    return list(QUICK)
