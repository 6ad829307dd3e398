"""Whether a run labelled catapult is the papers' catapult, from its records.

The classifier (phases.py) calls a run catapult on one observation: its NIW norm rose past a
threshold, or its noisy loss did while the next layer's weights fell. The papers' catapult is a
sequence: the NIW norm and the noisy loss rise together, the next layer's weights shrink and the
curvature at the NIN (Tr H_z) falls while they do, then the loss recovers and the NIW decays. This
reads each part of that sequence off metrics.csv and steps.csv, so that a preset called catapult
can be checked against the papers' meaning rather than the label alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from nin_cli.analysis.phases import trajectory
from nin_cli.analysis.runs import Run


@dataclass(frozen=True)
class Signature:
    """One NIN's catapult signature. Ratios are against the value before the rise (the first
    logged step or epoch 0) unless said otherwise; epochs are fractional where steps.csv has them."""

    nin: str
    niw_rise: float  # the NIW norm's peak / its first value
    niw_peak_epoch: float
    loss_rise: float  # the noisy batch loss's peak / its first value
    loss_peak_epoch: float
    weight_dip: float  # the next layer's weight norm: its lowest while the loss is up / its first value (NaN: no layer after it)
    recovery_epoch: float  # when the noisy loss came back below its first value after its peak
    hessian_fall: float  # Tr H_z: its lowest after epoch 0 / epoch 0's (per epoch, metrics.csv)
    loss_recovered: float  # the clean train loss at the end / at epoch 0
    niw_end_vs_peak: float  # the NIW norm at the end / at its peak (below 1: it decays after)

    def missing(self, thresholds) -> list[str]:
        """The parts of the papers' catapult this run lacks (empty: it is one)."""
        lacks = []
        if not self.niw_rise > thresholds.catapult_niw_growth:
            lacks.append(f"the NIW rose only {self.niw_rise:.3g}x (<= {thresholds.catapult_niw_growth:g}x)")
        if not self.loss_rise > thresholds.catapult_loss_growth:
            lacks.append(f"the noisy loss rose only {self.loss_rise:.3g}x (<= {thresholds.catapult_loss_growth:g}x)")
        if not self.weight_dip < thresholds.catapult_weight_dip and not math.isnan(self.weight_dip):
            lacks.append(f"the next layer's weights did not shrink while the loss was up (lowest {self.weight_dip:.4g}x their first)")
        if not self.hessian_fall < 1.0:
            lacks.append("Tr H_z never fell below its epoch-0 value")
        if not self.loss_recovered < 1.0:
            lacks.append("the clean loss did not recover below its epoch-0 value")
        if not self.niw_end_vs_peak < thresholds.decay_niw_ratio:
            lacks.append(f"the NIW did not decay after its peak (ends at {self.niw_end_vs_peak:.3g} of it)")
        return lacks


def _peak(t: np.ndarray, curve: np.ndarray) -> tuple[float, float]:
    """(peak / first value, the epoch of the peak) of a curve, NaN where it has none."""
    if curve is None or not len(curve) or not math.isfinite(float(curve[0])) or float(curve[0]) == 0:
        return math.nan, math.nan
    i = int(np.nanargmax(curve))
    return float(curve[i] / curve[0]), float(t[i])


def signature(run: Run, nin: str | None = None) -> Signature:
    """The catapult signature of one NIN (default: the first) of a run."""
    nin = nin if nin is not None else run.nin_layers[0]
    traj = trajectory(run, nin)
    niw_rise, niw_peak = _peak(traj.t, traj.niw)
    loss_rise, loss_peak = _peak(traj.t, traj.noisy_loss)
    loss = traj.noisy_loss
    top = int(np.nanargmax(loss)) if len(loss) else 0
    back = np.flatnonzero(loss[top:] < loss[0]) if len(loss) else np.array([], dtype=int)
    end = top + int(back[0]) if len(back) else len(loss) - 1  # the catapult's window: up to the loss's recovery
    recovery = float(traj.t[end]) if len(back) else math.nan
    weight_dip = math.nan
    if traj.next_weight is not None and len(traj.next_weight):
        w = traj.next_weight
        weight_dip = float(np.nanmin(w[: end + 1]) / w[0])
    m = run.metrics
    column = f"hessian_trace_{nin}"
    hessian_fall = math.nan
    if column in m and len(m) > 1 and float(m[column].iloc[0]) > 0:
        later = m[column].to_numpy(dtype=float)[1:]
        if np.isfinite(later).any():  # a run that diverged in its first epoch has none
            hessian_fall = float(np.nanmin(later) / float(m[column].iloc[0]))
    clean = m["train_loss_clean"].to_numpy(dtype=float) if "train_loss_clean" in m else np.array([math.nan])
    niw_end = float(traj.niw[-1] / np.nanmax(traj.niw)) if traj.niw is not None and len(traj.niw) else math.nan
    return Signature(
        nin=nin,
        niw_rise=niw_rise,
        niw_peak_epoch=niw_peak,
        loss_rise=loss_rise,
        loss_peak_epoch=loss_peak,
        weight_dip=weight_dip,
        recovery_epoch=recovery,
        hessian_fall=hessian_fall,
        loss_recovered=float(clean[-1] / clean[0]) if clean[0] else math.nan,
        niw_end_vs_peak=niw_end,
    )
