"""The `nin` command: wires the stages together, nothing more.

`nin train ...` is a Hydra app (all of Hydra's flags work: -m, --cfg job, --help); the other
subcommands are plain argparse programs over run directories.
"""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import contextmanager
from pathlib import Path

from nin_cli.errors import ConfigError, RecordError
from nin_cli.schema import conf_dir

COMMANDS = {
    "train": "train one model, or a sweep with -m (Hydra overrides: nin train model=mlp noise.sigma=3)",
    "summarize": "phases, decay times and final accuracies of runs and sweeps: runs.csv, phases.csv, tables",
    "plot": "figures (png, pdf, svg): per-run dynamics, NIW norms, decay times vs sigma, phase diagram, Tr H_z per layer",
    "predict": "phase boundaries and NIW decay times of any network, predicted at init from the local Hessian (predict.csv)",
    "theory": "theory beside measurement: the linear toy model's analytic phases, or a network's NIW decay from its recorded curvature",
    "progress": "how far a sweep has got, for any launcher: runs ended / total, by status (--watch: a live bar)",
    "report": "report.md of a sweep: outcome, phase and run tables, figures (also written when a sweep ends)",
    "evaluate": "robustness of trained runs: clean, Gaussian noise, the 15 MNIST-C corruptions, FGSM/PGD/APGD/AutoAttack (robustness.csv)",
    "export": "TensorBoard event folders of runs and sweeps: nin export tensorboard DIR (needs nin-cli[tensorboard])",
    "download": "fetch a dataset with torchvision into the cache (needs the network)",
}


def register_resolvers() -> None:
    from omegaconf import OmegaConf

    from nin_cli.identity import run_dirname

    if not OmegaConf.has_resolver("nin_dirname"):
        OmegaConf.register_new_resolver("nin_dirname", run_dirname)


register_resolvers()


def fail(message: str, code: int = 2) -> None:
    print(f"nin: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def check_group_choices(overrides: list[str], conf: Path) -> None:
    """Reject `group=option` for an option that does not exist, in one line, before Hydra starts."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    candidates = [o for o in overrides if "=" in o and not o.startswith("-")]
    try:
        parsed = OverridesParser.create().parse_overrides(candidates)
    except HydraException as exc:
        fail(str(exc).splitlines()[0])
    for override in parsed:
        group = override.key_or_group
        if "/" in group or "." in group or not (conf / group).is_dir() or override.is_delete():
            continue
        options = sorted(p.stem for p in (conf / group).glob("*.yaml"))
        values = list(override.sweep_string_iterator()) if override.is_sweep_override() else [override.get_value_element_as_str()]
        for value in values:
            if value not in options:
                fail(f"unknown {group} {value!r}; choose from: {', '.join(options)}")


def validate_jobs(args: list[str], conf: Path) -> None:
    """Compose and check every job of the command (each job of a -m sweep, the experiment's own
    sweep grid included) before the first one trains: one line names the bad job and value."""
    from hydra import compose, initialize_config_dir
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from nin_cli.conventions import resolve_paper_sigma
    from nin_cli.schema import check_train_config, train_schema

    overrides = [a for a in args if not a.startswith("-")]
    parser = OverridesParser.create()
    parsed = parser.parse_overrides(overrides)
    schema = train_schema(conf)
    for override in parsed:  # typos first, with the closest valid key
        key = override.key_or_group
        if not key.startswith("hydra") and not (conf / key).is_dir():
            schema.check_key(key)
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        if "-m" in args or "--multirun" in args:
            fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
            base = compose("train", overrides=fixed, return_hydra_config=True)
            grid = [f"{k}={v}" for k, v in (base.hydra.sweeper.get("params") or {}).items()]
            swept = parser.parse_overrides(grid + overrides)
            jobs = BasicSweeper.split_arguments(swept, None)[0]
            varied = tuple(f"{o.get_key_element()}=" for o in swept if o.is_sweep_override())
        else:
            jobs, varied = [overrides], ()
        for job in jobs:
            where = f" (sweep job {' '.join(o for o in job if o.startswith(varied))})" if varied else ""
            try:
                cfg = compose("train", overrides=job)
                check_train_config(resolve_paper_sigma(cfg))
            except ConfigError as exc:
                fail(f"{exc}{where}")
            except Exception as exc:  # Hydra's composition errors: their first line says it
                fail(f"{str(exc).splitlines()[0]}{where}")


def run_task(cfg) -> str:
    """Hydra's task function: one run in Hydra's output directory."""
    from hydra.core.hydra_config import HydraConfig

    from nin_cli.errors import console
    from nin_cli.train import run_jobs

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    with one_line_errors():
        (result,) = run_jobs([cfg], [run_dir])
    colour = {"completed": "green", "diverged": "yellow"}.get(result.status, "red")
    detail = f" ({result.reason})" if result.reason else ""
    console.print(f"[{colour}]{result.status}[/] at epoch {result.epoch}{detail}: {run_dir}")
    return result.status


@contextmanager
def one_line_errors():
    """What a user can cause or fix (bad input, damaged or locked records, a full or read-only
    disk, a signal) ends in one line and an exit code, never a traceback."""
    from nin_cli.train import Interrupted

    try:
        yield
    except ConfigError as exc:
        fail(str(exc))
    except RecordError as exc:
        fail(str(exc), 1)
    except Interrupted as exc:
        print(f"nin: interrupted by {exc}; rerun the same command (same directory) to resume", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        fail(f"cannot write or read the run's files: {where}{exc.strerror or exc} (status.json says where the run stopped)", 1)


def train_command(args: list[str]) -> None:
    import hydra

    conf = conf_dir()
    modes = [a for a in args if a in ("-m", "--multirun", "--cfg", "-c", "--info", "-i", "--shell-completion", "-sc")]
    if len({m.lstrip("-")[:1] for m in modes}) > 1:  # Hydra raises a ValueError for these
        fail(f"{' and '.join(modes)} cannot be combined: use one of -m, --cfg, --info")
    check_group_choices(args, conf)
    if not any(a in args for a in ("--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "--shell-completion")):
        validate_jobs(args, conf)
    sys.argv = ["nin train", *args]
    hydra.main(config_path=str(conf), config_name="train", version_base="1.3")(run_task)()


def sweep_sigmas(hydra_cfg, cfg) -> list[float]:
    """The noise scales of the experiment's sweep grid (noise.sigma or noise.sigma2_paper), else a
    log grid of the papers' units from 1e-5 to 100 (of sigma from 0.01 to 1000 where no unit exists)."""
    import math

    from hydra.core.override_parser.overrides_parser import OverridesParser

    from nin_cli.conventions import flat_config, sigma2_per_paper_unit

    unit = sigma2_per_paper_unit(flat_config(cfg))
    params = hydra_cfg.hydra.sweeper.get("params") or {}
    for key, to_sigma in (("noise.sigma", float), ("noise.sigma2_paper", lambda u: math.sqrt(float(u) * unit))):
        if key in params and (key == "noise.sigma" or math.isfinite(unit)):
            override = OverridesParser.create().parse_overrides([f"{key}={params[key]}"])[0]
            return sorted(to_sigma(v) for v in override.sweep_string_iterator())
    if math.isfinite(unit):
        return [math.sqrt(10 ** (k / 2) * 1e-5 * unit) for k in range(15)]
    return [10 ** (k / 2) * 0.01 for k in range(11)]


def predict_command(args: list[str]) -> None:
    import pandas as pd
    from hydra import compose, initialize_config_dir

    from nin_cli.analysis.predict import predict
    from nin_cli.analysis.summarize import analysis_config, write_csv
    from nin_cli.conventions import resolve_paper_sigma
    from nin_cli.train.setup import prepare

    parser = argparse.ArgumentParser(prog="nin predict", description=COMMANDS["predict"])
    parser.add_argument("overrides", nargs="*", help="the config, as for nin train (e.g. +experiment=fig3 model.width=512)")
    parser.add_argument("--samples", type=int, help="training samples the Hessian is measured on (default: hessian.samples)")
    parser.add_argument("--sigmas", help="comma-separated noise.sigma values to tabulate (default: the experiment's sweep grid)")
    parser.add_argument(
        "--measured", help="a phases.csv of `nin summarize` (the same setting): its sigmas, with the measured phase and tau_niw beside"
    )
    parser.add_argument("--out", default="outputs/predict", help="where predict.csv and predict_boundaries.csv go")
    parser.add_argument("--format", choices=["rich", "markdown"], default="rich")
    ns = parser.parse_intermixed_args(args)
    conf = conf_dir()
    check_group_choices(ns.overrides, conf)
    validate_jobs(ns.overrides, conf)
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        hydra_cfg = compose("train", overrides=ns.overrides, return_hydra_config=True)
        cfg = resolve_paper_sigma(compose("train", overrides=ns.overrides))
    measured = None
    if ns.measured:
        try:
            measured = pd.read_csv(ns.measured)
            measured = measured[["noise.sigma", "phase", "tau_niw_mean"]].rename(
                columns={"phase": "measured_phase", "tau_niw_mean": "tau_niw_measured"}
            )
        except (OSError, ValueError, KeyError) as exc:
            fail(f"{ns.measured}: not a phases.csv of nin summarize ({exc})")
    with one_line_errors():
        if ns.sigmas:
            sigmas = [float(v) for v in ns.sigmas.split(",")]
        else:
            sigmas = list(measured["noise.sigma"]) if measured is not None else sweep_sigmas(hydra_cfg, cfg)
        result = predict(prepare(cfg), analysis_config(conf), ns.samples)
    out = Path(ns.out)
    out.mkdir(parents=True, exist_ok=True)
    table, bounds = result.table(sigmas), result.boundary_table()
    if measured is not None:  # beside each predicted sigma, the measured row at that sigma (within rounding)
        table = pd.merge_asof(
            table.sort_values("noise.sigma"), measured.sort_values("noise.sigma"), on="noise.sigma", tolerance=1e-6, direction="nearest"
        )
        table["agree"] = table["predicted_phase"] == table["measured_phase"]
    write_csv(table, out / "predict.csv")
    write_csv(bounds, out / "predict_boundaries.csv")
    write_csv(result.per_layer, out / "predict_layers.csv")
    titles = [
        ("curvature at initialisation, per NIN layer (sigma^2 of each layer's own boundaries)", result.per_layer),
        ("predicted boundaries (sigma^2 = sigma2_paper x one paper unit)", bounds),
        ("predicted phase and initial tau_niw (epochs) per sigma", table),
    ]
    print_tables(titles, ns.format)
    for note in result.notes:
        print(f"nin: note: {note}", file=sys.stderr)
    print(f"wrote predict.csv, predict_boundaries.csv, predict_layers.csv to {out}", file=sys.stderr)


def download_command(args: list[str]) -> None:
    from nin_cli.data import download

    parser = argparse.ArgumentParser(prog="nin download", description=COMMANDS["download"])
    parser.add_argument("dataset", choices=["fashion_mnist", "mnist", "cifar10"])
    parser.add_argument("--root", help="target directory (default: $NIN_DATA_DIR or ~/.cache/nin)")
    ns = parser.parse_intermixed_args(args)
    print(f"downloaded {ns.dataset} to {download(ns.dataset, ns.root)}")


def path_parser(command: str, paths_help: str, out_help: str | None = None, formats: bool = True) -> argparse.ArgumentParser:
    """The shape every analysis command shares: PATH... (and key=value overrides), --out, --format."""
    parser = argparse.ArgumentParser(prog=f"nin {command}", description=COMMANDS[command])
    parser.add_argument("paths", nargs="+", help=paths_help)
    if out_help:
        parser.add_argument("--out", help=out_help)
    if formats:
        parser.add_argument("--format", choices=["rich", "markdown"], default="rich")
    return parser


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


def print_tables(tables, fmt: str) -> None:
    """(title, DataFrame) pairs on stdout: markdown sections, or rich tables."""
    from nin_cli.analysis.summarize import markdown, rich_table

    for title, table in tables:
        if fmt == "markdown":
            print(f"### {title}\n\n{markdown(table)}\n")
        else:
            stdout_console().print(rich_table(table, title))


def stdout_console():
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 160)


def summarize_command(args: list[str]) -> None:
    import warnings

    from nin_cli.analysis.runs import load_runs
    from nin_cli.analysis.summarize import analysis_config, summarize

    ns = path_parser(
        "summarize",
        "run or sweep directories, or key=value overrides of conf/analysis.yaml",
        "where the CSVs go (default: the single PATH, else .)",
    ).parse_intermixed_args(args)
    paths, overrides = split_overrides(ns.paths)
    acfg = analysis_config(conf_dir(), overrides)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runs = load_runs(paths)
    for w in caught:
        print(f"nin: warning: {w.message}", file=sys.stderr)
    for run in runs:
        for problem in run.warnings:
            print(f"nin: warning: {run.path}: {problem}", file=sys.stderr)
    if not runs:
        fail(f"no runs found under {', '.join(paths)}")
    out = output_dir(ns.out, paths)
    summary = summarize(runs, acfg, Path(paths[0]) if len(paths) == 1 else None)
    written = summary.write(out)
    print_tables(summary.tables(), ns.format)
    print(f"wrote {', '.join(written)} to {out}", file=sys.stderr)


def export_command(args: list[str]) -> None:
    from nin_cli.analysis.export import export_tensorboard

    parser = argparse.ArgumentParser(prog="nin export", description=COMMANDS["export"])
    parser.add_argument("format", choices=["tensorboard"])
    parser.add_argument("paths", nargs="+", help="run or sweep directories")
    parser.add_argument("--out", help="where the event folders go (default: PATH/tensorboard for one PATH, else ./tensorboard)")
    ns = parser.parse_intermixed_args(args)
    out = output_dir(ns.out, ns.paths, "tensorboard")
    written = export_tensorboard(ns.paths, out)
    print(f"wrote {len(written)} event folder(s) to {out}; view them with: tensorboard --logdir {out}")


def report_command(args: list[str]) -> None:
    from nin_cli.analysis.report import write_report

    ns = path_parser("report", "sweep directories, or key=value overrides of conf/analysis.yaml", formats=False).parse_intermixed_args(args)
    paths, overrides = split_overrides(ns.paths)
    for path in paths:
        written, outcome = write_report(Path(path), overrides)
        print(f"{outcome}; report: {written}")


def progress_command(args: list[str]) -> None:
    import time

    from nin_cli.analysis.progress import read_progress
    from nin_cli.train.loop import progress_bar

    parser = argparse.ArgumentParser(prog="nin progress", description=COMMANDS["progress"])
    parser.add_argument("sweep", help="a sweep directory (hydra.sweep.dir)")
    parser.add_argument("--watch", action="store_true", help="a live bar until every run has ended (Ctrl-C leaves)")
    parser.add_argument("--every", type=float, default=10.0, help="seconds between reads with --watch (default 10)")
    ns = parser.parse_args(args)
    sweep = Path(ns.sweep)
    if not sweep.is_dir():
        fail(f"{sweep}: no such sweep directory")
    progress = read_progress(sweep)
    if not ns.watch:
        print(progress.line())
        return
    with progress_bar(True) as bar:
        task = bar.add_task(sweep.name, total=progress.total, info="")
        while True:
            bar.update(task, completed=progress.ended, total=progress.total, info=progress.line())
            if progress.complete:
                break
            time.sleep(ns.every)
            progress = read_progress(sweep)


def plot_command(args: list[str]) -> None:
    import re

    from nin_cli.analysis.plots import run_figure, sweep_figures
    from nin_cli.analysis.runs import load_runs
    from nin_cli.analysis.summarize import analysis_config, phase_rows, run_rows

    parser = path_parser(
        "plot", "run or sweep directories", "figure directory (default: PATH/plots for a single PATH, else ./plots)", formats=False
    )
    parser.add_argument("--no-runs", action="store_true", help="skip the per-run figures")
    parser.add_argument("--format", choices=["png", "pdf", "svg"], default="png", help="figure file format")
    ns = parser.parse_intermixed_args(args)
    paths, overrides = split_overrides(ns.paths)
    acfg = analysis_config(conf_dir(), overrides)
    runs = load_runs(paths)
    if not runs:
        fail(f"no runs found under {', '.join(paths)}")
    out = output_dir(ns.out, paths, "plots")
    ext = f".{ns.format}"
    table = run_rows(runs, acfg)
    phase_of = dict(zip((r.path for r in runs), table.set_index("run").loc[[str(r.path) for r in runs], "phase"]))
    root = Path(paths[0]).resolve()
    written = []
    if not ns.no_runs:
        for run in runs:
            rel = (
                run.path.resolve().relative_to(root)
                if run.path.resolve().is_relative_to(root) and run.path.resolve() != root
                else run.path.name
            )
            title = f"{run.path}  sigma={run.sigma:g}  phase={phase_of[run.path]}  status={run.status.get('status')}"
            written.append(run_figure(run, title, out / f"run_{re.sub(r'[^A-Za-z0-9_.=,-]+', '_', str(rel))}{ext}"))
    written += [path for _, path in sweep_figures(runs, phase_rows(table), phase_of, out, ext)]
    for path in filter(None, written):
        print(path)


def theory_command(args: list[str]) -> None:
    from nin_cli.analysis.plots import niw_theory_figure, theory_figure
    from nin_cli.analysis.runs import load_runs
    from nin_cli.analysis.summarize import analysis_config, markdown, rich_table, write_csv
    from nin_cli.analysis.theory import network_theory_rows, predicted_niw, theory_rows

    parser = path_parser(
        "theory",
        "runs or sweeps: the linear toy model (+experiment=linear_toy), or networks with recorded NIW curvature",
        "where theory.csv and the figures go",
    )
    parser.add_argument("--no-predict", action="store_true", help="networks: skip the boundaries predicted at init (nin predict)")
    ns = parser.parse_intermixed_args(args)
    paths, overrides = split_overrides(ns.paths)
    acfg = analysis_config(conf_dir(), overrides)
    runs = load_runs(paths)
    table, bounds = theory_rows(runs, acfg)
    out = output_dir(ns.out, paths)
    console = stdout_console()
    if not table.empty:
        figure = theory_figure(table, bounds, out / "theory.png")
        lines = [f"{name}: {_bounds_text(b)}" for name, b in bounds.items()]
        title = "linear toy model: theory vs simulation (tau in epochs)"
    else:
        with one_line_errors():
            boundaries = {} if ns.no_predict else _network_boundaries(runs, acfg)
        table = network_theory_rows(runs, acfg, boundaries)
        if table.empty:
            fail("no linear toy-model runs, and no network runs with recorded NIW curvature (hessian.niw_curvature=true) found")
        curves = [
            (f"sigma={r.sigma:g}", t)
            for r in sorted(runs, key=lambda r: r.sigma)
            if r.nin_layers
            for t in [predicted_niw(r, r.nin_layers[0])]
            if t is not None
        ]
        figure = niw_theory_figure(curves, out / "theory_niw.png")
        lines = sorted({_bounds_text(b) for b in boundaries.values()})
        title = "networks: NIW decay from the recorded curvature, phases predicted at init (tau in epochs)"
    done = f"predicted and measured phases agree for {int(table['agree'].sum())} of {len(table)} runs" if "agree" in table else ""
    write_csv(table, out / "theory.csv")
    if ns.format == "markdown":
        print("\n".join(f"- {line}" for line in lines) + f"\n\n{markdown(table)}\n\n{done}")
    else:
        for line in lines:
            console.print(f"[bold]boundaries[/] {line}")
        console.print(rich_table(table, title))
        console.print(done)
    print(f"wrote {out / 'theory.csv'}" + (f" and {figure}" if figure else ""), file=sys.stderr)


def _bounds_text(bounds: dict[str, float]) -> str:
    return ", ".join(f"{k} at sigma^2={v:.4g} (sigma={v**0.5:.4g})" for k, v in bounds.items())


def _network_boundaries(runs, acfg) -> dict:
    from nin_cli.analysis.predict import sweep_boundaries

    return sweep_boundaries([r for r in runs if r.nin_layers and (r.path / "config.yaml").exists()], acfg)


def evaluate_command(args: list[str]) -> None:
    from nin_cli.analysis.runs import find_runs
    from nin_cli.records import ROBUSTNESS_PARTIAL
    from nin_cli.robustness import evaluate_run, missing_extra, plan, robustness_config
    from nin_cli.train.loop import progress_bar

    parser = path_parser("evaluate", "run or sweep directories, or key=value overrides of conf/robustness/default.yaml", formats=False)
    parser.add_argument("--device", choices=["cpu", "cuda"], help="evaluate on this device instead of the run's")
    parser.add_argument("--force", action="store_true", help="re-evaluate runs that already have robustness.csv")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    ns = parser.parse_intermixed_args(args)
    paths, overrides = split_overrides(ns.paths)
    rcfg = robustness_config(conf_dir(), overrides)
    tasks = plan(rcfg)
    skipped = missing_extra(tasks, warn=True)
    runs = [r for r in find_runs(paths) if (r / "checkpoint.pt").exists()]
    if not runs:
        fail("no trained runs (with checkpoint.pt) found")
    todo = []
    for run in runs:
        if (run / "robustness.csv").exists() and not ns.force:
            print(f"{run}: robustness.csv exists; skipping (--force re-evaluates)", file=sys.stderr)
        else:
            todo.append(run)
    per_run = len(tasks) - len(skipped)
    bad = 0
    with progress_bar(not ns.no_progress) as bar:
        task = bar.add_task("evaluate", total=len(todo) * per_run, info="")
        for k, run in enumerate(todo):
            if (run / ROBUSTNESS_PARTIAL).exists():
                bar.console.print(f"{run}: resuming an interrupted evaluation", style="dim")
            bar.update(task, completed=k * per_run, info=f"run {k + 1}/{len(todo)}: {run.name}")
            try:
                table = evaluate_run(
                    run, rcfg, ns.device, on_row=lambda row: bar.update(task, advance=1, info=f"{row['perturbation']} {row['severity']:g}")
                )
            except (ConfigError, RecordError) as exc:  # one bad run of a sweep: say so, evaluate the others
                bar.console.print(f"nin: warning: {run}: skipped: {exc}", style="yellow")
                bad += 1
                continue
            bar.update(task, completed=(k + 1) * per_run)
            clean = float(table.loc[table.perturbation == "clean", "accuracy"].iloc[0])
            worst = ""
            for attack in ("autoattack", "apgd", "pgd"):
                rows = table[table.perturbation == attack]
                if len(rows):
                    worst = f", {attack} eps={rows.severity.iloc[-1]:g}: {rows.accuracy.iloc[-1]:.4f}"
                    break
            print(f"{run}: clean {clean:.4f}{worst} -> {run / 'robustness.csv'}")
    if bad:
        fail(f"{bad} of {len(runs)} run(s) could not be evaluated (warnings above)", 1)


def usage() -> str:
    lines = ["usage: nin COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<10} {text}" for name, text in COMMANDS.items()]
    lines += ["", "`nin COMMAND --help` describes each command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return
    if argv[0] in ("-V", "--version"):
        from nin_cli import __version__

        print(f"nin {__version__}")
        return
    command, rest = argv[0], argv[1:]
    handlers = {
        "train": train_command,
        "summarize": summarize_command,
        "theory": theory_command,
        "predict": predict_command,
        "plot": plot_command,
        "report": report_command,
        "progress": progress_command,
        "export": export_command,
        "evaluate": evaluate_command,
        "download": download_command,
    }
    if command not in handlers:
        fail(f"unknown command {command!r}; choose from: {', '.join(COMMANDS)}")
    try:
        with one_line_errors():
            handlers[command](rest)
    except BrokenPipeError:  # `nin summarize DIR | head`: the reader left; so do we, quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise SystemExit(141) from None
