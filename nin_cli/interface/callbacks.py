"""Hydra callbacks of `nin train` (conf/train.yaml, hydra.callbacks)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

# Imported where used: Hydra builds these callbacks in every run's process; the analysis (pandas,
# matplotlib) is loaded at a sweep's start and end only.


class SweepReport(Callback):
    """Every multirun, whatever its launcher: its size recorded when it starts (sweep.json), a
    progress line as each job starts (runs ended / total), and at the end report.md in the sweep
    directory and one line saying how the runs ended. `nin progress DIR` reads the same records."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from nin_cli.analysis.progress import sweep_size, write_sweep_size

        try:
            write_sweep_size(Path(str(config.hydra.sweep.dir)), sweep_size(config))
        except OSError as exc:  # progress is a convenience: never stop a sweep for it
            print(f"nin: warning: sweep size not recorded: {exc}", file=sys.stderr)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        from hydra.types import RunMode

        from nin_cli.analysis.progress import read_progress

        if config.hydra.mode != RunMode.MULTIRUN or "nin_batched_launcher" in str(config.hydra.launcher.get("_target_", "")):
            return  # the batched launchers only collect the jobs here; they report progress per ensemble and job
        progress = read_progress(Path(str(config.hydra.sweep.dir)))
        jobs = "?" if progress.jobs is None else progress.jobs
        print(f"sweep: job {int(config.hydra.job.num) + 1}/{jobs} starting; {progress.line()}", file=sys.stderr)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from nin_cli.analysis.report import write_report

        if not config.hydra.launcher.get("wait", True):  # submitted and left: the runs have not ended yet
            return
        sweep = Path(str(config.hydra.sweep.dir))
        try:
            path, outcome = write_report(sweep)
        except Exception as exc:  # a report must never turn a finished sweep into a failure
            print(f"nin: warning: no report for {sweep}: {type(exc).__name__}: {exc}", file=sys.stderr)
            return
        print(f"{outcome}; report: {path}", file=sys.stderr)
