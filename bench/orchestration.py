"""What a sweep costs around its training: the pre-flight, the launcher's bookkeeping and the
sweep's report and plots, per job, beside the training itself, at 50, 400 and 2000 jobs.

    python bench/orchestration.py                     # 50, 400 and 2000 jobs
    python bench/orchestration.py --jobs 50 400

The sweep is the linear toy model over sigma (`nin train -m +experiment=linear_toy
"hydra.sweeper.params={noise.sigma:'range(1,N+1)'}" epochs=2 hydra/launcher=batched`): its
training is cheap, so what surrounds it shows. Columns: the command's wall-clock time; the
pre-flight's seconds per job (every job composed, resolved and checked: preflight.check_command,
timed in this process); the training (the runs' recorded seconds, summed); and the rest per job
(the launcher's bookkeeping, .hydra/ files and run directories, and the report and plots at the
sweep's end), after the fixed start of a one-job sweep is taken off.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nin_cli.config.preflight import check_command


def command(n: int) -> list[str]:
    return ["+experiment=linear_toy", f"hydra.sweeper.params={{noise.sigma:'range(1,{n + 1})'}}", "epochs=2", "hydra/launcher=batched"]


def preflight_seconds(n: int) -> float:
    start = time.perf_counter()
    check_command(command(n), multirun=True)
    return time.perf_counter() - start


def sweep(n: int, where: Path) -> tuple[float, float]:
    """(wall-clock seconds of the whole command, the runs' training seconds summed)."""
    out = where / f"jobs{n}"
    start = time.perf_counter()
    nin = Path(sys.executable).parent / "nin"
    subprocess.run(
        [str(nin), "train", "-m", *command(n), "progress=false", f"hydra.sweep.dir={out}"],
        check=True,
        capture_output=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    wall = time.perf_counter() - start
    training = sum(float(row["seconds"]) for path in out.glob("*/metrics.csv") for row in csv.DictReader(open(path)))
    assert len(list(out.glob("*/metrics.csv"))) == n, "a run is missing"
    return wall, training


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, nargs="+", default=[50, 400, 2000])
    args = parser.parse_args()
    preflight_seconds(2)  # imports and the first composition: the fixed start, not a job's cost
    where = Path(tempfile.mkdtemp(prefix="nin-orchestration-"))
    try:
        fixed_wall, fixed_training = sweep(1, where)
        fixed = fixed_wall - fixed_training - preflight_seconds(1)
        print(f"fixed start of a sweep (a one-job sweep less its pre-flight and training): {fixed:.1f} s")
        print(f"{'jobs':>6} {'wall s':>8} {'pre-flight ms/job':>18} {'training s':>11} {'rest ms/job':>12} {'training share':>15}")
        for n in args.jobs:
            pre = preflight_seconds(n)
            wall, training = sweep(n, where)
            rest = wall - fixed - pre - training
            print(f"{n:>6} {wall:>8.1f} {1000 * pre / n:>18.1f} {training:>11.1f} {1000 * rest / n:>12.1f} {100 * training / wall:>14.0f}%")
    finally:
        shutil.rmtree(where, ignore_errors=True)


if __name__ == "__main__":
    main()
