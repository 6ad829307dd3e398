"""What an epoch's measurement records: estimates on fixed subsamples, each with its standard error,
agreeing with the same quantity measured on more data within that error."""

from __future__ import annotations

import math

import pytest
import torch
from harness import QUICK, make_cfg, nin, read_rows

from nin_cli.train import train
from nin_cli.train.rows import epoch_row
from nin_cli.train.setup import prepare


def trained_setup(tmp_path, *overrides: str):
    """A model one epoch into training (the mini Fashion-MNIST, 6000 training images), and its setup."""
    cfg = make_cfg(*QUICK, "epochs=1", *overrides)
    train(cfg, tmp_path / "run")
    setup = prepare(cfg, None)
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    setup.model.load_state_dict(state["model"])
    return setup


def row_with(setup, **settings) -> dict:
    """epoch_row for the setup's model under other measurement settings (eval.*, hessian.*)."""
    for key, value in settings.items():
        group, name = key.split("__")
        setup.cfg[group][name] = value
    return epoch_row(setup, 1, 0, 1.0, math.nan, 0.0, 0.05)


def within(a: float, b: float, se: float, k: float = 3.0) -> bool:
    return abs(a - b) <= k * se


def test_clean_train_metrics_on_a_subsample_agree_with_the_whole_set_within_their_error(tmp_path):
    setup = trained_setup(tmp_path)
    n_train = len(setup.data.train)
    whole = row_with(setup, eval__train_samples=None)
    assert whole["se_train_loss_clean"] == 0 and whole["se_train_acc"] == 0  # the whole set: exact
    for n in (500, 2000):
        sub = row_with(setup, eval__train_samples=n)
        p = sub["train_acc"]
        # a fraction correct: sqrt(p (1 - p) / n), finite-population corrected
        expected = math.sqrt(p * (1 - p) / (n - 1) * (1 - n / n_train))
        assert sub["se_train_acc"] == pytest.approx(expected, rel=1e-3)
        assert sub["se_train_loss_clean"] > 0
        assert within(sub["train_acc"], whole["train_acc"], sub["se_train_acc"])
        assert within(sub["train_loss_clean"], whole["train_loss_clean"], sub["se_train_loss_clean"])
        assert (sub["test_acc"], sub["test_loss"]) == (whole["test_acc"], whole["test_loss"])  # always the whole test set


def test_hessian_measures_on_fewer_samples_agree_with_more_within_their_error(tmp_path):
    """Tr H_z, the NIW curvature and the gradient moment at the former defaults (1000 samples, 4
    probes) and on a quarter of the samples: the same quantities, their difference within the
    errors both state, the smaller sample's error the larger."""
    setup = trained_setup(tmp_path, "nin=all", "model.depth=2", "noise.sigma=3")
    big = row_with(setup, hessian__samples=1000, hessian__probes=4)
    small = row_with(setup, hessian__samples=250, hessian__probes=4)
    columns = [c for c in big if c.startswith(("hessian_trace_", "niw_curvature_", "niw_gradsq_"))]
    assert len(columns) == 9  # three measures at each of the three NIN layers
    for col in columns:
        se = math.hypot(big[f"se_{col}"], small[f"se_{col}"])
        assert 0 < big[f"se_{col}"] < small[f"se_{col}"], col
        assert within(small[col], big[col], se), (col, small[col], big[col], se)


@pytest.mark.e2e
def test_a_run_from_before_the_subsampled_measurement_resumes_as_it_was_measured(tmp_path):
    """A run written when clean train metrics took every training sample and no errors were
    recorded: resuming it under the new defaults is refused with the keys that resume it as it
    was, and typed back they do, its rows keeping their columns."""
    run = tmp_path / "old"
    args = [*QUICK, "epochs=2", f"hydra.run.dir={run}"]
    old = nin("train", *args, "eval.train_samples=null", env={"NIN_FAULT": "metrics_row:2:SIGKILL"})
    assert old.returncode == -9
    config = run / "config.yaml"
    config.write_text("".join(line for line in config.read_text().splitlines(True) if "standard_errors" not in line))
    lines = (run / "metrics.csv").read_text().splitlines()
    keep = [i for i, c in enumerate(lines[0].split(",")) if not c.startswith("se_")]  # as an older nin wrote it
    (run / "metrics.csv").write_text("".join(",".join(line.split(",")[i] for i in keep) + "\n" for line in lines))
    refused = nin("train", *args)
    assert refused.returncode == 2 and "differs in: eval.standard_errors, eval.train_samples" in refused.stderr
    assert "resume it as it was trained: eval.standard_errors=false eval.train_samples=null" in refused.stderr, refused.stderr
    resumed = nin("train", *args, "eval.standard_errors=false", "eval.train_samples=null")
    assert resumed.returncode == 0 and "resuming" in resumed.stderr, resumed.stderr
    rows = read_rows(run)
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2] and not any(c.startswith("se_") for c in rows[0])


@pytest.mark.parametrize("overrides", [["model=cnn", "fused_block=off", "nin=all"], ["model=mlp", "nin=all"]], ids=["cnn", "mlp"])
def test_forward_and_reverse_mode_hessian_vector_products_agree(overrides):
    """ProbedLoss's two ways to a Hessian-vector product w.r.t. the probes (hessian.hvp_mode: forward
    mode for convolutional networks on CUDA, a double backward elsewhere) give the same traces,
    curvatures and top eigenvalue, to float rounding, on the same weights, samples and probes."""
    from nin_cli.data.datasets import load_dataset
    from nin_cli.nets.hessian import ProbedLoss, hvp_mode

    cfg = make_cfg(*(o for o in QUICK if not o.startswith("model.")), *overrides)
    setup = prepare(cfg, load_dataset(cfg.dataset, torch.device("cpu")))
    x, y = setup.data.train.x[:64], setup.data.train.y[:64]
    setup.model.eval()
    measured = {}
    for mode in ("reverse", "forward"):
        probed = ProbedLoss(setup.model, x, y, setup.loss_fn, setup.shapes, mode)
        traces = probed.traces(2, torch.Generator().manual_seed(0))
        curvatures = probed.niw_curvatures()
        top = probed.top_eigenvalues(torch.Generator().manual_seed(1), iterations=5)
        measured[mode] = [traces[n].mean for n in traces] + [c.curvature.mean for c in curvatures.values()] + list(top.values())
    assert len(measured["forward"]) == 3 * len(setup.shapes)
    assert measured["forward"] == pytest.approx(measured["reverse"], rel=1e-4, abs=1e-6)
    assert hvp_mode(setup.model, torch.device("cpu")) == "reverse"
    assert hvp_mode(setup.model, torch.device("cuda")) == ("forward" if "model=cnn" in overrides else "reverse")


@pytest.mark.parametrize(
    "overrides, forward_only",
    [
        (["model=cnn", "fused_block=off"], True),  # one NIN, conv/max-pool/ReLU/Linear: piecewise linear
        (["model=cnn", "nin=layers", "nin.layers=[conv2]"], True),  # forward mode through the C first block's layer
        (["model=mlp"], False),  # piecewise linear, but a NIN at a Linear: the double backward is cheaper
        (["model=cnn", "fused_block=off", "nin=all"], False),  # a forward pass a layer
        (["model=resnet18"], False),  # not a Sequential: its forward may compute anything
    ],
    ids=["cnn", "cnn-conv2", "mlp", "cnn-all", "resnet"],
)
def test_traces_and_curvatures_of_a_piecewise_linear_network_by_forward_mode_alone(overrides, forward_only):
    """Where one NIN sits in a piecewise-linear network, v . H_z v is u . H_loss u with u = J v
    (ProbedLoss.gauss_newton): the same per-sample traces and NIW curvatures as the double
    backward's to float rounding (the MLP's too); taken by default where it pays, at a convolution."""
    from nin_cli.data.datasets import load_dataset
    from nin_cli.nets.hessian import ProbedLoss
    from nin_cli.nets.structure import piecewise_linear

    nn = torch.nn
    assert not piecewise_linear(nn.Sequential(nn.Linear(4, 4), nn.Tanh()))  # tanh's own curvature: J^T H J is not H
    assert not piecewise_linear(nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)))  # batch statistics while training
    assert piecewise_linear(nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Dropout(0.5)).eval())

    cfg = make_cfg(*(o for o in QUICK if not o.startswith("model.")), *overrides)
    setup = prepare(cfg, load_dataset(cfg.dataset, torch.device("cpu")))
    x, y = setup.data.train.x[:64], setup.data.train.y[:64]
    setup.model.eval()
    assert ProbedLoss(setup.model, x, y, setup.loss_fn, setup.shapes).gauss_newton is forward_only
    # off the CPU (CUDA's captured measurement) the double backward stays: asked with data on no CPU
    assert not ProbedLoss(setup.model, x.to("meta"), y.to("meta"), setup.loss_fn, setup.shapes).gauss_newton
    if len(setup.shapes) > 1 or not piecewise_linear(setup.model.net):
        return
    measured = {}
    for gauss_newton in (False, True):
        probed = ProbedLoss(setup.model, x, y, setup.loss_fn, setup.shapes, gauss_newton=gauss_newton)
        vectors = probed.rademacher(2, torch.Generator().manual_seed(0))
        traces = probed.sample_traces(vectors)
        curvatures = probed.sample_curvatures()
        measured[gauss_newton] = torch.cat([*traces.values(), *(c for pair in curvatures.values() for c in pair)])
    assert len(measured[True]) == 3 * 64 and measured[False].abs().min() > 0
    assert torch.allclose(measured[True], measured[False], rtol=1e-4, atol=1e-7)
