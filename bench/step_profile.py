"""Where a single run's training epoch spends its time: torch.profiler over one epoch of `nin
train`'s step (after a warm-up epoch), the operators by self time and the share of the matrix
products (the GEMM floor of bench/speed.py counts only those).

    python bench/step_profile.py --settings fig3      # fig1 | fig3 | cnn, full training set
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from speed import SETTINGS, nin_ensemble, setting_overrides

from nin_cli.config.schema import conf_dir
from nin_cli.data.datasets import load_dataset

GEMMS = ("aten::baddbmm", "aten::baddbmm_", "aten::bmm", "aten::mm", "aten::addmm", "aten::mkldnn_convolution")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", nargs="+", default=["fig1", "fig3"], choices=list(SETTINGS))
    parser.add_argument("--rows", type=int, default=12, help="operators shown")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    for setting in args.settings:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            cfg = compose("train", overrides=setting_overrides(setting, "cpu"))
        data = load_dataset(cfg.dataset, torch.device("cpu"))
        with tempfile.TemporaryDirectory() as tmp:
            single = nin_ensemble([cfg], data, Path(tmp))
            single.train_epoch([1.0])  # warm-up
            with torch.profiler.profile() as prof:
                single.train_epoch([1.0])
        ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
        total = sum(e.self_cpu_time_total for e in ops)
        gemm = sum(e.self_cpu_time_total for e in ops if e.key in GEMMS)
        print(f"\n{setting}: the {single.step.kind} step, {total / 1e3:.0f} ms of operator time in an epoch", end="")
        print(f", matrix products {gemm / total:.0%}")
        for e in ops[: args.rows]:
            print(f"  {e.key:<32} {e.self_cpu_time_total / 1e3:>9.1f} ms {e.self_cpu_time_total / total:>6.1%} {e.count:>7} calls")


if __name__ == "__main__":
    main()
