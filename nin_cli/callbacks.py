"""Hydra callbacks of `nin train` (conf/train.yaml, hydra.callbacks)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class SweepReport(Callback):
    """At the end of every multirun, whatever its launcher: report.md in the sweep directory and
    one line saying how the runs ended."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from nin_cli.analysis.report import write_report

        sweep = Path(str(config.hydra.sweep.dir))
        try:
            path, outcome = write_report(sweep)
        except Exception as exc:  # a report must never turn a finished sweep into a failure
            print(f"nin: warning: no report for {sweep}: {type(exc).__name__}: {exc}", file=sys.stderr)
            return
        print(f"{outcome}; report: {path}", file=sys.stderr)
