"""The clean test accuracy of the NINR comparison beside the poster's, cell by cell (markdown).

    python scripts/poster_table.py outputs/sweeps/ninr_cmp_fc outputs/sweeps/ninr_cmp_cnn

A row per method, the FC and the CNN side by side. nin's cell: mean ± std over seeds of each
finished run's test accuracy after its last epoch (metrics.csv, on all test images, in percent:
the clean row of its robustness.csv, the same number, checked on the 27 FC runs, without waiting
for the robustness evaluation). The poster's cells are those quoted in
docs/ninr/poster_clean.csv (a cell without a poster value shows "-"). "within" says whether nin's
mean lies inside the poster's mean ± its std."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pandas as pd

from nin_cli.analysis.runs import load_runs
from nin_cli.analysis.summarize import last

METHODS = ("none", "l2", "dropout", "in_ninr_decay", "in_ninr_catapult", "full_ninr_decay", "full_ninr_catapult", "cdt02", "cdt04")
POSTER = Path(__file__).resolve().parent.parent / "docs" / "ninr" / "poster_clean.csv"


def verdict(mean: float, poster: float, spread: float) -> str:
    if math.isnan(poster) or math.isnan(mean):
        return "-"
    if math.isnan(spread):
        return f"{mean - poster:+.1f} (no ± quoted)"
    return "yes" if abs(mean - poster) <= spread else f"no ({mean - poster:+.1f})"


def table(paths: list[str]) -> str:
    runs = [run for run in load_runs(paths) if run.status.get("status") in ("completed", "diverged")]
    if not runs:
        sys.exit(f"no finished run under {', '.join(paths)}")
    clean = pd.DataFrame(
        {"model": run.config.get("model.name"), "method": run.config.get("method"), "acc": 100 * last(run, "test_acc")} for run in runs
    )
    ours = clean.groupby(["model", "method"])["acc"].agg(["mean", "std", "count"])
    poster = pd.read_csv(POSTER).set_index(["model", "method"])
    lines = ["| method | FC: poster | FC: nin | within | CNN: poster | CNN: nin | within |", "|---|---|---|---|---|---|---|"]
    for method in METHODS:
        cells = [method]
        for model in ("fc", "cnn"):
            p = poster.loc[(model, method)] if (model, method) in poster.index else None
            p_mean, p_std = (float(p["poster_mean"]), float(p["poster_std"])) if p is not None else (math.nan, math.nan)
            p_cell = "-" if math.isnan(p_mean) else f"{p_mean:.1f}" + ("" if math.isnan(p_std) else f" ± {p_std:.1f}")
            if (model, method) in ours.index:
                o = ours.loc[(model, method)]
                o_mean = float(o["mean"])
                o_cell = f"{o_mean:.1f}" + (" (1 seed)" if o["count"] < 2 else f" ± {float(o['std']):.1f}")
            else:
                o_mean, o_cell = math.nan, "-"
            cells += [p_cell, o_cell, verdict(o_mean, p_mean, p_std)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(sys.argv[1:] or ["outputs/sweeps"]))
