"""hydra/launcher=batched_slurm against a real SLURM cluster (scripts/slurm-local.sh start; .ci/run
starts one): job arrays, preemption and requeue by slurmctld, time limits, cancelled jobs, resources
that do not fit, and submit-and-leave. Skipped where no cluster answers."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from harness import QUICK, nin, nin_started, read_rows, without_timing


def cluster_up() -> bool:
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return False
    try:
        out = subprocess.run(["sinfo", "-h", "-N", "-o", "%t"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return any(state.strip() in ("idle", "mix", "alloc") for state in out.splitlines())


pytestmark = [pytest.mark.slurm, pytest.mark.timeout(900)]


@pytest.fixture(scope="module", autouse=True)
def cluster() -> None:
    """Asked when a test here runs, not when the suite is collected: `sinfo` waits 9 s for a
    controller that is not there, and `make test-fast` deselects these tests."""
    if not cluster_up():
        pytest.skip("no SLURM cluster answers here (scripts/slurm-local.sh start)")


# what fits the local one-node cluster (2 cores): one core and a little memory per job
FITS = ["hydra.launcher.partition=debug", "hydra.launcher.mem_gb=2", "hydra.launcher.timeout_min=30"]
SLOW = [*QUICK, "model.width=512", "batch_size=16", "epochs=4"]  # 375 steps an epoch


def launch(sweep: Path, *args: str, pause_at_step: int):
    """The sweep in the background; its jobs (which inherit the environment) stop for 60 s at
    their `pause_at_step`-th step: the moment a test acts, whatever this machine's speed."""
    return nin_started("train", "-m", *args, f"hydra.sweep.dir={sweep}", env={"NIN_FAULT": f"step:{pause_at_step}:PAUSE60"})


def wait_for(condition, timeout: float = 300, every: float = 0.5) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(every)
    return False


def epochs_written(sweep: Path) -> list[int]:
    return [len(read_rows(p.parent)) - 1 for p in sweep.glob("*/metrics.csv")]


def squeue_state(job: str) -> str:
    out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True).stdout.split()
    return out[0] if out else ""


def rows_of(sweep: Path) -> dict[str, list[dict]]:
    return {p.parent.name: without_timing(read_rows(p.parent)) for p in sweep.glob("*/metrics.csv")}


def test_a_batched_slurm_sweep_is_one_job_array_with_the_rows_of_the_batched_launcher(tmp_path):
    args = [*QUICK, "epochs=2", "noise.sigma=1,3,10", "hydra.launcher.ensemble_size=2"]
    reference = nin("train", "-m", "hydra/launcher=batched", *args, f"hydra.sweep.dir={tmp_path / 'ref'}")
    assert reference.returncode == 0, reference.stderr
    sweep = tmp_path / "slurm"
    proc = nin("train", "-m", "hydra/launcher=batched_slurm", *FITS, *args, f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0, proc.stderr
    jobs = sorted(p.name for p in (sweep / ".submitit").iterdir() if (p / f"{p.name}_submitted.pkl").exists())
    assert len(jobs) == 2 and len({j.split("_")[0] for j in jobs}) == 1, jobs  # one array, two tasks
    assert rows_of(sweep) == rows_of(tmp_path / "ref")
    assert proc.stderr.count("3 runs:") == 1 and "3 runs: 3 completed, 0 diverged, 0 failed" in proc.stderr
    again = nin("train", "-m", "hydra/launcher=batched_slurm", *FITS, *args, f"hydra.sweep.dir={sweep}")
    assert again.returncode == 0 and "0 submitted as slurm jobs, 2 already finished" in again.stdout + again.stderr, again.stderr


@pytest.mark.parametrize("how", ["scontrol requeue", "scancel --signal=USR2"])
def test_a_preempted_job_is_requeued_and_every_member_resumes_exactly(tmp_path, how):
    args = [*SLOW, "noise.sigma=1,3", "hydra.launcher.ensemble_size=2"]
    reference = nin("train", "-m", "hydra/launcher=batched", *args, f"hydra.sweep.dir={tmp_path / 'ref'}")
    assert reference.returncode == 0, reference.stderr
    sweep = tmp_path / "slurm"
    launcher = launch(sweep, "hydra/launcher=batched_slurm", *FITS, *args, pause_at_step=800)  # 375 steps an epoch
    assert wait_for(lambda: len(epochs_written(sweep)) == 2 and min(epochs_written(sweep)) >= 2), "the members never trained 2 epochs"
    (job,) = [p.name for p in (sweep / ".submitit").iterdir() if (p / f"{p.name}_submitted.pkl").exists()]
    command = how.split() + [job]
    subprocess.run(command, check=True, capture_output=True)
    done = launcher.result(timeout=600)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "2 runs: 2 completed, 0 diverged, 0 failed" in out and out.count("2 runs:") == 1, out
    logs = "".join(p.read_text() for p in sweep.glob(".submitit/*/*.err"))
    assert "resuming from the checkpoint of epoch" in logs
    assert rows_of(sweep) == rows_of(tmp_path / "ref")


def test_a_job_at_its_time_limit_is_requeued_up_to_max_num_timeout_then_reported(tmp_path):
    """The warning comes up to 60 s before `signal_delay_s` (sbatch --signal): with 2 minutes and
    30 s, each attempt trains at least 30 s before it. The run asks for more epochs than any machine
    trains in two attempts (200 finished on CI's faster cores), so only the time limit ends it."""
    sweep = tmp_path / "slurm"
    limits = ["hydra.launcher.timeout_min=2", "hydra.launcher.signal_delay_s=30", "hydra.launcher.max_num_timeout=1"]
    proc = nin(
        "train", "-m", "hydra/launcher=batched_slurm", *FITS, *limits, *SLOW, "epochs=100000", "noise.sigma=1", f"hydra.sweep.dir={sweep}"
    )
    assert proc.returncode == 1, proc.stderr
    line = [line for line in proc.stderr.splitlines() if "nin: error:" in line]
    assert len(line) == 1 and "reached its time limit 2 times" in line[0] and "hydra.launcher.timeout_min" in line[0], proc.stderr
    status = json.loads(next(sweep.glob("*/status.json")).read_text())
    assert status["status"] == "interrupted" and status["epoch"] >= 1


def test_a_cancelled_job_is_reported_with_its_cause_and_a_rerun_finishes_it(tmp_path):
    args = [*SLOW, "noise.sigma=1", "epochs=3", "hydra.launcher.poll_s=2"]
    sweep = tmp_path / "slurm"
    launcher = launch(sweep, "hydra/launcher=batched_slurm", *FITS, *args, pause_at_step=400)
    assert wait_for(lambda: epochs_written(sweep) and epochs_written(sweep)[0] >= 1)
    (job,) = [p.name for p in (sweep / ".submitit").iterdir() if (p / f"{p.name}_submitted.pkl").exists()]
    subprocess.run(["scancel", job], check=True)
    done = launcher.result(timeout=300)  # never waits forever
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    errors = [line for line in out.splitlines() if "nin: error:" in line]
    assert len(errors) == 1 and f"job {job}" in errors[0] and "CANCELLED" in errors[0] and "rerun" in errors[0], out
    again = nin("train", "-m", "hydra/launcher=batched_slurm", *FITS, *args, f"hydra.sweep.dir={sweep}")
    assert again.returncode == 0, again.stderr
    assert "1 run: 1 completed" in again.stderr
    assert [int(r["epoch"]) for r in read_rows(next(sweep.glob("*/metrics.csv")).parent)] == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("override", "option"),
    [
        ("hydra.launcher.cpus_per_task=64", "hydra.launcher.cpus_per_task"),
        ("hydra.launcher.mem_gb=4000", "hydra.launcher.mem_gb"),
        ("hydra.launcher.gpus_per_node=1", "hydra.launcher.gpus_per_node"),
        ("hydra.launcher.partition=gpu", "hydra.launcher.partition"),
        (
            "+hydra.launcher.additional_parameters={constraint:a100}",
            "the slurm scheduler refused the jobs: sbatch: error: Batch job submission failed: Invalid feature specification",
        ),
    ],
)
def test_a_request_the_cluster_cannot_satisfy_is_one_line_naming_the_option(tmp_path, override, option):
    proc = nin("train", "-m", "hydra/launcher=batched_slurm", *FITS, override, *QUICK, "epochs=1", f"hydra.sweep.dir={tmp_path}")
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("nin: error: ")]
    assert len(errors) == 1 and option in errors[0] and "Traceback" not in proc.stderr, proc.stderr
    if "scheduler refused" not in option:  # refused before Hydra starts: the error is all there is
        assert proc.stderr.strip() == errors[0]
    assert not list(tmp_path.rglob("metrics.csv"))


def test_submit_and_leave_then_follow_with_progress_and_report(tmp_path):
    sweep = tmp_path / "slurm"
    args = [*SLOW, "epochs=2", "noise.sigma=1,3", "hydra.launcher.ensemble_size=1", "hydra.launcher.wait=false"]
    proc = nin("train", "-m", "hydra/launcher=batched_slurm", *FITS, *args, f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0, proc.stderr
    assert "submitted 2 runs as 2 slurm jobs" in proc.stderr and f"nin progress {sweep} --watch" in proc.stderr
    seen = set()

    def ended() -> bool:
        line = nin("progress", str(sweep)).stdout.strip()
        seen.add(re.sub(r"\s+", " ", line))
        return line.startswith("2/2 runs ended")

    assert wait_for(ended, timeout=300, every=1.0), seen
    assert any(not line.startswith("2/2") for line in seen), seen  # it followed the sweep while it ran
    report = nin("report", str(sweep))
    assert report.returncode == 0 and "2 runs: 2 completed" in report.stdout


def test_a_job_pending_for_a_reason_no_wait_cures_is_cancelled_and_named(tmp_path):
    """The partition's time limit lowered under the request: sbatch accepts the job, SLURM keeps it
    pending (PartitionConfig) forever; the launcher cancels it and names the option."""
    partition = ["scontrol", "update", "PartitionName=debug"]
    subprocess.run([*partition, "MaxTime=5"], check=True)
    try:
        args = [*FITS, "hydra.launcher.timeout_min=30", "hydra.launcher.poll_s=1", *QUICK, "epochs=1"]
        proc = nin("train", "-m", "hydra/launcher=batched_slurm", *args, f"hydra.sweep.dir={tmp_path}")
    finally:
        subprocess.run([*partition, "MaxTime=INFINITE"], check=True)
    errors = [line for line in proc.stderr.splitlines() if "nin: error:" in line]
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr
    assert "pending (PartitionConfig)" in errors[0] and "hydra.launcher.timeout_min" in errors[0], errors
    jobs = [p.name for p in (tmp_path / ".submitit").iterdir()]
    assert not subprocess.run(["squeue", "-h", "-j", ",".join(jobs)], capture_output=True, text=True).stdout.strip()
