"""Does the cheaper per-epoch measurement record the same quantities? One run per setting, trained
for an epoch on the full training set, measured twice on the same weights: at the former defaults
(clean train metrics on all 60,000 images, Tr H_z and the NIW curvature on 1000 samples with 4
probes) and at today's (10,000 images; 500 samples, 1 probe). For each column: both values with
their standard errors, and the difference in units of the combined error (|z| < 3 agrees).

    python bench/measurement.py                    # fig1 fig3 cnn, CPU
    python bench/measurement.py --settings cnn --epochs 2
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from hydra import compose, initialize_config_dir
from speed import SETTINGS, former_measurement, measured

from nin_cli.config.schema import conf_dir
from nin_cli.records.store import RunRecords
from nin_cli.train import Member
from nin_cli.train.loop import Ensemble
from nin_cli.train.setup import prepare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--epochs", type=int, default=1, help="epochs trained before measuring")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    print(f"{'setting':<7} {'column':<24} {'former ± se':>24} {'now ± se':>24} {'z':>6}")
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"), tempfile.TemporaryDirectory() as tmp:
        for setting in args.settings:
            # the CNN with a NIN at every layer, so the curvature of a NIW at a convolution's input shows too
            extra = ["nin=all", "noise.sigma=3"] if setting == "cnn" else []
            cfg = compose("train", overrides=[*SETTINGS[setting], *extra, f"device={args.device}", "progress=false"])
            run = Ensemble([Member(prepare(cfg), RunRecords(Path(tmp) / setting))])
            for _ in range(args.epochs):
                run.train_epoch([1.0])
            setup = run.members[0].s
            now, t_now = measured(setup)
            former, t_former = measured(replace(setup, cfg=former_measurement(setup.cfg)))
            for col in now:
                if f"se_{col}" not in now:
                    continue
                se = math.hypot(now[f"se_{col}"], former[f"se_{col}"])
                z = (now[col] - former[col]) / se if se > 0 else math.nan
                left, right = f"{former[col]:.5g} ± {former[f'se_{col}']:.2g}", f"{now[col]:.5g} ± {now[f'se_{col}']:.2g}"
                print(f"{setting:<7} {col:<24} {left:>24} {right:>24} {z:>6.2f}", flush=True)
            print(f"{setting:<7} {'(seconds to measure)':<24} {t_former:>24.2f} {t_now:>24.2f}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
