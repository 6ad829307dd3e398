"""How closely batched members replay their single runs: for each run directory present in both
sweeps, the largest relative difference of the noisy loss over the first N steps (steps.csv) and
whether the epoch-0 rows are identical.

    python bench/members_vs_single.py BATCHED_SWEEP SINGLE_SWEEP [--steps 20]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("batched", type=Path)
    parser.add_argument("single", type=Path)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    worst = 0.0
    for run in sorted(p.parent for p in args.batched.glob("*/steps.csv")):
        other = args.single / run.name
        if not (other / "steps.csv").exists():
            continue
        b, s = (pd.read_csv(d / "steps.csv").head(args.steps + 1) for d in (run, other))
        rel = float(((b.train_loss - s.train_loss).abs() / s.train_loss.abs()).max())
        same0 = (
            pd.read_csv(run / "metrics.csv")
            .drop(columns="seconds")
            .head(1)
            .equals(pd.read_csv(other / "metrics.csv").drop(columns="seconds").head(1))
        )
        worst = max(worst, rel)
        print(f"{run.name:<40} steps 0..{args.steps}: max rel. diff {rel:.2e}   epoch-0 row identical: {same0}")
    print(f"worst: {worst:.2e}")


if __name__ == "__main__":
    main()
