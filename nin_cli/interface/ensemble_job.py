"""The callable a submitit job unpickles (batched_slurm and batched_local launchers). submitit
installs its signal handlers only after unpickling it, and SLURM may send the time limit's
warning up to 60 s early (sbatch --signal): so this module imports nothing heavy, and torch
and the training code load inside the call, with the handlers already in place."""

from __future__ import annotations

from pathlib import Path

from nin_cli.interface.runner import run_jobs


class EnsembleJob:
    """One or more ensembles as a submitit job: it trains their members with `run_jobs`, ensembles
    of at most `ensemble_size` in turn (one per job on SLURM; a local job may hold several, so that
    no more processes run than there are cores). On SIGUSR2 (preemption, or the time limit's
    warning) submitit calls `checkpoint`, requeues the same job and exits; the members were
    checkpointed at their last epoch, their status says interrupted, and the requeued job resumes
    them there."""

    def __init__(self, ensemble_size: int) -> None:
        self.ensemble_size = ensemble_size

    def __call__(self, runs: list, run_dirs: list[str]) -> list[str]:
        """`runs`: the members' RunConfigs, resolved where the launcher collected them."""
        return [r.status for r in run_jobs(runs, [Path(d) for d in run_dirs], self.ensemble_size)]

    def checkpoint(self, *args, **kwargs):
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)
