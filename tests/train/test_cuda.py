"""The CUDA path: training, the batched engine, resume and robustness on a GPU. Skipped without one."""

from __future__ import annotations

import copy
import dataclasses
import json
import signal
import subprocess
import sys
import time

import pytest
import torch
from harness import EXAMPLES, NEEDS_CUDA, QUICK, cnn, column, loss_and_gradients, make_cfg, nin, read_rows

from nin_cli.config.schema import load_settings
from nin_cli.nets import conv_block
from nin_cli.records.store import RunRecords
from nin_cli.robustness.evaluate import evaluate_run
from nin_cli.train import Member, train, train_many
from nin_cli.train.loop import Ensemble
from nin_cli.train.precision import configure
from nin_cli.train.setup import prepare

pytestmark = NEEDS_CUDA

GPU = [*QUICK, "device=cuda"]


def test_cuda_training_learns_and_decays_the_niw(tmp_path):
    result = train(make_cfg(*GPU, "noise.sigma=10", "epochs=4"), tmp_path / "run")
    assert result.status == "completed"
    assert column(tmp_path / "run", "test_acc")[-1] > 0.75
    niw = column(tmp_path / "run", "niw_norm_fc1")
    assert niw[-1] < 0.8 * niw[0]


def test_cuda_batched_members_follow_their_single_runs(tmp_path):
    members = [("3", 0), ("10", 1)]
    cfgs = [make_cfg(*GPU, "epochs=2", f"noise.sigma={s}", f"seed={seed}") for s, seed in members]
    dirs = [tmp_path / f"b{i}" for i in range(len(cfgs))]
    assert [r.status for r in train_many(cfgs, dirs)] == ["completed"] * 2
    for cfg, bdir in zip(cfgs, dirs):
        single = tmp_path / f"single_{bdir.name}"
        train(cfg, single)
        # CUDA kernels differ between a vmapped and a plain matmul in the last bits: close, not equal.
        assert column(bdir, "train_loss", "steps.csv")[:6] == pytest.approx(column(single, "train_loss", "steps.csv")[:6], rel=5e-3)
        assert abs(column(bdir, "test_acc")[-1] - column(single, "test_acc")[-1]) < 0.03


@pytest.mark.e2e
def test_cuda_run_killed_mid_training_resumes_without_lost_or_duplicated_rows(tmp_path):
    args = ["train", *GPU, "epochs=6", "batch_size=16", "noise.sigma=3", "model.width=512"]
    reference = tmp_path / "reference"
    assert nin(*args, f"hydra.run.dir={reference}").returncode == 0
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "nin_cli", *args, f"hydra.run.dir={run}"], stderr=subprocess.DEVNULL)
    while not ((run / "metrics.csv").exists() and len(read_rows(run)) >= 3):
        assert proc.poll() is None, "the run ended before it could be interrupted"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert nin(*args, f"hydra.run.dir={run}").returncode == 0
    assert [int(r["epoch"]) for r in read_rows(run)] == list(range(7))
    # cuBLAS is not bitwise deterministic across processes: the resumed run tracks the reference closely.
    assert column(run, "test_acc") == pytest.approx(column(reference, "test_acc"), abs=0.02)


def test_cuda_robustness_evaluation(tmp_path):
    cfg = make_cfg(*GPU, "epochs=2")
    train(cfg, tmp_path / "run")
    rcfg = load_settings("robustness", ["test_size=500", "pgd_steps=3"])
    table = evaluate_run(tmp_path / "run", rcfg, "cuda")
    clean = table[table.perturbation == "clean"].accuracy.iloc[0]
    pgd = table[table.perturbation == "pgd"].accuracy.max()
    assert clean > 0.7 and pgd < clean


@pytest.mark.parametrize("kind", ["fused", "vmap"])
def test_cuda_graph_replay_trains_like_eager_steps(tmp_path, kind):
    def epoch_losses(graphs: bool) -> tuple[list[float], object]:
        cfgs = [make_cfg(*GPU, "noise.sigma=3", f"seed={k}", f"cuda_graphs={graphs}") for k in range(4)]
        batch = Ensemble([Member(prepare(c), RunRecords(tmp_path / f"{kind}{graphs}{k}")) for k, c in enumerate(cfgs)], kind)
        losses = [batch.train_epoch([3.0] * 4)[0] for _ in range(2)]
        return [v for epoch in losses for v in epoch], batch.step.run

    graphed, step_fn = epoch_losses(True)
    eager, _ = epoch_losses(False)
    assert step_fn.graph is not None and not step_fn.failed  # captured, and replayed from step 4 on
    assert graphed == pytest.approx(eager, rel=1e-4)


def test_cuda_single_run_replays_its_fused_step_as_a_graph(tmp_path):
    """A single MLP run captures its fused step after the warm-up and trains as the eager one does."""
    runs = {}
    for graphs in (True, False):
        member = Member(prepare(make_cfg(*GPU, "noise.sigma=3", f"cuda_graphs={graphs}")), RunRecords(tmp_path / str(graphs)))
        single = Ensemble([member])
        assert single.step.kind == "fused"
        runs[graphs] = ([single.train_epoch([3.0])[0][0] for _ in range(2)], single.step.run)
    (graphed, step), (eager, _) = runs[True], runs[False]
    assert step.graph is not None and not step.failed
    assert graphed == pytest.approx(eager, rel=1e-5)
    assert graphed[1] < graphed[0]


def test_cuda_cnn_runs_pytorchs_kernels_for_the_function_the_cpu_kernel_computes():
    """The first block's C kernel is CPU-only (conv_block.applies): on the GPU the same CNN, with
    the same weights and noise, gives the CPU's loss and gradients through PyTorch's kernels, in
    IEEE float32 (nin's default precision; TF32 moves the conv NIW's gradient by ~5%)."""
    configure(torch.device("cuda"), "fp32")
    model = cnn("nin=input")
    x, y = torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))
    eps = {n: 3.0 * torch.randn(16) for n in model.nins}
    assert conv_block.library() is None or conv_block.applies(model.layers["conv1"], x)
    assert not conv_block.applies(copy.deepcopy(model.layers["conv1"]).cuda(), x.cuda())
    (cpu_loss, cpu_grads), (gpu_loss, gpu_grads) = [loss_and_gradients(copy.deepcopy(model).to(d), x, y, eps) for d in ("cpu", "cuda")]
    assert float(gpu_loss) == pytest.approx(float(cpu_loss), rel=1e-5)
    for name, g in cpu_grads.items():  # float32 rounding is ~1e-7 of the largest entry (bench/niw_precision.py)
        torch.testing.assert_close(gpu_grads[name], g, rtol=1e-4, atol=1e-4 * float(g.abs().max()), msg=name)


def engine(run) -> dict:
    return json.loads((run / "env.json").read_text())["engine"]


def test_cuda_runs_in_ieee_float32_unless_tf32_is_asked_for_and_the_record_says_which(tmp_path):
    assert train(make_cfg(*GPU, "epochs=1"), tmp_path / "fp32").status == "completed"
    assert engine(tmp_path / "fp32")["arithmetic"] == "fp32" and engine(tmp_path / "fp32")["tf32"] == {"matmul": False, "conv": False}
    assert train(make_cfg(*GPU, "epochs=1", "precision=tf32"), tmp_path / "tf32").status == "completed"
    assert engine(tmp_path / "tf32")["arithmetic"] == "tf32" and engine(tmp_path / "tf32")["tf32"] == {"matmul": True, "conv": True}


@pytest.mark.e2e
def test_a_gpu_run_resumes_and_is_evaluated_on_the_cpu_and_a_cpu_run_on_the_gpu(tmp_path):
    small = [*QUICK, "epochs=2", "noise.sigma=3"]
    for trained, then in (("cuda", "cpu"), ("cpu", "cuda")):
        run = tmp_path / trained
        assert nin("train", *small, f"device={trained}", f"hydra.run.dir={run}").returncode == 0
        moved = nin("train", *small[:-2], "epochs=3", "noise.sigma=3", "extend=true", f"device={then}", f"hydra.run.dir={run}")
        assert moved.returncode == 0, moved.stderr
        said = " ".join(moved.stderr.split())
        assert f"device {trained}" in said and "re-seeded" in said
        assert [int(r["epoch"]) for r in read_rows(run)] == [0, 1, 2, 3] and column(run, "test_acc")[-1] > 0.7
        assert engine(run)["device"].startswith(then)
    rcfg = load_settings("robustness", ["test_size=300", "pgd_steps=2", "attacks=[fgsm]", "corruptions=null"])
    table = evaluate_run(tmp_path / "cuda", rcfg, "cpu")
    assert table[table.perturbation == "clean"].accuracy.iloc[0] > 0.7


@pytest.mark.parametrize(
    "model, extra, step", [("my_mlp", [], "fused"), ("my_mlp", ["optimizer.momentum=0.5"], "loop"), ("my_cnn", [], "loop")]
)
def test_cuda_a_single_run_of_a_factory_network_is_one_graph_and_trains_as_eagerly(tmp_path, model, extra, step):
    """The generic path's single run on a GPU: its step (the fused MLP step, chosen by the network's
    structure, or autograd and torch.optim) captured as a CUDA graph. The MLP's losses are the eager
    steps' to float rounding; the CNN's max-pools amplify rounding (kernels chosen under capture may
    round otherwise) step by step, as a CPU's float32 does against float64 (bench/niw_precision.py),
    so it is held to the eager run's learning."""
    small = [EXAMPLES, f"model={model}", *extra, "dataset=fashion_mnist_mini", "progress=false", "noise.sigma=3", "epochs=2", "device=cuda"]
    for graphs in (True, False):
        assert train(make_cfg(*small, f"cuda_graphs={graphs}"), tmp_path / str(graphs)).status == "completed"
    recorded = engine(tmp_path / "True")["step"]
    assert recorded.startswith(step) and "CUDA graph" in recorded and "CUDA graph" not in engine(tmp_path / "False")["step"]
    graphed, eager = (column(tmp_path / str(g), "train_loss", "steps.csv") for g in (True, False))
    assert graphed[-1] < 0.6 * graphed[0]
    if model == "my_cnn":
        assert abs(column(tmp_path / "True", "test_acc")[-1] - column(tmp_path / "False", "test_acc")[-1]) < 0.03
    else:
        assert graphed == pytest.approx(eager, rel=1e-4)


def test_cuda_cnn_measures_its_hessian_by_forward_mode_as_the_double_backward_would():
    """On CUDA a convolutional network's HVPs go by forward mode (a conv's double backward computes
    an unwanted weight gradient there at 3x the cost): the same traces and curvatures."""
    from nin_cli.nets.hessian import ProbedLoss

    setup = prepare(make_cfg("model=cnn", "nin=all", "dataset=fashion_mnist_mini", "device=cuda"))
    x, y = setup.data.train.x[:128], setup.data.train.y[:128]
    setup.model.eval()
    assert ProbedLoss(setup.model, x, y, setup.loss_fn, setup.shapes).mode == "forward"
    measured = {}
    for mode in ("reverse", "forward"):
        probed = ProbedLoss(setup.model, x, y, setup.loss_fn, setup.shapes, mode)
        traces = probed.traces(1, torch.Generator(device="cuda").manual_seed(0))
        measured[mode] = [t.mean for t in traces.values()] + [c.curvature.mean for c in probed.niw_curvatures().values()]
    assert measured["forward"] == pytest.approx(measured["reverse"], rel=1e-3, abs=1e-6)


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_cuda_the_epoch_measurement_replayed_as_a_graph_measures_what_eager_steps_do(tmp_path, model):
    """Each epoch's row is measured by one replayed graph from the second row on: the same values as
    measuring eagerly, epoch after epoch, while the weights move under it."""
    from nin_cli.train.rows import measured_on

    small = ["dataset=fashion_mnist_mini", "progress=false", "epochs=3", "noise.sigma=3", "nin=all", "device=cuda", f"model={model}"]
    if model == "mlp":
        small.append("model.width=128")
    for graphs in (True, False):
        assert train(make_cfg(*small, f"cuda_graphs={graphs}"), tmp_path / str(graphs)).status == "completed"
    graphed, eager = read_rows(tmp_path / "True"), read_rows(tmp_path / "False")
    for name in [k for k in graphed[0] if k not in ("seconds",)]:
        if model == "mlp":  # the same steps: the same weights, so the same measurement to float rounding
            assert [float(r[name]) for r in graphed] == pytest.approx([float(r[name]) for r in eager], rel=1e-4, abs=1e-6), name
    setup = prepare(make_cfg(*small))
    measurement = measured_on(setup)
    from nin_cli.train.rows import epoch_row

    rows = [epoch_row(setup, e, 0, 3.0, 0.0, 0.0, 0.05) for e in range(3)]  # warm-up, capture, replay
    assert measurement.graph is not None and not measurement.failed
    setup.measurement = None
    eager_rows = [
        epoch_row(dataclasses.replace(setup, cfg=make_cfg(*small, "cuda_graphs=false")), e, 0, 3.0, 0.0, 0.0, 0.05) for e in range(3)
    ]
    for got, want in zip(rows, eager_rows):
        for key, value in want.items():
            assert got[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
