"""nin from Python (a notebook, a script): train a run, read runs and their records as pandas
DataFrames, and get a trained model and the data it was trained on.

import nin_cli
row = nin_cli.train_run("noise.sigma=3", "epochs=5", run_dir="outputs/mine/s3")  # as `nin train`; its runs.csv row
runs = nin_cli.load_runs("outputs/sweeps/fig3")          # one row per run (as runs.csv)
steps = nin_cli.load_metrics("outputs/sweeps/fig3", table="steps")  # long format, a `run` column
model = nin_cli.load_model("outputs/sweeps/fig3/noise.sigma=3,seed=0", raw_inputs=True)  # takes [0, 1] pixels
data = nin_cli.load_data("outputs/sweeps/fig3/noise.sigma=3,seed=0")  # train/test as the run saw them (standardized)
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
from torch import nn

from nin_cli.analysis.runs import load_runs as read_runs
from nin_cli.analysis.summarize import run_name, run_rows
from nin_cli.config.resolve import load
from nin_cli.config.schema import load_settings
from nin_cli.data.datasets import input_output_shape, load_dataset
from nin_cli.errors import RecordError
from nin_cli.nets.network import build_model
from nin_cli.records.store import RunRecords
from nin_cli.train.setup import load_weights

# Imported where used: Hydra's composition and the runner, only where a run trains: a notebook that reads runs does not load them.

TABLES = {"metrics": "metrics", "steps": "steps"}


def _runs(path: str | Path):
    runs = read_runs([path])
    for run in runs:
        for problem in run.warnings:
            print(f"nin: warning: {run.path}: {problem}")
    return runs


def train_run(*overrides: str, run_dir: str | Path, config_dir: str | Path | None = None) -> pd.Series:
    """Train one run as `nin train OVERRIDES --config-dir CONFIG_DIR hydra.run.dir=RUN_DIR` does
    (the same checks before anything trains, the same records; a finished run is found, not
    retrained; an interrupted one resumes), and return its row of `load_runs`: status, phase,
    time-scales, final accuracies and its config. Bad input raises nin's ConfigError, with the
    line `nin train` would print."""
    # Hydra's composition and the runner, imported only where a run trains: a notebook that reads
    # runs does not load Hydra (1.5 s).
    from nin_cli.config.preflight import check_command
    from nin_cli.config.sources import using
    from nin_cli.interface.runner import run_jobs

    plan = check_command([*overrides], multirun=False, config_dirs=[str(config_dir)] if config_dir else [])
    with using(plan.sources):
        run_jobs([plan.single], [Path(run_dir)])  # the RunConfig the pre-flight resolved: composed once
    return load_runs(run_dir).iloc[0]


def load_data(run_dir: str | Path, device: str = "cpu"):
    """The data a run trained on, as it saw it: `.train` and `.test` splits (`.x`, `.y`), inputs
    standardized with the training set's statistics (`.mean`, `.std` of the [0, 1] pixels for
    images; None for features, whose statistics `load_model(raw_inputs=True)` reads from the data
    itself), `.in_shape`, `.n_out`, `.task`."""
    return load_dataset(_saved_config(run_dir).dataset, device)


def _saved_config(run_dir: str | Path):
    records = RunRecords(Path(run_dir))
    if not records.config_path.exists():
        raise RecordError(f"{run_dir} has no config.yaml: not a run directory")
    return load(records.config_path).cfg


def load_runs(path: str | Path) -> pd.DataFrame:
    """One row per run under `path`: its name (`run`), every flattened config key, status, phase and
    its reason, the fitted time-scales and the final metrics. The columns runs.csv has hold the
    same values as runs.csv (`nin summarize` writes it from the same rows)."""
    root = Path(path)
    runs = _runs(root)
    if not runs:
        return pd.DataFrame(columns=["run"])
    table = run_rows(runs, load_settings("analysis"), root if root.is_dir() else None)
    config = pd.DataFrame([{"run": run_name(run.path, root if root.is_dir() else None), **run.config} for run in runs])
    extra = [c for c in config.columns if c not in table.columns]
    return table.merge(config[["run", *extra]], on="run", how="left", validate="one_to_one")


def load_metrics(path: str | Path, table: str = "metrics") -> pd.DataFrame:
    """Every run's metrics.csv (one row per epoch) or steps.csv (one row per logged step) under
    `path`, stacked in long format with a `run` column (the run's name as in `load_runs`)."""
    if table not in TABLES:
        raise ValueError(f"table must be one of {', '.join(TABLES)}, got {table!r}")
    from nin_cli.analysis.summarize import run_name

    root = Path(path)
    frames = []
    for run in _runs(root):
        data = run.metrics if table == "metrics" else run.steps
        if data is not None and len(data):
            frames.append(data.assign(run=run_name(run.path, root))[["run", *data.columns]])
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["run"])


def load_model(run_dir: str | Path, device: str = "cpu", raw_inputs: bool = False):
    """The trained model of a run directory (config.yaml + checkpoint.pt), in eval mode. It takes
    inputs standardized as in training (`load_data` gives them), or with `raw_inputs=True` the
    data as it comes ([0, 1] pixels or uint8 images, unscaled features), standardized inside with
    the training set's statistics (which loads the data once). `model(x)` is clean,
    `model(x, eps={layer: eps})` injects NIN noise."""
    cfg = _saved_config(run_dir)
    records = RunRecords(Path(run_dir))
    state = records.load_checkpoint()
    if state is None:
        raise RecordError(f"{run_dir} has no checkpoint.pt")
    in_shape, n_out = input_output_shape(cfg.dataset)
    model = build_model(cfg.model, cfg.nin, in_shape, n_out, int(cfg.seed), records.dir)
    load_weights(model, state)
    if raw_inputs:
        model = Standardized(model, *input_statistics(cfg.dataset))
    return model.to(device).eval()


def input_statistics(dataset_cfg) -> tuple:
    """(mean, std) a run's inputs were standardized with, for inputs as the data holds them;
    (None, None) for data nin does not standardize (the linear toy's)."""
    from nin_cli.data.datasets import load_dataset, user_data

    if user_data.is_user_data(dataset_cfg):
        return user_data.input_statistics(dataset_cfg)
    data = load_dataset(dataset_cfg)
    return data.mean, data.std


class Standardized(nn.Module):
    """A trained model that takes raw inputs: uint8 images scaled to [0, 1], then every input
    standardized with the training set's statistics, as in training."""

    def __init__(self, model: nn.Module, mean: torch.Tensor | None, std: torch.Tensor | None):
        super().__init__()
        self.model = model
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x: torch.Tensor, eps=None) -> torch.Tensor:
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        if x.ndim == 3 and self.mean is not None and self.mean.ndim == 4:
            x = x[:, None]  # N x H x W grey images
        if self.mean is not None:
            x = (x - self.mean) / self.std
        return self.model(x, eps)
