"""report.md: a sweep at a glance when it ends (the Hydra callback) or on demand (`nin report`).

It holds the outcome line, the phase table, the figures (NIW norms, decay times, robustness) and
the run table, and writes the same CSVs as `nin summarize` beside it.
"""

from __future__ import annotations

import time
from pathlib import Path

from nin_cli.analysis.plots import sweep_figures
from nin_cli.analysis.runs import load_runs
from nin_cli.analysis.summarize import compact, markdown, summarize
from nin_cli.config.schema import load_settings
from nin_cli.errors import ConfigError, counted
from nin_cli.records.store import atomic_write_text

REPORT = "report.md"


def write_report(sweep: Path, overrides: list[str] | None = None) -> tuple[Path, str]:
    """Write `sweep`/report.md (and runs.csv, phases.csv, plots/); its path and the outcome line."""
    sweep = Path(sweep)
    runs = load_runs([sweep])
    if not runs:
        raise ConfigError(f"no runs found under {sweep}")
    summary = summarize(runs, load_settings("analysis", overrides), sweep)
    summary.write(sweep)
    plots = sweep / "plots"
    plots.mkdir(exist_ok=True)
    figures = sweep_figures(runs, summary.phases, summary.phase_of(runs), plots)
    outcome = f"{counted(len(runs), 'run')}: {summary.outcome()}"
    lines = [f"# Sweep report: {sweep.name}", "", f"{outcome}. Written {time.strftime('%Y-%m-%d %H:%M')} from `{sweep}`.", ""]
    if (sweep / "boundaries.md").exists():  # a phase map (nin map): its located boundaries first
        lines += ["## Phase boundaries (nin map)", "", (sweep / "boundaries.md").read_text(), "", "![phase map](map.png)", ""]
    lines += ["## Phases by sigma (mean ± std over seeds)", "", markdown(compact(summary.phases)), ""]
    for title, path in figures:
        if path is not None:
            lines += [f"![{title}]({path.relative_to(sweep)})", ""]
    if summary.robustness is not None:
        lines += ["## Robustness (test accuracy by method)", "", markdown(summary.robustness), ""]
    if summary.corruptions is not None:
        lines += ["## MNIST-C (test accuracy by method and corruption)", "", markdown(summary.corruptions), ""]
    lines += ["## Runs", "", markdown(compact(summary.runs)), ""]
    problems = [f"- `{r.path.relative_to(sweep) if r.path != sweep else '.'}`: {p}" for r in runs for p in r.warnings]
    if problems:
        lines += ["## Warnings", "", *problems, ""]
    path = sweep / REPORT
    atomic_write_text(path, "\n".join(lines))
    return path, outcome
