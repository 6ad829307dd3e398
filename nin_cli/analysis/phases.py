"""Phase of a run (decoupled / decay / catapult / divergent) and its decay times, from its trajectory.

The rules, with thresholds from conf/analysis.yaml:
- divergent: the run's status is diverged, or it never recovered: its last clean train loss is
  non-finite or above divergent_loss_growth x the epoch-0 value, or its final clean train
  accuracy is below max(epoch 0's, chance_acc) + divergent_min_acc_gain (stuck at chance);
- catapult: the NIW norm climbs above catapult_niw_growth x its initial value, or the noisy train
  loss climbs above catapult_loss_growth x its step-0 value while the next layer's weight norm,
  after its peak, falls below catapult_weight_drop x that peak (the run then recovers);
- decay: the NIW norm ends below decay_niw_ratio x its initial value;
- decoupled: otherwise: the NIW random-walks and training is unaffected.

With several NINs each is classified on its own trajectory (its NIW norm, the weight norm of the
layer it feeds) and fitted on its own (tau_niw, tau_weight): `nin_phases`. The run-level checks
(diverged, never recovered, learned nothing) are the run's and so every NIN's. The run's own phase
and tau_niw are its first NIN's, the one the forward pass reaches first (nearest the input, as the
papers' in-NIN; what every run nin recorded before per-NIN phases was labelled by), and
`phase_nin` says so beside the other NINs' own phases (`run_phase`); `nin map` follows any NIN's
phase instead with hydra.sweeper.nin. A one-NIN run reads as before.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from nin_cli.analysis.fits import decay_fit
from nin_cli.analysis.runs import Run
from nin_cli.errors import ConfigError

PHASES = ("decoupled", "decay", "catapult", "divergent")


@dataclass
class Trajectory:
    """The curves the classifier and the fits read: finest available time axis, in epochs."""

    t: np.ndarray
    niw: np.ndarray | None
    noisy_loss: np.ndarray
    next_weight: np.ndarray | None


def trajectory(run: Run, nin: str | None = None) -> Trajectory:
    """The curves of one NIN (default: the first): its NIW norm and the weight norm of the layer it feeds."""
    nin = nin if nin is not None else (run.nin_layers[0] if run.nin_layers else None)
    first = f"niw_norm_{nin}" if nin else None
    fed = run.feeds(nin) if nin else None
    spe = run.steps_per_epoch()
    table: pd.DataFrame = run.metrics
    t = table["epoch"].to_numpy(dtype=float)
    if run.steps is not None and len(run.steps) > len(table) and math.isfinite(spe) and spe > 0:
        table = run.steps
        t = table["step"].to_numpy(dtype=float) / spe
    niw = table[first].to_numpy(dtype=float) if first and first in table else None
    column = f"weight_norm_{fed}" if fed else None
    next_weight = table[column].to_numpy(dtype=float) if column and column in table else None
    return Trajectory(t, niw, table["train_loss"].to_numpy(dtype=float), next_weight)


def classify(run: Run, thresholds, nin: str | None = None) -> tuple[str, str]:
    """(phase, the observation that decided it), of the run as one NIN (default: the first) sees it."""
    verdict = run_level(run, thresholds)
    return verdict if verdict else nin_level(run, thresholds, nin)


def run_level(run: Run, thresholds) -> tuple[str, str] | None:
    """The verdicts about the run as a whole (diverged, never recovered, learned nothing), or None."""
    m = run.metrics
    if run.status.get("status") == "diverged":
        return "divergent", f"diverged: {run.status.get('reason')}"
    if len(m) == 0 or "train_loss_clean" not in m:
        return "unknown", "no metrics"
    clean = [float(v) for v in m["train_loss_clean"]]  # Python floats: a huge threshold x loss is inf, not a numpy warning
    if not math.isfinite(clean[-1]) or clean[-1] > thresholds.divergent_loss_growth * clean[0]:
        return "divergent", f"final clean train loss {clean[-1]:.3g} vs {clean[0]:.3g} at epoch 0"
    acc = m["train_acc"].to_numpy(dtype=float) if "train_acc" in m else np.array([math.nan])
    floor = max(acc[0], thresholds.get("chance_acc", 0.0)) + thresholds.get("divergent_min_acc_gain", 0.0)
    if len(acc) > 1 and acc[-1] < floor:
        return "divergent", f"final clean train accuracy {acc[-1]:.3g} vs {acc[0]:.3g} at epoch 0: it learned nothing"
    return None


def nin_level(run: Run, thresholds, nin: str | None = None) -> tuple[str, str]:
    """One NIN's phase from its own NIW and the layer it feeds (a run that did not diverge)."""
    traj = trajectory(run, nin)
    loss_growth = float(np.nanmax(traj.noisy_loss) / traj.noisy_loss[0]) if len(traj.noisy_loss) else 1.0
    if traj.niw is None or run.sigma == 0:
        return "decoupled", "no noise injected"
    niw_growth = float(np.nanmax(traj.niw) / traj.niw[0])
    if niw_growth > thresholds.catapult_niw_growth:
        return "catapult", f"NIW norm rose {niw_growth:.3g}x"
    if loss_growth > thresholds.catapult_loss_growth and traj.next_weight is not None:
        w = traj.next_weight
        peak = int(np.nanargmax(w))
        drop = float(np.nanmin(w[peak:]) / w[peak])
        if drop < thresholds.catapult_weight_drop:
            return "catapult", f"noisy loss rose {loss_growth:.3g}x, next-layer weights fell to {drop:.3g} of their peak"
    ratio = float(traj.niw[-1] / traj.niw[0])
    if ratio < thresholds.decay_niw_ratio:
        return "decay", f"NIW norm fell to {ratio:.3g} of its initial value"
    return "decoupled", f"NIW norm ended at {ratio:.3g} of its initial value"


def nin_phases(run: Run, thresholds) -> dict[str, tuple[str, str]]:
    """Each NIN's (phase, reason), in the order the forward pass reaches them."""
    verdict = run_level(run, thresholds)
    return {nin: verdict or nin_level(run, thresholds, nin) for nin in run.nin_layers}


def run_phase(run: Run, thresholds, nin: str | None = None) -> tuple[str, str, str | None]:
    """(phase, reason, the NIN it comes from): the run's, its first NIN's (the module docstring), or
    the named NIN's."""
    if nin is not None and nin not in run.nin_layers:
        raise ConfigError(f"{run.path}: no NIN at {nin!r}; its NINs are at: {', '.join(run.nin_layers) or 'none'}")
    nin = nin or (run.nin_layers[0] if run.nin_layers else None)
    phase, why = classify(run, thresholds, nin)
    return phase, (f"{nin}: {why}" if len(run.nin_layers) > 1 else why), nin


def fitted(fits, t, curve) -> tuple[float, float]:
    """(tau, its standard error) of a decay fit with the analysis settings' `fits` (NaN without a curve)."""
    if curve is None or not len(t):
        return math.nan, math.nan
    return decay_fit(t, curve, min_points=fits.min_points, min_drop=fits.min_drop)


def decay_times(run: Run, fits, nin: str | None = None) -> dict[str, float]:
    """tau_niw (from the finest NIW trajectory of one NIN, default the first), tau_train and
    tau_test (per-epoch losses), in epochs, each with its fit's standard error (tau_niw_err, ...)."""
    taus = dict.fromkeys(("tau_niw", "tau_train", "tau_test"), (math.nan, math.nan))
    if len(run.metrics) and "train_loss" in run.metrics:
        traj = trajectory(run, nin)
        m = run.metrics
        taus["tau_niw"] = fitted(fits, traj.t, traj.niw)
        for name, column in (("tau_train", "train_loss_clean"), ("tau_test", "test_loss")):
            taus[name] = fitted(fits, m["epoch"], m[column] if column in m else None)
    return {k: v for name, (tau, err) in taus.items() for k, v in ((name, tau), (f"{name}_err", err))}


def nin_decay_times(run: Run, fits, nin: str) -> dict[str, float]:
    """One NIN's tau_niw and the tau of the weight norm of the layer it feeds (tau_weight), in
    epochs, with their fits' standard errors."""
    traj = trajectory(run, nin)
    out = {}
    for name, curve in (("tau_niw", traj.niw), ("tau_weight", traj.next_weight)):
        out[name], out[f"{name}_err"] = fitted(fits, traj.t, curve)
    return out
