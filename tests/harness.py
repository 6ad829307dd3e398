"""What the tests share: the settings they train at, and the ways they run `nin`.

The suite's expectations were measured on the CPU (bitwise resume, batched == single, thresholds):
`make_cfg` and `nin` below pin `device=cpu` for what trains unless a test names a device itself,
so that on a GPU host `device=auto` does not move them to CUDA. tests/train/test_cuda.py asks
for CUDA by name.

Running nin: `nin(...)` runs a command as a process of its own and returns its
`subprocess.CompletedProcess`; `nin_started(...)` is the same process running beside the test
(stop it, kill it, then `.result()`). By default the process is forked from a preloaded server
(tests/forkrun.py), without the 3-6 s of a new interpreter; `program=` runs an executable instead,
for the few tests about the interpreter itself (`INTERPRETER`: `python -m nin_cli`; the console
script; the installed wheel's). In this process: `nin_in_process(capsys, ...)`. The engine alone in
a process of its own, without the command line: `forked_train(cfg, run_dir)`.
"""

from __future__ import annotations

import copy
import csv
import functools
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import forkrun
import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from nin_cli.config.preflight import JobComposer, command_sources
from nin_cli.config.resolve import without_hydra
from nin_cli.config.sources import using
from nin_cli.interface.cli import main
from nin_cli.nets.network import build_model

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_CONF = REPO / "examples" / "nin_examples" / "conf"
# The example package's config directory (its networks and data as factories), on Hydra's search path.
EXAMPLES = "hydra.searchpath=[pkg://nin_examples.conf]"

# A test (or a parameter) that runs only where torch sees a CUDA device: `make test-gpu` runs them.
NEEDS_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

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


# The CNN of model=cnn, narrowed (8 and 16 channels, 32 hidden units), its Hessian on 100 images with
# one probe (its measurement was most of a run's time); each test adds its data's size.
SMALL_CNN = [
    *(o for o in QUICK if not o.startswith(("model.", "hessian."))),
    *("model=cnn", "model.channels=[8,16]", "model.hidden=32", "hessian.samples=100", "hessian.probes=1"),
]

# The small CNN on 600 training and 300 test images: the cNINR tests' runs (tests/nets, tests/train).
CNIN_CNN = [*SMALL_CNN, "dataset.train_size=600", "dataset.test_size=300"]

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


def make_cfg(*overrides: str) -> DictConfig:
    """Hydra's composition of nin train's config with these overrides (on the CPU unless they name a
    device), a copy of the test's own. The in-process tests ask for about 170 distinct ones, most of
    them a few structures (config-group choices) with other values: a worker composes each structure
    once and sets the values in it, as the pre-flight composes a sweep (preflight.JobComposer,
    compared with Hydra's composition job by job in tests/config/test_orchestration.py)."""
    return copy.deepcopy(_composed(tuple(on_cpu(list(overrides)))))


@functools.cache
def _composed(overrides: tuple[str, ...]) -> DictConfig:
    sources, lines = command_sources(list(overrides), [])
    key = tuple(sources.searchpath())
    if key not in _composers:
        _composers[key] = JobComposer(compose, sources)
    with using(sources), initialize_config_dir(config_dir=str(sources.dirs[0]), version_base="1.3"):
        # without_hydra's copy (a deep one) is the cache's own: the composer sets the next job's values in its template
        return without_hydra(_composers[key](lines)[0])


_composers: dict[tuple[str, ...], JobComposer] = {}  # a worker's, one per config search path


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


def cnn(*overrides: str):
    """model=cnn built on the CPU at seed 0, its NINs as `overrides` place them."""
    cfg = make_cfg("model=cnn", *overrides)
    return build_model(cfg.model, cfg.nin, (1, 28, 28), 10, 0)


def loss_and_gradients(model, x, y, eps) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The model's cross-entropy on a batch with the given NIN draws, on the model's device, and
    every parameter's gradient; both returned on the CPU."""
    device = next(model.parameters()).device
    model.zero_grad()
    loss = F.cross_entropy(model(x.to(device), {n: e.to(device) for n, e in eps.items()}), y.to(device))
    loss.backward()
    return loss.detach().cpu(), {n: p.grad.detach().cpu().clone() for n, p in model.named_parameters()}


INTERPRETER = (sys.executable, "-m", "nin_cli")


def nin_started(
    *args: str, cwd: Path | None = None, env: dict | None = None, program: Sequence[str | Path] | None = None
) -> forkrun.ForkedNin | forkrun.StartedNin:
    """`nin ARGS` running beside the test, in an environment of os.environ updated by `env` (a value
    of None removes the variable): forked, or started as `program ARGS`."""
    if program is None:
        return forkrun.ForkedNin(pinned(list(args)), cwd=cwd, env=env)
    return forkrun.StartedNin([*map(str, program), *pinned(list(args))], cwd=cwd, env=env)


def nin(
    *args: str, cwd: Path | None = None, env: dict | None = None, timeout: float | None = None, program: Sequence[str | Path] | None = None
) -> subprocess.CompletedProcess:
    """`nin ARGS` as a process of its own, to its end."""
    return nin_started(*args, cwd=cwd, env=env, program=program).result(timeout)


def nin_in_process(capsys, *args: str) -> tuple[int, str, str]:
    """`nin ARGS` in this process: (exit code, stdout, stderr)."""
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def forked_train(cfg, run_dir: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """`train(cfg, run_dir)` in a forked process of its own, failing as `nin train` does: the engine's
    records under a real kill, without the command line's composition (tests/forkrun.py)."""
    return forkrun.ForkedNin([cfg, str(run_dir)], env=env, target=forkrun.train_run).result()
