"""Time to read and summarize a sweep: N runs, each with a metrics.csv of E epochs and a steps.csv
of S logged steps (synthetic values in nin's real file layout), read by nin's analysis code.

    python bench/read_speed.py                  # 30 runs x 50,000 steps
    python bench/read_speed.py --runs 30 --steps 50000 --epochs 50

Prints the reading time (load_runs: every CSV, status and config) and the summary time (phases,
fits: run_rows), median of --repeats.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def write_sweep(root: Path, runs: int, epochs: int, steps: int) -> None:
    rng = np.random.default_rng(0)
    for r in range(runs):
        run = root / f"noise.sigma={r},seed=0"
        run.mkdir(parents=True)
        (run / "config.yaml").write_text(f"seed: 0\nnoise:\n  sigma: {float(r)}\nepochs: {epochs}\n")
        (run / "status.json").write_text(json.dumps({"status": "completed", "epoch": epochs, "epochs": epochs}))
        e = np.arange(epochs + 1)
        decay = np.exp(-e / 5.0)
        cols = {
            "epoch": e,
            "step": e * (steps // epochs),
            "sigma": np.full(epochs + 1, float(r)),
            "train_loss": 0.3 + decay,
            "train_loss_clean": 0.3 + decay,
            "train_acc": 0.9 - 0.5 * decay,
            "test_loss": 0.35 + decay,
            "test_acc": 0.88 - 0.5 * decay,
            "niw_norm_fc1": 0.8 * decay + 0.01,
            "weight_norm_out": 1 + 0.1 * e,
            "hessian_trace_fc1": rng.random(epochs + 1),
            "lr": np.full(epochs + 1, 0.05),
            "seconds": rng.random(epochs + 1),
        }
        header = ",".join(cols)
        np.savetxt(run / "metrics.csv", np.column_stack(list(cols.values())), delimiter=",", header=header, comments="", fmt="%r")
        s = np.arange(steps + 1)
        step_cols = [
            s,
            s // (steps // epochs) + 1,
            np.full(steps + 1, float(r)),
            0.3 + rng.random(steps + 1),
            0.8 * np.exp(-s / steps),
            1 + s / steps,
        ]
        header = "step,epoch,sigma,train_loss,niw_norm_fc1,weight_norm_out"
        np.savetxt(run / "steps.csv", np.column_stack(step_cols), delimiter=",", header=header, comments="", fmt="%.17g")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--steps", type=int, default=50_000)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from nin_cli.analysis.runs import load_runs
    from nin_cli.analysis.summarize import run_rows
    from nin_cli.config.schema import load_settings

    acfg = load_settings("analysis")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_sweep(root, args.runs, args.epochs, args.steps)
        read_t, summary_t = [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            runs = load_runs([root])
            t1 = time.perf_counter()
            run_rows(runs, acfg, root)
            read_t.append(t1 - t0)
            summary_t.append(time.perf_counter() - t1)
        assert len(runs) == args.runs and all(len(r.steps) == args.steps + 1 for r in runs)
    print(f"{args.runs} runs x {args.steps} steps: read {statistics.median(read_t):.2f} s, summarize {statistics.median(summary_t):.2f} s")


if __name__ == "__main__":
    main()
