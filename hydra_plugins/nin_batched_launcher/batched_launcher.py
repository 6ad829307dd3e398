"""Hydra launchers that train a sweep's jobs as batched ensembles (nin_cli/train).

- `hydra/launcher=batched`: every ensemble in the launching process, one after the other.
- `hydra/launcher=batched_slurm` / `batched_local`: each ensemble of at most
  `hydra.launcher.ensemble_size` members is one submitit job (a SLURM job array with
  `array_parallelism`; local processes through submitit's local executor), requeued on SIGUSR2.

(No `from __future__ import annotations` here: Hydra imports plugin modules outside sys.modules,
where dataclasses cannot resolve string annotations.)

Each job still gets Hydra's usual run directory (with .hydra/ and its log), its callbacks and its
HydraConfig while it is recorded (record_job: what Hydra's run_job does, for a job that is trained
afterwards, in ensembles).
"""

import functools
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus, configure_log, env_override, filter_overrides, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf, LocalQueueConf, SlurmQueueConf
from omegaconf import MISSING, DictConfig, OmegaConf, flag_override, open_dict, read_write

log = logging.getLogger(__name__)


@dataclass
class BatchedLauncherConf:
    _target_: str = "hydra_plugins.nin_batched_launcher.batched_launcher.BatchedLauncher"
    ensemble_size: int = 64  # models trained together in one process


@dataclass
class BatchedSlurmConf(SlurmQueueConf):
    _target_: str = "hydra_plugins.nin_batched_launcher.batched_launcher.BatchedSlurmLauncher"
    ensemble_size: int = 64  # members per ensemble, i.e. per SLURM job
    wait: bool = True  # false: submit the job array and return (follow with nin progress, then nin report)
    poll_s: float = 10.0  # the most seconds between reads of the jobs' states while waiting (the first reads come sooner)


@dataclass
class BatchedLocalConf(LocalQueueConf):
    _target_: str = "hydra_plugins.nin_batched_launcher.batched_launcher.BatchedLocalLauncher"
    ensemble_size: int = 64  # members per ensemble
    # local processes at most (null: the cores this process may use / cpus_per_task); ensembles
    # beyond it are dealt to those processes, each training its share in turn
    array_parallelism: Optional[int] = None  # noqa: UP045 (OmegaConf reads typing.Optional)
    poll_s: float = 10.0  # the most seconds between reads of the jobs' states while waiting (the first reads come sooner)


store = ConfigStore.instance()
store.store(group="hydra/launcher", name="batched", node=BatchedLauncherConf, provider="nin")
# the bases of conf/hydra/launcher/batched_slurm.yaml and batched_local.yaml (which set nin's presets)
store.store(group="hydra/launcher", name="nin_batched_slurm", node=BatchedSlurmConf, provider="nin")
store.store(group="hydra/launcher", name="nin_batched_local", node=BatchedLocalConf, provider="nin")


class CollectingLauncher(Launcher):
    """Runs each job's Hydra bookkeeping (run directory, .hydra/, overrides) and collects its config."""

    def __init__(self, ensemble_size: int = 64) -> None:
        self.ensemble_size = ensemble_size
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def collect(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> tuple[list[JobReturn], list, list[Path]]:
        setup_globals()
        assert self.config is not None and self.hydra_context is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        from nin_cli.config.plan import checked

        runs: list = []  # each job's RunConfig: the pre-flight's where it checked this job, else resolved here, once
        dirs: list[Path] = []
        # per structure of the sweep (its template, held so that its id stays its own): the config its jobs' values are set in
        self.live: dict[int, tuple[DictConfig, DictConfig]] = {}

        returns = []
        for offset, overrides in enumerate(job_overrides):
            idx = initial_job_idx + offset
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            sweep_config = self.job_config(list(overrides), idx)
            ret, output_dir = record_job(
                self.hydra_context, sweep_config, lambda ret, job=list(overrides): runs.append(checked(job, lambda: ret.cfg))
            )
            if ret.status != JobStatus.COMPLETED:
                raise ret.return_value
            dirs.append(output_dir)
            returns.append(ret)
        return returns, runs, dirs

    def job_config(self, overrides: list[str], idx: int) -> DictConfig:
        """Job `idx`'s config with Hydra's node. Where the pre-flight composed the job it is made
        from that composition, and a job whose values can be set over another's
        (plan.Composition.in_place) is set in the config of the last job of its structure: the
        config is the launcher's until the next job of that structure (record_job writes what the
        job needs from it before then), not a copy per job. Else Hydra composes it."""
        from nin_cli.config.plan import received

        plan = received()
        composition = plan.composition(overrides) if plan is not None else None
        if composition is None:
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        elif isinstance(composition, DictConfig):  # a one-job sweep: Hydra's whole composition
            cfg = with_job_overrides(with_sweeps_hydra_node(self.config, composition.copy()), overrides)
        elif not composition.in_place:
            cfg = with_job_overrides(with_sweeps_hydra_node(self.config, composition.make()), overrides)
        else:
            template = composition.template
            if id(template) not in self.live:
                self.live[id(template)] = (template, with_sweeps_hydra_node(self.config, template.copy()))
            live = self.live[id(template)][1]
            composition.apply(live)
            with read_write(live.hydra.runtime):
                live.hydra.runtime.output_dir = MISSING  # the last job's: record_job sets this job's
            cfg = with_job_overrides(live, overrides)
        with read_write(cfg.hydra.job), open_dict(cfg.hydra.job):
            cfg.hydra.job.id = idx
            cfg.hydra.job.num = idx
        return cfg


def with_sweeps_hydra_node(master: DictConfig, composed: DictConfig) -> DictConfig:
    """A job's composition (the pre-flight's, of the launcher's own) with the sweep's Hydra node and
    the job's group choices in it, as Hydra's load_sweep_config composes it (in place); the job's
    overrides are set by with_job_overrides. tests/test_architecture.py compares the two key for key."""
    cfg = composed
    choices = composed.hydra.runtime.choices.copy()
    with open_dict(cfg):
        cfg.hydra = master.hydra  # deep-copied as it is set: the job's own
        cfg.hydra.runtime.choices = choices
    OmegaConf.set_struct(cfg, True)
    OmegaConf.set_readonly(cfg.hydra, False)
    OmegaConf.copy_cache(from_config=master, to_config=cfg)
    return cfg


def with_job_overrides(cfg: DictConfig, overrides: list[str]) -> DictConfig:
    """`cfg` (in place) with the job's overrides in its Hydra node: hydra.overrides.task and
    hydra.job.override_dirname, as Hydra's load_sweep_config sets them."""
    from hydra._internal.config_loader_impl import get_overrides_dirname
    from hydra.core.override_parser.overrides_parser import OverridesParser

    with read_write(cfg.hydra), open_dict(cfg.hydra):
        cfg.hydra.overrides.task = list(overrides)
        named = cfg.hydra.job.config.override_dirname
        parsed = [o for o in OverridesParser.create().parse_overrides(overrides) if not o.is_hydra_override()]
        cfg.hydra.job.override_dirname = get_overrides_dirname(parsed, list(named.exclude_keys), named.item_sep, named.kv_sep)
    return cfg


def _save_yaml(data: Any, path: Path) -> None:
    from nin_cli.config.yaml_io import yaml_text

    path.write_text(yaml_text(data), encoding="utf-8")


class RecordedJob(JobReturn):
    """Hydra's JobReturn of a job recorded by record_job. Its `cfg` and `hydra_cfg` (in run_job,
    copies of the job's config and of its Hydra node; nothing in nin reads them) are made from the
    job's YAML containers when first read."""

    def __init__(self, job: dict, hydra_node: dict, **fields: Any) -> None:
        super().__init__(**fields)
        del self.cfg, self.hydra_cfg  # made when read (below)
        self._job, self._hydra_node = job, hydra_node

    @functools.cached_property
    def cfg(self) -> DictConfig:
        cfg = OmegaConf.create(self._job)
        OmegaConf.set_struct(cfg, True)
        return cfg

    @functools.cached_property
    def hydra_cfg(self) -> DictConfig:
        return OmegaConf.create(self._hydra_node)


def share_hydra_config(config: DictConfig) -> None:
    """HydraConfig.set_config(config) without its copy of the Hydra node: HydraConfig's node is the
    job's own (read-only, its parent the job's config, as set_config leaves its copy), so what
    record_job sets in it afterwards (the run directory) is in both, as run_job sets it twice."""
    OmegaConf.set_readonly(config.hydra, True)
    root = OmegaConf.create({})
    with flag_override(root, "no_deepcopy_set_nodes", True):
        root.hydra = config.hydra
    config.hydra._set_parent(config)
    HydraConfig.instance().cfg = root


def record_job(hydra_context: HydraContext, config: DictConfig, task: Callable[[JobReturn], Any]) -> tuple[JobReturn, Path]:
    """What Hydra's run_job does for one job (core/utils.py), for a job that is recorded here and
    trained afterwards: HydraConfig set while it is recorded, its run directory, the job's logging,
    .hydra/config.yaml, hydra.yaml and overrides.yaml (the same YAML, emitted by libyaml), the
    callbacks' on_job_start and on_job_end, and `task` (which records the job) called with the
    job's return, whose `cfg` is the job's config without Hydra's node. `config` is the job's own
    until the next job of its structure (job_config), so nothing is copied: run_job's four copies
    of it were most of a job's bookkeeping. Returns the job's return and its directory."""
    orig = HydraConfig.instance().cfg
    share_hydra_config(config)  # the hydra: resolver may name the directory
    try:
        subdir = OmegaConf.select(config, "hydra.sweep.subdir")
        output_dir = Path(os.path.abspath(os.path.join(str(OmegaConf.select(config, "hydra.sweep.dir")), str(subdir))))
        with read_write(config.hydra.runtime), open_dict(config.hydra.runtime):
            config.hydra.runtime.output_dir = str(output_dir)
        container = OmegaConf.to_container(config, resolve=False, enum_to_str=True)
        hydra_node = {"hydra": container.pop("hydra")}
        chdir = bool(config.hydra.job.get("chdir"))  # the task only records: nothing runs in the directory
        ret = RecordedJob(
            container,
            hydra_node,
            overrides=list(hydra_node["hydra"]["overrides"]["task"]),
            working_dir=str(output_dir) if chdir else os.getcwd(),
        )
        output_dir.mkdir(parents=True, exist_ok=True)
        configure_log(config.hydra.job_logging, config.hydra.verbose)
        if config.hydra.output_subdir is not None:
            hydra_output = output_dir / str(config.hydra.output_subdir)
            hydra_output.mkdir(parents=True, exist_ok=True)
            _save_yaml(container, hydra_output / "config.yaml")
            _save_yaml(hydra_node, hydra_output / "hydra.yaml")
            _save_yaml(ret.overrides, hydra_output / "overrides.yaml")
        with env_override(dict(config.hydra.job.env_set)):
            hydra_context.callbacks.on_job_start(config=config, task_function=task)
            try:
                ret.return_value, ret.status = task(ret), JobStatus.COMPLETED  # trained later, in its ensemble
            except Exception as exc:
                ret.return_value, ret.status = exc, JobStatus.FAILED
        ret.task_name = str(config.hydra.job.name)
        hydra_context.callbacks.on_job_end(config=config, job_return=ret)
        return ret, output_dir
    finally:
        HydraConfig.instance().cfg = orig


def settle(returns: list[JobReturn], statuses: list[str]) -> list[JobReturn]:
    """The sweep's job returns, each with its run's recorded status (the report callback reads the records)."""
    for ret, status in zip(returns, statuses):
        ret.status = JobStatus.COMPLETED
        ret.return_value = status
    return returns


class BatchedLauncher(CollectingLauncher):
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from nin_cli.errors import one_line_errors
        from nin_cli.interface.runner import run_jobs

        log.info(f"Launching {len(job_overrides)} jobs as batched ensembles of up to {self.ensemble_size}")
        returns, runs, dirs = self.collect(job_overrides, initial_job_idx)
        with one_line_errors():
            results = run_jobs(runs, dirs, self.ensemble_size)
        return settle(returns, [r.status for r in results])


class BatchedSubmititLauncher(CollectingLauncher):
    """One submitit job per ensemble; ensembles whose members all finished are not submitted."""

    _EXECUTOR = "abstract"
    _NIN_KEYS: tuple[str, ...] = ()  # the launcher's own settings, not the executor's

    def jobs_of(self, ensembles: list[list[int]]) -> list[list[int]]:
        """The runs each submitted job trains: here one ensemble per job (SLURM queues the array
        and runs `array_parallelism` of them at once)."""
        return ensembles

    def __init__(self, ensemble_size: int = 64, **params: Any) -> None:
        super().__init__(ensemble_size)
        self.params = {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v for k, v in params.items()}

    def executor(self):
        """submitit's executor with the launcher's resources, as hydra's submitit launcher sets them."""
        import submitit

        init_keys = {"submitit_folder", "max_num_timeout", "wait", "poll_s", *self._NIN_KEYS}  # not sbatch's: the executor's, or nin's
        init = {"folder": self.params["submitit_folder"]}
        if "max_num_timeout" in self.params:
            init[f"{self._EXECUTOR}_max_num_timeout"] = self.params["max_num_timeout"]
        executor = submitit.AutoExecutor(cluster=self._EXECUTOR, **init)
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{k if k in base else f"{self._EXECUTOR}_{k}": v for k, v in self.params.items() if k not in init_keys})
        return executor

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from nin_cli.errors import counted, one_line_errors
        from nin_cli.interface.ensemble_job import EnsembleJob
        from nin_cli.train.ensembles import finished, plan_ensembles, recorded_status

        returns, runs, dirs = self.collect(job_overrides, initial_job_idx)
        ensembles = plan_ensembles(runs, self.ensemble_size)
        unfinished = [idx for idx in ensembles if not all(finished(dirs[i], runs[i].cfg) for i in idx)]
        todo = self.jobs_of(unfinished)
        log.info(
            f"{counted(len(runs), 'run')} in {counted(len(ensembles), 'ensemble')} of up to {self.ensemble_size}: "
            f"{len(unfinished)} submitted as {self._EXECUTOR} jobs, {len(ensembles) - len(unfinished)} already finished"
            + (f" ({len(todo)} at a time, each process training its share in turn)" if len(todo) < len(unfinished) else "")
        )
        if not todo:
            return settle(returns, [recorded_status(d) for d in dirs])
        with one_line_errors():
            jobs = self.submit(
                EnsembleJob(self.ensemble_size), [[runs[i] for i in idx] for idx in todo], [[str(dirs[i]) for i in idx] for idx in todo]
            )
        quiet_without_accounting(jobs)
        for job, idx in zip(jobs, todo):
            log.info(f"\tjob {job.job_id}: {len(idx)} members, log {job.paths.stderr}")
        sweep = Path(str(self.config.hydra.sweep.dir))
        if not self.params.get("wait", True):
            print(
                f"submitted {sum(map(len, todo))} runs as {len(jobs)} {self._EXECUTOR} jobs ({', '.join(j.job_id for j in jobs)}); "
                f"follow them with: nin progress {sweep} --watch; when they end: nin report {sweep}",
                file=sys.stderr,
            )
            return settle(returns, [recorded_status(d) for d in dirs])
        with one_line_errors():
            lost = wait_for_jobs(jobs, [dirs[i] for idx in todo for i in idx], float(self.params.get("poll_s", 10.0)))
        problems = [self.job_problem(job, lost.get(job.job_id)) for job in jobs]
        problems = [p for p in problems if p]
        statuses = [recorded_status(d) for d in dirs]  # the runs' own records say how each ended
        if problems:  # the sweep's report and one line, instead of the report callback's
            from nin_cli.analysis.report import write_report
            from nin_cli.errors import fail

            try:
                path, outcome = write_report(sweep)
                print(f"{outcome}; report: {path}", file=sys.stderr)
            except Exception as exc:  # no run got as far as its records: the jobs' causes below say why
                print(f"nin: warning: no report for {sweep}: {exc}", file=sys.stderr)
            fail(f"{'; '.join(problems)}; rerun the same command to resume", 1)
        return settle(returns, statuses)

    def submit(self, function, *args):
        """The job array, or one line with the scheduler's own reason where it refuses it (sbatch
        writes it to this process's stderr: caught there, so that it is said once)."""
        import tempfile

        from nin_cli.errors import ConfigError

        with tempfile.TemporaryFile(mode="w+b") as caught:
            sys.stderr.flush()
            saved = os.dup(2)
            os.dup2(caught.fileno(), 2)
            try:
                return self.executor().map_array(function, *args)
            except Exception as exc:  # CalledProcessError, submitit's FailedJobError: sbatch said no
                os.dup2(saved, 2)
                caught.seek(0)
                lines = [line.strip() for line in (caught.read().decode(errors="replace") + "\n" + str(exc)).splitlines() if line.strip()]
                first = next((line for line in lines if "error" in line.lower()), lines[-1] if lines else type(exc).__name__)
                raise ConfigError(f"the {self._EXECUTOR} scheduler refused the jobs: {first} (check hydra.launcher.*)") from None
            finally:
                os.dup2(saved, 2)
                os.close(saved)
                caught.seek(0)
                rest = caught.read().decode(errors="replace").strip()
                if rest and "error" not in rest.lower():  # what sbatch said besides (warnings): pass it on
                    print(rest, file=sys.stderr)

    def job_problem(self, job, lost) -> str:
        """'' for a job that returned; else one clause saying how it ended and why."""
        if lost is not None:
            return f"job {job.job_id} ended {lost.state} without finishing its runs ({lost.reason}); log: {job.paths.stderr}"
        try:
            job.results()
            return ""
        except Exception as exc:
            text = str(exc)
            if "timed-out too many times" in text:
                limit, times = self.params.get("timeout_min"), int(self.params.get("max_num_timeout", 0)) + 1
                return (
                    f"job {job.job_id} reached its time limit {times} times (hydra.launcher.timeout_min={limit}, "
                    f"max_num_timeout={times - 1}): raise hydra.launcher.timeout_min or max_num_timeout"
                )
            lines = [line.strip() for line in text.splitlines() if line.strip()]
            return f"job {job.job_id} failed: {lines[-1] if lines else type(exc).__name__}; log: {job.paths.stderr}"


def quiet_without_accounting(jobs: list) -> None:
    """Without SLURM accounting, submitit asks sacct at every poll, fails, and logs it three times:
    give those jobs a watcher that does not ask (a job is then done when its result file is
    written; wait_for_jobs reads SLURM's queue for the jobs that end without one)."""
    if not jobs or type(jobs[0]).__name__ != "SlurmJob":
        return
    from submitit.slurm.slurm import SlurmInfoWatcher

    from nin_cli.config.cluster import has_accounting

    if has_accounting():
        return

    class NoSacct(SlurmInfoWatcher):
        def _make_command(self):
            return None

    watcher = NoSacct(delay_s=60)
    for job in jobs:
        job.watcher = watcher


FIRST_POLL_S = 0.25  # wait_for_jobs' first pause between reads of the jobs' states


def wait_for_jobs(jobs: list, run_dirs: list[Path], every_s: float = 10.0) -> dict:
    """Until every job ends: a line whenever a job ends or a run finishes (runs done / total).

    submitit knows a job ended from its result file, and from SLURM's accounting (sacct) where
    there is one. Without accounting, a job that ends without a result (scancel, a kill, a node
    failure) would be waited for forever: SLURM's own queue is read too (squeue, then scontrol),
    and such a job is returned as lost, {job id: its state}, once it has been out of the queue
    without a result for 2 x `every_s`. A job pending for a reason that no wait cures (the
    partition cannot hold it) is cancelled, with one line naming the option. The reads start a
    quarter second apart and double up to `every_s`: a short sweep is not left waiting for a read
    long after it ended, and a long one is read every `every_s`."""
    import time

    from nin_cli.config import cluster
    from nin_cli.errors import ConfigError
    from nin_cli.train.ensembles import finished

    slurm = bool(jobs) and type(jobs[0]).__name__ == "SlurmJob"
    lost: dict = {}
    gone: dict[str, float] = {}  # when a job was first seen out of SLURM's queue without a result
    last = None
    pause = min(FIRST_POLL_S, every_s)
    while True:
        waiting = [job for job in jobs if job.job_id not in lost and not job.done()]
        done_runs = sum(finished(d) for d in run_dirs)
        if (len(waiting), done_runs) != last:
            log.info(f"progress: {done_runs}/{len(run_dirs)} runs finished, {len(jobs) - len(waiting)}/{len(jobs)} jobs ended")
            last = (len(waiting), done_runs)
        if not waiting:
            return lost
        if slurm:
            queue = cluster.queued(job.job_id for job in waiting)
            for job in waiting if queue is not None else []:
                state = queue.get(job.job_id)
                if state is not None and state.hopeless:
                    cluster.cancel(j.job_id for j in waiting)
                    raise ConfigError(f"job {job.job_id} cannot start: SLURM keeps it pending ({state.reason}); {state.advice()}")
                if state is None:  # left the queue: its result file follows, or it ended without one
                    since = gone.setdefault(job.job_id, time.monotonic())
                    if time.monotonic() - since >= 2 * every_s and not job.done():
                        lost[job.job_id] = cluster.final_state(job.job_id) or cluster.JobState("ENDED", "no longer known to SLURM")
                else:
                    gone.pop(job.job_id, None)
        time.sleep(pause)
        pause = min(2 * pause, every_s)


class BatchedSlurmLauncher(BatchedSubmititLauncher):
    _EXECUTOR = "slurm"


class BatchedLocalLauncher(BatchedSubmititLauncher):
    """Local processes cannot queue: at most `array_parallelism` of them (one per core by
    default, each with `cpus_per_task` threads), the ensembles dealt among them."""

    _EXECUTOR = "local"
    _NIN_KEYS = ("array_parallelism",)

    def jobs_of(self, ensembles: list[list[int]]) -> list[list[int]]:
        """Ensembles dealt to at most `array_parallelism` processes, the largest first to the
        process with the fewest members; each process's runs in sweep order."""
        limit = self.params.get("array_parallelism") or max(1, len(os.sched_getaffinity(0)) // int(self.params.get("cpus_per_task") or 1))
        jobs: list[list[int]] = [[] for _ in range(min(int(limit), len(ensembles)))]
        for idx in sorted(ensembles, key=len, reverse=True):
            min(jobs, key=len).extend(idx)
        return [sorted(job) for job in jobs]
