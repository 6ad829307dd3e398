"""Records that never lie: a run killed at any moment resumes to exactly the rows of an
uninterrupted run; damaged or inconsistent records, locks, full and read-only disks and bad
input end in one line; checkpoints cannot run code."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from harness import TINY, forked_train, make_cfg, nin, nin_started, read_rows, without_timing

from nin_cli.analysis.runs import load_run
from nin_cli.records.locks import RunLock
from nin_cli.records.store import RunRecords
from nin_cli.train import train


def reference(tmp_path: Path, *extra: str) -> Path:
    ref = tmp_path / "reference"
    assert train(make_cfg(*TINY, *extra), ref).status == "completed"
    return ref


def tables(run_dir: Path) -> tuple[list, list]:
    return without_timing(read_rows(run_dir)), read_rows(run_dir, "steps.csv")


def killed_run(run_dir: Path, fault: str, *extra: str) -> subprocess.CompletedProcess:
    proc = forked_train(make_cfg(*TINY, *extra), run_dir, env={"NIN_FAULT": fault})
    assert proc.returncode != 0, f"the fault {fault} never fired: {proc.stderr}"
    return proc


def leftovers(run_dir: Path) -> list[str]:
    return [p.name for p in run_dir.glob(".*.tmp*")]


# (fault point, hit): during epoch 1 and 2; while each checkpoint (epochs 0..3) is being written;
# right after a metrics row (epochs 0, 1, 3) is appended; while each status.json is being written.
POINTS = [
    ("step", 2),
    ("step", 6),
    ("checkpoint", 1),
    ("checkpoint", 2),
    ("checkpoint", 4),
    ("metrics_row", 1),
    ("metrics_row", 2),
    ("metrics_row", 4),
    ("status", 1),
    ("status", 2),
    ("status", 4),
]


@pytest.fixture(scope="module")
def tiny_reference(tmp_path_factory) -> tuple[list, list]:
    """The uninterrupted run's tables, trained once for the module (per test worker)."""
    return tables(reference(tmp_path_factory.mktemp("tiny")))


@pytest.mark.parametrize("sig", ["SIGKILL", "SIGTERM"])
@pytest.mark.parametrize(("point", "hit"), POINTS)
@pytest.mark.e2e
def test_resume_is_exact_at_every_interruption_point(tmp_path, tiny_reference, sig, point, hit):
    run_dir = tmp_path / f"{point}{hit}"
    proc = killed_run(run_dir, f"{point}:{hit}:{sig}")
    if sig == "SIGTERM":
        assert proc.returncode == 143 and proc.stderr.strip().splitlines()[-1].startswith("nin: interrupted by SIGTERM")
        status = json.loads((run_dir / "status.json").read_text())
        assert status["status"] == "interrupted" and leftovers(run_dir) == []
        recorded = [int(r["epoch"]) for r in read_rows(run_dir)]
        assert status["epoch"] == (recorded[-1] if recorded else None)  # the epoch actually recorded
    assert train(make_cfg(*TINY), run_dir).status == "completed"
    assert tables(run_dir) == tiny_reference
    assert leftovers(run_dir) == []


@pytest.mark.parametrize("sig", ["SIGKILL", "SIGTERM"])
@pytest.mark.e2e
def test_resume_is_exact_with_sparse_checkpoints(tmp_path, sig):
    """checkpoint.every=2: a kill in epoch 2 resumes from the epoch-0 checkpoint, one in epoch 4 from epoch 2."""
    extra = ["epochs=4", "checkpoint.every=2"]
    ref = tables(reference(tmp_path, *extra))
    for hit in (6, 14):
        run_dir = tmp_path / f"sparse{hit}"
        killed_run(run_dir, f"step:{hit}:{sig}", *extra)
        assert train(make_cfg(*TINY, *extra), run_dir).status == "completed"
        assert tables(run_dir) == ref, hit
        rows = read_rows(run_dir)
        assert [r["epoch"] for r in rows] == ["0", "1", "2", "3", "4"]  # epoch 0 once


@pytest.mark.parametrize(("sig", "hit"), [("SIGKILL", 3), ("SIGTERM", 3), ("SIGKILL", 4)])
@pytest.mark.e2e
def test_batched_sweep_killed_while_checkpointing_resumes_exactly(tmp_path, sig, hit):
    """Hit 3: the first member's epoch-1 checkpoint; hit 4: the second's, so the members resume
    from different epochs (the first waits for the second inside one ensemble)."""
    sweep = ["-m", *TINY, "hydra/launcher=batched", "seed=0,1"]
    ref_dir, dir_ = tmp_path / "ref", tmp_path / "sweep"
    assert nin("train", *sweep, f"hydra.sweep.dir={ref_dir}").returncode == 0
    proc = nin("train", *sweep, f"hydra.sweep.dir={dir_}", env={"NIN_FAULT": f"checkpoint:{hit}:{sig}"})
    assert proc.returncode != 0
    assert nin("train", *sweep, f"hydra.sweep.dir={dir_}").returncode == 0
    runs = sorted(p.parent.name for p in ref_dir.glob("*/metrics.csv"))
    assert len(runs) == 2 and sorted(p.parent.name for p in dir_.glob("*/metrics.csv")) == runs
    for name in runs:
        assert tables(dir_ / name) == tables(ref_dir / name)
        assert leftovers(dir_ / name) == []


@pytest.mark.e2e
def test_ctrl_c_exits_130_interrupted_and_resumable(tmp_path, tiny_reference):
    run_dir = tmp_path / "run"
    proc = killed_run(run_dir, "step:5:SIGINT")
    assert proc.returncode == 130 and "Traceback" not in proc.stderr
    assert json.loads((run_dir / "status.json").read_text())["status"] == "interrupted"
    assert train(make_cfg(*TINY), run_dir).status == "completed"
    assert tables(run_dir) == tiny_reference


@pytest.mark.parametrize("fault", ["metrics_row:2:ENOSPC", "checkpoint:2:ENOSPC", "status:3:EROFS"])
@pytest.mark.e2e
def test_full_or_read_only_disk_is_one_line_and_loses_nothing(tmp_path, tiny_reference, fault):
    run_dir = tmp_path / "run"
    proc = killed_run(run_dir, fault)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and lines[-1].startswith("nin: error: ") and "Traceback" not in proc.stderr
    assert ("No space left" in lines[-1]) or ("Read-only" in lines[-1])
    assert json.loads((run_dir / "status.json").read_text())["status"] == "failed"
    assert leftovers(run_dir) == []
    assert train(make_cfg(*TINY), run_dir).status == "completed"  # once the disk has room again
    assert tables(run_dir) == tiny_reference


@pytest.mark.e2e
def test_a_second_process_on_a_locked_directory_fails_naming_the_holder(tmp_path, gate):
    run_dir = tmp_path / "run"
    slow = [*TINY, f"hydra.run.dir={run_dir}"]
    first = nin_started("train", *slow, env=gate.env("metrics_row", 2))  # held, training, after epoch 1's row
    try:
        gate.held(alive=lambda: first.poll() is None)
        for extra in ([], ["noise.sigma=3"]):  # same config, or another sigma into the same directory
            second = nin("train", *slow, *extra)
            lines = second.stderr.strip().splitlines()
            assert second.returncode == 1 and len(lines) == 1 and f"process {first.pid}" in lines[0], second.stderr
        sweep = nin("train", "-m", *slow, "seed=0", "hydra/launcher=batched", f"hydra.sweep.dir={tmp_path}", "hydra.sweep.subdir=run")
        assert sweep.returncode == 1 and f"process {first.pid}" in sweep.stderr  # a sweep member too
        assert "still training" in " ".join(load_run(run_dir).warnings)
    finally:
        first.kill()
        first.wait()
    lock = RunLock(run_dir)
    assert lock.holder() is None  # SIGKILL left no stale lock
    lock.acquire()
    lock.release()
    epochs = [int(r["epoch"]) for r in read_rows(run_dir)]
    assert epochs == list(range(len(epochs)))  # one process's rows, each epoch once
    assert "killed" in " ".join(load_run(run_dir).warnings)


@pytest.mark.parametrize("damage", ["delete", "truncate", "duplicate"])
@pytest.mark.e2e
def test_resume_refuses_records_that_do_not_match_the_checkpoint(tmp_path, damage):
    run_dir = tmp_path / "run"
    killed_run(run_dir, "step:10:SIGKILL")  # epochs 0-2 recorded, checkpoint at 2
    metrics = run_dir / "metrics.csv"
    lines = metrics.read_text().splitlines(keepends=True)
    if damage == "delete":
        metrics.unlink()
    elif damage == "truncate":
        metrics.write_text("".join(lines[:2]) + lines[2][:10])
    else:
        metrics.write_text("".join(lines[:2] + lines[1:]))  # the old epoch-0 bug: epoch 0 twice
    proc = nin("train", *TINY, f"hydra.run.dir={run_dir}")
    out = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(out) == 1 and out[0].startswith("nin: error: cannot resume") and "overwrite=true" in out[0]
    assert json.loads((run_dir / "status.json").read_text())["status"] == "failed"
    warned = " ".join(load_run(run_dir).warnings)  # summarize names what is wrong
    assert {"delete": "no usable metrics.csv", "truncate": "damaged row", "duplicate": "epoch rows duplicated"}[damage] in warned


@pytest.mark.e2e
def test_checkpoint_loads_weights_only_and_a_planted_pickle_does_not_run(tmp_path):
    run_dir = reference(tmp_path)
    assert RunRecords(run_dir).load_checkpoint()["epoch"] == 3  # a checkpoint written by torch.save loads
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"epoch": 1, "model": Payload()}, run_dir / "checkpoint.pt")
    (run_dir / "status.json").write_text(json.dumps({"status": "interrupted", "epoch": 1, "epochs": 3}))
    for command in (["train", *TINY, f"hydra.run.dir={run_dir}"], ["evaluate", str(run_dir), "test_size=50"]):
        proc = nin(*command)
        assert proc.returncode == 1 and "not a nin checkpoint" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
    assert not marker.exists()


@pytest.mark.parametrize("name", ["checkpoint.pt", "config.yaml", "steps.csv", "status.json"])
@pytest.mark.e2e
def test_damaged_files_give_one_line_and_keep_the_rows(tmp_path, tiny_reference, name):
    run_dir = tmp_path / "run"
    killed_run(run_dir, "step:10:SIGKILL")
    before = read_rows(run_dir)
    damaged = {
        "checkpoint.pt": b"\x80\x04garbage",
        "config.yaml": b"model: [unclosed",
        "steps.csv": b"\x00\x01,\n",
        "status.json": b"{not json",
    }
    (run_dir / name).write_bytes(damaged[name])
    proc = nin("train", *TINY, f"hydra.run.dir={run_dir}")
    if name == "status.json":  # the status is derived: the checkpoint and the rows say where the run is
        assert proc.returncode == 0 and tables(run_dir) == tiny_reference
        return
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith("nin: error: ") and name in lines[0], proc.stderr
    assert read_rows(run_dir) == before


@pytest.mark.e2e
def test_evaluate_over_a_sweep_with_one_bad_run_warns_and_goes_on(tmp_path):
    for seed in (0, 1):
        assert train(make_cfg(*TINY, "epochs=1", f"seed={seed}"), tmp_path / f"s{seed}").status == "completed"
    (tmp_path / "s0" / "checkpoint.pt").write_bytes(b"not a checkpoint")
    proc = nin("evaluate", str(tmp_path), "test_size=50", "pgd_steps=1")
    assert proc.returncode == 1 and "nin: warning:" in proc.stderr and "Traceback" not in proc.stderr
    assert (tmp_path / "s1" / "robustness.csv").exists() and not (tmp_path / "s0" / "robustness.csv").exists()


@pytest.mark.e2e
def test_resume_false_refuses_to_replace_a_run_unless_overwrite(tmp_path):
    run_dir = reference(tmp_path)
    before = (run_dir / "metrics.csv").read_text()
    proc = nin("train", *TINY, "noise.sigma=3", "resume=false", f"hydra.run.dir={run_dir}")
    assert proc.returncode == 2 and "overwrite=true" in proc.stderr and (run_dir / "metrics.csv").read_text() == before
    proc = nin("train", *TINY, "noise.sigma=3", "resume=false", "overwrite=true", f"hydra.run.dir={run_dir}")
    assert proc.returncode == 0 and [float(r["sigma"]) for r in read_rows(run_dir)] == [3.0] * 4


@pytest.mark.e2e
def test_provenance_log_and_version(tmp_path):
    run_dir = tmp_path / "run"
    assert nin("train", *TINY, "epochs=1", f"hydra.run.dir={run_dir}").returncode == 0
    env = json.loads((run_dir / "env.json").read_text())
    assert env["nin_version"] and env["torch"] == torch.__version__ and env["host"] and "nin" in env["command"]
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent)
    if head.returncode == 0:  # run from a checkout: the commit the code came from
        assert env["git_commit"].removesuffix("-dirty") == head.stdout.strip()
    assert "epoch 1" in (run_dir / "train.log").read_text()
    version = nin("--version")
    assert version.returncode == 0 and version.stdout.startswith("nin ")
    # a closed pipe (`nin summarize DIR | head`): tests/config/test_typed.py::test_a_closed_pipe_ends_quietly


def test_config_is_typed_and_checked_per_case():
    from nin_cli.config.resolve import resolve
    from nin_cli.errors import ConfigError

    bad = {
        "noise.sigma=abc": "noise.sigma must be a number",
        "epochs=1.5": "epochs must be an integer",
        "batch_size=12.7": "batch_size must be an integer",
        "checkpoint.every=0": "checkpoint.every must be >= 1",
        "hessian.probes=2.5": "hessian.probes must be an integer",
        "noise.sigma=nan": "finite",
        "noise.sigma=-inf": "finite",
        "seed=abc": "seed must be an integer",
        "+foo=1": "unknown config key 'foo'",
        "optimizer.lr=0": "optimizer.lr must be > 0",
        "target_train_acc=2": "target_train_acc must be in (0, 1]",
        "progress=3": "progress must be true or false",
    }
    for override, message in bad.items():
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
            resolve(make_cfg(override))
    resolve(make_cfg("+experiment=fig3", "noise.sigma2_paper=0.1"))  # a valid one passes


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["noise.sigmaa=3"], "did you mean noise.sigma?"),
        (["-m", "noise.sigma=1,abc"], "sweep job noise.sigma=abc"),
        (["-m", "+experiment=fig3", "hydra.sweeper.params={seed:'0,x'}"], "sweep job"),
        (["-m", "hydra.sweeper.params.seed=0,1"], "Hydra's own settings are not swept"),
    ],
)
@pytest.mark.e2e
def test_every_sweep_job_is_checked_before_any_trains(tmp_path, args, message):
    base = [o for o in TINY if not o.startswith("noise.sigma")] if "+experiment=fig3" in args else TINY  # its grid sets the noise
    proc = nin("train", *base, *args, f"hydra.sweep.dir={tmp_path}/s", f"hydra.run.dir={tmp_path}/r")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and message in lines[0], proc.stderr
    assert not list(tmp_path.rglob("metrics.csv"))


@pytest.mark.e2e
def test_analysis_overrides_are_checked(tmp_path):
    run_dir = reference(tmp_path)
    for command, override, message in (
        ("summarize", "phases.decay_niw_ratio=abc", "must be a number"),
        ("summarize", "phases.decay_niw_rati=0.9", "did you mean phases.decay_niw_ratio"),
        ("evaluate", "test_size=abc", "must be an integer"),
    ):
        proc = nin(command, str(run_dir), override)
        assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [proc.stderr.strip()] and message in proc.stderr


def test_signals_are_restored_after_training(tmp_path):
    """Whatever handled SIGINT and SIGTERM before (the default, or SIG_IGN under nohup) does again."""
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    train(make_cfg(*TINY, "epochs=1"), tmp_path / "run")
    assert {sig: signal.getsignal(sig) for sig in before} == before


@pytest.mark.parametrize("code", [errno.ENOSYS, errno.ENOLCK, errno.EOPNOTSUPP])
@pytest.mark.e2e
def test_without_flock_the_lock_is_an_exclusive_file_with_host_and_pid(tmp_path, monkeypatch, capsys, code):
    """Lustre without the flock mount option answers flock with ENOSYS, NFS mounted nolock with
    ENOLCK: the run lock falls back to <run>/.lock.owner (host, PID), with stale-lock detection."""
    import socket

    from nin_cli.errors import RecordError
    from nin_cli.records import locks

    def no_flock(fd, op):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(locks.fcntl, "flock", no_flock)
    run = tmp_path / "run"
    run.mkdir()
    first = locks.RunLock(run)
    first.acquire()
    owner = (run / ".lock.owner").read_text().split()
    assert owner[:2] == [socket.gethostname(), str(os.getpid())]
    assert locks.RunLock(run).holder() == os.getpid()
    with pytest.raises(RecordError, match=f"in use .* by process {os.getpid()} on {socket.gethostname()}"):
        locks.RunLock(run).acquire()
    first.release()
    assert not (run / ".lock.owner").exists() and locks.RunLock(run).holder() is None
    # a training run takes it and frees it the same way
    assert train(make_cfg(*TINY, "epochs=1"), run).status == "completed" and not (run / ".lock.owner").exists()

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    (run / ".lock.owner").write_text(f"{socket.gethostname()} {dead} 0\n")  # this host, a process that is gone
    lock = locks.RunLock(run)
    lock.acquire()
    assert "taking over a stale lock file (process" in capsys.readouterr().err
    lock.release()

    (run / ".lock.owner").write_text("node17 4242 0\n")  # another host, refreshed just now: in use
    with pytest.raises(RecordError, match="by process 4242 on node17"):
        locks.RunLock(run).acquire()
    old = time.time() - locks.STALE_AFTER_S - 60
    os.utime(run / ".lock.owner", (old, old))  # ...not refreshed for longer than NIN_LOCK_STALE_S: stale
    lock = locks.RunLock(run)
    lock.acquire()
    assert "process 4242 on node17 has not refreshed it for" in capsys.readouterr().err
    lock.release()


@pytest.mark.e2e
def test_extended_run_equals_the_longer_uninterrupted_run(tmp_path):
    """epochs=2, then epochs=4 extend=true: rows (metrics and steps) as one 4-epoch run's; without
    extend=true, shorter, or under a schedule that depends on the total, refused in one line."""
    longer = [*TINY, "epochs=4"]
    ref = tmp_path / "ref"
    assert nin("train", *longer, f"hydra.run.dir={ref}").returncode == 0
    run = tmp_path / "run"
    assert nin("train", *TINY, "epochs=2", f"hydra.run.dir={run}").returncode == 0
    refused = nin("train", *longer, f"hydra.run.dir={run}")
    assert refused.returncode == 2 and refused.stderr.strip().splitlines() == [
        f"nin: error: {run} holds a run of epochs=2 (differs in: epochs); add extend=true to train it on to epochs=4, "
        "or use a new output directory"
    ]
    shorter = nin("train", *TINY, "epochs=1", "extend=true", f"hydra.run.dir={run}")
    assert shorter.returncode == 2 and "epochs=1 would shorten it" in shorter.stderr
    extended = nin("train", *longer, "extend=true", f"hydra.run.dir={run}")
    assert extended.returncode == 0 and "extending from epoch 2 to 4" in extended.stderr, extended.stderr
    assert tables(run) == tables(ref)
    assert json.loads((run / "status.json").read_text())["status"] == "completed"
    again = nin("train", *longer, "extend=true", f"hydra.run.dir={run}")
    assert again.returncode == 0 and "already completed at epoch 4; skipping" in again.stderr

    linear = [*TINY, "schedule=linear", f"hydra.run.dir={tmp_path / 'linear'}"]
    assert nin("train", *linear, "epochs=2").returncode == 0
    ramp = nin("train", *linear, "epochs=4", "extend=true")
    assert ramp.returncode == 2 and "noise.schedule=linear" in ramp.stderr and "cannot be extended" in ramp.stderr


@pytest.mark.e2e
def test_extended_batched_sweep_equals_the_longer_sweep_and_a_diverged_run_stays(tmp_path):
    """A batched sweep of epochs=2 extended to 3 in place: the same directories (epochs never names
    one), every member's rows as the 3-epoch sweep's. A diverged run is left as it ended."""
    sweep = ["-m", *TINY, "hydra/launcher=batched", "noise.sigma=1,3"]
    ref, dir_ = tmp_path / "ref", tmp_path / "sweep"
    assert nin("train", *sweep, "epochs=3", f"hydra.sweep.dir={ref}").returncode == 0
    assert nin("train", *sweep, "epochs=2", f"hydra.sweep.dir={dir_}").returncode == 0
    names = sorted(p.parent.name for p in dir_.glob("*/metrics.csv"))
    assert names == sorted(p.parent.name for p in ref.glob("*/metrics.csv")) and len(names) == 2
    assert not any("epochs=" in name for name in names)
    extended = nin("train", *sweep, "epochs=3", "extend=true", f"hydra.sweep.dir={dir_}")
    assert extended.returncode == 0 and extended.stderr.count("extending from epoch 2 to 3") == 2, extended.stderr
    assert sorted(p.parent.name for p in dir_.glob("*/metrics.csv")) == names
    for name in names:
        assert tables(dir_ / name) == tables(ref / name), name

    blown = [*TINY, "noise.sigma=3000", f"hydra.run.dir={tmp_path / 'blown'}"]
    assert nin("train", *blown, "epochs=2").returncode == 0
    status, before = (tmp_path / "blown" / "status.json").read_text(), tables(tmp_path / "blown")
    assert json.loads(status)["status"] == "diverged"
    again = nin("train", *blown, "epochs=3", "extend=true")
    assert again.returncode == 0 and "a diverged run is not extended" in again.stderr
    assert (tmp_path / "blown" / "status.json").read_text() == status and tables(tmp_path / "blown") == before
