"""Sweeps at scale: the batched ensemble engine, Hydra launchers, preemption and skipping finished runs."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch
from harness import NEEDS_CUDA, QUICK, SMALL_CNN, column, make_cfg, nin, nin_started, read_rows, without_timing

from nin_cli.analysis.phases import classify
from nin_cli.analysis.runs import load_run
from nin_cli.config.schema import load_settings
from nin_cli.errors import ConfigError
from nin_cli.records.store import RunRecords
from nin_cli.train import Member, train, train_many
from nin_cli.train.ensembles import as_runs, check_batchable, structure_groups
from nin_cli.train.loop import Ensemble
from nin_cli.train.setup import prepare
from nin_cli.train.steps import choose_step

MEMBERS = [("0", 0), ("3", 1), ("10", 0), ("10", 1)]


def test_batched_members_replay_their_single_runs(tmp_path):
    cfgs = [make_cfg(*QUICK, "epochs=2", f"noise.sigma={s}", f"seed={seed}") for s, seed in MEMBERS]
    batched_dirs = [tmp_path / f"batched_{s}_{seed}" for s, seed in MEMBERS]
    results = train_many(cfgs, batched_dirs, ensemble_size=3)  # two batches: 3 + 1
    assert [r.status for r in results] == ["completed"] * 4
    acfg = load_settings("analysis")
    for cfg, bdir, (s, seed) in zip(cfgs, batched_dirs, MEMBERS):
        single = tmp_path / f"single_{s}_{seed}"
        train(cfg, single)
        first_b, first_s = read_rows(bdir)[0], read_rows(single)[0]
        assert without_timing([first_b]) == without_timing([first_s])  # epoch 0: the same init, exactly
        steps_b, steps_s = column(bdir, "train_loss")[:1], column(single, "train_loss")[:1]
        assert steps_b == steps_s
        b_steps = column(bdir, "train_loss", "steps.csv")[:6]
        s_steps = column(single, "train_loss", "steps.csv")[:6]
        assert b_steps == pytest.approx(s_steps, rel=1e-4)  # first steps: same data, noise and updates
        assert abs(column(bdir, "test_acc")[-1] - column(single, "test_acc")[-1]) < 0.03
        assert classify(load_run(bdir), acfg.phases)[0] == classify(load_run(single), acfg.phases)[0]


SCALE_CNN = [*SMALL_CNN, "dataset.train_size=1500"]


def ensemble(cfgs, where: Path, kind: str | None = None) -> Ensemble:
    """Members of these configs (fresh, each in its own directory under `where`) in one Ensemble."""
    return Ensemble([Member(prepare(c), RunRecords(where / f"m{k}")) for k, c in enumerate(cfgs)], kind)


MLP_STEP_CASES = [
    ["nin=all", "regularization.weight_decay=0.01"],
    ["nin=all", "nin.init=unit"],
    ["loss=mse", "optimizer.lr=0.01"],
    ["loss=mse", "loss.reduction=half_sum", "optimizer.lr=0.01", "nin.init=unit"],
]
STEP_CASES = [
    *[
        pytest.param(kind, [*QUICK, "model.depth=2", "model.width=64", *extra], id=f"{kind}-{'-'.join(extra)}")
        for i, extra in enumerate(MLP_STEP_CASES)
        for kind in ("fused", "vmap")
        if kind == "fused" or i in (0, 3)  # vmap on MLPs: with weight decay, and with the half-summed MSE
    ],
    pytest.param("vmap", [*SCALE_CNN, "nin=all"], id="vmap-cnn-nin=all"),
    pytest.param("vmap", [*SCALE_CNN, "nin=all", "nin.conv=output"], id="vmap-cnn-nin=all-conv=output"),
    pytest.param("vmap", [*SCALE_CNN, "model.dropout=0.0", "loss=mse", "regularization.weight_decay=0.01"], id="vmap-cnn-mse-wd"),
]


@pytest.mark.parametrize(("kind", "args"), STEP_CASES)
def test_every_step_agrees_with_the_reference_step(tmp_path, kind, args):
    """Each Step against the reference: each member's own autograd and torch.optim step (`loop`,
    what a single run of any model takes), over two epochs of three members with their own seeds
    and sigmas: the noisy losses, and the weights after the first epoch."""
    # A CNN's NIN at conv1 acts on the image (nin.conv=input): at sigma = 3 its noise is as large as
    # the image itself, and float32 rounding grows 1e4-fold within two epochs (the loop step on 1
    # and on 2 threads differs by 0.2% there). The CNN cases stop at 1.5, where it does not.
    sigmas = [0.5, 1.0, 1.5] if "model=cnn" in args else [0.5, 1.0, 3.0]
    cfgs = [make_cfg(*args, f"seed={k}", f"noise.sigma={s}") for k, s in enumerate(sigmas)]

    def two_epochs(step_kind: str, where: str):
        ens = ensemble(cfgs, tmp_path / where, step_kind)
        assert ens.step.kind == step_kind
        first = ens.train_epoch(sigmas)[0]
        after_one = {n: ens.step.param(n).detach().clone() for n, _ in ens.members[0].s.model.named_parameters()}
        return first + ens.train_epoch(sigmas)[0], after_one

    def rel(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a - b).norm() / b.norm())

    losses, params = two_epochs(kind, kind)
    reference, ref_params = two_epochs("loop", "loop")
    tolerance = dict.fromkeys(ref_params, 1e-3)
    if "model=cnn" in args and "nin.conv=output" not in args:
        # With noise on a convolution's input, a conv bias's gradient is a sum of large noisy terms
        # that cancel: the reference itself, on another number of threads, moves the conv biases by
        # ~1e-3 after an epoch (at sigma = 0: 1e-5). Each weight may differ by no more than 3x
        # the reference's own spread, and never by more than 1e-3 where that spread is smaller.
        threads = torch.get_num_threads()
        torch.set_num_threads(2 if threads == 1 else 1)
        try:
            _, other = two_epochs("loop", "loop_threads")
        finally:
            torch.set_num_threads(threads)
        tolerance = {n: max(1e-3, 3 * rel(other[n], p)) for n, p in ref_params.items()}
    # The first epoch (and the weights after it) agrees to float32 rounding; over the second, the
    # rounding of differently ordered reductions has compounded through the noisy steps.
    for tol, epoch in ((1e-4, slice(0, 3)), (5e-4, slice(3, 6))):
        assert losses[epoch] == pytest.approx(reference[epoch], rel=tol)
    assert all(b < a for a, b in zip(losses[:3], losses[3:]))  # each member's second-epoch loss is lower: it trains
    for name, p in ref_params.items():
        assert rel(params[name], p) < tolerance[name], name


def test_the_step_choice_says_why():
    from nin_cli.nets.network import build_model

    cpu, cuda = torch.device("cpu"), torch.device("cuda")

    def choice(*args, k: int, device: torch.device):
        """The step for k members of this config, from what its built network's structure allows."""
        cfg = make_cfg(*args)
        return choose_step(cfg, k, device, build_model(cfg.model, cfg.nin, (1, 28, 28), 10, 0).kind)

    assert choice(*QUICK, k=1, device=cpu).kind == "fused"
    assert choice(*QUICK, k=8, device=cuda).kind == "fused"
    dropout = choice(*QUICK, "model.dropout=0.2", k=8, device=cuda)  # each member's masks its own: stepped in turn
    assert dropout.kind == "loop" and "dropout" in dropout.reason
    assert choice(*QUICK, "model.dropout=0.2", k=1, device=cuda).kind == "loop"
    adam = choice(*QUICK, "optimizer=adam", k=8, device=cuda)
    assert adam.kind == "loop" and "adam" in adam.reason
    assert choice(*QUICK, "optimizer.momentum=0.9", k=8, device=cuda).kind == "loop"
    assert choice(*SCALE_CNN, k=8, device=cuda).kind == "vmap"
    assert "CPU" in choice(*SCALE_CNN, k=8, device=cpu).reason
    assert "batch-norm" in choice("model=resnet18", k=8, device=cuda).reason


CUDA = pytest.param("cuda", marks=NEEDS_CUDA)


@pytest.mark.parametrize("device", ["cpu", CUDA])
@pytest.mark.e2e
def test_bf16_precision_trains_like_float32(tmp_path, device):
    """precision=bf16 rounds only the matmul inputs: its runs track the float32 ones, single or
    stacked, through the fused MLP step and through autocast + vmap + autograd (the CNN)."""
    args = [*QUICK, f"device={device}", "epochs=2", "noise.sigma=10", "target_train_acc=null"]
    float32, bf16 = (train(make_cfg(*args, f"precision={p}"), tmp_path / p) for p in ("fp32", "bf16"))
    assert float32.status == bf16.status == "completed"
    # the noisy loss at sigma = 10 moves most: on CUDA its epoch-2 mean differed by 5.2% (H100)
    for name, tolerance in [("train_loss", 0.1), ("train_loss_clean", 0.05), ("niw_norm_fc1", 0.03)]:
        assert column(tmp_path / "bf16", name) == pytest.approx(column(tmp_path / "fp32", name), rel=tolerance), name
    assert column(tmp_path / "bf16", "test_acc") == pytest.approx(column(tmp_path / "fp32", "test_acc"), abs=0.02)
    assert column(tmp_path / "bf16", "train_loss") != column(tmp_path / "fp32", "train_loss")  # bf16 was in effect
    assert column(tmp_path / "bf16", "niw_norm_fc1")[-1] < 0.92 * column(tmp_path / "bf16", "niw_norm_fc1")[0]  # decays

    cfgs = [make_cfg(*args, "precision=bf16", f"seed={k}") for k in (0, 1)]
    batch = ensemble(cfgs, tmp_path / "b")
    assert batch.step.kind == "fused" and batch.step.fused.dtype == torch.bfloat16
    single = ensemble(cfgs[:1], tmp_path / "single", "loop")  # autograd under bf16 autocast
    tolerance = 1e-3 if device == "cpu" else 1e-2  # CUDA picks other kernels for K = 1 and K = 2
    assert batch.train_epoch([10.0, 10.0])[0][0] == pytest.approx(single.train_epoch([10.0])[0][0], rel=tolerance)

    # N(0, 1) NIWs: noise of unit size at every pixel, where rounding matters most
    cnn = [*SCALE_CNN, f"device={device}", "epochs=2", "nin=all", "nin.init=unit", "noise.sigma=1"]
    for precision in ("fp32", "bf16"):
        cnn_cfgs = [make_cfg(*cnn, f"precision={precision}", f"seed={k}") for k in (0, 1)]
        assert [r.status for r in train_many(cnn_cfgs, [tmp_path / f"cnn_{precision}{k}" for k in (0, 1)])] == ["completed"] * 2
    for k in (0, 1):
        loss = column(tmp_path / f"cnn_bf16{k}", "train_loss_clean")
        float32 = column(tmp_path / f"cnn_fp32{k}", "train_loss_clean")
        # within 3% with 2 CPU threads, 3.8% with one (another reduction order): 5% allowed
        assert loss == pytest.approx(float32, rel=0.05) and loss[-1] < loss[0]
        assert any(a != b for a, b in zip(loss, float32)), "bf16 ran the fp32 arithmetic"


def test_batched_groups_a_mixed_sweep_and_steps_what_it_cannot_stack_one_by_one(tmp_path):
    cfgs = [
        make_cfg(*QUICK, "epochs=1", "noise.sigma=1", "seed=0"),
        make_cfg(*QUICK, "epochs=1", "model.width=64"),
        make_cfg(*QUICK, "epochs=1", "noise.sigma=3", "seed=1"),  # stacks with the first
        make_cfg(*QUICK, "epochs=1", "optimizer=adam", "optimizer.lr=0.001"),  # cannot stack: a loop step
        make_cfg(*QUICK, "epochs=1", "optimizer=adam", "optimizer.lr=0.001", "seed=1"),
    ]
    assert structure_groups(as_runs(cfgs)) == [[0, 2], [1], [3, 4]]
    dirs = [tmp_path / f"run{i}" for i in range(len(cfgs))]
    results = train_many(cfgs, dirs)
    assert [r.status for r in results] == ["completed"] * 5
    assert all(len(read_rows(d)) == 2 and column(d, "test_acc")[-1] > 0.6 for d in dirs)
    alone = tmp_path / "adam_alone"  # an Adam member in a loop ensemble is its single run, exactly
    train(cfgs[4], alone)
    assert without_timing(read_rows(alone)) == without_timing(read_rows(dirs[4]))
    with pytest.raises(ConfigError, match="differ in: model"):
        check_batchable(as_runs(cfgs[:2]))


@pytest.mark.e2e
def test_batched_launcher_is_one_switch_on_a_hydra_sweep(tmp_path):
    proc = nin("train", "-m", "hydra/launcher=batched", *QUICK, "epochs=1", "noise.sigma=1,1000", "seed=0,1", f"hydra.sweep.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr
    assert "training 4 models together" in proc.stderr
    statuses = {p.parent.name.split("noise.")[1]: json.loads(p.read_text())["status"] for p in tmp_path.glob("*/status.json")}
    assert statuses == {
        "sigma=1,seed=0": "completed",
        "sigma=1,seed=1": "completed",
        "sigma=1000,seed=0": "diverged",
        "sigma=1000,seed=1": "diverged",
    }
    assert all((p.parent / ".hydra" / "config.yaml").exists() for p in tmp_path.glob("*/status.json"))
    # the sweep's end: one line, and report.md with the phase table and figures (Hydra callback)
    assert "4 runs: 2 completed, 2 diverged, 0 failed; report:" in proc.stderr
    report = (tmp_path / "report.md").read_text()
    assert "| divergent |" in report and "![NIW norms](plots/niw_norms.png)" in report and (tmp_path / "plots" / "niw_norms.png").exists()


@pytest.mark.e2e
@pytest.mark.launchers
def test_the_joblib_launcher_trains_a_sweep_in_worker_processes(tmp_path):
    proc = nin(
        "train",
        "-m",
        "hydra/launcher=parallel",
        "hydra.launcher.n_jobs=2",
        *QUICK,
        "epochs=1",
        "noise.sigma=1,3",
        f"hydra.sweep.dir={tmp_path}",
    )
    assert proc.returncode == 0, proc.stderr
    statuses = sorted(json.loads(p.read_text())["status"] for p in tmp_path.glob("*/status.json"))
    assert statuses == ["completed", "completed"] and "2 runs: 2 completed, 0 diverged, 0 failed" in proc.stderr
    pids = {json.loads((p.parent / "env.json").read_text())["pid"] for p in tmp_path.glob("*/status.json")}
    assert len(pids) == 2  # each run in its own joblib worker


@pytest.mark.e2e
@pytest.mark.launchers
def test_submitit_local_sweep_and_rerun_skips_finished_runs(tmp_path):
    args = ["train", "-m", "hydra/launcher=local", *QUICK, "epochs=1", "noise.sigma=0,3", f"hydra.sweep.dir={tmp_path}"]
    assert nin(*args).returncode == 0
    runs = sorted(tmp_path.glob("*/metrics.csv"))
    assert len(runs) == 2 and all(len(read_rows(p.parent)) == 2 for p in runs)
    before = [p.read_bytes() for p in runs]
    assert (tmp_path / "report.md").exists()  # the sweep-end callback ran after the submitit launcher too
    redo = nin("report", str(tmp_path))
    assert redo.returncode == 0 and "2 runs: 2 completed, 0 diverged, 0 failed" in redo.stdout, redo.stderr
    progress = nin("progress", str(tmp_path))  # the sweep's size was recorded when it started
    assert progress.returncode == 0 and progress.stdout == "2/2 runs ended (2 completed)\n", progress.stderr
    # rerun on another launcher, the grid extended by one sigma: the finished runs are skipped, the
    # progress counts the runs already there plus the new one, job by job
    again = nin(*args[:2], "hydra/launcher=basic", *args[3:-2], "noise.sigma=0,3,5", args[-1])
    assert again.returncode == 0
    assert "sweep: job 2/3 starting; 2/3 runs ended (2 completed)" in again.stderr
    assert again.stderr.count("already completed at epoch 1; skipping") == 2
    assert [p.read_bytes() for p in runs] == before
    assert nin("progress", str(tmp_path)).stdout == "3/3 runs ended (3 completed)\n"


PREEMPT = [*QUICK, "epochs=5", "noise.sigma=3"]


@pytest.mark.e2e
@pytest.mark.launchers
def test_preempted_submitit_job_requeues_and_resumes_without_lost_or_duplicated_rows(tmp_path, gate):
    reference = tmp_path / "reference"
    assert nin("train", *PREEMPT, f"hydra.run.dir={reference}").returncode == 0

    sweep = tmp_path / "sweep"
    launcher = nin_started("train", "-m", "hydra/launcher=local", *PREEMPT, f"hydra.sweep.dir={sweep}", env=gate.env("metrics_row", 3))
    (pid,) = gate.held(alive=lambda: launcher.poll() is None)  # the submitit task, after epoch 2's row
    (metrics,) = sweep.glob("*/metrics.csv")
    assert len(read_rows(metrics.parent)) == 3
    os.kill(pid, signal.SIGUSR2)  # what SLURM sends on preemption
    gate.open()
    launcher.wait(timeout=600)
    err = launcher.stderr
    assert launcher.returncode == 0, err
    logs = "".join(p.read_text() for p in sweep.glob(".submitit/*/*.err"))
    assert "resuming from the checkpoint of epoch" in logs
    rows = read_rows(metrics.parent)
    assert [int(r["epoch"]) for r in rows] == list(range(6))
    assert without_timing(rows) == without_timing(read_rows(reference))
    assert json.loads((metrics.parent / "status.json").read_text())["status"] == "completed"


@pytest.mark.e2e
def test_interrupted_batched_sweep_resumes_to_the_same_rows(tmp_path, gate):
    args = [*QUICK, "epochs=4", "noise.sigma=1,10"]
    reference = tmp_path / "reference"
    assert nin("train", "-m", "hydra/launcher=batched", *args, f"hydra.sweep.dir={reference}").returncode == 0

    sweep = tmp_path / "sweep"
    proc = nin_started("train", "-m", "hydra/launcher=batched", *args, f"hydra.sweep.dir={sweep}", env=gate.env("metrics_row", 6))
    gate.held(alive=lambda: proc.poll() is None)  # both members' rows of epochs 0-2 written
    assert sorted(len(read_rows(p.parent)) for p in sweep.glob("*/metrics.csv")) == [3, 3]
    proc.send_signal(signal.SIGTERM)
    gate.open()
    proc.wait(timeout=60)
    assert proc.returncode == 143 and "rerun the same command (same directory) to resume" in proc.stderr
    assert {json.loads(p.read_text())["status"] for p in sweep.glob("*/status.json")} == {"interrupted"}

    again = nin("train", "-m", "hydra/launcher=batched", *args, f"hydra.sweep.dir={sweep}")
    assert again.returncode == 0, again.stderr
    assert again.stderr.count("resuming from the checkpoint") == 2
    for run in sorted(sweep.glob("*/metrics.csv")):
        rows = read_rows(run.parent)
        assert [int(r["epoch"]) for r in rows] == list(range(5))
        assert without_timing(rows) == without_timing(read_rows(reference / run.parent.name))


def test_run_killed_after_its_last_checkpoint_finishes_without_another_epoch(tmp_path):
    """Killed between the final checkpoint and the final status: both engines only close the run."""
    cfgs = [make_cfg(*QUICK, "epochs=1", f"seed={seed}") for seed in (0, 1)]
    dirs = [tmp_path / "batched0", tmp_path / "batched1"]
    train_many(cfgs, dirs)
    train(cfgs[0], tmp_path / "single")
    for d in [*dirs, tmp_path / "single"]:
        (d / "status.json").write_text('{"status": "running", "epoch": 1}')
    before = [read_rows(d) for d in dirs]
    assert [r.status for r in train_many(cfgs, dirs)] == ["completed", "completed"]
    assert train(cfgs[0], tmp_path / "single").status == "completed"
    assert [read_rows(d) for d in dirs] == before
    assert [int(r["epoch"]) for r in read_rows(tmp_path / "single")] == [0, 1]


BATCHED_PREEMPT = [*PREEMPT, "epochs=4", "noise.sigma=1,3", "seed=0,1", "hydra.launcher.ensemble_size=2"]


@pytest.mark.e2e
@pytest.mark.launchers
def test_preempted_batched_local_jobs_requeue_and_resume_every_member(tmp_path, gate):
    """hydra/launcher=batched_local: 4 runs as 2 submitit jobs of 2-member ensembles. SIGUSR2 to
    both jobs mid-training requeues them; every member's rows equal those of an uninterrupted
    batched sweep (same ensembles), and a rerun submits nothing."""
    reference = tmp_path / "reference"
    ref = nin("train", "-m", "hydra/launcher=batched", *BATCHED_PREEMPT, f"hydra.sweep.dir={reference}")
    assert ref.returncode == 0, ref.stderr

    sweep = tmp_path / "sweep"
    env = gate.env("metrics_row", 4)  # in each job, after both members' rows of epochs 0 and 1
    local = ["hydra/launcher=batched_local", "hydra.launcher.poll_s=1", "hydra.launcher.array_parallelism=2", *BATCHED_PREEMPT]
    launcher = nin_started("train", "-m", *local, f"hydra.sweep.dir={sweep}", env=env)
    pids = gate.held(2, alive=lambda: launcher.poll() is None)
    assert sorted(len(read_rows(p.parent)) for p in sweep.glob("*/metrics.csv")) == [2, 2, 2, 2]
    for pid in pids:
        os.kill(pid, signal.SIGUSR2)  # what SLURM sends on preemption and before the time limit
    gate.open()
    launcher.wait(timeout=600)
    out = launcher.stdout + launcher.stderr
    assert launcher.returncode == 0, out
    assert "4 runs in 2 ensembles of up to 2: 2 submitted as local jobs, 0 already finished\n" in out and "4 runs: 4 completed" in out
    logs = "".join(p.read_text() for p in sweep.glob(".submitit/*/*.err"))
    assert logs.count("this job is preempted") == 2 and "resuming from the checkpoint of epoch" in logs
    for run in reference.glob("*/metrics.csv"):
        resumed = sweep / run.parent.name
        assert [int(r["epoch"]) for r in read_rows(resumed)] == list(range(5))
        assert without_timing(read_rows(resumed)) == without_timing(read_rows(run.parent)), run.parent.name
        assert without_timing(read_rows(resumed, "steps.csv")) == without_timing(read_rows(run.parent, "steps.csv"))
    again = nin("train", "-m", *local, f"hydra.sweep.dir={sweep}")
    assert again.returncode == 0 and "0 submitted as local jobs, 2 already finished" in again.stdout + again.stderr


@pytest.mark.e2e
@pytest.mark.launchers
def test_batched_local_runs_no_more_processes_than_asked(tmp_path):
    """array_parallelism=1: the sweep's 2 ensembles go to one local process, which trains them in
    turn; every member's rows equal the in-process batched sweep's (the same ensembles)."""
    args = [*QUICK, "epochs=2", "noise.sigma=1,3", "seed=0,1", "hydra.launcher.ensemble_size=2"]
    reference = tmp_path / "reference"
    assert nin("train", "-m", "hydra/launcher=batched", *args, f"hydra.sweep.dir={reference}").returncode == 0
    sweep = tmp_path / "sweep"
    local = nin(
        "train",
        "-m",
        "hydra/launcher=batched_local",
        "hydra.launcher.poll_s=1",
        "hydra.launcher.array_parallelism=1",
        *args,
        f"hydra.sweep.dir={sweep}",
    )
    out = local.stdout + local.stderr
    assert local.returncode == 0, out
    assert "2 submitted as local jobs, 0 already finished (1 at a time, each process training its share in turn)" in out
    assert len([p for p in (sweep / ".submitit").iterdir() if p.name.isdigit()]) == 1
    for run in reference.glob("*/metrics.csv"):
        assert without_timing(read_rows(sweep / run.parent.name)) == without_timing(read_rows(run.parent)), run.parent.name


def test_a_dropout_run_in_a_batch_is_its_single_run(tmp_path):
    """Dropout's masks come from the run's own stream (Member.own_rng), not from whatever the process
    drew before it: a member of a batch, stepped in turn, writes its single run's rows, bit for bit."""
    from nin_cli.train import train, train_many

    args = [*QUICK, "model.dropout=0.3", "nin=all", "noise.sigma=3", "epochs=2"]
    train_many([make_cfg(*args, f"seed={k}") for k in (0, 1)], [tmp_path / "b0", tmp_path / "b1"])
    train(make_cfg(*args, "seed=1"), tmp_path / "single")
    assert without_timing(read_rows(tmp_path / "b1")) == without_timing(read_rows(tmp_path / "single"))
    assert without_timing(read_rows(tmp_path / "b0")) != without_timing(read_rows(tmp_path / "single"))
    steps = lambda d: column(d, "train_loss", "steps.csv")  # noqa: E731
    assert steps(tmp_path / "b1") == steps(tmp_path / "single")
