"""Shared helpers: compose a config the way `nin train` does, and run the CLI as its own process.

The suite's expectations were measured on the CPU (bitwise resume, batched == single, thresholds):
`make_cfg` and the ways of running `nin` below pin `device=cpu` for what trains unless a test names
a device itself, so that on a GPU host `device=auto` does not move them to CUDA. tests/test_cuda.py
asks for CUDA by name.

`nin_cli(...)` forks the command from a preloaded server (tests/forkrun.py): a process of its own,
without the 3-6 s of a new interpreter. `real_nin(...)` starts `python -m nin_cli` for the few
tests about the interpreter itself (the console script, a pipe's reader leaving).
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import forkrun
import pytest
from hydra import compose, initialize_config_dir

from nin_cli.config.schema import conf_dir

# Small, quick settings on the embedded slice of real Fashion-MNIST.
QUICK = ["dataset=fashion_mnist_mini", "progress=false", "model.width=128", "hessian.samples=300", "hessian.probes=2"]

# 4 steps per epoch, a 32-unit MLP: a run of 3 epochs takes about a second.
TINY = [
    "dataset=fashion_mnist_mini",
    "dataset.train_size=512",
    "dataset.test_size=200",
    "progress=false",
    "model.width=32",
    "hessian.samples=100",
    "hessian.probes=1",
    "noise.sigma=30",
    "epochs=3",
]


# The CNN of model=cnn, narrowed (8 and 16 channels, 32 hidden units); each test adds its data's size.
SMALL_CNN = [*(o for o in QUICK if not o.startswith("model.")), "model=cnn", "model.channels=[8,16]", "model.hidden=32"]

TRAINING_COMMANDS = ("train", "map")


def on_cpu(overrides: list[str]) -> list[str]:
    """`overrides` with device=cpu in front, unless they name a device."""
    return overrides if any(str(o).lstrip("+~").startswith("device=") for o in overrides) else ["device=cpu", *overrides]


def pinned(args: list[str]) -> list[str]:
    """A `nin` command line, on the CPU if it trains (see the module's docstring)."""
    args = [str(a) for a in args]
    if not args or args[0] not in TRAINING_COMMANDS or any(a in ("--help", "-h", "--hydra-help") for a in args):
        return args
    return [args[0], *on_cpu(args[1:])]


def make_cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose("train", overrides=on_cpu(list(overrides)))


def read_rows(run_dir: Path, table: str = "metrics.csv") -> list[dict[str, str]]:
    with open(Path(run_dir) / table, newline="") as f:
        return list(csv.DictReader(f))


def column(run_dir: Path, name: str, table: str = "metrics.csv") -> list[float]:
    return [float(r[name]) for r in read_rows(run_dir, table)]


def without_timing(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """Drop the wall-clock column: the only one two identical runs may differ in."""
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def coloured(png: Path) -> float:
    """The fraction of a PNG's pixels in colour (the data: axes, ticks and labels are grey): 0 for
    a figure of empty axes; 0.004 for two thin curves, 0.017-0.38 for nin's plots (measured
    2026-12-05)."""
    import matplotlib.image

    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    pixels = matplotlib.image.imread(png)[..., :3]
    return float(((pixels.max(axis=-1) - pixels.min(axis=-1)) > 0.2).mean())


def nin_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float | None = None) -> subprocess.CompletedProcess:
    return forkrun.run(pinned(list(args)), cwd=cwd, env=env, timeout=timeout)


def start_nin(*args: str, cwd: Path | None = None, env: dict | None = None) -> forkrun.ForkedNin:
    """A `nin` running beside the test: stop it at a fault point (`NIN_FAULT=point:n:SIGSTOP`), then act."""
    return forkrun.ForkedNin(pinned(list(args)), cwd=cwd, env=env)


def forked_train(cfg, run_dir: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """`train(cfg, run_dir)` in a forked process of its own, failing as `nin train` does: the engine's
    records under a real kill, without the command line's composition (tests/forkrun.py)."""
    return forkrun.ForkedNin([cfg, str(run_dir)], env=env, target=forkrun.train_run).result()


def real_nin(*args: str, cwd: Path | None = None, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "nin_cli", *pinned(list(args))], cwd=cwd, env=full_env, capture_output=True, text=True, **kwargs
    )


@pytest.fixture
def quick():
    return list(QUICK)


class Gate:
    """The fault point `NIN_FAULT=point:n:HOLD` (nin_cli/records/faults.py): runs wait there until the test opens it."""

    def __init__(self, directory: Path):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)

    def env(self, point: str, hit: int) -> dict[str, str]:
        return {"NIN_FAULT": f"{point}:{hit}:HOLD", "NIN_FAULT_GATE": str(self.dir)}

    def held(self, count: int = 1, timeout: float = 300, alive: Callable[[], bool] = lambda: True) -> list[int]:
        """The pids of the `count` processes held at the point, once they all are."""
        deadline = time.monotonic() + timeout
        while len(pids := sorted(int(p.name.split(".")[1]) for p in self.dir.glob("held.*"))) < count:
            assert alive(), "the command ended before reaching its fault point"
            assert time.monotonic() < deadline, f"{count - len(pids)} process(es) never reached the fault point"
            time.sleep(0.02)
        return pids

    def open(self) -> None:
        (self.dir / "go").touch()


@pytest.fixture
def gate(tmp_path):
    held = Gate(tmp_path / "gate")
    yield held
    held.open()  # a test that failed before opening it leaves no process waiting forever
