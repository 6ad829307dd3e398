"""Theory for any network: curvature at the NIN layers, `nin predict`, and `nin theory` on networks."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from harness import QUICK, coloured, make_cfg, nin

from nin_cli.analysis.predict import predict
from nin_cli.analysis.theory import ToySetting
from nin_cli.config.schema import load_settings
from nin_cli.nets.hessian import ProbedLoss, noisy_sharpness
from nin_cli.seeding import generator
from nin_cli.train.setup import build


def exact_mean_hessian(model, x, y, loss_fn, layer: str, shape: tuple[int, ...]) -> torch.Tensor:
    """<H_z> from the full Hessian w.r.t. every sample's probe: the sum of its diagonal blocks."""
    n, d = len(x), math.prod(shape)

    def loss_of(delta):
        return loss_fn(model(x, probes={layer: delta.reshape(n, *shape)}), y)

    full = torch.autograd.functional.hessian(loss_of, torch.zeros(n * d)).reshape(n, d, n, d)
    return sum(full[i, :, i, :] for i in range(n))


def test_power_iteration_and_niw_curvature_match_the_exact_hessian():
    setup = build(make_cfg(*QUICK, "model.width=6", "nin=all"))
    model = setup.model.eval()
    x, y = setup.data.train.x[:12], setup.data.train.y[:12]
    probed = ProbedLoss(model, x, y, setup.loss_fn, setup.shapes)
    lam = probed.top_eigenvalues(generator(0, "test"), iterations=500, tol=1e-10)
    curv = probed.niw_curvatures()
    for layer in setup.nin_layers:
        exact = exact_mean_hessian(model, x, y, setup.loss_fn, layer, setup.shapes[layer])
        assert lam[layer] == pytest.approx(float(torch.linalg.eigvalsh(exact).abs().max()), rel=1e-3)
        w = model.nins[layer].weight.detach().flatten()
        assert curv[layer].curvature.mean == pytest.approx(float(w @ exact @ w / (w @ w)), rel=1e-4)
        assert curv[layer].grad_moment.mean > 0 and curv[layer].curvature.se > 0


def test_noisy_sharpness_matches_the_exact_hessian_of_the_noisy_loss():
    setup = build(make_cfg("+experiment=linear_toy", "progress=false"))
    model = setup.model
    x, y = setup.data.train.x[:200], setup.data.train.y[:200]
    xi = {"w0": torch.randn(len(x), generator=generator(0, "xi"))}
    params = dict(model.named_parameters())
    data_names = [n for n in params if not n.startswith("nins.")]
    for sigma in (0.0, 3.0, 20.0):

        def loss_of(*values, sigma=sigma):
            state = {**{n: p.detach() for n, p in params.items()}, **dict(zip(data_names, values))}
            out = torch.func.functional_call(model, state, (x,), {"eps": {"w0": sigma * xi["w0"]}})
            return setup.loss_fn(out, y)

        blocks = torch.autograd.functional.hessian(loss_of, tuple(params[n].detach() for n in data_names))
        exact = torch.stack([torch.stack([b.reshape(()) for b in row]) for row in blocks])
        got = noisy_sharpness(model, x, y, setup.loss_fn, xi, sigma, generator(0, "power"), iterations=200, tol=1e-9)
        assert got == pytest.approx(float(torch.linalg.eigvalsh(exact).abs().max()), rel=1e-4)


def test_predictions_on_the_linear_model_equal_nin_theorys():
    cfg = make_cfg("+experiment=linear_toy", "progress=false")
    setup = build(cfg)
    prediction = predict(setup, load_settings("analysis"))
    m = setup.model
    toy = ToySetting(
        w0=float(m.layer("w0").weight.detach()),
        w1=float(m.layer("w1").weight.detach()),
        w_ni=float(m.nins["w0"].weight.detach()),
        eta=float(cfg.optimizer.lr),
        sigma_x=float(cfg.dataset.sigma_x),
        M=float(cfg.dataset.M),
        batch=int(cfg.batch_size),
        steps_per_epoch=prediction.steps_per_epoch,
        epochs=int(cfg.epochs),
    )
    theory, layer = toy.boundaries(), prediction.per_layer.iloc[0]
    # the NIW's own instability is the analytic 2 / Bt0 = 2 / (eta w1^2); tau_niw is the same formula
    assert prediction.boundaries["decay/catapult"] == pytest.approx(theory["decay/catapult"], rel=1e-5)
    for sigma in (1.0, 4.0, 6.0):
        expected = toy.tau_niw_steps(sigma) / toy.steps_per_epoch
        assert prediction.tau_niw_epochs(sigma, prediction.layers[0]) == pytest.approx(expected, rel=1e-5)
    # the sharpness edge is 2 / B0 up to the sigma_x^2 terms the analytic form drops (and sampling)
    assert prediction.boundaries["catapult/divergent"] == pytest.approx(theory["catapult/divergent"], rel=0.05)
    # random walk against decay: the same balance, with <g_z^2> measured on 1000 samples
    assert layer["sigma2_random_walk"] == pytest.approx(theory["decoupled/decay"], rel=0.1)


@pytest.mark.e2e
def test_nin_predict_prints_boundaries_and_decay_times(tmp_path):
    args = ["--sigmas", "0.1,3,30,300,3000", "--samples", "300", "--out", str(tmp_path), "--format", "markdown"]
    proc = nin("predict", *QUICK, "model.width=64", *args)
    assert proc.returncode == 0, proc.stderr
    bounds = pd.read_csv(tmp_path / "predict_boundaries.csv").set_index("boundary")["sigma2"]
    assert 0 < bounds["decoupled/decay"] <= bounds["decay/catapult"] <= bounds["catapult/divergent"] < math.inf
    table = pd.read_csv(tmp_path / "predict.csv")
    order = ["decoupled", "decay", "catapult", "divergent"]
    assert list(table["predicted_phase"].map(order.index)) == sorted(table["predicted_phase"].map(order.index))
    assert table["predicted_phase"].iloc[-1] == "divergent" and table["predicted_phase"].iloc[0] == "decoupled"
    taus = table["tau_niw_fc1"].to_numpy()
    assert taus[0] > taus[1] > taus[2]  # the NIW decays faster as the noise grows
    assert "sigma2_paper" in table and "| decay/catapult |" in proc.stdout
    bad = nin("predict", *QUICK, "nin=none")
    assert bad.returncode == 2 and bad.stderr.strip() == "nin: error: nin predict needs a model with NINs (nin=input, all or layers)"


@pytest.mark.e2e
def test_recorded_curvature_predicts_the_niw_trajectory(tmp_path):
    """A decaying run: its NIW norm, integrated from the curvature and gradient moment it recorded
    each epoch, ends within a factor 2 of the measured one; the decay term alone overshoots."""
    sweep = tmp_path / "sweep"
    proc = nin("train", "-m", *QUICK, "model.width=64", "epochs=3", "noise.sigma=1,30", f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0, proc.stderr
    out = nin("theory", str(sweep), "--format", "markdown")
    assert out.returncode == 0, out.stderr
    table = pd.read_csv(sweep / "theory.csv").set_index("noise.sigma")
    decaying = table.loc[30.0]
    assert decaying["measured_phase"] == "decay"
    assert abs(math.log(decaying["niw_ratio_integrated"] / decaying["niw_ratio_measured"])) < math.log(2)
    assert decaying["niw_ratio_decay_only"] < 0.01 * decaying["niw_ratio_measured"]
    assert coloured(sweep / "theory_niw.png") > 0.001 and "predicted_phase" in table
