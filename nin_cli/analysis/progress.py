"""How far a sweep has got, whatever launches it: runs finished out of the sweep's total.

The total is counted when a multirun starts (the SweepReport callback writes sweep.json in the
sweep directory: the runs already there plus this command's new ones); the finished runs are read
from their status.json files, so the count is right across processes (joblib workers, submitit
jobs on other nodes) and after a restart.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from nin_cli.analysis.runs import find_runs
from nin_cli.config.overrides import sweep_jobs as expand
from nin_cli.errors import ConfigError, RecordError, progress_bar
from nin_cli.identity import run_dirname
from nin_cli.records.store import ENDED, RunRecords, atomic_write_text

SWEEP_FILE = "sweep.json"
DEFAULT_SUBDIR = "${nin_dirname:${hydra.overrides.task}}"  # conf/train.yaml's hydra.sweep.subdir


def sweep_jobs(config: DictConfig) -> list[list[str]] | None:
    """Each job's overrides as Hydra's sweeper makes them of this multirun (its params, then the
    command line's overrides: nin_cli/config/resolve.py's one expansion); None when they cannot be
    expanded here (glob() choices, which need Hydra's config loader: no total, still progress)."""
    if "nin_map_sweeper" in str(config.hydra.sweeper.get("_target_", "")):
        return None  # a phase map decides its runs round by round
    params = {str(k): str(v) for k, v in (config.hydra.sweeper.get("params") or {}).items()}
    try:
        return expand(params, list(config.hydra.overrides.task))
    except Exception:
        return None


def sweep_size(config: DictConfig) -> tuple[int | None, int | None]:
    """(runs the sweep directory will hold when this multirun ends, jobs of this multirun).

    A sweep directory is often extended (a refined grid, more seeds): its total counts the runs
    already there plus the jobs of this command that are not (named by the run-directory rule)."""
    jobs = sweep_jobs(config)
    if jobs is None:
        return None, None
    sweep = Path(str(config.hydra.sweep.dir))
    if OmegaConf.to_container(config.hydra.sweep, resolve=False).get("subdir") != DEFAULT_SUBDIR:
        return len(jobs), len(jobs)  # run directories named otherwise: this command's jobs only
    existing = {str(run.relative_to(sweep)) for run in find_runs([sweep])} if sweep.is_dir() else set()
    return len(existing | {run_dirname(job) for job in jobs}), len(jobs)


def write_sweep_size(sweep: Path, size: tuple[int | None, int | None]) -> None:
    total, jobs = size
    sweep.mkdir(parents=True, exist_ok=True)
    atomic_write_text(sweep / SWEEP_FILE, json.dumps({"total": total, "jobs": jobs}) + "\n")


@dataclass
class SweepProgress:
    total: int | None  # runs in the sweep directory once the latest multirun ends (None: not recorded)
    statuses: Counter  # run status -> number of run directories with it
    jobs: int | None = None  # jobs of the latest multirun
    damaged: bool = False  # sweep.json there but unreadable: the total is unknown

    @property
    def ended(self) -> int:
        return sum(self.statuses[s] for s in ENDED)

    @property
    def complete(self) -> bool:
        """Every run of the recorded total has ended (without a total: every run found has)."""
        if self.total is None:
            return self.ended > 0 and self.ended == sum(self.statuses.values())
        return self.ended >= self.total

    def line(self) -> str:
        """'5/12 runs ended (4 completed, 1 diverged); 2 running'"""
        total = "?" if self.total is None else self.total
        if not self.statuses:
            return f"0/{total} runs ended; no run has started yet"
        parts = [f"{self.statuses[s]} {s}" for s in ENDED if self.statuses[s]]
        others = [f"{n} {s}" for s, n in sorted(self.statuses.items()) if s not in ENDED and n]
        text = f"{self.ended}/{total} runs ended" + (f" ({', '.join(parts)})" if parts else "")
        text += f"; {', '.join(others)}" if others else ""
        return text + (f"; {SWEEP_FILE} is damaged: the sweep's size is unknown" if self.damaged else "")


def read_progress(sweep: Path) -> SweepProgress:
    """The sweep's recorded total and its runs' statuses, read from disk now."""
    sweep = Path(sweep)
    recorded: dict = {}
    damaged = False
    try:
        recorded = json.loads((sweep / SWEEP_FILE).read_text())
    except FileNotFoundError:
        pass
    except (OSError, ValueError):
        damaged = True
    if not isinstance(recorded, dict) or not isinstance(recorded.get("total"), (int, type(None))):
        recorded, damaged = {}, True
    statuses: Counter = Counter()
    for run in find_runs([sweep]):
        records = RunRecords(run)
        status = records.read_status()
        name = status["status"] if status else "unknown"
        if name == "running" and records.lock.holder() is None:
            name = "interrupted"  # its process is gone (killed before it could say so): rerun to resume
        statuses[name] += 1
    return SweepProgress(recorded.get("total"), statuses, recorded.get("jobs", recorded.get("total")), damaged)


def show_progress(sweep: Path, watch: bool, every: float) -> None:
    """`nin progress`: one line (runs ended / total, by status), or with `watch` a live bar until
    every run has ended. A directory that holds no run and no sweep record is an error: nothing
    there would ever end."""
    sweep = Path(sweep)
    if not sweep.is_dir():
        raise ConfigError(f"{sweep}: no such sweep directory")
    progress = read_progress(sweep)
    if not progress.statuses and progress.total is None:
        raise RecordError(f"{sweep} holds no runs and no sweep record ({SWEEP_FILE}): not a sweep directory, or nothing has started there")
    if not watch:
        print(progress.line())
        return
    with progress_bar(True) as bar:
        task = bar.add_task(sweep.name, total=progress.total, info="")
        while True:
            bar.update(task, completed=progress.ended, total=progress.total, info=progress.line())
            if progress.complete:
                break
            time.sleep(every)
            progress = read_progress(sweep)
