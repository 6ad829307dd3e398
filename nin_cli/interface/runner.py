"""The runner above the stages: what `nin train` and every launcher run for a sweep's jobs. It
trains them (nin_cli/train: opened, resumed or skipped, in ensembles), then evaluates each completed
run whose config asks for it (nin_cli/robustness/evaluate.py); `hydra_task` is `nin train`'s Hydra task."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from nin_cli.config.plan import checked
from nin_cli.config.resolve import RunConfig
from nin_cli.errors import console, one_line_errors
from nin_cli.robustness.evaluate import evaluate_after_training
from nin_cli.train.ensembles import as_runs, train_many
from nin_cli.train.member import RunResult


def run_jobs(runs: Sequence[RunConfig | DictConfig], run_dirs: list[Path], ensemble_size: int = 64) -> list[RunResult]:
    """Train the jobs, then evaluate each completed one whose config asks for it (evaluate=true).
    Each job comes resolved (RunConfig) from where it was checked or collected; nothing here
    resolves it again."""
    runs = as_runs(runs)
    results = train_many(runs, run_dirs, ensemble_size)
    for run, run_dir, result in zip(runs, run_dirs, results):
        evaluate_after_training(run.cfg, Path(run_dir), result.status)
    return results


def hydra_task(cfg: DictConfig) -> str:
    """`nin train`'s Hydra task function: one run in Hydra's output directory, a line on how it ended."""
    hydra = HydraConfig.get()
    run_dir = Path(hydra.runtime.output_dir)
    with one_line_errors():
        (result,) = run_jobs([checked(list(hydra.overrides.task), lambda: cfg)], [run_dir])
    colour = {"completed": "green", "diverged": "yellow"}.get(result.status, "red")
    detail = f" ({result.reason})" if result.reason else ""
    console.print(f"[{colour}]{result.status}[/] at epoch {result.epoch}{detail}: {run_dir}")
    return result.status
