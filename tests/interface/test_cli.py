"""`nin` as a user runs it: errors, help, divergence, resume after a kill, and the installed wheel."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from forkrun import environment
from harness import QUICK, REPO, nin, nin_started, read_rows, without_timing


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model=transformer"], "unknown model 'transformer'; choose from: cnn, fc, linear, mlp, resnet18"),
        (["noise.sigma=-1"], "noise.sigma must be >= 0, got -1"),
        (["precision=fp16"], "precision must be one of fp32, tf32, bf16, got 'fp16'"),
        (["nin=layers", "nin.layers=[fc9]"], "NIN on layer 'fc9', which model mlp does not have; its layers are: fc1, out"),
        (["notes=a=b"], "a value holding '=' or a space is quoted: notes='a=b'"),
        (["dataset=mnist", "dataset.root=/nonexistent/mnist"], "install it with: nin download mnist"),
        (["dataset=fashion_mnist", "dataset.root=/nonexistent/fm"], "sudo apt-get install -y dataset-fashion-mnist"),
    ],
)
@pytest.mark.e2e
def test_bad_input_fails_in_one_line_before_training(tmp_path, overrides, message):
    run_dir = tmp_path / "run"
    base = [o for o in QUICK if not o.startswith("dataset=")] if any(o.startswith("dataset=") for o in overrides) else QUICK
    proc = nin("train", *base, *overrides, f"hydra.run.dir={run_dir}")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nin: error: ") and message in lines[0], proc.stderr
    assert not (run_dir / "metrics.csv").exists()


@pytest.mark.e2e
def test_help_and_cfg_job_work_as_in_hydra():
    helped = nin("train", "--help")
    assert helped.returncode == 0 and "model: cnn, fc, linear, mlp, resnet18" in helped.stdout
    cfg = nin("train", "--cfg", "job", "model=cnn", "noise.sigma=3")
    assert cfg.returncode == 0 and "name: cnn" in cfg.stdout and "sigma: 3" in cfg.stdout
    top = nin("--help")
    assert top.returncode == 0 and "train" in top.stdout


@pytest.mark.e2e
def test_divergence_is_a_result_rows_kept_exit_zero(tmp_path):
    proc = nin("train", *QUICK, "noise.sigma=1000", "epochs=5", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["status"] == "diverged" and status["epoch"] < 5 and status["reason"]
    assert len(read_rows(tmp_path)) == status["epoch"] + 1


RESUME_ARGS = [*QUICK, "epochs=6", "noise.sigma=3"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
@pytest.mark.e2e
def test_killed_run_resumes_to_the_same_metrics(tmp_path, gate, sig):
    reference = tmp_path / "reference"
    assert nin("train", *RESUME_ARGS, f"hydra.run.dir={reference}").returncode == 0

    run_dir = tmp_path / "killed"
    proc = nin_started("train", *RESUME_ARGS, f"hydra.run.dir={run_dir}", env=gate.env("metrics_row", 3))  # held after epoch 2's row
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

    resumed = nin("train", *RESUME_ARGS, f"hydra.run.dir={run_dir}")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from the checkpoint" in resumed.stderr
    rows = read_rows(run_dir)
    assert [int(r["epoch"]) for r in rows] == list(range(7))
    assert without_timing(rows) == without_timing(read_rows(reference))
    assert json.loads((run_dir / "status.json").read_text())["status"] == "completed"


@pytest.mark.e2e
def test_finished_run_is_skipped_and_another_config_is_refused(tmp_path):
    args = [*QUICK, "epochs=1", f"hydra.run.dir={tmp_path}"]
    assert nin("train", *args).returncode == 0
    again = nin("train", *args)
    assert again.returncode == 0 and "already completed" in again.stderr
    other = nin("train", *args, "noise.sigma=5")
    assert other.returncode == 2 and "differs in: noise" in other.stderr
    # a run written before `precision` replaced the `tf32` switch is still the same run
    config = tmp_path / "config.yaml"
    config.write_text(config.read_text().replace("precision: tf32", "tf32: true"))
    legacy = nin("train", *args)
    assert legacy.returncode == 0 and "already completed" in legacy.stderr, legacy.stderr


@pytest.mark.e2e
@pytest.mark.install
def test_the_wheel_in_a_fresh_environment_has_every_launcher_the_map_and_a_users_configs(tmp_path):
    """`pip install .` (a wheel, not editable) into a new virtual environment, run from a directory
    outside the checkout in new interpreters with nothing of the checkout on their path: the
    launcher presets, a batched sweep, a small map, a user's --config-dir, the robustness extra's
    attacks and shell completion. The environment borrows this one's dependencies (torch, Hydra, ...)
    through a .pth line, which does not carry this environment's editable path to the checkout."""
    import sysconfig

    wheels, venv, work = tmp_path / "wheels", tmp_path / "venv", tmp_path / "work"
    work.mkdir()
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(REPO)], check=True, cwd=tmp_path)
    wheel = next(wheels.glob("nin_cli-*.whl"))
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], capture_output=True, text=True
        ).stdout.strip()
    )
    (site / "zz_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([*pip, "--python", str(python), "install", "--no-deps", str(wheel)], check=True, cwd=tmp_path)

    def nin_installed(*args: str) -> subprocess.CompletedProcess:
        return nin(*args, cwd=work, env={"PYTHONPATH": None}, timeout=300, program=[venv / "bin" / "nin"])

    code = "import nin_cli, hydra_plugins.nin_map_sweeper as m, hydra_plugins; print(nin_cli.__file__, m.__file__, *hydra_plugins.__path__)"
    clean = environment({"PYTHONPATH": None})
    where = subprocess.run([python, "-c", code], cwd=work, env=clean, capture_output=True, text=True, check=True).stdout.split()
    assert where[0].startswith(str(venv)) and where[1].startswith(str(venv)), where
    assert not any(p.startswith((str(REPO / "nin_cli"), str(REPO / "hydra_plugins"))) for p in where), where  # not the checkout's
    helped = nin_installed("train", "--help")
    launchers = "hydra/launcher: basic, batched, batched_local, batched_slurm, batched_slurm_gpu, joblib, local, nin_batched_local"
    assert helped.returncode == 0 and launchers in helped.stdout, helped.stdout[-3000:]
    for preset in ("parallel", "local", "batched_local"):
        composed = nin_installed("train", f"hydra/launcher={preset}", "--cfg", "hydra")
        assert composed.returncode == 0 and "_target_: hydra_plugins" in composed.stdout, composed.stderr
    (work / "conf" / "model").mkdir(parents=True)
    (work / "conf" / "model" / "mlp32.yaml").write_text("name: mlp\ndepth: 1\nwidth: 32\ndropout: 0.0\n")
    small = [*QUICK[:2], "dataset.train_size=512", "dataset.test_size=200", "epochs=2"]
    sweep = nin_installed(
        "train", "-m", "--config-dir", "conf", "model=mlp32", "hydra/launcher=batched", *small, "noise.sigma=1,30", "hydra.sweep.dir=sweep"
    )
    assert sweep.returncode == 0, sweep.stderr
    runs = sorted((work / "sweep").glob("*/metrics.csv"))
    assert (
        len(runs) == 2 and all(len(read_rows(r.parent)) == 3 for r in runs) and "width: 32" in (runs[0].parent / "config.yaml").read_text()
    )
    toy = ["+experiment=linear_toy", "hydra.sweeper.axis=noise.sigma", "hydra.sweeper.lo=1", "hydra.sweeper.hi=30", "hydra.sweeper.seeds=2"]
    mapped = nin_installed(
        "map", *toy, "hydra.sweeper.budget=4", "hydra/launcher=batched", "epochs=3", "progress=false", "hydra.sweep.dir=map"
    )
    assert mapped.returncode == 0 and (work / "map" / "boundaries.csv").exists(), mapped.stderr
    robust = nin_installed("evaluate", str(runs[0].parent), "test_size=100", "attack_test_size=50", "attacks=[apgd]", "epsilons=[0.1]",
                 "apgd_steps=5", "gaussian=[]", "corruptions={rotate: [1]}", "--no-progress")  # fmt: skip
    assert robust.returncode == 0, robust.stderr
    table = (runs[0].parent / "robustness.csv").read_text()
    assert "apgd" in table and "rotate" in table
    completion = nin_installed("--shell-completion", "install=bash")
    assert completion.returncode == 0 and "complete" in completion.stdout


@pytest.mark.e2e
@pytest.mark.install
def test_every_subcommand_as_the_installed_console_script(tmp_path):
    """`.venv/bin/nin`, a new process each: import-time settings, plugin discovery and exit-time
    output are what a user gets (the forked nin of tests/forkrun.py shares a preloaded server's)."""
    script = Path(sys.executable).parent / "nin"

    def console(*args: str) -> subprocess.CompletedProcess:
        proc = nin(*args, cwd=tmp_path, timeout=300, program=[script])
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, (args, proc.stderr[-2000:])
        return proc

    sweep = tmp_path / "sweep"
    console("train", "-m", *QUICK, "model.width=32", "dataset.train_size=512", "dataset.test_size=200", "epochs=2", "noise.sigma=1,30",
        "hydra/launcher=batched", f"hydra.sweep.dir={sweep}")  # fmt: skip
    run = next(p.parent for p in sweep.glob("*/metrics.csv"))
    assert "2 completed" in console("progress", str(sweep)).stdout
    assert "phases by sigma" in console("summarize", str(sweep), "--format", "markdown").stdout
    assert console("plot", str(sweep), "--no-runs").stdout.strip()
    assert "report" in console("report", str(sweep)).stdout
    console("theory", str(sweep), "--no-predict")
    console("predict", *QUICK, "model.width=32", "--sigmas", "1,30", "--samples", "100", "--out", str(tmp_path / "predict"))
    console(
        "evaluate", str(run), "test_size=100", "gaussian=[0.3]", "attacks=[fgsm]", "epsilons=[0.1]", "corruptions=null", "--no-progress"
    )
    assert (run / "robustness.csv").exists()
    console("export", "tensorboard", str(sweep), "--out", str(tmp_path / "tb"))
    assert "fashion_mnist" in console("download", "--help").stdout  # the only command that needs the network
    assert "hydra.sweeper" in console("map", "--help").stdout
    assert console("--version").stdout.startswith("nin ")
