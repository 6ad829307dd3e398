"""Summaries, phases, fits, theory and plots: from run directories to the papers' results."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from harness import QUICK, coloured, make_cfg, nin

from nin_cli.analysis.fits import decay_time
from nin_cli.analysis.phases import classify
from nin_cli.analysis.plots import first_steps_figure
from nin_cli.analysis.runs import Run, load_run, load_runs
from nin_cli.analysis.summarize import phase_rows, run_rows
from nin_cli.analysis.theory import theory_rows
from nin_cli.config.schema import load_settings
from nin_cli.train import train

ACFG = load_settings("analysis")


def test_decay_fit_recovers_the_time_scale():
    t = np.linspace(0, 20, 200)
    rng = np.random.default_rng(0)
    y = 3.0 * np.exp(-t / 2.5) + 0.1 + 0.01 * rng.standard_normal(len(t))
    assert decay_time(t, y) == pytest.approx(2.5, rel=0.05)
    # from the peak on: a catapult's rise is skipped
    rise = np.concatenate([np.linspace(1, 5, 10), 5 * np.exp(-np.linspace(0, 10, 100) / 1.5)])
    assert decay_time(np.arange(len(rise)) * 0.1, rise) == pytest.approx(1.5, rel=0.1)
    assert decay_time(t, np.ones_like(t)) == math.inf
    assert math.isnan(decay_time([0, 1], [1, 0.5]))


def test_decay_fit_error_follows_the_noise():
    """curve_fit's covariance: the error grows with the noise and covers the true tau."""
    from nin_cli.analysis.fits import decay_fit

    t = np.linspace(0, 20, 60)
    errors = []
    for noise in (0.005, 0.05):
        y = 3.0 * np.exp(-t / 2.5) + 0.1 + noise * np.random.default_rng(1).standard_normal(len(t))
        tau, err = decay_fit(t, y)
        assert abs(tau - 2.5) < 4 * err
        errors.append(err)
    assert 0 < errors[0] < errors[1]
    assert math.isnan(decay_fit(t, np.ones_like(t))[1])  # no decay: no error either


def synthetic_run(niw, loss, status="completed", weights=None, acc=None):
    n = len(niw)
    clean = np.linspace(2.0, 0.5, n) if acc is None else np.full(n, 2.3)
    metrics = pd.DataFrame(
        {
            "epoch": np.arange(n),
            "step": np.arange(n) * 10,
            "train_loss": loss,
            "train_loss_clean": clean,
            "train_acc": np.linspace(0.1, 0.9, n) if acc is None else acc,
            "test_loss": clean,
            "niw_norm_fc1": niw,
            "weight_norm_out": weights if weights is not None else np.linspace(3.0, 3.5, n),
        }
    )
    return Run(path=None, config={"noise.sigma": 1.0}, status={"status": status, "reason": "x"}, metrics=metrics, steps=None)


SPIKE = np.array([3, 80, 40, 5, 2, 1, 0.8, 0.7, 0.6, 0.5])  # the noisy loss shoots up, then recovers
UP_DOWN = np.array([3, 9, 6, 4, 3.5, 3.4, 3.4, 3.5, 3.5, 3.6])  # next-layer weights grow, then shrink
DECAY = 30 * np.exp(-np.arange(10) / 3)


@pytest.mark.parametrize(
    ("niw", "loss", "weights", "status", "phase"),
    [
        (np.full(10, 30.0) + np.linspace(0, 0.3, 10), np.linspace(3, 0.5, 10), None, "completed", "decoupled"),
        (DECAY, np.linspace(3, 0.5, 10), None, "completed", "decay"),
        (DECAY, SPIKE, None, "completed", "decay"),  # a loss spike alone, weights never shrink: still decay
        (DECAY, SPIKE, UP_DOWN, "completed", "catapult"),
        (np.array([1, 3, 2, 1, 0.5, 0.2, 0.1, 0.1, 0.1, 0.1]), np.linspace(3, 0.5, 10), None, "completed", "catapult"),
        (np.full(3, 30.0), np.array([3, 1e5, np.nan]), None, "diverged", "divergent"),
    ],
)
def test_classifier_reads_the_phase_off_the_trajectory(niw, loss, weights, status, phase):
    assert classify(synthetic_run(niw, loss, status, weights), ACFG.phases)[0] == phase


def test_a_run_stuck_at_chance_is_divergent():
    """The noise killed the network: no NaN, a clean loss at its initial ln 10, accuracy at 10%."""
    run = synthetic_run(DECAY, np.linspace(3, 2.3, 10), acc=np.array([0.04, 0.09, 0.11, 0.1, 0.1, 0.1, 0.1, 0.1, 0.11, 0.1]))
    phase, why = classify(run, ACFG.phases)
    assert phase == "divergent" and "learned nothing" in why


def _two_epochs(**columns) -> pd.DataFrame:
    """metrics.csv of a run that learned over one epoch (epoch 0 and 1, 100 steps), with `columns`."""
    learned = {"train_loss": [3.0, 0.6], "train_loss_clean": [2.3, 0.5], "train_acc": [0.1, 0.8], "test_loss": [2.3, 0.55]}
    return pd.DataFrame({"epoch": [0, 1], "step": [0, 100], **learned, **columns})


def _catapult_run(sigma: float, every: int) -> Run:
    """A run whose NIW norm rises 1.8x and falls back within ten steps (Fig. 1's catapult), its
    steps.csv logged every `every` steps."""
    t = np.arange(0, 101, every)
    bump = np.exp(-(((t - 4) / 2.0) ** 2))
    steps = pd.DataFrame(
        {"step": t, "epoch": t // 100, "train_loss": 3 * (1 + 10 * bump), "niw_norm_fc1": (1 + 0.9 * bump) * np.exp(-t / 200)}
    )
    metrics = _two_epochs(niw_norm_fc1=[1.0, math.exp(-0.5)])
    return Run(
        path=Path(f"sigma{sigma}_every{every}"), config={"noise.sigma": sigma}, status={"status": "completed"}, metrics=metrics, steps=steps
    )


def test_a_catapult_within_ten_steps_needs_every_step_logged(tmp_path):
    """The phase and the first-steps figure read steps.csv: logged every step the catapult shows;
    logged every tenth step it falls between two points and the run reads decay, and no figure of
    the first steps is drawn from such a log."""
    fine = [_catapult_run(sigma, every=1) for sigma in (1.0, 2.0)]
    coarse = [_catapult_run(sigma, every=10) for sigma in (1.0, 2.0)]
    assert classify(fine[0], ACFG.phases)[0] == "catapult"
    assert classify(coarse[0], ACFG.phases)[0] == "decay"
    phase_of = {run.path: "catapult" for run in fine}
    assert first_steps_figure(fine, phase_of, tmp_path / "fine.png") == tmp_path / "fine.png"
    assert coloured(tmp_path / "fine.png") > 0.001
    assert first_steps_figure(coarse, phase_of, tmp_path / "coarse.png") is None and not (tmp_path / "coarse.png").exists()


@pytest.mark.e2e
def test_summaries_of_a_real_multirun_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    proc = nin("train", "-m", *QUICK, "epochs=3", "noise.sigma=0.3,10,1000", "seed=0,1", f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0, proc.stderr
    # an unfinished run and a damaged one must be summarized with a warning, not a crash
    run_dir = {p.name.split("noise.")[1]: p for p in sweep.glob("*noise.sigma=*")}
    with (run_dir["sigma=10,seed=1"] / "metrics.csv").open("a") as f:
        f.write("4,999,10.0,garbage\n")
    (run_dir["sigma=0.3,seed=1"] / "status.json").write_text("{not json")
    (sweep / "empty-run").mkdir()
    (sweep / "empty-run" / "status.json").write_text('{"status": "running", "epoch": 0}')
    out = nin("summarize", str(sweep), "--format", "markdown")
    assert out.returncode == 0, out.stderr
    assert "skipped 1 damaged row" in out.stderr and "status.json damaged" in out.stderr
    runs = pd.read_csv(sweep / "runs.csv")
    phases = pd.read_csv(sweep / "phases.csv")
    assert len(runs) == 7 and len(phases) == 4
    by_sigma = phases.dropna(subset=["noise.sigma"]).set_index("noise.sigma")
    assert by_sigma.loc[0.3, "phase"] == "decoupled"
    assert by_sigma.loc[10, "phase"] == "decay" and by_sigma.loc[10, "tau_niw_mean"] > 0
    assert by_sigma.loc[1000, "phase"] == "divergent"
    assert by_sigma.loc[10, "n_runs"] == 2
    assert "| noise.sigma |" in out.stdout

    plotted = nin("plot", str(sweep), "--out", str(tmp_path / "figs"))
    assert plotted.returncode == 0, plotted.stderr
    pngs = sorted((tmp_path / "figs").glob("*.png"))
    assert {"decay_times.png", "niw_norms.png", "first_steps.png"} <= {p.name for p in pngs} and len(pngs) >= 9
    assert all(coloured(p) > 0.001 for p in pngs), sorted((round(coloured(p), 4), p.name) for p in pngs)

    svg = nin("plot", str(sweep), "--no-runs", "--format", "svg", "--out", str(tmp_path / "svg"), "phases.decay_niw_ratio=0.9")
    assert svg.returncode == 0, svg.stderr
    assert {p.name for p in (tmp_path / "svg").iterdir()} == {"niw_norms.svg", "first_steps.svg", "decay_times.svg", "hessian_traces.svg"}
    assert (tmp_path / "svg" / "decay_times.svg").read_text().lstrip().startswith("<?xml")

    # the notebook API reads the same sweep: runs.csv's values, long tables, trained models
    import nin_cli as api

    table = api.load_runs(sweep)
    shared = [c for c in runs.columns if c in table.columns]
    assert len(shared) == len(runs.columns) and len(table) == 7
    pd.testing.assert_frame_equal(
        table[shared].sort_values("run").reset_index(drop=True), runs.sort_values("run").reset_index(drop=True), check_dtype=False
    )
    assert {"model.width", "optimizer.lr", "loss.name"} <= set(table.columns)  # every config key, not only the varying ones
    steps = api.load_metrics(sweep, table="steps")
    one = next(iter(run_dir.values()))
    own = steps[steps.run == one.name].drop(columns="run").reset_index(drop=True)
    assert own.equals(pd.read_csv(one / "steps.csv").astype(float))
    assert set(api.load_metrics(sweep).run) == {p.name for p in run_dir.values()}  # the damaged run's good rows too
    clean = run_dir["sigma=0.3,seed=0"]
    model = api.load_model(clean)
    from nin_cli.data.datasets import load_dataset

    data = load_dataset(make_cfg(*QUICK).dataset)
    accuracy = float((model(data.test.x).argmax(1) == data.test.y).float().mean())
    assert accuracy == pytest.approx(float(pd.read_csv(clean / "metrics.csv").test_acc.iloc[-1]), abs=1e-6)


LINEAR = ["+experiment=linear_toy", "progress=false", "epochs=10"]


def test_linear_toy_theory_agrees_with_simulation(tmp_path):
    # 7.3: the middle of seed 2's catapult window 6.78-7.83 (the toy's windows at 3 seeds: docs/phases.md)
    for sigma in (0.01, 0.5, 1, 2, 7.3, 30):
        train(make_cfg(*LINEAR, f"noise.sigma={sigma}"), tmp_path / f"s{sigma}")
    table, bounds = theory_rows(load_runs([tmp_path]), ACFG)
    assert len(table) == 6
    (b,) = bounds.values()
    assert b["decay/catapult"] == pytest.approx(41.35, rel=1e-3) and b["catapult/divergent"] == pytest.approx(288.0, rel=1e-3)
    assert table["agree"].all(), table[["noise.sigma", "predicted_phase", "measured_phase"]]
    assert list(table["measured_phase"]) == ["decoupled", "decay", "decay", "decay", "catapult", "divergent"]
    decay = table[table["measured_phase"] == "decay"]
    ratio = decay["tau_niw_measured"] / decay["tau_niw_predicted"]
    assert ((ratio > 0.7) & (ratio < 1.4)).all(), ratio
    small = table[table["noise.sigma"] <= 1]
    assert ((small["tau_train_measured"] / small["tau_train_predicted"]).between(0.8, 1.25)).all()


def test_decay_time_figure_draws_one_line_per_group(tmp_path, monkeypatch):
    """Runs that differ in more than sigma (here the learning rate) are never averaged together."""
    from nin_cli.analysis.plots import decay_times_figure

    rows = [
        {"noise.sigma": s, "optimizer.lr": lr, "n_runs": 2, "phase": "decay", "phases": "decay:2", "tau_niw_mean": tau, "tau_niw_std": 0.1}
        for lr, taus in ((0.01, (10.0, 5.0, 2.0)), (0.05, (8.0, 4.0, 1.0)))
        for s, tau in zip((1.0, 3.0, 10.0), taus)
    ]
    table = pd.DataFrame(rows)
    for name in ("tau_train", "tau_test", "final_test_acc"):
        table[f"{name}_mean"], table[f"{name}_std"] = 1.0, 0.0
    import matplotlib.pyplot as plt

    captured = {}
    original = plt.Figure.savefig

    def keep(fig, path, **kwargs):
        captured["legend"] = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
        return original(fig, path, **kwargs)

    monkeypatch.setattr(plt.Figure, "savefig", keep)
    assert decay_times_figure(table, tmp_path / "dt.png") == tmp_path / "dt.png"
    assert captured["legend"] == ["tau_niw (optimizer.lr=0.01)", "tau_niw (optimizer.lr=0.05)"]

    # two keys vary: the phase diagram, one cell per (sigma, lr), coloured by phase
    from nin_cli.analysis.plots import phase_diagram_figure

    table.loc[5, "phase"] = "catapult"
    assert phase_diagram_figure(table, tmp_path / "pd.png") == tmp_path / "pd.png"
    assert captured["legend"] == ["decay", "catapult"]
    assert phase_diagram_figure(table[table["optimizer.lr"] == 0.01], tmp_path / "none.png") is None  # one key: no diagram
    # a key swept over names and numbers (nin.init=layer,input,0.01) orders as text, no traceback
    mixed = table.rename(columns={"optimizer.lr": "nin.init"}).astype({"nin.init": object})
    mixed["nin.init"] = mixed["nin.init"].map({0.01: "layer", 0.05: 0.01})
    assert phase_diagram_figure(mixed, tmp_path / "mixed.png") == tmp_path / "mixed.png"


def test_phase_table_aggregates_over_seeds():
    runs = pd.DataFrame(
        {
            "run": list("abcd"),
            "noise.sigma": [1, 1, 5, 5],
            "seed": [0, 1, 0, 1],
            "status": ["completed"] * 4,
            "epoch": [3] * 4,
            "phase": ["decay", "decay", "catapult", "divergent"],
            "phase_reason": [""] * 4,
            "tau_niw": [1.0, 3.0, 0.5, np.nan],
            "tau_train": [2.0] * 4,
            "tau_test": [2.0] * 4,
            "final_test_acc": [0.8, 0.9, 0.7, 0.1],
        }
    )
    table = phase_rows(runs).set_index("noise.sigma")
    assert table.loc[1, "tau_niw_mean"] == 2.0 and table.loc[1, "tau_niw_std"] == pytest.approx(math.sqrt(2))
    assert table.loc[5, "phase"] == "divergent"  # a tie goes to the more violent phase
    assert table.loc[1, "final_test_acc_mean"] == pytest.approx(0.85)


def test_phase_table_of_networks_with_different_nins():
    """An FC sweep summarized beside a CNN's: the FC's rows have no phase_conv1, and the CNN's get its vote."""
    runs = pd.DataFrame(
        {
            "run": list("abcd"),
            "model.name": ["fc", "fc", "cnn", "cnn"],
            "seed": [0, 1, 0, 1],
            "status": ["completed"] * 4,
            "epoch": [3] * 4,
            "phase": ["decay", "decay", "catapult", "catapult"],
            "phase_reason": [""] * 4,
            "phase_fc1": ["decay", "decay", "catapult", "decay"],
            "phase_conv1": [np.nan, np.nan, "decay", "decay"],
            "tau_niw": [1.0, 3.0, np.nan, np.nan],
            "tau_train": [2.0] * 4,
            "tau_test": [2.0] * 4,
            "final_test_acc": [0.88, 0.88, 0.89, 0.89],
        }
    )
    table = phase_rows(runs).set_index("model.name")
    assert table.loc["cnn", "phase_conv1"] == "decay" and table.loc["cnn", "phases_conv1"] == "decay:2"
    assert pd.isna(table.loc["fc", "phase_conv1"]) and table.loc["fc", "phases_fc1"] == "decay:2"


def test_run_rows_name_the_varying_keys(tmp_path):
    for sigma in (0, 3):
        train(make_cfg(*QUICK, "epochs=1", f"noise.sigma={sigma}"), tmp_path / f"s{sigma}")
    table = run_rows(load_runs([tmp_path]), ACFG, tmp_path)
    assert list(table["noise.sigma"]) == [0.0, 3.0] and "model.width" not in table


@pytest.mark.parametrize("experiment", ["fig1", "fig2", "fig3", "ninr_comparison"])
def test_paper_experiments_compose_and_train(tmp_path, experiment):
    """Each experiment config runs as written, shrunk to one epoch on the embedded data."""
    cfg = make_cfg(
        f"+experiment={experiment}", "dataset=fashion_mnist_mini", "epochs=1", "progress=false", "hessian.samples=200", "evaluate=false"
    )
    result = train(cfg, tmp_path / experiment)
    assert result.status in ("completed", "diverged")
    assert len(pd.read_csv(tmp_path / experiment / "metrics.csv")) >= 2


@pytest.mark.e2e
def test_old_run_directories_read_as_what_they_were(tmp_path):
    """A config.yaml written before nin.init and loss.reduction existed means N(0, 1) NIWs and the
    half-summed MSE: summarize reads it so, and resuming it does not silently switch conventions."""

    run_dir = tmp_path / "old"
    mse = [*QUICK, "loss=mse", "epochs=2", "dataset.train_size=500", f"hydra.run.dir={run_dir}"]
    old_conventions = ["nin.init=unit", "loss.reduction=half_sum"]
    old = nin("train", *mse, *old_conventions, env={"NIN_FAULT": "step:6:SIGKILL"})  # killed in epoch 2
    assert old.returncode == -9
    text = (run_dir / "config.yaml").read_text()
    text = text.replace("  init: unit\n", "").replace("  reduction: half_sum\n", "")
    (run_dir / "config.yaml").write_text(text)
    run = load_run(run_dir)
    assert run.config["nin.init"] == "unit" and run.config["loss.reduction"] == "half_sum"
    summary = nin("summarize", str(run_dir))
    assert summary.returncode == 0, summary.stderr
    refused = nin("train", *mse)
    assert refused.returncode == 2 and "resume it as it was trained: loss.reduction=half_sum nin.init=unit" in refused.stderr
    resumed = nin("train", *mse, *old_conventions)
    assert resumed.returncode == 0 and "resuming" in resumed.stderr


def test_sigma_in_the_papers_units():
    from nin_cli.config.resolve import resolve
    from nin_cli.units import paper_units

    cfg = resolve(make_cfg("+experiment=fig3", "noise.sigma2_paper=0.01")).cfg
    assert cfg.noise.sigma == pytest.approx(math.sqrt(0.01 * 784 / 0.01))  # CE: d_in / eta
    mse = resolve(make_cfg("+experiment=fig2", "noise.sigma2_paper=1"))
    assert mse.cfg.noise.sigma == pytest.approx(math.sqrt(784 / (1024 * 0.01)))  # MSE: d_in / (N_w eta)
    assert paper_units(mse.flat) == pytest.approx(1.0)


@pytest.mark.e2e
def test_tensorboard_export_reads_back_as_the_csvs(tmp_path):
    """`nin export tensorboard`: every metrics.csv and steps.csv value, read back from the event
    files with TensorBoard's own reader; the varying keys as hparams."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for sigma in ("1", "10"):
        train(make_cfg(*QUICK, "epochs=2", f"noise.sigma={sigma}", "log.every_steps=5"), tmp_path / "sweep" / f"noise.sigma={sigma}")
    out = nin("export", "tensorboard", str(tmp_path / "sweep"), "--out", str(tmp_path / "tb"))
    assert out.returncode == 0, out.stderr
    for sigma in ("1", "10"):
        events = EventAccumulator(str(tmp_path / "tb" / f"noise.sigma={sigma}"), size_guidance={"scalars": 0}).Reload()
        run = tmp_path / "sweep" / f"noise.sigma={sigma}"
        metrics, steps = pd.read_csv(run / "metrics.csv"), pd.read_csv(run / "steps.csv")
        for col in ("train_loss_clean", "test_acc", "niw_norm_fc1"):
            logged = events.Scalars(f"metrics/{col}")
            assert [e.step for e in logged] == metrics.epoch.tolist()
            assert [e.value for e in logged] == pytest.approx(metrics[col].tolist(), rel=1e-6)
        logged = events.Scalars("steps/train_loss")
        assert [e.step for e in logged] == steps.step.tolist() and len(logged) > 10
        assert [e.value for e in logged] == pytest.approx(steps.train_loss.tolist(), rel=1e-6)
        hparams = EventAccumulator(str(tmp_path / "tb" / f"noise.sigma={sigma}")).Reload().PluginTagToContent("hparams")
        assert hparams  # the hparams plugin's session data is there


def test_robustness_figure_keeps_a_methods_colour_across_models(tmp_path, monkeypatch):
    """Two models compared on different sets of methods: one legend with every method, and each
    method drawn in the same colour in every model's row."""
    from nin_cli.analysis import plots

    rows = [
        {"model.name": model, "method": method, "seed": seed, "perturbation": perturbation, "severity": severity, "accuracy": acc}
        for model, methods in (("cnn", ["none"]), ("fc", ["cdt04", "none"]))
        for method in methods
        for seed in (0, 1)
        for perturbation, severity, acc in (("clean", 0.0, 0.9), ("gaussian", 0.3, 0.7), ("rotate", 2.0, 0.5))
    ]
    figures = []
    monkeypatch.setattr(plots.plt, "close", figures.append)
    assert plots.robustness_figure(pd.DataFrame(rows), ["model.name", "method"], tmp_path / "r.png") is not None
    (fig,) = figures
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["cdt04", "none"]
    colours: dict[str, set] = {}
    for ax in fig.axes:
        if ax.get_title().endswith("gaussian"):
            for container in ax.containers:  # one errorbar per method: (line, caps, bars)
                colours.setdefault(container.get_label(), set()).add(container.lines[0].get_color())
    assert set(colours) == {"cdt04", "none"}
    assert all(len(c) == 1 for c in colours.values()) and colours["none"] != colours["cdt04"]


def _steps_run(weight: np.ndarray, hessian: list[float], niw_rise: float = 0.9) -> Run:
    """A run of 100 logged steps whose NIW and noisy loss rise together around step 4, with the next
    layer's weight norm `weight` and Tr H_z `hessian` at epochs 0 and 1."""
    t = np.arange(0, 101)
    bump = np.exp(-(((t - 4) / 2.0) ** 2))
    steps = pd.DataFrame(
        {
            "step": t,
            "epoch": t // 100,
            "train_loss": 3 * (1 + 10 * bump) * np.exp(-t / 50),
            "niw_norm_fc1": (1 + niw_rise * bump) * np.exp(-t / 50),
            "weight_norm_fc2": weight,
        }
    )
    metrics = _two_epochs(niw_norm_fc1=[1.0, math.exp(-2)], weight_norm_fc2=[weight[0], weight[-1]], hessian_trace_fc1=hessian)
    network = {"nins": [{"layer": "fc1", "feeds": "fc2"}]}
    return Run(
        path=Path("catapult"),
        config={"noise.sigma": 5.0, "nin": "input"},
        status={"status": "completed"},
        metrics=metrics,
        steps=steps,
        network=network,
    )


def test_the_papers_catapult_is_told_from_a_label_on_one_observation():
    """scripts/catapult_check.py's signature: NIW and loss up together, the next layer's weights down
    while the loss is up, Tr H_z down, then recovery and the NIW's decay: the papers' catapult. The
    same rises over weights that only grow is what the classifier labels catapult but the papers would
    not; a NIW that never rises lacks that."""
    from nin_cli.analysis.catapult import signature

    t = np.arange(0, 101)
    dip = 10 * (1 - 0.2 * np.exp(-(((t - 6) / 3.0) ** 2)))
    papers = signature(_steps_run(dip, [2.0, 0.5]), "fc1")
    assert papers.niw_rise == pytest.approx(1.725, abs=1e-3) and papers.loss_rise == pytest.approx(8.58, abs=0.01)  # peak / first value
    assert papers.weight_dip == pytest.approx(0.8, abs=0.01) and papers.hessian_fall == pytest.approx(0.25)
    assert papers.missing(ACFG.phases) == []
    growing = signature(_steps_run(10 + 0.01 * t, [2.0, 0.5]), "fc1")
    assert classify(_steps_run(10 + 0.01 * t, [2.0, 0.5]), ACFG.phases)[0] == "catapult"
    (lack,) = growing.missing(ACFG.phases)
    assert "did not shrink" in lack
    flat = signature(_steps_run(dip, [2.0, 3.0], niw_rise=0.1), "fc1")
    assert {w.split(" ")[1] for w in flat.missing(ACFG.phases)} == {"NIW", "H_z"}


def test_reading_a_sweep_loads_no_torch():
    """nin summarize, progress, report, plot and export read records without torch (its import is
    most of a second on a CPU): a checkpoint's reader and a factory's seeding load it where used."""
    modules = ["summarize", "progress", "report", "plots", "export", "runs"]
    code = f"import sys\nfor m in {modules!r}: __import__('nin_cli.analysis.' + m)\nprint('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
