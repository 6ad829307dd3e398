"""How far a sweep has got, whatever launches it: runs finished out of the sweep's total.

The total is counted once, when the multirun starts (the SweepReport callback writes sweep.json in
the sweep directory); the finished runs are read from their status.json files, so the count is
right across processes (joblib workers, submitit jobs on other nodes) and after a restart.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from nin_cli.analysis.runs import find_runs
from nin_cli.records import ENDED, RunRecords, atomic_write_text

SWEEP_FILE = "sweep.json"


def sweep_size(config: DictConfig) -> int | None:
    """The number of jobs Hydra's sweeper makes of this multirun (its params, then the command
    line's overrides, expanded as BasicSweeper does); None when it cannot be counted here."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = config.hydra.sweeper.get("params") or {}
    arguments = [f"{k}={v}" for k, v in params.items()] + list(config.hydra.overrides.task)
    try:
        batches = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(arguments), None)
    except Exception:  # e.g. glob() choices, which need Hydra's config loader: no total, still progress
        return None
    return sum(len(batch) for batch in batches)


def write_sweep_size(sweep: Path, total: int | None) -> None:
    sweep.mkdir(parents=True, exist_ok=True)
    atomic_write_text(sweep / SWEEP_FILE, json.dumps({"total": total}) + "\n")


@dataclass
class SweepProgress:
    total: int | None  # jobs in the sweep (None: not recorded)
    statuses: Counter  # run status -> number of run directories with it

    @property
    def ended(self) -> int:
        return sum(self.statuses[s] for s in ENDED)

    @property
    def complete(self) -> bool:
        return self.total is not None and self.ended >= self.total

    def line(self) -> str:
        """'5/12 runs ended (4 completed, 1 diverged); 2 running'"""
        total = "?" if self.total is None else self.total
        parts = [f"{self.statuses[s]} {s}" for s in ENDED if self.statuses[s]]
        others = [f"{n} {s}" for s, n in sorted(self.statuses.items()) if s not in ENDED and n]
        text = f"{self.ended}/{total} runs ended" + (f" ({', '.join(parts)})" if parts else "")
        return text + (f"; {', '.join(others)}" if others else "")


def read_progress(sweep: Path) -> SweepProgress:
    """The sweep's recorded total and its runs' statuses, read from disk now."""
    sweep = Path(sweep)
    total = None
    try:
        total = json.loads((sweep / SWEEP_FILE).read_text())["total"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    statuses: Counter = Counter()
    for run in find_runs([sweep]):
        status = RunRecords(run).read_status()
        statuses[status["status"] if status else "unknown"] += 1
    return SweepProgress(total, statuses)
