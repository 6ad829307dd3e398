"""Exponential decay time-scales, fitted with scipy from a trajectory's peak onwards."""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit


def _model(t, a, tau, c):
    return a * np.exp(-t / tau) + c


def decay_time(t, y, min_points: int = 4, min_drop: float = 0.05) -> float:
    """tau of y(t) = a exp(-(t - t_peak) / tau) + c, c >= 0, in the units of t.

    inf when y falls by less than `min_drop` of its peak (no decay), NaN when there are too few
    finite points after the peak or the fit fails.
    """
    return decay_fit(t, y, min_points, min_drop)[0]


def decay_fit(t, y, min_points: int = 4, min_drop: float = 0.05) -> tuple[float, float]:
    """(tau, its standard error from curve_fit's covariance); the error is NaN where tau is not
    a finite fit."""
    t, y = np.asarray(t, dtype=float), np.asarray(y, dtype=float)
    ok = np.isfinite(t) & np.isfinite(y)
    t, y = t[ok], y[ok]
    if len(y) < min_points:
        return math.nan, math.nan
    peak = int(np.argmax(y[: max(len(y) // 2, 1)]))
    t, y = t[peak:] - t[peak], y[peak:]
    if len(y) < min_points:
        return math.nan, math.nan
    y0, y_end = y[0], float(np.min(y[-max(len(y) // 10, 1) :]))
    if y0 <= 0 or (y0 - y_end) / y0 < min_drop:
        return math.inf, math.nan
    span = t[-1] if t[-1] > 0 else 1.0
    # Start from the time the curve first falls halfway: robust for fast and slow decays alike.
    half = np.nonzero(y <= y_end + 0.5 * (y0 - y_end))[0]
    tau0 = max(t[half[0]] / math.log(2), span / len(t)) if len(half) else span
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OptimizeWarning)
            params, cov = curve_fit(
                _model,
                t,
                y,
                p0=(y0 - y_end, tau0, max(y_end, 0.0)),
                bounds=([0.0, 1e-6 * span, 0.0], [np.inf, 1e6 * span, np.inf]),
                maxfev=20000,
            )
    except (RuntimeError, ValueError):
        return math.nan, math.nan
    err = float(np.sqrt(cov[1, 1])) if np.isfinite(cov[1, 1]) and cov[1, 1] >= 0 else math.nan
    return float(params[1]), err
