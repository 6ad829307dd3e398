"""NINR study: method presets, perturbations, attacks, `nin evaluate` and the comparison tables."""

from __future__ import annotations

import importlib.util
import os
import re

import pandas as pd
import pytest
import torch
from harness import INTERPRETER, QUICK, coloured, column, make_cfg, nin
from omegaconf import OmegaConf

from nin_cli.config.schema import load_settings
from nin_cli.data.perturbations import plan
from nin_cli.errors import ConfigError
from nin_cli.records.locks import RunLock
from nin_cli.robustness.evaluate import (
    PixelModel,
    PixelSpace,
    evaluate_after_training,
    evaluate_run,
    pgd,
    reference_attack,
)
from nin_cli.seeding import generator
from nin_cli.train import train
from nin_cli.train.setup import build

SMALL_EVAL = [
    "robustness.test_size=300",
    "robustness.gaussian=[0.3,0.8]",
    "robustness.attacks=[fgsm,pgd]",
    "robustness.epsilons=[0.1]",
    "robustness.pgd_steps=5",
    "robustness.corruptions={rotate: [1, 5], fog: [1, 5]}",
]
needs_skimage = pytest.mark.skipif(importlib.util.find_spec("skimage") is None, reason="needs the robustness extra (scikit-image)")
needs_torchattacks = pytest.mark.skipif(
    importlib.util.find_spec("torchattacks") is None, reason="needs the robustness extra (torchattacks)"
)


def test_method_presets_set_the_regularizer():
    l2 = make_cfg("method=l2")
    assert (l2.method, l2.regularization.weight_decay, l2.nin.preset, l2.noise.sigma) == ("l2", 5e-4, "none", 0.0)
    cat = make_cfg("model=cnn", "method=in_ninr_catapult")
    assert cat.nin.preset == "input" and cat.noise.sigma == cat.model.ninr_sigma.in_catapult
    full = make_cfg("method=full_ninr_decay")
    assert full.nin.preset == "all" and full.noise.sigma == full.model.ninr_sigma.full_decay
    assert make_cfg("method=cdt04").regularization.input_noise == 0.4
    assert make_cfg("method=dropout").model.dropout == 0.3


@pytest.mark.e2e
def test_ninr_presets_draw_the_niws_at_the_models_preset_scale():
    """model.ninr_init is the NINR methods' nin.init: the CNN's image NIW (784 pixels, conv1's
    fan-in 9) is drawn with std 1/sqrt(784) under `input`, 1/3 under `layer`; a model without the
    key keeps the papers' `layer`, and a typed nin.init wins over the preset."""
    from nin_cli.nets.network import build_model

    def image_niw_std(*overrides: str) -> float:
        cfg = make_cfg("model=cnn", "method=in_ninr_decay", *overrides)
        model = build_model(cfg.model, cfg.nin, (1, 28, 28), 10, seed=0)
        (nin,) = model.nins.values()
        return float(nin.weight.detach().std())

    assert make_cfg("model=cnn", "method=full_ninr_catapult", "model.ninr_init=input").nin.init == "input"
    assert make_cfg("model=fc", "method=in_ninr_decay").nin.init == "layer"
    assert abs(image_niw_std("model.ninr_init=input") * 28 - 1) < 0.1
    assert abs(image_niw_std("model.ninr_init=layer") * 3 - 1) < 0.1
    assert abs(image_niw_std("model.ninr_init=input", "nin.init=unit") - 1) < 0.1
    # the pre-flight takes a name or a std whatever the shipped preset is (cnn's is a std): only the
    # bad length is answered, never the scale
    for scale in ("layer", "0.01"):
        out = nin("train", "model=cnn", "method=in_ninr_decay", f"model.ninr_init={scale}", "epochs=-1").stderr
        assert out.strip() == "nin: error: epochs must be >= 1, got -1", out
    bad = nin("train", "model=cnn", "method=in_ninr_decay", "model.ninr_init=bogus").stderr
    assert bad.strip() == "nin: error: model.ninr_init must be one of layer, input, unit or a number > 0, got 'bogus'", bad


def test_attacks_and_noise_lower_accuracy_in_order(tmp_path):
    run = tmp_path / "run"
    train(make_cfg(*QUICK, "nin=none", "epochs=2", "model.width=256"), run)
    table = evaluate_run(run, load_settings("robustness", [s.removeprefix("robustness.") for s in SMALL_EVAL])).set_index(
        ["perturbation", "severity"]
    )
    acc = table["accuracy"]
    clean = acc[("clean", 0.0)]
    assert clean > 0.75
    assert acc[("gaussian", 0.8)] < acc[("gaussian", 0.3)] <= clean + 0.01
    assert acc[("pgd", 0.1)] <= acc[("fgsm", 0.1)] < clean - 0.2
    assert acc[("rotate", 5.0)] < acc[("rotate", 1.0)]
    assert (run / "robustness.csv").exists() and (run / "robustness.yaml").exists() and not (run / "robustness.partial.json").exists()


@needs_torchattacks
@pytest.mark.e2e
def test_handwritten_pgd_equals_torchattacks_and_autoattack_is_stronger(tmp_path):
    """The hand-written PGD without a random start and torchattacks' PGD with the same eps, step
    size and steps give the same adversarial images and accuracy; AutoAttack's is at or below PGD's."""
    import torchattacks

    run = tmp_path / "run"
    train(make_cfg(*QUICK, "nin=none", "epochs=2", "model.width=128"), run)
    setup = build(OmegaConf.load(run / "config.yaml"))
    model = setup.model.eval()
    model.load_state_dict(torch.load(run / "checkpoint.pt", weights_only=True)["model"])
    space = PixelSpace(setup.data)
    x, y = setup.data.test.x[:100], setup.data.test.y[:100]
    rcfg = load_settings("robustness", ["apgd_steps=20"])
    for eps in (0.01, 0.1):
        steps, alpha = 10, 2.5 * eps / 10
        mine = pgd(model, x, y, setup.loss_fn, space, eps, steps, generator(0, "pgd"), random_start=False)
        theirs = torchattacks.PGD(PixelModel(model, space), eps=eps, alpha=alpha, steps=steps, random_start=False)(space.to_pixels(x), y)
        # The same images to float rounding (measured: 6e-8 at most, seeds 0-2, both epsilons) ...
        assert float((space.to_pixels(mine) - theirs).abs().max()) <= 1e-6
        acc_mine = float((model(mine).argmax(-1) == y).float().mean())
        acc_theirs = float((model(space.to_model(theirs)).argmax(-1) == y).float().mean())
        assert acc_mine == pytest.approx(acc_theirs, abs=0.011)  # ... so one prediction at most (measured: none)
        auto = reference_attack("autoattack", model, space, eps, rcfg, seed=0)(space.to_pixels(x), y)
        acc_auto = float((model(space.to_model(auto)).argmax(-1) == y).float().mean())
        assert acc_auto <= acc_mine
        assert float((auto.detach() - space.to_pixels(x)).abs().max()) <= eps + 1e-6


@pytest.mark.e2e
def test_an_interrupted_evaluation_resumes_to_the_table_of_an_uninterrupted_one(tmp_path):
    """Stopped after each of its perturbations in turn, and killed while writing its record, an
    evaluation rerun gives the rows of one that ran through, computing only what was left."""
    run = tmp_path / "run"
    train(make_cfg(*QUICK, "nin=none", "epochs=1", "model.width=64"), run)
    settings = ["test_size=200", "gaussian=[0.3]", "corruptions=null", "attacks=[fgsm,pgd]", "epsilons=[0.05]", "pgd_steps=3"]
    rcfg = load_settings("robustness", settings)
    whole = evaluate_run(run, rcfg).to_csv(index=False)
    n = len(plan(rcfg))

    class Stop(Exception):
        pass

    for k in range(1, n):
        (run / "robustness.csv").unlink()
        seen = []

        def stop_after_k(row, k=k, seen=seen):
            seen.append(row)
            if len(seen) == k:
                raise Stop

        with pytest.raises(Stop):
            evaluate_run(run, rcfg, on_row=stop_after_k)
        assert not (run / "robustness.csv").exists() and (run / "robustness.partial.json").exists()
        redone = []
        assert evaluate_run(run, rcfg, on_row=redone.append).to_csv(index=False) == whole
        assert len(redone) == n - k  # the finished perturbations were not evaluated again
    # a process killed between writing the record's temporary and renaming it: the record is whole
    (run / "robustness.csv").unlink()
    args = ["evaluate", str(run), *settings, "--no-progress"]
    killed = nin(*args, env={"NIN_FAULT": "write:3:SIGKILL"})
    assert killed.returncode == -9 and list(run.glob(".*.tmp*"))  # its temporary is left behind
    again = nin(*args)
    assert again.returncode == 0, again.stderr
    assert "resuming an interrupted evaluation" in again.stdout + again.stderr
    assert (run / "robustness.csv").read_text() == whole
    assert not list(run.glob(".*.tmp*")) and not (run / "robustness.partial.json").exists()


@pytest.mark.e2e
def test_two_evaluations_of_one_sweep_share_its_runs(tmp_path):
    """A run another process holds (here: this test, as a second `nin evaluate` would) is left to
    it with a line, the others are evaluated, and the command succeeds; run again, it does the rest."""
    sweep = tmp_path / "sweep"
    for name in ("a", "b"):
        train(make_cfg(*QUICK, "nin=none", "epochs=1", "model.width=64", f"seed={ord(name)}"), sweep / name)
    settings = ["test_size=100", "gaussian=[0.3]", "corruptions=null", "attacks=[fgsm]", "epsilons=[0.05]", "--no-progress"]
    held = RunLock(sweep / "a")
    held.acquire()
    try:
        proc = nin("evaluate", str(sweep), *settings)
    finally:
        held.release()
    assert proc.returncode == 0, proc.stderr
    assert f"{sweep / 'a'}: in use by process {os.getpid()}; left to it" in proc.stdout + proc.stderr
    assert "1 run(s) in use by other processes were left to them" in proc.stderr
    assert (sweep / "b" / "robustness.csv").exists() and not (sweep / "a" / "robustness.csv").exists()
    again = nin("evaluate", str(sweep), *settings)
    assert again.returncode == 0, again.stderr
    assert "robustness.csv exists; skipping" in again.stderr and (sweep / "a" / "robustness.csv").exists()
    # a run evaluated by another process between this one's look and its lock is not done twice
    before = (sweep / "a" / "robustness.csv").stat().st_mtime_ns
    assert evaluate_run(sweep / "a", load_settings("robustness", settings[:-1]), keep=True) is None
    assert (sweep / "a" / "robustness.csv").stat().st_mtime_ns == before


def test_a_sweeps_evaluation_leaves_a_run_that_nin_evaluate_holds_to_it_and_goes_on(tmp_path):
    """evaluate=true beside a `nin evaluate` of the same sweep (here: this test holds run a's lock,
    as that command would): the sweep evaluates its other runs, and a run written meanwhile is not
    evaluated twice."""
    settings = ["robustness.test_size=100", "robustness.gaussian=[0.3]", "robustness.corruptions=null", "robustness.attacks=[fgsm]"]
    cfgs = {n: make_cfg(*QUICK, "nin=none", "epochs=1", "model.width=64", f"seed={ord(n)}", "evaluate=true", *settings) for n in "ab"}
    for name, cfg in cfgs.items():
        OmegaConf.update(cfg, "evaluate", False)
        train(cfg, tmp_path / name)
        OmegaConf.update(cfg, "evaluate", True)
    held = RunLock(tmp_path / "a")
    held.acquire()
    try:
        for name, cfg in cfgs.items():
            evaluate_after_training(cfg, tmp_path / name, "completed")
    finally:
        held.release()
    assert (tmp_path / "b" / "robustness.csv").exists() and not (tmp_path / "a" / "robustness.csv").exists()
    evaluate_after_training(cfgs["a"], tmp_path / "a", "completed")
    table = pd.read_csv(tmp_path / "a" / "robustness.csv")
    assert set(table["perturbation"]) == {"clean", "gaussian", "fgsm"} and table.accuracy.between(0, 1).all()


@pytest.mark.e2e
def test_without_the_robustness_extra_evaluate_warns_and_measures_the_rest(tmp_path):
    run = tmp_path / "run"
    train(make_cfg(*QUICK, "nin=none", "epochs=1", "model.width=64"), run)
    blocked = tmp_path / "blocked"  # scikit-image and torchattacks fail to import, as if not installed
    for name in ("skimage", "torchattacks"):
        (blocked / name).mkdir(parents=True)
        (blocked / name / "__init__.py").write_text("raise ImportError('not installed')\n")
    evaluate = ["evaluate", str(run), "test_size=100", "--no-progress"]
    proc = nin(*evaluate, env={"PYTHONPATH": str(blocked)}, program=INTERPRETER)  # a new interpreter: the imports happen anew
    assert proc.returncode == 0, proc.stderr
    assert "skipping apgd, brightness" in proc.stderr and "pip install -e '.[robustness]'" in proc.stderr
    table = pd.read_csv(run / "robustness.csv")
    assert set(table["perturbation"]) == {"clean", "gaussian", "fgsm", "pgd"}


@pytest.mark.e2e
def test_bad_robustness_settings_are_one_line_before_any_evaluation(tmp_path):
    for setting, message in [
        ("corruptions={blur: [1]}", "unknown corruption 'blur'"),
        ("corruptions={rotate: [6]}", "level 6.0 is not one of MNIST-C's severities"),
        ("attacks=[cw]", "unknown attack 'cw'"),
        ("apgd_steps=0", "apgd_steps must be >= 1"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            plan(load_settings("robustness", [setting]))
    proc = nin("evaluate", str(tmp_path), "attacks=[cw]")  # the command: that one line, before looking for runs
    expected = "nin: error: unknown attack 'cw' in robustness.attacks; choose from fgsm, pgd, apgd, autoattack"
    assert proc.returncode == 2 and proc.stderr.strip() == expected


def test_corrupted_data_training_sees_noisy_inputs(tmp_path):
    train(make_cfg(*QUICK, "method=none", "epochs=1"), tmp_path / "plain")
    train(make_cfg(*QUICK, "method=cdt04", "epochs=1"), tmp_path / "cdt")
    assert column(tmp_path / "cdt", "train_loss")[1] > column(tmp_path / "plain", "train_loss")[1]
    assert column(tmp_path / "cdt", "train_loss")[0] == column(tmp_path / "plain", "train_loss")[0]


@pytest.mark.e2e
def test_comparison_sweep_trains_evaluates_and_tabulates(tmp_path):
    sweep = tmp_path / "sweep"
    proc = nin(
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
    out = nin("summarize", str(sweep), "--format", "markdown")
    assert out.returncode == 0, out.stderr
    assert "### robustness" in out.stdout and "| cdt02 |" in out.stdout
    detail = pd.read_csv(sweep / "robustness_summary.csv")
    assert set(detail["method"]) == {"none", "cdt02"} and (detail["n_seeds"] == 2).all()
    assert len(detail) == 2 * (1 + 2 + (13 + 2 * 2) + 1 + 1)  # clean, gaussian, MNIST-C (two at 2 levels), fgsm, pgd
    plot = nin("plot", str(sweep), "--no-runs")
    assert plot.returncode == 0, plot.stderr
    assert coloured(sweep / "plots" / "robustness.png") > 0.001
    again = nin("evaluate", str(sweep))
    assert again.returncode == 0 and again.stderr.count("robustness.csv exists; skipping") == 4
