"""`hydra/launcher=batched`: one process trains the sweep's runs K at a time with stacked weights.

(No `from __future__ import annotations` here: Hydra imports plugin modules outside sys.modules,
where dataclasses cannot resolve string annotations.)

Each job still gets Hydra's usual run directory (with .hydra/ and its log): run_job is called with
a task function that only collects the job's config; training happens afterwards, in batches.
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

log = logging.getLogger(__name__)


@dataclass
class BatchedLauncherConf:
    _target_: str = "hydra_plugins.nin_batched_launcher.batched_launcher.BatchedLauncher"
    batch_size: int = 64  # models trained together in one process


ConfigStore.instance().store(group="hydra/launcher", name="batched", node=BatchedLauncherConf, provider="nin")


class BatchedLauncher(Launcher):
    def __init__(self, batch_size: int = 64) -> None:
        self.batch_size = batch_size
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from nin_cli.cli import one_line_errors
        from nin_cli.train import run_jobs

        setup_globals()
        assert self.config is not None and self.hydra_context is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        log.info(f"Launching {len(job_overrides)} jobs as batched ensembles of up to {self.batch_size}")
        collected: list[tuple[DictConfig, Path]] = []

        def collect(cfg: DictConfig) -> None:
            collected.append((cfg, Path(HydraConfig.get().runtime.output_dir)))

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
        with one_line_errors():
            results = run_jobs([c for c, _ in collected], [d for _, d in collected], self.batch_size)
        for ret, result in zip(returns, results):
            ret.status = JobStatus.COMPLETED
            ret.return_value = result.status
        return returns
