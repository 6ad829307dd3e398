"""`nin export tensorboard DIR`: one TensorBoard event folder per run (needs the `tensorboard` extra).

Each run gets its metrics.csv columns as scalars against the epoch (`metrics/<column>`), its
steps.csv columns against the step (`steps/<column>`), and its hyperparameters: the config keys
that vary across the runs exported together, with the phase (as its index in PHASES), the taus
and the final test accuracy as the hparams metrics.
"""

from __future__ import annotations

import math
from pathlib import Path

from nin_cli.analysis.phases import PHASES
from nin_cli.analysis.runs import Run, load_runs
from nin_cli.analysis.summarize import run_rows, varying_keys
from nin_cli.config.schema import load_settings
from nin_cli.errors import ConfigError, install_hint

INSTALL = f"TensorBoard export needs the tensorboard package: {install_hint('tensorboard')}"


def writer_class():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # torch raises this when tensorboard is missing
        raise ConfigError(INSTALL) from None
    return SummaryWriter


def export_tensorboard(paths: list[str | Path], out: Path) -> list[Path]:
    """Write one event folder per run under `out` (named as the run within its sweep); their paths."""
    writer = writer_class()
    runs = load_runs(paths)
    if not runs:
        raise ConfigError(f"no runs found under {', '.join(map(str, paths))}")
    root = Path(paths[0]) if len(paths) == 1 else None
    table = run_rows(runs, load_settings("analysis"), root)
    keys = varying_keys(runs)
    written = []
    for run, row in zip(runs, table.to_dict("records")):
        folder = out / str(row["run"]).replace("/", "_")
        with writer(log_dir=str(folder)) as w:
            _scalars(w, run)
            hparams = {k: _hparam(run.config.get(k)) for k in keys}
            metrics = {"hparam/phase": float(PHASES.index(row["phase"])) if row["phase"] in PHASES else math.nan}
            metrics |= {f"hparam/{k}": float(row[k]) for k in ("tau_niw", "tau_train", "tau_test", "final_test_acc")}
            w.add_hparams(hparams, metrics, run_name=".")
        written.append(folder)
    return written


def _scalars(w, run: Run) -> None:
    for table, key, prefix in ((run.metrics, "epoch", "metrics"), (run.steps, "step", "steps")):
        if table is None:
            continue
        for col in table.columns:
            if col == key:
                continue
            for t, v in zip(table[key].astype(int), table[col]):
                w.add_scalar(f"{prefix}/{col}", float(v), int(t))


def _hparam(value):
    """TensorBoard takes bool, int, float or str."""
    if isinstance(value, (bool, int, float, str)):
        return value
    return str(value)
