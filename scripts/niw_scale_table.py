"""The sigma x NIW-scale maps (the CNN's, the FC's) as one grid per placement (markdown), for docs/ninr.md.

    python scripts/niw_scale_table.py outputs/sweeps/cnn_niw_scale_input outputs/sweeps/cnn_niw_scale_all
    python scripts/niw_scale_table.py outputs/sweeps/fc_niw_scale_input outputs/sweeps/fc_niw_scale_all

Reads each map's phases.csv (what `nin summarize DIR` writes: a row per nin.init and sigma, the
seeds' phases, tau_niw and final test accuracy as mean and std over seeds) and prints a row per
NIW scale, a column per sigma: the seeds' phase votes, tau_niw in epochs (where the majority
decays or catapults and the fit found a time; else -) and the clean test accuracy in percent
(the mean over the 3 seeds, a divergent seed counted at its chance accuracy). Copies each phases.csv and
runs.csv to docs/ninr_niw_scale/ (named by the map's directory)."""

from __future__ import annotations

import math
import shutil
import sys
from pathlib import Path

import pandas as pd

DOCS = Path(__file__).resolve().parent.parent / "docs" / "ninr_niw_scale"
SCALES = ("unit", "layer", "input", "0.01")  # largest first; any other scale a map has follows


def votes(text: str) -> str:
    """`decay:2 catapult:1` -> `decay 2, cat 1`."""
    parts = [p.split(":") for p in str(text).split()]
    return ", ".join(f"{name} {n}" for name, n in parts)


def cell(row: pd.Series) -> str:
    tau = row["tau_niw_mean"] if row["phase"] in ("decay", "catapult") else math.nan  # a time only where the NIW moves
    tau_text = "-" if not math.isfinite(tau) else (f"{tau:.2g}" if tau < 10 else f"{tau:.0f}")
    acc = 100 * row["final_test_acc_mean"]
    return f"{votes(row['phases'])}; {tau_text}; {acc:.1f}"


def grid(sweep: Path) -> str:
    table = pd.read_csv(sweep / "phases.csv", dtype={"nin.init": str})
    table = table[table["phase"] != "unknown"]  # a point whose runs have not ended (the map's next round, interrupted)
    sigmas = sorted(table["noise.sigma"].unique())
    lines = ["| nin.init | " + " | ".join(f"sigma {s:g}" for s in sigmas) + " |", "|---" * (len(sigmas) + 1) + "|"]
    present = set(table["nin.init"])
    for scale in [s for s in SCALES if s in present] + sorted(present - set(SCALES)):  # other scales mapped: after
        rows = table[table["nin.init"] == scale].set_index("noise.sigma")
        lines.append(f"| {scale} | " + " | ".join(cell(rows.loc[s]) if s in rows.index else "" for s in sigmas) + " |")
    return "\n".join(lines)


def main(sweeps: list[str]) -> None:
    DOCS.mkdir(parents=True, exist_ok=True)
    for sweep in map(Path, sweeps):
        for name in ("phases.csv", "runs.csv", "boundaries.csv", "map.png"):
            if (sweep / name).exists():
                shutil.copyfile(sweep / name, DOCS / f"{sweep.name}_{name}")
        print(f"{sweep.name} (cell: the seeds' phases; tau_niw in epochs; clean test accuracy, %)\n\n{grid(sweep)}\n")


if __name__ == "__main__":
    main(sys.argv[1:] or ["outputs/sweeps/cnn_niw_scale_input", "outputs/sweeps/cnn_niw_scale_all"])
