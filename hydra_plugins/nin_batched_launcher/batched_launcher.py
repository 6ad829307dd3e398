"""Hydra launchers that train a sweep's jobs as batched ensembles (nin_cli/train).

- `hydra/launcher=batched`: every ensemble in the launching process, one after the other.
- `hydra/launcher=batched_slurm` / `batched_local`: each ensemble of at most
  `hydra.launcher.batch_size` members is one submitit job (a SLURM job array with
  `array_parallelism`; local processes through submitit's local executor), requeued on SIGUSR2.

(No `from __future__ import annotations` here: Hydra imports plugin modules outside sys.modules,
where dataclasses cannot resolve string annotations.)

Each job still gets Hydra's usual run directory (with .hydra/ and its log): run_job is called with
a task function that only collects the job's config; training happens afterwards, in ensembles.
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf, LocalQueueConf, SlurmQueueConf
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)


@dataclass
class BatchedLauncherConf:
    _target_: str = "hydra_plugins.nin_batched_launcher.batched_launcher.BatchedLauncher"
    batch_size: int = 64  # models trained together in one process


@dataclass
class BatchedSlurmConf(SlurmQueueConf):
    _target_: str = "hydra_plugins.nin_batched_launcher.batched_launcher.BatchedSlurmLauncher"
    batch_size: int = 64  # members per ensemble, i.e. per SLURM job


@dataclass
class BatchedLocalConf(LocalQueueConf):
    _target_: str = "hydra_plugins.nin_batched_launcher.batched_launcher.BatchedLocalLauncher"
    batch_size: int = 64  # members per ensemble, i.e. per local submitit job


store = ConfigStore.instance()
store.store(group="hydra/launcher", name="batched", node=BatchedLauncherConf, provider="nin")
# the bases of conf/hydra/launcher/batched_slurm.yaml and batched_local.yaml (which set nin's presets)
store.store(group="hydra/launcher", name="nin_batched_slurm", node=BatchedSlurmConf, provider="nin")
store.store(group="hydra/launcher", name="nin_batched_local", node=BatchedLocalConf, provider="nin")


class CollectingLauncher(Launcher):
    """Runs each job's Hydra bookkeeping (run directory, .hydra/, overrides) and collects its config."""

    def __init__(self, batch_size: int = 64) -> None:
        self.batch_size = batch_size
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def collect(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> tuple[list[JobReturn], list[DictConfig], list[Path]]:
        setup_globals()
        assert self.config is not None and self.hydra_context is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        cfgs: list[DictConfig] = []
        dirs: list[Path] = []

        def collect(cfg: DictConfig) -> None:
            cfgs.append(cfg)
            dirs.append(Path(HydraConfig.get().runtime.output_dir))

        returns = []
        for offset, overrides in enumerate(job_overrides):
            idx = initial_job_idx + offset
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = idx
                sweep_config.hydra.job.num = idx
            returns.append(
                run_job(
                    hydra_context=self.hydra_context,
                    task_function=collect,
                    config=sweep_config,
                    job_dir_key="hydra.sweep.dir",
                    job_subdir_key="hydra.sweep.subdir",
                )
            )
        return returns, cfgs, dirs


def settle(returns: list[JobReturn], statuses: list[str]) -> list[JobReturn]:
    for ret, status in zip(returns, statuses):
        ret.status = JobStatus.COMPLETED
        ret.return_value = status
    return returns


def tally(statuses: list[str]) -> str:
    counts = {s: statuses.count(s) for s in dict.fromkeys(statuses)}
    return ", ".join(f"{n} {s}" for s, n in counts.items())


class BatchedLauncher(CollectingLauncher):
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from nin_cli.errors import one_line_errors
        from nin_cli.train import run_jobs

        log.info(f"Launching {len(job_overrides)} jobs as batched ensembles of up to {self.batch_size}")
        returns, cfgs, dirs = self.collect(job_overrides, initial_job_idx)
        with one_line_errors():
            results = run_jobs(cfgs, dirs, self.batch_size)
        return settle(returns, [r.status for r in results])


class BatchedSubmititLauncher(CollectingLauncher):
    """One submitit job per ensemble; ensembles whose members all finished are not submitted."""

    _EXECUTOR = "abstract"

    def __init__(self, batch_size: int = 64, **params: Any) -> None:
        super().__init__(batch_size)
        self.params = {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v for k, v in params.items()}

    def executor(self):
        """submitit's executor with the launcher's resources, as hydra's submitit launcher sets them."""
        import submitit

        init_keys = {"submitit_folder", "max_num_timeout"}
        init = {"folder": self.params["submitit_folder"]}
        if "max_num_timeout" in self.params:
            init[f"{self._EXECUTOR}_max_num_timeout"] = self.params["max_num_timeout"]
        executor = submitit.AutoExecutor(cluster=self._EXECUTOR, **init)
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{k if k in base else f"{self._EXECUTOR}_{k}": v for k, v in self.params.items() if k not in init_keys})
        return executor

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from nin_cli.train.jobs import EnsembleJob, finished, plan_ensembles, recorded_status

        returns, cfgs, dirs = self.collect(job_overrides, initial_job_idx)
        ensembles = plan_ensembles(cfgs, self.batch_size)
        todo = [idx for idx in ensembles if not all(finished(dirs[i]) for i in idx)]
        log.info(
            f"{len(cfgs)} runs in {len(ensembles)} ensembles of up to {self.batch_size}: "
            f"{len(todo)} submitted as {self._EXECUTOR} jobs, {len(ensembles) - len(todo)} already finished"
        )
        statuses = [recorded_status(d) for d in dirs]
        if todo:
            jobs = self.executor().map_array(
                EnsembleJob(), [[cfgs[i] for i in idx] for idx in todo], [[str(dirs[i]) for i in idx] for idx in todo]
            )
            for job, idx in zip(jobs, todo):
                log.info(f"\tjob {job.job_id}: {len(idx)} members, log {job.paths.stderr}")
            wait_with_progress(jobs, [dirs[i] for idx in todo for i in idx])
            for job, idx in zip(jobs, todo):
                try:
                    for i, status in zip(idx, job.results()[0]):
                        statuses[i] = status
                except Exception as exc:  # a failed job: its members stay as their status.json says
                    first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
                    log.error(f"job {job.job_id} ({len(idx)} members) failed: {first}; log: {job.paths.stderr}")
                    for i in idx:
                        status = recorded_status(dirs[i])  # one read: a member the job finished keeps its status
                        statuses[i] = status if status in ("completed", "diverged") else "failed"
        log.info(f"{len(cfgs)} runs: {tally(statuses)}")
        return settle(returns, statuses)


def wait_with_progress(jobs: list, run_dirs: list[Path], every_s: float = 10.0) -> None:
    """Until every job ends: a line whenever a job ends or a run finishes (runs done / total)."""
    import time

    from nin_cli.train.jobs import finished

    last = None
    while True:
        done_jobs = sum(job.done() for job in jobs)
        done_runs = sum(finished(d) for d in run_dirs)
        if (done_jobs, done_runs) != last:
            log.info(f"progress: {done_runs}/{len(run_dirs)} runs finished, {done_jobs}/{len(jobs)} jobs ended")
            last = (done_jobs, done_runs)
        if done_jobs == len(jobs):
            return
        time.sleep(every_s)


class BatchedSlurmLauncher(BatchedSubmititLauncher):
    _EXECUTOR = "slurm"


class BatchedLocalLauncher(BatchedSubmititLauncher):
    _EXECUTOR = "local"
