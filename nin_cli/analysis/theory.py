"""Predictions of the linear-model theory for the linear toy model f = w1 (w0 x + w_NI eps), next to what
simulated runs of the same model measured.

From the initial weights (rebuilt from each run's seed) and eta, sigma_x, M, |B|:
  B0 = eta w_NI^2, Bt0 = eta w1^2
  decay/catapult at sigma^2 = min(2/B0, 2/Bt0), catapult/divergent at max(2/B0, 2/Bt0);
  decoupled while the random walk |At| sigma outweighs the decay Bt sigma^2 |w_NI|, i.e.
  sigma < sigma_x |w1 w0 - M| / (sqrt|B| |w1 w_NI|), or while the predicted decay over the run
  is too small to see (exp(-steps / tau) above the classifier's decay_niw_ratio);
  tau_niw = -1 / ln|1 - eta w1^2 sigma^2| steps (w_NI' = w_NI (1 - Bt sigma^2));
  tau_train = 1 / (2 eta sigma_x^2 (w0^2 + w1^2)) steps (L ~ exp(-2 sigma_x^2 int (w0^2 + w1^2) dt)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from nin_cli.analysis.fits import decay_fit
from nin_cli.analysis.phases import classify, decay_times
from nin_cli.analysis.plots import niw_theory_figure, theory_figure
from nin_cli.analysis.predict import niw_mean_square, niw_tau_steps, phase_at, sweep_boundaries
from nin_cli.analysis.runs import Run, load_runs
from nin_cli.analysis.summarize import write_csv
from nin_cli.config.schema import load_settings
from nin_cli.errors import ConfigError
from nin_cli.nets.network import build_model
from nin_cli.units import paper_units


@dataclass
class ToySetting:
    w0: float
    w1: float
    w_ni: float
    eta: float
    sigma_x: float
    M: float
    batch: int
    steps_per_epoch: int
    epochs: int

    @property
    def B0(self) -> float:  # noqa: N802 - the spec's symbol
        return self.eta * self.w_ni**2

    @property
    def Bt0(self) -> float:  # noqa: N802
        return self.eta * self.w1**2

    def boundaries(self) -> dict[str, float]:
        """Phase boundaries on sigma^2."""
        rw = self.sigma_x * abs(self.w1 * self.w0 - self.M) / (math.sqrt(self.batch) * abs(self.w1 * self.w_ni))
        return {
            "decoupled/decay": rw**2,
            "decay/catapult": min(2 / self.B0, 2 / self.Bt0),
            "catapult/divergent": max(2 / self.B0, 2 / self.Bt0),
        }

    def tau_niw_steps(self, sigma: float) -> float:
        factor = abs(1 - self.Bt0 * sigma**2)
        return math.inf if factor == 0 or sigma == 0 else (-1 / math.log(factor) if factor < 1 else math.nan)

    def tau_train_steps(self) -> float:
        return 1 / (2 * self.eta * self.sigma_x**2 * (self.w0**2 + self.w1**2))

    def predict(self, sigma: float, decay_niw_ratio: float) -> dict:
        b = self.boundaries()
        s2 = sigma**2
        tau_niw = self.tau_niw_steps(sigma)
        if s2 > b["catapult/divergent"]:
            phase = "divergent"
        elif s2 > b["decay/catapult"]:
            phase = "catapult"
        elif s2 < b["decoupled/decay"] or math.exp(-self.steps_per_epoch * self.epochs / tau_niw) > decay_niw_ratio:
            phase = "decoupled"
        else:
            phase = "decay"
        spe = self.steps_per_epoch
        return {
            "predicted_phase": phase,
            "tau_niw_predicted": tau_niw / spe if phase in ("decay", "decoupled") else math.nan,
            "tau_train_predicted": self.tau_train_steps() / spe if phase != "divergent" else math.nan,
        }


def toy_setting(run: Run) -> ToySetting | None:
    """The initial weights of a linear-model run, rebuilt exactly from its config and seed."""
    c = run.config
    if c.get("model.name") != "linear" or c.get("dataset.name") != "linear_regression":
        return None
    if int(c.get("model.width", 1)) != 1 or int(c.get("dataset.dim", 1)) != 1 or c.get("nin.preset") != "input":
        return None
    model_cfg = OmegaConf.create({"name": "linear", "target": c.get("model.target", "nin_cli.nets.shipped:linear"), "width": 1})
    nin_cfg = OmegaConf.create({"preset": "input", "layers": []})
    model = build_model(model_cfg, nin_cfg, (1,), 1, int(c["seed"]))
    n_train, batch = int(c["dataset.n_train"]), int(c["batch_size"])
    return ToySetting(
        w0=float(model.layer("w0").weight.detach()),
        w1=float(model.layer("w1").weight.detach()),
        w_ni=float(model.nins["w0"].weight.detach()),
        # The recursion is written for L = 1/(2|B|) sum (f - y)^2; with one output the mean form is
        # twice that, the same SGD at twice the step size.
        eta=float(c["optimizer.lr"]) * (2.0 if c.get("loss.reduction") == "mean" else 1.0),
        sigma_x=float(c["dataset.sigma_x"]),
        M=float(c["dataset.M"]),
        batch=batch,
        steps_per_epoch=math.ceil(n_train / batch),
        epochs=int(c["epochs"]),
    )


def theory_rows(runs: list[Run], acfg) -> tuple[pd.DataFrame, dict[str, dict]]:
    """Per linear-model run: prediction beside measurement; plus the boundaries of each init."""
    rows, bounds = [], {}
    for run in runs:
        setting = toy_setting(run)
        if setting is None:
            continue
        sigma = run.sigma
        bounds[f"seed {run.config['seed']}: w0={setting.w0:.3f} w1={setting.w1:.3f} w_NI={setting.w_ni:.3f}"] = setting.boundaries()
        pred = setting.predict(sigma, acfg.phases.decay_niw_ratio)
        phase, _ = classify(run, acfg.phases)
        taus = decay_times(run, acfg.fits)
        rows.append(
            {
                "noise.sigma": sigma,
                "sigma2": sigma**2,
                "seed": run.config["seed"],
                "predicted_phase": pred["predicted_phase"],
                "measured_phase": phase,
                "agree": pred["predicted_phase"] == phase,
                "tau_niw_predicted": pred["tau_niw_predicted"],
                "tau_niw_measured": taus["tau_niw"],
                "tau_train_predicted": pred["tau_train_predicted"],
                "tau_train_measured": taus["tau_train"],
            }
        )
    table = pd.DataFrame(rows)
    if len(table):
        table = table.sort_values(["seed", "noise.sigma"], ignore_index=True)
    return table, bounds


# --- any network: the NIW trajectory from its recorded curvature ---------------------------------


def predicted_niw(run: Run, layer: str) -> pd.DataFrame | None:
    """Per epoch, the measured NIW norm of `layer` and two predictions integrated from the recorded
    curvature c (niw_curvature_<layer>) and gradient moment G (niw_gradsq_<layer>), each averaged
    over the two ends of the epoch, with that epoch's sigma, eta and S steps (batch size B), by
    predict.niw_mean_square:
      decay only:            |W|^2 <- a^S |W|^2,                      a = (1 - eta sigma^2 c)^2
      decay + random walk:   |W|^2 <- a^S |W|^2 + b (1 - a^S)/(1 - a), b = eta^2 sigma^2 G / B
    (the first is the theory's w_NI(t) ~ exp(-sigma^2 int c dt); the second adds the random walk's
    growth of E|W|^2, which sets the floor |W|^2 = eta G / (2 B c) the NIW decays to)."""
    m = run.metrics
    need = [f"niw_norm_{layer}", f"niw_curvature_{layer}", f"niw_gradsq_{layer}", "sigma", "lr", "step"]
    if len(m) < 2 or any(c not in m for c in need):
        return None
    batch = int(run.config.get("batch_size", 1))
    c = m[f"niw_curvature_{layer}"].to_numpy(dtype=float)
    g = m[f"niw_gradsq_{layer}"].to_numpy(dtype=float)
    measured = m[f"niw_norm_{layer}"].to_numpy(dtype=float)
    decay = [measured[0] ** 2]
    full = [measured[0] ** 2]
    for e in range(1, len(m)):
        sigma, eta = float(m["sigma"].iloc[e]), float(m["lr"].iloc[e])
        steps = float(m["step"].iloc[e] - m["step"].iloc[e - 1])
        cbar, gbar = (c[e - 1] + c[e]) / 2, (g[e - 1] + g[e]) / 2
        full.append(niw_mean_square(full[-1], cbar, gbar, eta, sigma, batch, steps)[0])
        decay.append(niw_mean_square(decay[-1], cbar, 0.0, eta, sigma, batch, steps)[1])
    return pd.DataFrame(
        {"epoch": m["epoch"], "measured": measured, "predicted_decay": np.sqrt(decay), "predicted": np.sqrt(np.asarray(full, dtype=float))}
    )


def network_theory_rows(runs: list[Run], acfg, boundaries: dict[str, dict[str, float]] | None = None) -> pd.DataFrame:
    """Per network run with recorded curvature: the measured phase and tau_niw beside the
    predicted initial tau_niw (epoch-0 curvature), the tau_niw and final NIW ratio of the integrated
    trajectory, and, where `boundaries` (sigma^2, from `nin predict` per group) are given, the
    predicted phase."""
    rows = []
    for run in runs:
        if not run.nin_layers or toy_setting(run) is not None:
            continue
        layer = run.nin_layers[0]
        traj = predicted_niw(run, layer)
        if traj is None:
            continue
        m = run.metrics
        spe = run.steps_per_epoch()
        tau0 = niw_tau_steps(float(m["lr"].iloc[1]), run.sigma, float(m[f"niw_curvature_{layer}"].iloc[0])) / spe
        phase, _ = classify(run, acfg.phases)
        kw = {"min_points": acfg.fits.min_points, "min_drop": acfg.fits.min_drop}
        row = {
            "run": run.path.name,
            "noise.sigma": run.sigma,
            "sigma2_paper": paper_units(run.config),
            "measured_phase": phase,
            "tau_niw_measured": decay_times(run, acfg.fits)["tau_niw"],
            "tau_niw_predicted_init": tau0,
            "tau_niw_integrated": decay_fit(traj["epoch"], traj["predicted"], **kw)[0],
            "niw_ratio_measured": float(traj["measured"].iloc[-1] / traj["measured"].iloc[0]),
            "niw_ratio_integrated": float(traj["predicted"].iloc[-1] / traj["predicted"].iloc[0]),
            "niw_ratio_decay_only": float(traj["predicted_decay"].iloc[-1] / traj["predicted_decay"].iloc[0]),
        }
        b = (boundaries or {}).get(str(run.path))
        if b:
            row["predicted_phase"] = phase_at(run.sigma**2, b)
            row["agree"] = row["predicted_phase"] == phase
        rows.append(row)
    table = pd.DataFrame(rows)
    return table.sort_values("noise.sigma", ignore_index=True) if len(table) else table


def bounds_text(bounds: dict[str, float]) -> str:
    return ", ".join(f"{k} at sigma^2={v:.4g} (sigma={v**0.5:.4g})" for k, v in bounds.items())


def theory_tables(
    paths: list[str], overrides: list[str], out: Path, no_predict: bool
) -> tuple[pd.DataFrame, list[str], str, str, list[Path]]:
    """What `nin theory` shows: the linear toy model's analytic phases beside its simulated runs,
    or for networks the NIW decay integrated from the recorded curvature (and the phases predicted
    at init); theory.csv and a figure written to `out`. (table, boundary lines, title, the
    agreement line, the files written)."""
    acfg = load_settings("analysis", overrides)
    runs = load_runs(paths)
    table, bounds = theory_rows(runs, acfg)
    if not table.empty:
        figure = theory_figure(table, bounds, out / "theory.png")
        lines = [f"{name}: {bounds_text(b)}" for name, b in bounds.items()]
        title = "linear toy model: theory vs simulation (tau in epochs)"
    else:
        measured = [r for r in runs if r.nin_layers and (r.path / "config.yaml").exists()]
        boundaries = {} if no_predict else sweep_boundaries(measured, acfg)
        table = network_theory_rows(runs, acfg, boundaries)
        if table.empty:
            raise ConfigError(
                "no linear toy-model runs, and no network runs with recorded NIW curvature (hessian.niw_curvature=true) found"
            )
        curves = [
            (f"sigma={r.sigma:g}", t)
            for r in sorted(runs, key=lambda r: r.sigma)
            if r.nin_layers
            for t in [predicted_niw(r, r.nin_layers[0])]
            if t is not None
        ]
        figure = niw_theory_figure(curves, out / "theory_niw.png")
        lines = sorted({bounds_text(b) for b in boundaries.values()})
        title = "networks: NIW decay from the recorded curvature, phases predicted at init (tau in epochs)"
    done = f"predicted and measured phases agree for {int(table['agree'].sum())} of {len(table)} runs" if "agree" in table else ""
    write_csv(table, out / "theory.csv")
    return table, lines, title, done, [out / "theory.csv", *([figure] if figure else [])]
