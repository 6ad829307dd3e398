"""nin's results for notebooks: runs and their records as pandas DataFrames, and trained models.

import nin_cli
runs = nin_cli.load_runs("outputs/sweeps/fig3")          # one row per run (as runs.csv)
steps = nin_cli.load_metrics("outputs/sweeps/fig3", table="steps")  # long format, a `run` column
model = nin_cli.load_model("outputs/sweeps/fig3/noise.sigma=3,seed=0")
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

TABLES = {"metrics": "metrics", "steps": "steps"}


def _runs(path: str | Path):
    from nin_cli.analysis.runs import load_runs as read_runs

    runs = read_runs([path])
    for run in runs:
        for problem in run.warnings:
            print(f"nin: warning: {run.path}: {problem}")
    return runs


def load_runs(path: str | Path) -> pd.DataFrame:
    """One row per run under `path`: its name (`run`), every flattened config key, status, phase and
    its reason, the fitted time-scales and the final metrics. The columns runs.csv has hold the
    same values as runs.csv (`nin summarize` writes it from the same rows)."""
    from nin_cli.analysis.summarize import run_name, run_rows
    from nin_cli.schema import load_settings

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


def load_model(run_dir: str | Path, device: str = "cpu"):
    """The trained model of a run directory (config.yaml + checkpoint.pt), in eval mode, without
    loading any data. It expects inputs standardized as in training (the training set's pixel mean
    and std); `model(x)` is clean, `model(x, eps={layer: eps})` injects NIN noise."""
    from nin_cli.config import load
    from nin_cli.data import input_output_shape
    from nin_cli.errors import RecordError
    from nin_cli.network import build_model
    from nin_cli.records import RunRecords

    records = RunRecords(Path(run_dir))
    if not records.config_path.exists():
        raise RecordError(f"{run_dir} has no config.yaml: not a run directory")
    cfg = load(records.config_path).cfg
    state = records.load_checkpoint()
    if state is None:
        raise RecordError(f"{run_dir} has no checkpoint.pt")
    in_shape, n_out = input_output_shape(cfg.dataset)
    model = build_model(cfg.model, cfg.nin, in_shape, n_out, int(cfg.seed), records.dir)
    model.load_state_dict(state["model"])
    return model.to(device).eval()
