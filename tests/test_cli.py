"""`nin` as a user runs it: errors, help, divergence, resume after a kill, and the installed wheel."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import QUICK, nin_cli, read_rows, real_nin, start_nin, without_timing

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model=transformer"], "unknown model 'transformer'; choose from: cnn, fc, linear, mlp, resnet18"),
        (["noise.sigma=-1"], "noise.sigma must be >= 0, got -1"),
        (["precision=fp16"], "precision must be one of fp32, tf32, bf16, got 'fp16'"),
        (["nin=layers", "nin.layers=[fc9]"], "NIN on layer 'fc9', which model mlp does not have; its layers are: fc1, out"),
        (["dataset=mnist", "dataset.root=/nonexistent/mnist"], "install it with: nin download mnist"),
        (["dataset=fashion_mnist", "dataset.root=/nonexistent/fm"], "sudo apt-get install -y dataset-fashion-mnist"),
    ],
)
@pytest.mark.e2e
def test_bad_input_fails_in_one_line_before_training(tmp_path, overrides, message):
    run_dir = tmp_path / "run"
    base = [o for o in QUICK if not o.startswith("dataset=")] if any(o.startswith("dataset=") for o in overrides) else QUICK
    proc = nin_cli("train", *base, *overrides, f"hydra.run.dir={run_dir}")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nin: error: ") and message in lines[0], proc.stderr
    assert not (run_dir / "metrics.csv").exists()


@pytest.mark.e2e
def test_help_and_cfg_job_work_as_in_hydra():
    helped = nin_cli("train", "--help")
    assert helped.returncode == 0 and "model: cnn, fc, linear, mlp, resnet18" in helped.stdout
    cfg = nin_cli("train", "--cfg", "job", "model=cnn", "noise.sigma=3")
    assert cfg.returncode == 0 and "name: cnn" in cfg.stdout and "sigma: 3" in cfg.stdout
    top = nin_cli("--help")
    assert top.returncode == 0 and "train" in top.stdout


@pytest.mark.e2e
def test_divergence_is_a_result_rows_kept_exit_zero(tmp_path):
    proc = nin_cli("train", *QUICK, "noise.sigma=1000", "epochs=5", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["status"] == "diverged" and status["epoch"] < 5 and status["reason"]
    assert len(read_rows(tmp_path)) == status["epoch"] + 1


RESUME_ARGS = [*QUICK, "epochs=6", "noise.sigma=3"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
@pytest.mark.e2e
def test_killed_run_resumes_to_the_same_metrics(tmp_path, gate, sig):
    reference = tmp_path / "reference"
    assert nin_cli("train", *RESUME_ARGS, f"hydra.run.dir={reference}").returncode == 0

    run_dir = tmp_path / "killed"
    proc = start_nin("train", *RESUME_ARGS, f"hydra.run.dir={run_dir}", env=gate.env("metrics_row", 3))  # held after epoch 2's row
    gate.held(alive=lambda: proc.poll() is None)
    assert len(read_rows(run_dir)) == 3
    proc.send_signal(sig)
    gate.open()
    proc.wait(timeout=60)
    status = json.loads((run_dir / "status.json").read_text())
    if sig == signal.SIGTERM:
        assert proc.returncode == 143 and status["status"] == "interrupted"
    else:
        assert proc.returncode == -9 and status["status"] == "running"
    assert len(read_rows(run_dir)) == 3

    resumed = nin_cli("train", *RESUME_ARGS, f"hydra.run.dir={run_dir}")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from the checkpoint" in resumed.stderr
    rows = read_rows(run_dir)
    assert [int(r["epoch"]) for r in rows] == list(range(7))
    assert without_timing(rows) == without_timing(read_rows(reference))
    assert json.loads((run_dir / "status.json").read_text())["status"] == "completed"


@pytest.mark.e2e
def test_finished_run_is_skipped_and_another_config_is_refused(tmp_path):
    args = [*QUICK, "epochs=1", f"hydra.run.dir={tmp_path}"]
    assert nin_cli("train", *args).returncode == 0
    again = nin_cli("train", *args)
    assert again.returncode == 0 and "already completed" in again.stderr
    other = nin_cli("train", *args, "noise.sigma=5")
    assert other.returncode == 2 and "differs in: noise" in other.stderr
    # a run written before `precision` replaced the `tf32` switch is still the same run
    config = tmp_path / "config.yaml"
    config.write_text(config.read_text().replace("precision: tf32", "tf32: true"))
    legacy = nin_cli("train", *args)
    assert legacy.returncode == 0 and "already completed" in legacy.stderr, legacy.stderr


@pytest.mark.e2e
def test_installed_wheel_runs_from_another_directory(tmp_path):
    wheels, target, work = tmp_path / "wheels", tmp_path / "site", tmp_path / "work"
    work.mkdir()
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(REPO)], check=True, cwd=tmp_path)
    wheel = next(wheels.glob("nin_cli-*.whl"))
    subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)], check=True, cwd=tmp_path)
    env = {"PYTHONPATH": str(target)}
    where = subprocess.run(
        [sys.executable, "-c", "import nin_cli.schema as c; print(c.__file__); print(c.conf_dir())"],
        cwd=work,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert all(p.startswith(str(target)) for p in where), where
    proc = real_nin("train", *QUICK, "epochs=1", cwd=work, env=env)  # a new interpreter, importing the wheel
    assert proc.returncode == 0, proc.stderr
    runs = list((work / "outputs" / "runs").glob("*/*/metrics.csv"))
    assert len(runs) == 1 and len(read_rows(runs[0].parent)) == 2
