"""nin's subcommands, in one place: what `nin --help` lists, what each command parses (also what
shell completion offers), and what each does with its parsed arguments: it calls the stage that
does the work and prints what it returned. The stages below return data and print nothing of a
command's own. (`nin train` and `nin map` are Hydra's: nin_cli/interface/cli.py hands them to it.)"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from nin_cli.errors import ConfigError, fail, progress_bar

# Imported where used: each command loads only the stages it runs, so `nin --help` and completion (which read the parser) start in 0.15 s.

if TYPE_CHECKING:
    import pandas as pd

COMMANDS = {
    "train": (
        "train one model, or a sweep with -m (Hydra overrides: nin train model=mlp noise.sigma=3); each run"
        " writes metrics.csv, steps.csv, config.yaml, status.json, checkpoint.pt, env.json, network.json, train.log"
    ),
    "map": (
        "locate phase boundaries adaptively: a coarse grid, then refined where the seeds' majority phase"
        " changes (boundaries.csv, boundaries.md, map_points.csv, map.png)"
    ),
    "summarize": "phases, decay times and final accuracies of runs and sweeps: runs.csv, phases.csv, tables",
    "plot": "figures (png, pdf, svg) in DIR/plots: per-run dynamics, NIW norms, decay times vs sigma, phase diagram, Tr H_z per layer",
    "predict": (
        "phase boundaries and NIW decay times of any network, predicted at init from the local Hessian"
        " (predict.csv, predict_boundaries.csv, predict_layers.csv)"
    ),
    "theory": (
        "theory beside measurement: the linear toy model's analytic phases, or a network's NIW decay from"
        " its recorded curvature (theory.csv, theory.png or theory_niw.png)"
    ),
    "progress": "how far a sweep has got, for any launcher: runs ended / total, by status (--watch: a live bar)",
    "report": "report.md of a sweep: outcome, phase and run tables, figures (also written when a sweep ends)",
    "evaluate": (
        "robustness of trained runs: clean, Gaussian noise, the 15 MNIST-C corruptions,"
        " FGSM/PGD/APGD/AutoAttack (robustness.csv, robustness.yaml)"
    ),
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


# --- the analysis commands --------------------------------------------------------------------------
def split_overrides(items: list[str]) -> tuple[list[str], list[str]]:
    """(paths, key=value overrides): an argument with '=' that is not an existing path is an override."""
    overrides = [p for p in items if "=" in p and not Path(p).exists()]
    paths = [p for p in items if p not in overrides]
    if not paths:
        fail("no run or sweep directory given")
    return paths, overrides


def output_dir(out: str | None, paths: list[str], default_sub: str = "") -> Path:
    """--out, else the single PATH (or PATH/sub), else the current directory (or ./sub)."""
    base = Path(out) if out else (Path(paths[0]) if len(paths) == 1 and Path(paths[0]).is_dir() else Path("."))
    target = base if out else base / default_sub
    target.mkdir(parents=True, exist_ok=True)
    return target


# --- how tables are printed: markdown sections, or rich tables -------------------------------------
def rich_table(df: pd.DataFrame, title: str):
    from rich.table import Table

    from nin_cli.analysis.summarize import format_cell

    colours = {"decoupled": "cyan", "decay": "green", "catapult": "yellow", "divergent": "red"}
    table = Table(title=title, title_justify="left")
    for col in df.columns:
        table.add_column(col, overflow="fold")
    for row in df.itertuples(index=False):
        cells = [format_cell(v) for v in row]
        cells = [f"[{colours[c]}]{c}[/]" if c in colours else c for c in cells]
        table.add_row(*cells)
    return table


def print_tables(tables: list[tuple[str, pd.DataFrame]], fmt: str) -> None:
    """(title, DataFrame) pairs on stdout: markdown sections, or rich tables."""
    from nin_cli.analysis.summarize import markdown

    for title, table in tables:
        if fmt == "markdown":
            print(f"### {title}\n\n{markdown(table)}\n")
        else:
            stdout_console().print(rich_table(table, title))


def stdout_console():
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 160)


def summarize_command(ns) -> None:
    from nin_cli.analysis.summarize import summarize_paths

    paths, overrides = split_overrides(ns.paths)
    out = output_dir(ns.out, paths)
    summary, written = summarize_paths(paths, overrides, out)
    print_tables(summary.tables(), ns.format)
    print(f"wrote {', '.join(written)} to {out}", file=sys.stderr)


def plot_command(ns) -> None:
    from nin_cli.analysis.plots import plot_paths as plot

    paths, overrides = split_overrides(ns.paths)
    for path in plot(paths, overrides, output_dir(ns.out, paths, "plots"), f".{ns.format}", not ns.no_runs):
        print(path)


def report_command(ns) -> None:
    from nin_cli.analysis.report import write_report

    paths, overrides = split_overrides(ns.paths)
    for path in paths:
        written, outcome = write_report(Path(path), overrides)
        print(f"{outcome}; report: {written}")


def theory_command(ns) -> None:
    from nin_cli.analysis.summarize import markdown
    from nin_cli.analysis.theory import theory_tables

    paths, overrides = split_overrides(ns.paths)
    table, lines, title, done, written = theory_tables(paths, overrides, output_dir(ns.out, paths), ns.no_predict)
    if ns.format == "markdown":
        print("\n".join(f"- {line}" for line in lines) + f"\n\n{markdown(table)}\n\n{done}")
    else:
        console = stdout_console()
        for line in lines:
            console.print(f"[bold]boundaries[/] {line}")
        console.print(rich_table(table, title))
        console.print(done)
    print(f"wrote {' and '.join(map(str, written))}", file=sys.stderr)


def predict_command(ns) -> None:
    from nin_cli.analysis.predict import predict_setting as predict

    out = Path(ns.out)
    tables, notes = predict(ns.overrides, ns.samples, ns.sigmas, ns.measured, out, ns.config_dir)
    print_tables(tables, ns.format)
    for note in notes:
        print(f"nin: note: {note}", file=sys.stderr)
    print(f"wrote predict.csv, predict_boundaries.csv, predict_layers.csv to {out}", file=sys.stderr)


def progress_command(ns) -> None:
    from nin_cli.analysis.progress import show_progress

    show_progress(Path(ns.sweep), ns.watch, ns.every)


def evaluate_command(ns) -> None:
    paths, overrides = split_overrides(ns.paths)
    evaluate(paths, overrides, ns.device, ns.force, not ns.no_progress)


def export_command(ns) -> None:
    from nin_cli.analysis.export import export_tensorboard

    out = output_dir(ns.out, ns.paths, "tensorboard")
    written = export_tensorboard(ns.paths, out)
    print(f"wrote {len(written)} event folder(s) to {out}; view them with: tensorboard --logdir {out}")


def download_command(ns) -> None:
    from nin_cli.data.datasets import download

    print(f"downloaded {ns.dataset} to {download(ns.dataset, ns.root)}")


HANDLERS: dict[str, Callable] = {
    "summarize": summarize_command,
    "plot": plot_command,
    "report": report_command,
    "theory": theory_command,
    "predict": predict_command,
    "progress": progress_command,
    "evaluate": evaluate_command,
    "export": export_command,
    "download": download_command,
}


def evaluate(paths: list[str], overrides: list[str], device: str | None, force: bool, show_progress: bool) -> None:
    """`nin evaluate`: robustness.csv for every trained run under `paths` that lacks one (all with
    `force`), resuming interrupted evaluations; a line per run. A run that cannot be evaluated is a
    warning and the others go on; the command then fails (exit 1) naming how many. A run another
    process holds (training, or another `nin evaluate` of the same sweep: several share a sweep so)
    is left to it with a line, not counted as a failure."""
    from nin_cli.analysis.runs import find_runs
    from nin_cli.config.schema import load_settings
    from nin_cli.data.perturbations import missing_extra, plan
    from nin_cli.errors import RecordError, RunInUse
    from nin_cli.records.store import ROBUSTNESS, ROBUSTNESS_PARTIAL
    from nin_cli.robustness.evaluate import clean_accuracy, evaluate_run, left_to_holder, strongest_attack

    rcfg = load_settings("robustness", overrides)
    tasks = plan(rcfg)
    skipped = missing_extra(tasks, warn=True)
    runs = [r for r in find_runs(paths) if (r / "checkpoint.pt").exists()]
    if not runs:
        raise ConfigError("no trained runs (with checkpoint.pt) found")
    todo = []
    for run in runs:
        if (run / ROBUSTNESS).exists() and not force:
            print(f"{run}: robustness.csv exists; skipping (--force re-evaluates)", file=sys.stderr)
        else:
            todo.append(run)
    per_run = len(tasks) - len(skipped)
    bad = busy = 0
    with progress_bar(show_progress) as bar:
        task = bar.add_task("evaluate", total=len(todo) * per_run, info="")
        for k, run in enumerate(todo):
            if (run / ROBUSTNESS_PARTIAL).exists():
                bar.console.print(f"{run}: resuming an interrupted evaluation", style="dim")
            bar.update(task, completed=k * per_run, info=f"run {k + 1}/{len(todo)}: {run.name}")
            try:
                table = evaluate_run(
                    run,
                    rcfg,
                    device,
                    on_row=lambda row: bar.update(task, advance=1, info=f"{row['perturbation']} {row['severity']:g}"),
                    keep=not force,
                )
            except RunInUse as exc:  # its owner trains or evaluates it: go on with the others
                bar.console.print(left_to_holder(run, exc), style="dim")
                busy += 1
                continue
            except (ConfigError, RecordError) as exc:  # one bad run of a sweep: say so, evaluate the others
                bar.console.print(f"nin: warning: {run}: skipped: {exc}", style="yellow")
                bad += 1
                continue
            bar.update(task, completed=(k + 1) * per_run)
            if table is None:
                print(f"{run}: robustness.csv written meanwhile by another process; skipping", file=sys.stderr)
                continue
            print(f"{run}: clean {clean_accuracy(table):.4f}{strongest_attack(table)} -> {run / ROBUSTNESS}")
    if busy:
        left = f"{busy} run(s) in use by other processes were left to them"
        print(f"{left}; run this again later for any still without {ROBUSTNESS}", file=sys.stderr)
    if bad:
        fail(f"{bad} of {len(runs)} run(s) could not be evaluated (warnings above)", 1)
