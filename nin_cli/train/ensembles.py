"""A sweep's runs trained: each opened (fresh, resumed or skipped; nin_cli/train/resume.py says
when), grouped into ensembles of runs that differ only in per-member keys, trained, and how each
ended recorded (signals and crashes included). nin_cli/interface/runner.py calls `train_many`."""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from nin_cli.config.resolve import RunConfig, resolve
from nin_cli.config.yaml_io import yaml_text
from nin_cli.data.datasets import Dataset
from nin_cli.errors import ConfigError, Interrupted, RecordError, console
from nin_cli.identity import differing, exempt, exempt_patterns, identity
from nin_cli.nets.network import nin_record
from nin_cli.records.loggers import open_logger
from nin_cli.records.provenance import provenance
from nin_cli.records.store import ENDED, FINISHED, RunRecords, atomic_write_text
from nin_cli.train.engine import check_engine_change, engine_record
from nin_cli.train.graphs import replayed
from nin_cli.train.loop import Ensemble, describe
from nin_cli.train.member import Member, RunResult
from nin_cli.train.resume import check_nothing_recorded_past_epoch_zero, check_rows_match_checkpoint, check_same_run, extends
from nin_cli.train.setup import build


@contextmanager
def signals_raise(on_foreign: Callable[[str], None] | None = None) -> Iterator[None]:
    """Turn SIGTERM and SIGINT into Interrupted (main thread only), restoring the old handlers afterwards.

    A handler that the hosting process installed itself is kept, not replaced: inside a submitit
    job, SIGTERM is what SLURM sends before a requeue or preemption, and submitit deliberately
    lets the job run on (its USR2 handler checkpoints and requeues; a requeue's SIGKILL follows).
    Raising there would turn every requeue into a failed job. Such a signal is only noted
    (`on_foreign`, e.g. the runs' status) and handed to the host's handler."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Interrupted(signal.Signals(signum).name)

    def chained(previous):
        def note_then_pass(signum, frame):
            if on_foreign is not None:
                on_foreign(signal.Signals(signum).name)
            previous(signum, frame)

        return note_then_pass

    old = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)
        ours = previous in (signal.SIG_DFL, signal.default_int_handler, None) or not callable(previous)
        old[sig] = signal.signal(sig, handler if ours else chained(previous))
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


def as_runs(cfgs: Sequence[DictConfig | RunConfig]) -> list[RunConfig]:
    """The jobs as resolved runs: a RunConfig (resolved once, where the job was checked or
    collected) as it is; a composed config (the Python API: train(cfg, dir)) resolved here."""
    return [c if isinstance(c, RunConfig) else resolve(c) for c in cfgs]


def structure(run: RunConfig) -> dict:
    """What the members of one ensemble must share: the run identity without per-member keys."""
    return {k: v for k, v in identity(run.flat, "resume").items() if not exempt(k, "member")}


def structure_groups(runs: list[RunConfig]) -> list[list[int]]:
    """Indices of the runs that can share an ensemble, in sweep order."""
    groups: dict[str, list[int]] = {}
    for i, run in enumerate(runs):
        groups.setdefault(json.dumps(structure(run), sort_keys=True, default=str), []).append(i)
    return list(groups.values())


def check_batchable(runs: list[RunConfig]) -> None:
    """One ensemble: members may differ only in per-member keys."""
    first = structure(runs[0])
    for run in runs[1:]:
        other = structure(run)
        if other != first:
            allowed = ", ".join(exempt_patterns("member"))
            raise ConfigError(f"batched runs may differ only in {allowed}; these differ in: {', '.join(differing(first, other))}")


# opening a run ------------------------------------------------------------------------------------
def open_run(run: RunConfig, run_dir, data: Dataset | None = None) -> Member | RunResult:
    """A Member ready to train (fresh or resumed from the directory's checkpoint) that holds the
    directory's lock, or the result of a run that already finished there (a rerun sweep skips it)."""
    cfg = run.cfg
    records = RunRecords(run_dir)
    records.lock.acquire()
    try:
        opened = _open_locked(run, records, data)
    except RecordError as exc:  # damaged or inconsistent records: say so in the run's status too
        records.try_write_status("failed", records.last_recorded_epoch(), int(cfg.epochs), str(exc))
        records.lock.release()
        raise
    except Interrupted as exc:  # a signal while opening: the rows on disk are what is recorded
        records.try_write_status("interrupted", records.last_recorded_epoch(), int(cfg.epochs), f"{exc}; rerun to resume")
        records.lock.release()
        raise
    except BaseException:
        records.lock.release()
        raise
    if isinstance(opened, RunResult):
        records.lock.release()
    return opened


def _open_locked(run: RunConfig, records: RunRecords, data: Dataset | None) -> Member | RunResult:
    cfg = run.cfg
    records.remove_stale_temporaries()
    status = records.read_status()
    if not cfg.resume and records.has_run():
        if not cfg.overwrite:
            held = f"status {status['status']} at epoch {status['epoch']}" if status else "its records"
            raise ConfigError(
                f"{records.dir} already holds a run ({held}); resume=false would replace it: "
                "add overwrite=true to start it over, or use another directory"
            )
        records.clear()
        status = None
    if cfg.resume:
        check_same_run(records, run)
        if extends(status, cfg):
            console.print(f"[yellow]{records.dir}: extending from epoch {status['epoch']} to {cfg.epochs}")
        elif status and status["status"] in FINISHED:
            why = "; a diverged run is not extended" if cfg.get("extend", False) and status["status"] == "diverged" else ""
            console.print(f"[dim]{records.dir}: already {status['status']} at epoch {status['epoch']}; skipping{why}")
            return RunResult(status["status"], status["epoch"], status.get("reason"))
    member = Member(build(cfg, data, records.dir if records.checkpoint_path.exists() else None), records)
    state = records.load_checkpoint() if cfg.resume else None
    if state is not None:
        member.load_state_dict(state)
        check_rows_match_checkpoint(member)
        console.print(f"[yellow]{records.dir}: resuming from the checkpoint of epoch {member.epoch}")
    else:
        check_nothing_recorded_past_epoch_zero(member)
    engine = engine_record(member.s)  # before anything is written: a refused engine change leaves the records as they were
    if member.resumed:
        check_engine_change(records, engine, cfg.get("engine_change", "refuse") == "allow")
    records.metrics.start(member.columns, keep_through=member.epoch if member.resumed else None)
    records.steps.start(member.step_columns, keep_through=member.step if member.resumed else None)
    atomic_write_text(records.config_path, yaml_text(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)))
    records.write_env({**provenance(member.s.device), "engine": engine})
    records.write_network(nin_record(member.s.model, member.s.nin_layers))
    records.log(f"resumed from the checkpoint of epoch {member.epoch}" if member.resumed else "started")
    records.write_status("running", member.epoch, member.epochs)
    member.logger = open_logger(cfg, records.dir, run.flat)
    return member


@contextmanager
def recorded_outcome(members: list[Member]) -> Iterator[None]:
    """Signals and crashes end up in each unfinished run's status.json (and free its lock) before they propagate."""

    def requeue_coming(name: str) -> None:  # SLURM's SIGTERM inside a submitit job: a kill and requeue may follow
        for m in members:
            if not m.finished:
                m.records.try_write_status("interrupted", m.epoch, m.epochs, f"{name} from the scheduler (requeue or preemption); resumes")
                m.records.log(f"{name} from the scheduler at epoch {m.epoch}: a requeue or preemption; training on until stopped")

    try:
        with signals_raise(requeue_coming):
            yield
    except (Interrupted, SystemExit) as exc:  # SystemExit: submitit requeues a preempted job (SIGUSR2)
        cause = str(exc) if isinstance(exc, Interrupted) else "a preemption or time limit (the job is requeued)"
        stop(members, "interrupted", f"{cause}; rerun with the same directory to resume", f"interrupted by {cause}")
        raise
    except BaseException as exc:
        if type(exc).__name__ == "UncompletedJobError":  # submitit: the time limit, once more than max_num_timeout allows
            cause = f"the job's time limit, reached more often than it may be requeued ({exc})"
            stop(members, "interrupted", f"{cause}; rerun with the same directory to resume", f"interrupted by {cause}")
            raise
        stop(members, "failed", f"{type(exc).__name__}: {exc}", f"failed: {type(exc).__name__}: {exc}")
        raise


def stop(members: list[Member], status: str, reason: str, line: str) -> None:
    """Record how the unfinished members stopped, and free their directories."""
    for m in members:
        if not m.finished:
            m.records.try_write_status(status, m.epoch, m.epochs, reason)
            m.records.log(f"{line} at epoch {m.epoch}")
            m.close(status)


# training jobs ------------------------------------------------------------------------------------
def train(cfg: DictConfig | RunConfig, run_dir) -> RunResult:
    """Train (or resume, or skip if already finished) the run in `run_dir`: an ensemble of one."""
    return train_many([cfg], [run_dir], 1)[0]


def train_many(cfgs: Sequence[DictConfig | RunConfig], run_dirs: list, ensemble_size: int = 64) -> list[RunResult]:
    """Train every (run, run_dir) of a sweep. Runs that differ only in per-member keys (seed,
    sigma, lr, ...: nin_cli/identity.py) train together in ensembles of at most `ensemble_size`
    members, each stepped the way `choose_step` picks. Finished runs are skipped, interrupted ones
    resume from their checkpoints."""
    with signals_raise():  # a signal while runs are being opened is an interruption too
        runs = as_runs(cfgs)
        results: list[RunResult | None] = [None] * len(runs)
        groups = structure_groups(runs)
        if len(groups) > 1:
            console.print(f"[bold]batched: {len(cfgs)} runs in {len(groups)} groups of runs that differ only in per-member keys")
        for g, idx in enumerate(groups):
            if len(groups) > 1:  # overall progress: the groups train one after another
                ended = sum(r is not None and r.status in ENDED for r in results)
                console.print(f"[bold]batched: group {g + 1}/{len(groups)} ({len(idx)} runs); {ended}/{len(cfgs)} runs ended so far")
            for i, result in zip(idx, train_group([runs[i] for i in idx], [run_dirs[i] for i in idx], ensemble_size)):
                results[i] = result
        return results  # type: ignore[return-value]


def plan_ensembles(runs: list[RunConfig], ensemble_size: int) -> list[list[int]]:
    """The sweep's ensembles: runs grouped by structure, each group cut into chunks of at most
    `ensemble_size` members in sweep order (N runs of one group: ceil(N / ensemble_size) ensembles)."""
    return [idx[i : i + ensemble_size] for idx in structure_groups(runs) for i in range(0, len(idx), ensemble_size)]


def recorded_status(run_dir: Path) -> str:
    """The run's status.json says (unknown without one)."""
    status = RunRecords(run_dir).read_status()
    return status["status"] if status else "unknown"


def finished(run_dir: Path, cfg: DictConfig | None = None) -> bool:
    """Whether the run in `run_dir` has nothing left to train (completed or diverged, and not to be
    extended to `cfg`'s epochs)."""
    status = RunRecords(run_dir).read_status()
    return bool(status) and status["status"] in FINISHED and not (cfg is not None and extends(status, cfg))


def train_group(runs: list[RunConfig], run_dirs: list, ensemble_size: int) -> list[RunResult]:
    """One structure group: ensembles of at most `ensemble_size` members, in sweep order. Members
    resumed from different epochs share one ensemble (the later ones wait for the earlier)."""
    check_batchable(runs)
    data: Dataset | None = None  # loaded by the first run that trains, then shared
    results: list[RunResult | None] = [None] * len(runs)
    pending: list[tuple[int, Member]] = []
    for i, (run, run_dir) in enumerate(zip(runs, run_dirs)):
        opened = open_run(run, run_dir, data)
        if isinstance(opened, RunResult):
            results[i] = opened
        else:
            pending.append((i, opened))
            data = data or opened.s.data
    for start in range(0, len(pending), ensemble_size):
        chunk = pending[start : start + ensemble_size]
        members = [m for _, m in chunk]
        with recorded_outcome(members):
            ensemble = Ensemble(members)
            graph = "; replayed as one CUDA graph" if replayed(ensemble.step) else ""
            for m in members:
                m.records.record_step(f"{ensemble.choice.kind}: {ensemble.choice.reason}{graph}")
            if len(members) > 1:
                console.print(f"[bold]batched: {describe(ensemble)}")
            for (i, _), result in zip(chunk, ensemble.run(bool(members[0].s.cfg.progress))):
                results[i] = result
    return results  # type: ignore[return-value]
