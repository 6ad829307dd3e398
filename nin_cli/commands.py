"""nin's subcommands and their arguments: what `nin --help` lists, what each command parses, and
what shell completion offers (one table, read by the CLI and the completer alike)."""

from __future__ import annotations

import argparse

COMMANDS = {
    "train": "train one model, or a sweep with -m (Hydra overrides: nin train model=mlp noise.sigma=3)",
    "map": "locate phase boundaries adaptively: a coarse grid, then refined where the seeds' majority phase changes (boundaries.csv)",
    "summarize": "phases, decay times and final accuracies of runs and sweeps: runs.csv, phases.csv, tables",
    "plot": "figures (png, pdf, svg): per-run dynamics, NIW norms, decay times vs sigma, phase diagram, Tr H_z per layer",
    "predict": "phase boundaries and NIW decay times of any network, predicted at init from the local Hessian (predict.csv)",
    "theory": "theory beside measurement: the linear toy model's analytic phases, or a network's NIW decay from its recorded curvature",
    "progress": "how far a sweep has got, for any launcher: runs ended / total, by status (--watch: a live bar)",
    "report": "report.md of a sweep: outcome, phase and run tables, figures (also written when a sweep ends)",
    "evaluate": "robustness of trained runs: clean, Gaussian noise, the 15 MNIST-C corruptions, FGSM/PGD/APGD/AutoAttack (robustness.csv)",
    "export": "TensorBoard event folders of runs and sweeps: nin export tensorboard DIR (needs the tensorboard extra)",
    "download": "fetch a dataset with torchvision into the cache (needs the network)",
}


def parser(command: str) -> argparse.ArgumentParser:
    """Each subcommand's arguments (also what shell completion offers)."""
    p = argparse.ArgumentParser(prog=f"nin {command}", description=COMMANDS[command])
    paths = "run or sweep directories, or key=value overrides of conf/analysis.yaml"
    if command == "summarize":
        p.add_argument("paths", nargs="+", help=paths)
        p.add_argument("--out", help="where the CSVs go (default: the single PATH, else .)")
        p.add_argument("--format", choices=["rich", "markdown"], default="rich")
    elif command == "plot":
        p.add_argument("paths", nargs="+", help=paths)
        p.add_argument("--out", help="figure directory (default: PATH/plots for a single PATH, else ./plots)")
        p.add_argument("--no-runs", action="store_true", help="skip the per-run figures")
        p.add_argument("--format", choices=["png", "pdf", "svg"], default="png", help="figure file format")
    elif command == "report":
        p.add_argument("paths", nargs="+", help="sweep directories, or key=value overrides of conf/analysis.yaml")
    elif command == "theory":
        p.add_argument("paths", nargs="+", help="runs or sweeps: the linear toy model, or networks with recorded NIW curvature")
        p.add_argument("--out", help="where theory.csv and the figures go")
        p.add_argument("--format", choices=["rich", "markdown"], default="rich")
        p.add_argument("--no-predict", action="store_true", help="networks: skip the boundaries predicted at init (nin predict)")
    elif command == "predict":
        p.add_argument("overrides", nargs="*", help="the config, as for nin train (e.g. +experiment=fig3 model.width=512)")
        p.add_argument("--config-dir", "-cd", action="append", default=[], help="a config directory of your own, as for nin train")
        p.add_argument("--samples", type=int, help="training samples the Hessian is measured on (default: hessian.samples)")
        p.add_argument("--sigmas", help="comma-separated noise.sigma values to tabulate (default: the experiment's sweep grid)")
        p.add_argument(
            "--measured", help="a phases.csv of `nin summarize` (the same setting): its sigmas, measured phase and tau_niw beside"
        )
        p.add_argument("--out", default="outputs/predict", help="where predict.csv and predict_boundaries.csv go")
        p.add_argument("--format", choices=["rich", "markdown"], default="rich")
    elif command == "progress":
        p.add_argument("sweep", help="a sweep directory (hydra.sweep.dir)")
        p.add_argument("--watch", action="store_true", help="a live bar until every run has ended (Ctrl-C leaves)")
        p.add_argument("--every", type=float, default=10.0, help="seconds between reads with --watch (default 10)")
    elif command == "evaluate":
        p.add_argument("paths", nargs="+", help="run or sweep directories, or key=value overrides of conf/robustness/default.yaml")
        p.add_argument("--device", choices=["cpu", "cuda"], help="evaluate on this device instead of the run's")
        p.add_argument("--force", action="store_true", help="re-evaluate runs that already have robustness.csv")
        p.add_argument("--no-progress", action="store_true", help="no progress bar")
    elif command == "export":
        p.add_argument("format", choices=["tensorboard"])
        p.add_argument("paths", nargs="+", help="run or sweep directories")
        p.add_argument("--out", help="where the event folders go (default: PATH/tensorboard for one PATH, else ./tensorboard)")
    elif command == "download":
        p.add_argument("dataset", choices=["fashion_mnist", "mnist", "cifar10"])
        p.add_argument("--root", help="target directory (default: $NIN_DATA_DIR or ~/.cache/nin)")
    return p
