"""NINR study: method presets, perturbations, attacks, `nin evaluate` and the comparison tables."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from conftest import QUICK, column, make_cfg, nin_cli

from nin_cli.cli import conf_dir
from nin_cli.data import load_dataset
from nin_cli.robustness import CORRUPTIONS, PixelSpace, evaluate_run, robustness_config
from nin_cli.seeding import generator
from nin_cli.train import train

SMALL_EVAL = [
    "robustness.test_size=300",
    "robustness.gaussian=[0.3,0.8]",
    "robustness.fgsm=[0.1]",
    "robustness.pgd=[0.1]",
    "robustness.pgd_steps=5",
    "robustness.corruptions={rotate: [10, 30], fog: [0.2, 0.5]}",
]


@pytest.fixture(scope="module")
def pixels():
    data = load_dataset(make_cfg(*QUICK).dataset)
    return PixelSpace(data).to_pixels(data.test.x[:64])


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_corruptions_are_seeded_and_grow_with_severity(pixels, name):
    levels = robustness_config(conf_dir()).corruptions[name]
    f = CORRUPTIONS[name]
    again = f(pixels, float(levels[1]), generator(3, name))
    assert torch.equal(again, f(pixels, float(levels[1]), generator(3, name)))
    assert again.shape == pixels.shape
    distortion = [float((f(pixels, float(s), generator(3, name)).clamp(0, 1) - pixels).abs().mean()) for s in levels]
    assert distortion[0] > 0.002
    assert distortion[-1] > distortion[0]


def test_method_presets_set_the_regularizer():
    l2 = make_cfg("method=l2")
    assert (l2.method, l2.regularization.weight_decay, l2.nin.preset, l2.noise.sigma) == ("l2", 5e-4, "none", 0.0)
    cat = make_cfg("model=cnn", "method=in_ninr_catapult")
    assert cat.nin.preset == "input" and cat.noise.sigma == cat.model.ninr_sigma.in_catapult
    full = make_cfg("method=full_ninr_decay")
    assert full.nin.preset == "all" and full.noise.sigma == full.model.ninr_sigma.full_decay
    assert make_cfg("method=cdt04").regularization.input_noise == 0.4
    assert make_cfg("method=dropout").model.dropout == 0.3


def test_attacks_and_noise_lower_accuracy_in_order(tmp_path):
    run = tmp_path / "run"
    train(make_cfg(*QUICK, "nin=none", "epochs=2", "model.width=256"), run)
    table = evaluate_run(run, robustness_config(conf_dir(), [s.removeprefix("robustness.") for s in SMALL_EVAL])).set_index(
        ["perturbation", "severity"]
    )
    acc = table["accuracy"]
    clean = acc[("clean", 0.0)]
    assert clean > 0.75
    assert acc[("gaussian", 0.8)] < acc[("gaussian", 0.3)] <= clean + 0.01
    assert acc[("pgd", 0.1)] <= acc[("fgsm", 0.1)] < clean - 0.2
    assert acc[("rotate", 30.0)] < acc[("rotate", 10.0)]
    assert (run / "robustness.csv").exists()


def test_corrupted_data_training_sees_noisy_inputs(tmp_path):
    train(make_cfg(*QUICK, "method=none", "epochs=1"), tmp_path / "plain")
    train(make_cfg(*QUICK, "method=cdt04", "epochs=1"), tmp_path / "cdt")
    assert column(tmp_path / "cdt", "train_loss")[1] > column(tmp_path / "plain", "train_loss")[1]
    assert column(tmp_path / "cdt", "train_loss")[0] == column(tmp_path / "plain", "train_loss")[0]


def test_comparison_sweep_trains_evaluates_and_tabulates(tmp_path):
    sweep = tmp_path / "sweep"
    proc = nin_cli(
        "train",
        "-m",
        *QUICK,
        "model.width=64",
        "epochs=1",
        "method=none,cdt02",
        "seed=0,1",
        "evaluate=true",
        *SMALL_EVAL,
        f"hydra.sweep.dir={sweep}",
    )
    assert proc.returncode == 0, proc.stderr
    assert len(list(sweep.glob("*/robustness.csv"))) == 4
    out = nin_cli("summarize", str(sweep), "--format", "markdown")
    assert out.returncode == 0, out.stderr
    assert "### robustness" in out.stdout and "| cdt02 |" in out.stdout
    detail = pd.read_csv(sweep / "robustness_summary.csv")
    assert set(detail["method"]) == {"none", "cdt02"} and (detail["n_seeds"] == 2).all()
    assert len(detail) == 2 * (1 + 2 + (8 * 3 + 2 * 2) + 1 + 1)  # clean, gaussian, corruptions, fgsm, pgd
    plot = nin_cli("plot", str(sweep), "--no-runs")
    assert plot.returncode == 0, plot.stderr
    assert (sweep / "plots" / "robustness.png").stat().st_size > 10_000
    again = nin_cli("evaluate", str(sweep))
    assert again.returncode == 0 and again.stderr.count("robustness.csv exists; skipping") == 4
