"""runs.csv (one row per run) and phases.csv (runs aggregated by sigma over seeds)."""

from __future__ import annotations

import math
import sys
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from nin_cli.analysis.phases import PHASES, decay_times, nin_decay_times, nin_phases, run_phase
from nin_cli.analysis.runs import Run, load_runs
from nin_cli.config.schema import load_settings
from nin_cli.errors import ConfigError
from nin_cli.identity import exempt
from nin_cli.records.store import ENDED, ROBUSTNESS, atomic_write_text
from nin_cli.units import paper_units

TAUS = ("tau_niw", "tau_train", "tau_test")
TAU_ERRS = tuple(f"{t}_err" for t in TAUS)  # each run's fit standard error
ALWAYS = ("noise.sigma", "seed")


def varying_keys(runs: list[Run]) -> list[str]:
    keys = sorted({k for r in runs for k in r.config})
    # A key only some runs have (a config written by an older version) varies only among those.
    vary = [k for k in keys if not exempt(k, "summary") and len({repr(r.config[k]) for r in runs if k in r.config}) > 1]
    return [k for k in ALWAYS if any(k in r.config for r in runs)] + [k for k in vary if k not in ALWAYS]


def last(run: Run, column: str) -> float:
    m = run.metrics
    return float(m[column].iloc[-1]) if column in m and len(m) else math.nan


def run_name(path: Path, root: Path | None) -> str:
    """A run's name in the tables (the `run` column): its path below the sweep `root`, else its path.
    The tables are joined with anything else by this name, never by row position."""
    return (str(path.relative_to(root)) if root and path.is_relative_to(root) else str(path)) or "."


def run_rows(runs: list[Run], acfg: DictConfig, root: Path | None = None) -> pd.DataFrame:
    keys = varying_keys(runs)
    rows = []
    for run in runs:
        phase, why, nin = run_phase(run, acfg.phases)
        row = {
            "run": run_name(run.path, root),
            **{k: run.config.get(k) for k in keys},
            "sigma2_paper": paper_units(run.config, run.network.get("paper_unit")),
        }
        row.update(status=run.status.get("status", "unknown"), epoch=int(last(run, "epoch")) if len(run.metrics) else 0)
        row.update(phase=phase, phase_reason=why, **decay_times(run, acfg.fits, nin))
        if len(run.nin_layers) > 1:  # each NIN's own phase and time-scales; the run's come from `phase_nin`
            row["phase_nin"] = nin
            for name, (nin_phase, _) in nin_phases(run, acfg.phases).items():
                row[f"phase_{name}"] = nin_phase
                for key, value in nin_decay_times(run, acfg.fits, name).items():  # tau_niw_<nin>, tau_niw_<nin>_err, ...
                    row[f"{key[:-4]}_{name}_err" if key.endswith("_err") else f"{key}_{name}"] = value
        row.update(final_train_acc=last(run, "train_acc"), final_test_acc=last(run, "test_acc"), final_test_loss=last(run, "test_loss"))
        rows.append(row | labels(run))
    table = pd.DataFrame(rows).sort_values([*keys, "run"], key=sort_key, ignore_index=True)
    return table.drop(columns=[c for c in LABELS if c in table and not table[c].astype(bool).any()])


LABELS = ("tags", "notes")  # a researcher's labels of a run: shown beside it, never grouped by


def labels(run: Run) -> dict[str, str]:
    """The run's tags (comma-joined) and notes; '' where it has none."""
    tags = run.config.get("tags") or ()
    return {"tags": ",".join(map(str, tags)) if isinstance(tags, (tuple, list)) else str(tags), "notes": str(run.config.get("notes") or "")}


def sort_key(col: pd.Series) -> pd.Series:
    """Numbers numerically, everything else as text, in one column."""
    numeric = pd.to_numeric(col, errors="coerce")
    return numeric if numeric.notna().all() else col.astype(str)


def ordered(values) -> list:
    """The distinct values of a column in sort_key's order (a key swept over names and numbers,
    nin.init=layer,input,0.01, sorts as text instead of failing)."""
    return list(pd.Series(list(values)).drop_duplicates().sort_values(key=sort_key))


def majority(phases: pd.Series) -> str:
    """The most common phase; ties go to the later phase in PHASES (the more violent one)."""
    counts = Counter(phases)
    order = {p: i for i, p in enumerate(PHASES)}
    return max(counts, key=lambda p: (counts[p], order.get(p, -1)))


def finite_stats(values: pd.Series) -> tuple[float, float]:
    """Mean and std over seeds; inf (no decay) propagates to the mean when most runs have it."""
    v = values.to_numpy(dtype=float)
    v = v[~np.isnan(v)]
    if len(v) == 0:
        return math.nan, math.nan
    if np.isinf(v).sum() * 2 > len(v):
        return math.inf, math.nan
    v = v[np.isfinite(v)]
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else math.nan


RESULT_COLUMNS = ("run", "seed", "status", "epoch", "phase", "phase_reason", "phases", "n_runs", *TAUS, *TAU_ERRS, *LABELS)


def key_columns(table: pd.DataFrame) -> list[str]:
    """The config keys of a runs.csv or phases.csv table: what its rows differ in, not what was measured."""
    measured = ("final_", "phase_", "tau_", "phases_")  # per-NIN columns (phase_<nin>, tau_niw_<nin>, ...) among them
    return [c for c in table.columns if c not in RESULT_COLUMNS and not c.startswith(measured) and not c.endswith(("_mean", "_std"))]


def phase_rows(table: pd.DataFrame) -> pd.DataFrame:
    group_keys = key_columns(table) or ["noise.sigma"]
    rows = []
    for key, group in table.groupby(group_keys, dropna=False, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(group_keys, key))
        counts = Counter(group["phase"])
        row.update(n_runs=len(group), phase=majority(group["phase"]), phases=" ".join(f"{p}:{counts[p]}" for p in sorted(counts)))
        for col in (*TAUS, "final_test_acc"):
            row[f"{col}_mean"], row[f"{col}_std"] = finite_stats(group[col])
        for col in nin_phase_columns(group):  # each NIN's own phase over the seeds, and its tau_niw
            nin = col.removeprefix("phase_")
            votes = Counter(group[col].dropna())
            if not votes:  # a NIN this group's network does not have (an FC run summarized beside a CNN's conv1)
                continue
            row.update({col: majority(group[col].dropna()), f"phases_{nin}": " ".join(f"{p}:{votes[p]}" for p in sorted(votes))})
            if f"tau_niw_{nin}" in group:
                row[f"tau_niw_{nin}_mean"], row[f"tau_niw_{nin}_std"] = finite_stats(group[f"tau_niw_{nin}"])
        for col in (c for c in TAU_ERRS if c in group):  # the typical fit error: where one seed gives no spread, it is the error bar
            errors = group[col].to_numpy(dtype=float)
            errors = errors[np.isfinite(errors)]
            row[col] = float(np.sqrt(np.mean(errors**2))) if len(errors) else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def nin_phase_columns(table: pd.DataFrame) -> list[str]:
    """runs.csv's per-NIN phase columns (phase_<nin>), of runs with several NINs."""
    return [c for c in table.columns if c.startswith("phase_") and c not in ("phase_reason", "phase_nin")]


def write_csv(df: pd.DataFrame, path: Path) -> None:
    atomic_write_text(path, df.to_csv(index=False))


def format_cell(value) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if math.isinf(value):
            return "inf"
        return f"{value:.4g}"
    return str(value)


def markdown(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(format_cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def compact(df: pd.DataFrame) -> pd.DataFrame:
    """For the terminal: mean +- std in one cell, reasons and long losses left to the CSV."""
    dropped = ("phase_reason", "final_test_loss", "final_train_acc")
    out = df.drop(columns=[c for c in df.columns if c in dropped or c.endswith("_err") or c.startswith("tau_weight_")])
    for base in [c.removesuffix("_mean") for c in out.columns if c.endswith("_mean") and f"{c.removesuffix('_mean')}_std" in out]:
        mean, std = f"{base}_mean", f"{base}_std"
        if mean in out:
            cells = [
                format_cell(m) + ("" if isinstance(s, float) and math.isnan(s) else f" ± {format_cell(s)}")
                for m, s in zip(out[mean], out[std])
            ]
            out.insert(list(out.columns).index(mean), base, cells)
            out = out.drop(columns=[mean, std])
    return out.rename(columns={"final_test_acc": "test_acc"})


ROBUSTNESS_FAMILIES = ("clean", "gaussian", "corruptions", "fgsm", "pgd", "apgd", "autoattack")
NOT_CORRUPTIONS = ("clean", "gaussian", "fgsm", "pgd", "apgd", "autoattack")


def robustness_groups(runs: list[Run]) -> list[str]:
    """Which config keys name a method: `method` (and the model) when they vary, else all that vary."""
    keys = [k for k in varying_keys(runs) if k != "seed"]
    if "method" in keys:
        return [k for k in ("model.name", "method") if k in keys]
    return [k for k in keys if k != "noise.sigma"] + (["noise.sigma"] if "noise.sigma" in keys else []) or ["method"]


def robustness_rows(runs: list[Run]) -> pd.DataFrame:
    """Long table: one row per run x perturbation x severity, with the method keys and seed."""
    groups = robustness_groups(runs)
    frames = []
    for run in runs:
        path = run.path / ROBUSTNESS
        if not path.exists():
            continue
        try:
            table = pd.read_csv(path)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
            run.warnings.append(f"{ROBUSTNESS} unreadable")
            continue
        for k in groups:
            table[k] = run.config.get(k, "-")
        table["seed"] = run.config.get("seed")
        frames.append(table)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def family(perturbation: str) -> str:
    """The MNIST-C corruptions form one family; every other perturbation is its own."""
    return perturbation if perturbation in NOT_CORRUPTIONS else "corruptions"


def mean_std_cell(values: pd.Series) -> str:
    """'0.8123 ± 0.0042' over seeds ('0.8123' for one seed)."""
    std = float(values.std()) if len(values) > 1 else math.nan
    return format_cell(float(values.mean())) + ("" if math.isnan(std) else f" ± {format_cell(std)}")


def corruption_table(long: pd.DataFrame, groups: list[str]) -> pd.DataFrame | None:
    """Per method (rows) and MNIST-C corruption (columns, with the level when several were
    evaluated): accuracy mean ± std over seeds, and the mean over corruptions."""
    corr = long[~long["perturbation"].isin(NOT_CORRUPTIONS)].copy()
    if corr.empty:
        return None
    several = corr.groupby("perturbation")["severity"].nunique().max() > 1
    corr["corruption"] = corr["perturbation"] + (" " + corr["severity"].map(lambda v: f"{v:g}") if several else "")
    order = list(dict.fromkeys(corr["corruption"]))
    rows = []
    for key, g in corr.groupby(groups, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(groups, key))
        for name in order:
            row[name] = mean_std_cell(g[g["corruption"] == name]["accuracy"]) if (g["corruption"] == name).any() else "-"
        row["mean"] = mean_std_cell(g.groupby("seed")["accuracy"].mean())
        rows.append(row)
    return pd.DataFrame(rows)


def robustness_summary(long: pd.DataFrame, groups: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per perturbation and severity: mean and std over seeds; per method: one cell per family).

    A family's cell first averages a run's accuracies over that family's perturbations and
    severities, then takes mean +- std of that number over seeds.
    """
    detail = (
        long.groupby([*groups, "perturbation", "severity"], sort=False)["accuracy"]
        .agg(acc_mean="mean", acc_std="std", n_seeds="count")
        .reset_index()
    )
    long = long.assign(family=long["perturbation"].map(family))
    per_seed = long.groupby([*groups, "seed", "family"])["accuracy"].mean().reset_index()
    present = [fam for fam in ROBUSTNESS_FAMILIES if (per_seed["family"] == fam).any()]
    rows = []
    for key, g in per_seed.groupby(groups, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(groups, key))
        for fam in present:
            hit = g[g["family"] == fam]["accuracy"]
            row[fam] = mean_std_cell(hit) if len(hit) else "-"
        rows.append(row)
    return detail, pd.DataFrame(rows)


@dataclass
class Summary:
    """What `nin summarize` computes from runs: its tables, and the CSVs they are written to."""

    runs: pd.DataFrame
    phases: pd.DataFrame
    root: Path | None = None  # the sweep directory the run names are relative to
    robustness_detail: pd.DataFrame | None = None
    robustness: pd.DataFrame | None = None
    corruptions: pd.DataFrame | None = None  # MNIST-C accuracy per method and corruption

    def tables(self) -> list[tuple[str, pd.DataFrame]]:
        out = [(f"{len(self.runs)} run(s)", compact(self.runs)), ("phases by sigma (mean ± std over seeds)", compact(self.phases))]
        if self.robustness is not None:
            title = (
                "robustness: test accuracy by method (mean ± std over seeds; each family averaged over its perturbations and severities)"
            )
            out.append((title, self.robustness))
        if self.corruptions is not None:
            out.append(("MNIST-C: test accuracy by method and corruption (mean ± std over seeds)", self.corruptions))
        return out

    def phase_of(self, runs: list[Run]) -> dict[Path, str]:
        """Each run's phase, joined by run name (the tables are sorted by config, not by directory)."""
        by_name = dict(zip(self.runs["run"], self.runs["phase"]))
        return {run.path: by_name[run_name(run.path, self.root)] for run in runs}

    def write(self, out: Path) -> list[str]:
        """runs.csv, phases.csv (and robustness_summary.csv) in `out`; the names written."""
        write_csv(self.runs, out / "runs.csv")
        write_csv(self.phases, out / "phases.csv")
        names = ["runs.csv", "phases.csv"]
        if self.robustness_detail is not None:
            write_csv(self.robustness_detail, out / "robustness_summary.csv")
            names.append("robustness_summary.csv")
        if self.corruptions is not None:
            write_csv(self.corruptions, out / "robustness_mnist_c.csv")
            names.append("robustness_mnist_c.csv")
        return names

    def outcome(self) -> str:
        """One line: how many runs ended how ("12 completed, 3 diverged, 0 failed")."""
        counts = Counter(self.runs["status"])
        main = [f"{counts.pop(s, 0)} {s}" for s in ENDED]
        return ", ".join(main + [f"{n} {s}" for s, n in sorted(counts.items())])


def summarize(runs: list[Run], acfg: DictConfig, root: Path | None = None) -> Summary:
    table = run_rows(runs, acfg, root)
    summary = Summary(table, phase_rows(table), root)
    long = robustness_rows(runs)
    if not long.empty:
        groups = robustness_groups(runs)
        summary.robustness_detail, summary.robustness = robustness_summary(long, groups)
        summary.corruptions = corruption_table(long, groups)
    return summary


def summarize_paths(paths: list[str], overrides: list[str], out: Path) -> tuple[Summary, list[str]]:
    """`nin summarize`: the runs under `paths` (their problems as warnings), summarized and written to `out`."""
    acfg = load_settings("analysis", overrides)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runs = load_runs(paths)
    for w in caught:
        print(f"nin: warning: {w.message}", file=sys.stderr)
    for run in runs:
        for problem in run.warnings:
            print(f"nin: warning: {run.path}: {problem}", file=sys.stderr)
    if not runs:
        raise ConfigError(f"no runs found under {', '.join(paths)}")
    summary = summarize(runs, acfg, Path(paths[0]) if len(paths) == 1 else None)
    return summary, summary.write(out)
