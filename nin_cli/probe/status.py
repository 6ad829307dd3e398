"""What a probe says of each NIN while training runs: its regime, its decay times, and how sure
the label is (`Probe.status`, by `nin summarize`'s classifier and fits)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from nin_cli.analysis.phases import trajectory
from nin_cli.analysis.runs import Run


@dataclass(frozen=True)
class NINStatus:
    """One NIN's regime as the records so far read (the classifier and fits of `nin summarize`)."""

    nin: str
    phase: str
    reason: str
    tau_niw: float  # epochs; inf: no decay yet; NaN: too few points
    tau_niw_err: float
    tau_weight: float  # the decay time of the weight norm of the layer the NIN feeds
    confidence: float  # 0..1: how far the deciding measure is from the threshold that would change the label

    def __str__(self) -> str:
        tau = f"tau_niw {self.tau_niw:.3g}" + (f" ± {self.tau_niw_err:.2g}" if math.isfinite(self.tau_niw_err) else "")
        return f"{self.nin}: {self.phase} (confidence {self.confidence:.2f}; {self.reason}; {tau} epochs)"


def confidence(run: Run, nin: str, phase: str, acfg, taus: dict) -> float:
    """0..1: how far the measure that decided a NIN's label lies from the threshold that would
    change it, on a log scale whose unit is the threshold's own distance from no change (the NIW
    norm's end ratio against decay_niw_ratio, 0.95: at 0.9025 or at 1.0 it is 1; its growth against
    catapult_niw_growth, 1.5: at 2.25 or at 1.0 it is 1). A decay is also as sure as its fit: the decay
    fit's precision (1 - its relative error on tau) times the part of two decay times the records
    cover, where that is more (a NIW just under the threshold but falling on a well-fitted
    exponential will fall further; one seen for less than 2 tau may still turn)."""
    th = acfg.phases
    if phase in ("divergent", "unknown"):
        return 1.0 if run.status.get("status") == "diverged" else 0.5
    traj = trajectory(run, nin)
    if traj.niw is None or not len(traj.niw) or not traj.niw[0]:
        return 0.0
    growth, end = float(max(traj.niw) / traj.niw[0]), float(traj.niw[-1] / traj.niw[0])

    def distance(value: float, threshold: float) -> float:
        return min(1.0, abs(math.log(max(value, 1e-12) / threshold)) / max(abs(math.log(threshold)), 1e-6))

    if phase == "catapult":  # by the NIW's rise, or by the loss's rise with the next layer's weights falling
        by_niw = distance(growth, th.catapult_niw_growth) if growth > th.catapult_niw_growth else 0.0
        by_loss = 0.0
        if traj.next_weight is not None and len(traj.noisy_loss) and traj.noisy_loss[0] > 0:
            peak = int(np.nanargmax(traj.next_weight))
            drop = float(np.nanmin(traj.next_weight[peak:]) / traj.next_weight[peak])
            rise = float(np.nanmax(traj.noisy_loss) / traj.noisy_loss[0])
            if rise > th.catapult_loss_growth and drop < th.catapult_weight_drop:
                by_loss = min(distance(rise, th.catapult_loss_growth), distance(drop, th.catapult_weight_drop))
        return max(by_niw, by_loss)
    margin = min(distance(end, th.decay_niw_ratio), distance(growth, th.catapult_niw_growth))
    if phase != "decay":
        return margin
    tau, err = taus.get("tau_niw", math.nan), taus.get("tau_niw_err", math.nan)
    if not (math.isfinite(tau) and tau > 0 and math.isfinite(err)):
        return margin
    seen = min(1.0, float(traj.t[-1] - traj.t[0]) / (2 * tau))
    return max(margin, (1.0 - min(1.0, err / tau)) * seen)
