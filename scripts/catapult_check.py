"""Are a sweep's catapult runs the papers' catapult? Each run's signature (analysis/catapult.py), read
from its records, and what it lacks of the sequence the papers mean.

    python scripts/catapult_check.py outputs/sweeps/poster/cnn_in_ninr [more sweeps] [--method catapult]
        [--csv docs/ninr/catapult_check.csv]

A row per run (its directory's name) and NIN, with its NIWs' initial scale: the NIW's rise and
when it peaked, the noisy loss's rise, how far the next layer's weights fell from their peak, how
far Tr H_z fell below epoch 0's, the clean loss at the end against epoch 0's, the NIW at the end
against its peak, and the verdict with the classifier's thresholds (conf/analysis.yaml).
"""

from __future__ import annotations

import argparse
import dataclasses

import pandas as pd

from nin_cli.analysis.catapult import signature
from nin_cli.analysis.runs import load_runs
from nin_cli.config.schema import load_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweeps", nargs="+")
    parser.add_argument("--method", default="catapult", help="runs whose method contains this (default: catapult)")
    parser.add_argument("--csv", help="also write the table here")
    args = parser.parse_args()
    thresholds = load_settings("analysis").phases
    rows = []
    for run in load_runs(args.sweeps):
        if args.method not in str(run.config.get("method", "")) or run.status.get("status") not in ("completed", "diverged"):
            continue
        for nin in run.nin_layers:
            sig = signature(run, nin)
            lacks = sig.missing(thresholds)
            rows.append(
                {
                    "run": run.path.name,
                    "model": run.config.get("model.name"),
                    "method": run.config.get("method"),
                    "seed": run.config.get("seed"),
                    "sigma": run.sigma,
                    "nin.init": run.config.get("nin.init"),
                    **dataclasses.asdict(sig),
                    "papers_catapult": not lacks,
                    "lacks": "; ".join(lacks),
                }
            )
    table = pd.DataFrame(rows)
    if table.empty:
        raise SystemExit(f"no finished {args.method} run under {', '.join(args.sweeps)}")
    with pd.option_context("display.width", 250, "display.max_columns", 30, "display.max_colwidth", 120):
        print(table.drop(columns="lacks").round(3).to_string(index=False))
        for row in table.itertuples():
            if row.lacks:
                print(f"{row.run} {row.nin}: {row.lacks}")
    if args.csv:
        table.round(4).to_csv(args.csv, index=False)


if __name__ == "__main__":
    main()
