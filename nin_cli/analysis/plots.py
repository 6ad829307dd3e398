"""PNG figures: per-run dynamics (the papers' Fig. 2 panels) and decay times against sigma with the
phase regions shaded (Fig. 1 right)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path

import matplotlib
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from nin_cli.analysis.phases import PHASES
from nin_cli.analysis.runs import Run, load_runs
from nin_cli.analysis.summarize import (
    NOT_CORRUPTIONS,
    key_columns,
    nin_phase_columns,
    ordered,
    robustness_groups,
    robustness_rows,
    summarize,
)
from nin_cli.config.schema import load_settings
from nin_cli.errors import ConfigError

PHASE_COLOURS = {"decoupled": "#9ecae1", "decay": "#a1d99b", "catapult": "#fdd49e", "divergent": "#fc9272", "unknown": "#dddddd"}


def _time_axis(run: Run, table: pd.DataFrame) -> np.ndarray:
    spe = run.steps_per_epoch()
    if "step" in table and table is run.steps and math.isfinite(spe) and spe > 0:
        return table["step"].to_numpy(dtype=float) / spe
    return table["epoch"].to_numpy(dtype=float)


def _safe_log(ax, values) -> None:
    v = np.asarray(values, dtype=float)
    if np.all(v[np.isfinite(v)] > 0) and np.isfinite(v).any():
        ax.set_yscale("log")


def _fine(run: Run) -> pd.DataFrame:
    """The run's finest table: steps.csv where it is finer than metrics.csv."""
    return run.steps if run.steps is not None and len(run.steps) > len(run.metrics) else run.metrics


def run_figure(run: Run, title: str, path: Path) -> Path:
    """2x2 panels: NIW norms, next-layer weight norms, losses, accuracies against epoch."""
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), constrained_layout=True)
    m = run.metrics
    fine = _fine(run)
    t_fine, t = _time_axis(run, fine), m["epoch"].to_numpy(dtype=float)
    for ax, prefix, label in ((axes[0, 0], "niw_norm_", "NIW norm |W_NI|"), (axes[0, 1], "weight_norm_", "next layer's weight norm")):
        cols = [c for c in fine.columns if c.startswith(prefix)]
        for c in cols:
            ax.plot(t_fine, fine[c], label=c.removeprefix(prefix), lw=1.2)
            _safe_log(ax, fine[c])
        ax.set(title=label, xlabel="epoch")
        if cols:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no NIN", ha="center", va="center", transform=ax.transAxes)
    ax = axes[1, 0]
    if fine is not m:
        ax.plot(t_fine, fine["train_loss"], lw=0.6, alpha=0.5, label="train (noisy, per step)")
    for col, style in (("train_loss", "o-"), ("train_loss_clean", "s-"), ("test_loss", "^-")):
        if col in m:
            ax.plot(t, m[col], style, ms=3, label=col)
    _safe_log(ax, m["train_loss_clean"] if "train_loss_clean" in m else [])
    ax.set(title="losses", xlabel="epoch")
    ax.legend(fontsize=8)
    ax = axes[1, 1]
    for col in ("train_acc", "test_acc"):
        if col in m and m[col].notna().any():
            ax.plot(t, m[col], "o-", ms=3, label=col)
    ax.set(title="accuracy (eps = 0)", xlabel="epoch")
    if ax.lines:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no accuracy: regression targets", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _shade_phases(ax, sigmas: np.ndarray, phases: list[str]) -> None:
    """Colour the sigma axis by the majority phase, splitting at geometric midpoints."""
    order = np.argsort(sigmas)
    s, p = sigmas[order], [phases[i] for i in order]
    positive = s > 0
    edges_mid = np.sqrt(s[:-1] * s[1:]) if positive.all() else (s[:-1] + s[1:]) / 2
    lo = np.concatenate([[s[0] / 2 if s[0] > 0 else s[0] - 1], edges_mid])
    hi = np.concatenate([edges_mid, [s[-1] * 2 if s[-1] > 0 else s[-1] + 1]])
    seen = set()
    for a, b, phase in zip(lo, hi, p):
        ax.axvspan(a, b, color=PHASE_COLOURS.get(phase, "#dddddd"), alpha=0.6, lw=0, label=phase if phase not in seen else None)
        seen.add(phase)


def varying_keys(phases: pd.DataFrame) -> list[str]:
    """The config keys that take more than one value in a phases table (sigma2_paper follows sigma)."""
    return [c for c in key_columns(phases) if c != "sigma2_paper" and phases[c].nunique(dropna=False) > 1]


def decay_times_figure(phases: pd.DataFrame, path: Path) -> Path | None:
    """tau_niw, tau_train, tau_test (mean +- std over seeds) against sigma, phases shaded. When
    other keys vary too (lr, width, model, ...), one tau_niw line per group instead, never mixed."""
    if "noise.sigma" not in phases or phases["noise.sigma"].nunique() < 2:
        return None
    groups = [c for c in varying_keys(phases) if c != "noise.sigma"]
    fig, ax = plt.subplots(figsize=(8, 5), constrained_layout=True)
    if groups:
        for key, g in phases.groupby(groups, dropna=False, sort=True):
            key = key if isinstance(key, tuple) else (key,)
            g = g.sort_values("noise.sigma")
            label = ", ".join(f"{k}={_value(v)}" for k, v in zip(groups, key))
            _errorbar(ax, g, "tau_niw", "o", f"tau_niw ({label})")
        title = f"tau_niw against sigma, one line per {', '.join(groups)}"
    else:
        _shade_phases(ax, phases["noise.sigma"].to_numpy(dtype=float), list(phases["phase"]))
        for name, marker in (("tau_niw", "o"), ("tau_train", "s"), ("tau_test", "^")):
            _errorbar(ax, phases, name, marker, name)
        for nin in (c.removeprefix("phase_") for c in nin_phase_columns(phases)):  # several NINs: each one's own
            if f"tau_niw_{nin}_mean" in phases:
                _errorbar(ax, phases, f"tau_niw_{nin}", "d", f"tau_niw at {nin}")
        title = "decay times and phases against sigma"
    if (phases["noise.sigma"] > 0).all():
        ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set(xlabel="noise sigma", ylabel="decay time (epochs)", title=title)
    handles, labels = ax.get_legend_handles_labels()
    keep = [i for i, lab in enumerate(labels) if lab in PHASES or lab.startswith("tau")]
    ax.legend([handles[i] for i in keep], [labels[i] for i in keep], fontsize=8, loc="best")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _value(v) -> str:
    """A config value as a label: floats compact (0.05, 1e-05), anything else as it is."""
    return f"{v:g}" if isinstance(v, float) else str(v)


def _errorbar(ax, table: pd.DataFrame, name: str, marker: str, label: str) -> None:
    sigma = table["noise.sigma"].to_numpy(dtype=float)
    mean = table[f"{name}_mean"].to_numpy(dtype=float)
    std = table[f"{name}_std"].to_numpy(dtype=float)
    if f"{name}_err" in table:  # one seed, or no spread: the fit's own standard error
        std = np.where(np.isfinite(std), std, table[f"{name}_err"].to_numpy(dtype=float))
    std = np.nan_to_num(std)
    ok = np.isfinite(mean) & (mean > 0)
    if ok.any():
        ax.errorbar(sigma[ok], mean[ok], yerr=std[ok], fmt=f"{marker}-", capsize=3, label=label)


MAX_LINES = 40  # an overlay of more curves draws the median curve of each of at most this many bins of sigma


def _binned(curves: list[tuple[float, np.ndarray, np.ndarray, str]]) -> list[tuple[float, np.ndarray, np.ndarray, str]]:
    """Curves grouped into at most MAX_LINES bins of sigma (log-spaced where sigma spans more than a
    decade), each the median of its curves on a common time grid (to the shortest's end), at the
    bin's median sigma, with its most common phase: hundreds of runs read as a few dozen lines."""
    sigmas = np.array([c[0] for c in curves], dtype=float)
    positive = sigmas > 0
    logged = bool(positive.all() and sigmas.max() > 10 * sigmas.min())
    scale = np.log(sigmas) if logged else sigmas
    edges = np.linspace(scale.min(), scale.max(), MAX_LINES + 1)
    which = np.clip(np.searchsorted(edges, scale, side="right") - 1, 0, MAX_LINES - 1)
    out = []
    for b in np.unique(which):
        group = [c for c, w in zip(curves, which) if w == b]
        end = min(float(c[1][-1]) for c in group)
        grid = np.linspace(min(float(c[1][0]) for c in group), end, 120)
        values = np.array([np.interp(grid, c[1], c[2]) for c in group])
        phases = [c[3] for c in group]
        out.append((float(np.median([c[0] for c in group])), grid, np.median(values, axis=0), max(set(phases), key=phases.count)))
    return out


def _sigma_colours(values) -> Callable:
    """One viridis colour per distinct sigma, in order: for a figure whose legend names each."""
    cmap, sigmas = plt.get_cmap("viridis"), sorted(set(values))
    return lambda sigma: cmap(sigmas.index(sigma) / max(len(sigmas) - 1, 1))


def _sigma_colour_bar(ax, values: list[float], label: str) -> Callable:
    """Colours by sigma on a colour bar (logarithmic over a decade or more): for more lines than a
    legend can name."""
    cmap, lo, hi = plt.get_cmap("viridis"), min(values), max(values)
    norm = matplotlib.colors.LogNorm(lo, hi) if lo > 0 and hi > 10 * lo else matplotlib.colors.Normalize(lo, hi if hi > lo else lo + 1)
    ax.figure.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=label)
    return lambda sigma: cmap(norm(sigma))


def _overlay(ax, curves: list[tuple[float, np.ndarray, np.ndarray, str]], legend: dict | None) -> None:
    """Curves (sigma, t, y relative to its start, phase) on a log axis: one colour per sigma, one
    legend entry per (sigma, phase), divergent runs dashed and let out of the frame (their blow-up
    would flatten every other curve). Beyond MAX_LINES curves: the medians of sigma's bins
    (_binned), coloured by sigma on a colour bar, without a legend entry per line."""
    many = len(curves) > MAX_LINES
    if many:
        curves = _binned(curves)
        colour = _sigma_colour_bar(ax, [c[0] for c in curves], "sigma (median of each bin)")
    else:
        colour = _sigma_colours(c[0] for c in curves)
    labelled: set[tuple[float, str]] = set()
    for sigma, t, y, phase in sorted(curves, key=lambda c: c[0]):
        label = None if many or legend is None or (sigma, phase) in labelled else f"sigma={sigma:.4g} ({phase})"
        labelled.add((sigma, phase))
        style = "--" if phase == "divergent" else "-"
        ax.plot(t, y, style, color=colour(sigma), lw=1, label=label)
    ax.set_yscale("log")
    kept = np.concatenate([y for _, _, y, phase in curves if phase != "divergent"] or [np.array([])])
    kept = kept[np.isfinite(kept) & (kept > 0)]
    if kept.size:
        ax.set_ylim(kept.min() / 2, kept.max() * 2)
    if legend is not None and not many:
        ax.legend(fontsize=7, **legend)


def niw_overlay_figure(runs: list[Run], phase_of: dict[Path, str], path: Path) -> Path | None:
    """NIW norm (relative to its start) against epoch for every run, coloured by sigma."""
    curves = []
    for run in runs:
        fine = _fine(run)
        cols = [c for c in fine.columns if c.startswith("niw_norm_")]
        if cols and len(fine) > 1 and math.isfinite(run.sigma):
            niw = fine[cols[0]].to_numpy(dtype=float)
            curves.append((run.sigma, _time_axis(run, fine), niw / niw[0], phase_of.get(run.path, "")))
    if len(curves) < 2:
        return None
    fig, ax = plt.subplots(figsize=(8, 5), constrained_layout=True)
    _overlay(ax, curves, legend={"ncol": 2})
    ax.set(xlabel="epoch", ylabel="|W_NI| / |W_NI(0)|", title="NIW norm against time (divergent runs dashed)")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def first_steps_figure(runs: list[Run], phase_of: dict[Path, str], path: Path, steps: int = 60) -> Path | None:
    """NIW norm and noisy batch loss, relative to step 0, over the first `steps` SGD steps, for
    runs whose steps.csv records every step: a catapult rises and falls within a few steps, too
    fast for the epoch axis (and for a coarser log.every_steps)."""
    curves: dict[str, list] = {"niw": [], "loss": []}
    for run in runs:
        table = run.steps
        if table is None or len(table) < 3 or not math.isfinite(run.sigma) or run.sigma == 0:
            continue
        head = table[table["step"] <= steps]
        cols = [c for c in head.columns if c.startswith("niw_norm_")]
        if not cols or len(head) < 3 or int(head["step"].diff().max()) != 1:  # every step, or nothing to see
            continue
        t, phase = head["step"].to_numpy(dtype=float), phase_of.get(run.path, "")
        for key, col in (("niw", cols[0]), ("loss", "train_loss")):
            y = head[col].to_numpy(dtype=float)
            curves[key].append((run.sigma, t, y / y[0], phase))
    if len({c[0] for c in curves["niw"]}) < 2:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(15, 5.5), constrained_layout=True)
    _overlay(axes[0], curves["niw"], legend=None)
    outside = {"loc": "upper left", "bbox_to_anchor": (1.02, 1), "ncol": 2 if len(curves["niw"]) > MAX_LINES // 2 else 1}
    _overlay(axes[1], curves["loss"], legend=outside)
    axes[0].set(xlabel="SGD step", ylabel="|W_NI| / |W_NI(0)|", title="NIW norm, first steps (divergent runs dashed)")
    axes[1].set(xlabel="SGD step", ylabel="noisy batch loss / its step-0 value", title="noisy train loss, first steps")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def theory_figure(table: pd.DataFrame, bounds: dict[str, dict[str, float]], path: Path) -> Path | None:
    """Linear toy model: measured and predicted tau_niw against sigma, predicted boundaries as lines,
    measured phases shaded."""
    if table.empty or table["noise.sigma"].nunique() < 2:
        return None
    first_seed = table["seed"].iloc[0]
    t = table[table["seed"] == first_seed]
    sigma = t["noise.sigma"].to_numpy(dtype=float)
    fig, ax = plt.subplots(figsize=(8, 5), constrained_layout=True)
    _shade_phases(ax, sigma, list(t["measured_phase"]))
    for col, style, label in (
        ("tau_niw_measured", "o", "tau_niw measured"),
        ("tau_niw_predicted", "x--", "tau_niw predicted"),
        ("tau_train_measured", "s", "tau_train measured"),
        ("tau_train_predicted", "+--", "tau_train predicted"),
    ):
        v = t[col].to_numpy(dtype=float)
        ok = np.isfinite(v) & (v > 0)
        ax.plot(sigma[ok], v[ok], style, label=label)
    b = next(iter(bounds.values()))
    for name, s2 in b.items():
        ax.axvline(math.sqrt(s2), color="k", ls=":", lw=1)
        ax.text(math.sqrt(s2), 1.0, f" {name}", rotation=90, va="top", ha="right", fontsize=7, transform=ax.get_xaxis_transform())
    if (sigma > 0).all():
        ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set(
        xlabel="noise sigma",
        ylabel="decay time (epochs)",
        title=f"linear toy model (seed {first_seed}): theory (lines) vs simulation (shading, markers)",
    )
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _per_model(long: pd.DataFrame, groups: list[str]) -> tuple[str | None, list[str], list]:
    """Robustness figures get one row of panels per model when several were compared:
    (the model key or None, the keys that name a line within a panel, the models)."""
    rows_key = "model.name" if "model.name" in groups and long["model.name"].nunique() > 1 else None
    line_keys = [g for g in groups if g != rows_key] or groups
    return rows_key, line_keys, ordered(long[rows_key]) if rows_key else [None]


def robustness_figure(long: pd.DataFrame, groups: list[str], path: Path) -> Path | None:
    """Accuracy per method: against severity for Gaussian noise and each attack (clean at 0), and
    the mean over the MNIST-C corruptions as bars (clean accuracy marked); one row per model when
    several were compared. The per-corruption heatmap goes beside it (mnist_c_figure)."""
    if long.empty:
        return None
    long = long.copy()
    is_corr = ~long["perturbation"].isin(NOT_CORRUPTIONS)
    long.loc[is_corr, "perturbation"] = "MNIST-C"
    rows_key, line_keys, models = _per_model(long, groups)
    present = set(long["perturbation"])
    panels = [p for p in ("gaussian", "MNIST-C", "fgsm", "pgd", "apgd", "autoattack") if p in present]
    if not panels:
        return None
    fig, axes = plt.subplots(
        len(models), len(panels), figsize=(4.2 * len(panels), 3.6 * len(models)), squeeze=False, constrained_layout=True
    )
    # a method keeps its colour (and its bar's place) in every row, whichever methods a model has
    order = [k if isinstance(k, tuple) else (k,) for k, _ in long.groupby(line_keys, sort=True)]
    names = [" ".join(str(k) for k in key) for key in order]
    for r, model in enumerate(models):
        sub = long if model is None else long[long[rows_key] == model]
        clean = sub[sub["perturbation"] == "clean"]
        for c, panel in enumerate(panels):
            ax = axes[r, c]
            data = sub[sub["perturbation"] == panel]
            for key, g in data.groupby(line_keys, sort=True):
                key = key if isinstance(key, tuple) else (key,)
                i = order.index(key)
                label = names[i]
                base = clean[(clean[line_keys] == pd.Series(dict(zip(line_keys, key)))).all(axis=1)]["accuracy"]
                if panel == "MNIST-C":  # one bar: the mean over corruptions, per seed, then over seeds
                    per_seed = g.groupby("seed")["accuracy"].mean()
                    ax.bar(i, per_seed.mean(), yerr=per_seed.std() if len(per_seed) > 1 else 0.0, color=f"C{i}", capsize=2, label=label)
                    ax.plot([i - 0.4, i + 0.4], [base.mean()] * 2, color="k", lw=1)
                    continue
                per_seed = g.groupby(["severity", "seed"])["accuracy"].mean().reset_index()
                stats = per_seed.groupby("severity")["accuracy"].agg(["mean", "std"]).reset_index()
                xs = [0.0, *stats["severity"]]
                ys = [base.mean(), *stats["mean"]]
                es = [base.std() if len(base) > 1 else 0.0, *stats["std"].fillna(0.0)]
                ax.errorbar(xs, ys, yerr=es, marker="o", ms=3, capsize=2, color=f"C{i}", label=label)
            title = f"{model + ': ' if model else ''}{panel}"
            if panel == "MNIST-C":
                ax.set(title=title + " (mean over corruptions; line: clean)", ylabel="test accuracy", xticks=[])
            else:
                ax.set(title=title, xlabel="std (pixels)" if panel == "gaussian" else "epsilon (L-inf, pixels)", ylabel="test accuracy")
            ax.grid(alpha=0.3)
    legend: dict[str, object] = {}  # every method of every row, once
    for ax in axes[:, 0]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    if legend:
        labels = sorted(legend, key=names.index)
        fig.legend([legend[label] for label in labels], labels, loc="outside right upper", fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def mnist_c_figure(long: pd.DataFrame, groups: list[str], path: Path) -> Path | None:
    """Heatmap of test accuracy per method (rows) and MNIST-C corruption (columns), mean over seeds;
    one panel per model when several were compared."""
    corr = long[~long["perturbation"].isin(NOT_CORRUPTIONS)] if not long.empty else long
    if corr.empty:
        return None
    rows_key, line_keys, models = _per_model(corr, groups)
    names = list(dict.fromkeys(corr["perturbation"]))
    methods = corr.groupby(line_keys, sort=True).size().index
    fig, axes = plt.subplots(
        len(models), 1, figsize=(1.0 + 0.62 * len(names), 1.2 + 0.42 * len(methods) * len(models)), squeeze=False, constrained_layout=True
    )
    for r, model in enumerate(models):
        sub = corr if model is None else corr[corr[rows_key] == model]
        grid = sub.groupby([*line_keys, "perturbation"])["accuracy"].mean().unstack("perturbation").reindex(columns=names)
        ax = axes[r, 0]
        im = ax.imshow(grid.to_numpy(dtype=float), vmin=0, vmax=1, cmap="viridis", aspect="auto")
        for (i, j), v in np.ndenumerate(grid.to_numpy(dtype=float)):
            if not np.isnan(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6, color="w" if v < 0.6 else "k")
        ax.set_xticks(range(len(names)), [n.replace("_", " ") for n in names], rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(len(grid)), [" ".join(map(str, k if isinstance(k, tuple) else (k,))) for k in grid.index], fontsize=7)
        ax.set_title(f"{model + ': ' if model else ''}MNIST-C test accuracy (mean over seeds)", fontsize=9)
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def phase_diagram_figure(phases: pd.DataFrame, path: Path) -> Path | None:
    """The phase of each point of a two-key grid (sigma x lr, sigma x width, ...): a heatmap with one
    colour per phase, when exactly two keys vary."""
    keys = varying_keys(phases)
    if len(keys) != 2:
        return None
    x_key, y_key = ("noise.sigma", next(k for k in keys if k != "noise.sigma")) if "noise.sigma" in keys else keys
    xs, ys = ordered(phases[x_key]), ordered(phases[y_key])
    order = [*PHASES, "unknown"]
    grid = np.full((len(ys), len(xs)), np.nan)
    for _, row in phases.iterrows():
        grid[ys.index(row[y_key]), xs.index(row[x_key])] = order.index(row["phase"]) if row["phase"] in order else len(order) - 1
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(xs) + 2), max(3.5, 0.5 * len(ys) + 2)), constrained_layout=True)
    cmap = ListedColormap([PHASE_COLOURS[p] for p in order])
    ax.imshow(grid, cmap=cmap, vmin=-0.5, vmax=len(order) - 0.5, origin="lower", aspect="auto")
    ax.set_xticks(range(len(xs)), [_value(v) for v in xs], rotation=45)
    ax.set_yticks(range(len(ys)), [_value(v) for v in ys])
    ax.set(xlabel=x_key, ylabel=y_key, title="phase diagram (majority over seeds)")
    shown = [p for p in order if order.index(p) in set(np.nan_to_num(grid, nan=-1).astype(int).ravel())]
    ax.legend(handles=[Patch(color=PHASE_COLOURS[p], label=p) for p in shown], fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def hessian_trace_figure(runs: list[Run], path: Path) -> Path | None:
    """The recorded Tr H_z of each NIN layer against epoch (one panel per layer), coloured by sigma."""
    layers = sorted({c.removeprefix("hessian_trace_") for r in runs for c in r.metrics.columns if c.startswith("hessian_trace_")})
    runs = [r for r in runs if math.isfinite(r.sigma) and any(f"hessian_trace_{n}" in r.metrics for n in layers) and len(r.metrics) > 1]
    if not layers or not runs:
        return None
    sigmas = sorted({r.sigma for r in runs})
    many = len(sigmas) > MAX_LINES  # a colour bar, not a legend entry per sigma
    fig, axes = plt.subplots(1, len(layers), figsize=(5.5 * len(layers), 4.5), constrained_layout=True, squeeze=False)
    for ax, layer in zip(axes[0], layers):
        colour = _sigma_colour_bar(ax, sigmas, "sigma") if many else _sigma_colours(sigmas)
        labelled = set()
        for run in sorted(runs, key=lambda r: r.sigma):
            col = f"hessian_trace_{layer}"
            if col not in run.metrics:
                continue
            label = None if many or run.sigma in labelled else f"sigma={run.sigma:g}"
            labelled.add(run.sigma)
            ax.plot(run.metrics["epoch"], run.metrics[col], "o-", ms=2, lw=1, color=colour(run.sigma), label=label)
        _safe_log(
            ax,
            np.concatenate(
                [r.metrics[f"hessian_trace_{layer}"].to_numpy(dtype=float) for r in runs if f"hessian_trace_{layer}" in r.metrics]
            ),
        )
        ax.set(title=f"Tr H_z at {layer} (Hutchinson)", xlabel="epoch", ylabel="<Tr H_z> per sample")
        if not many:
            ax.legend(fontsize=7)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def niw_theory_figure(curves: list[tuple[str, pd.DataFrame]], path: Path) -> Path | None:
    """Each run's measured NIW norm (solid) against the one integrated from its recorded curvature
    and gradient moment (dashed; dotted: the decay term alone), one colour per run."""
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(8, 5), constrained_layout=True)
    for i, (label, traj) in enumerate(curves):
        color = f"C{i % 10}"
        ax.plot(traj["epoch"], traj["measured"], "-o", ms=2.5, color=color, label=label)
        ax.plot(traj["epoch"], traj["predicted"], "--", color=color)
        decay = traj["predicted_decay"].where(traj["predicted_decay"] > 1e-6 * traj["measured"].iloc[0])
        ax.plot(traj["epoch"], decay, ":", color=color)
    ax.set_yscale("log")
    ax.set(
        xlabel="epoch",
        ylabel="NIW norm",
        title="NIW norm: measured (solid), integrated curvature + random walk (dashed), decay only (dotted)",
    )
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def sweep_figures(runs: list, phases: pd.DataFrame, phase_of: dict, out: Path, ext: str = ".png") -> list[tuple[str, Path | None]]:
    """The figures of a sweep as a whole, (title, path or None where it does not apply): what
    `nin plot` draws besides the per-run panels, and what report.md shows."""
    long, groups = robustness_rows(runs), robustness_groups(runs)
    return [
        ("NIW norms", niw_overlay_figure(runs, phase_of, out / f"niw_norms{ext}")),
        ("NIW norm and loss over the first steps", first_steps_figure(runs, phase_of, out / f"first_steps{ext}")),
        ("decay times and phases", decay_times_figure(phases, out / f"decay_times{ext}")),
        ("phase diagram", phase_diagram_figure(phases, out / f"phase_diagram{ext}")),
        ("Hessian trace per NIN layer", hessian_trace_figure(runs, out / f"hessian_traces{ext}")),
        ("robustness", robustness_figure(long, groups, out / f"robustness{ext}")),
        ("MNIST-C accuracy per corruption", mnist_c_figure(long, groups, out / f"robustness_mnist_c{ext}")),
    ]


def plot_paths(paths: list[str], overrides: list[str], out: Path, ext: str, per_run: bool) -> list[Path]:
    """`nin plot`: a figure per run (unless not `per_run`) and the sweep's figures, in `out`."""
    acfg = load_settings("analysis", overrides)
    runs = load_runs(paths)
    if not runs:
        raise ConfigError(f"no runs found under {', '.join(paths)}")
    root = Path(paths[0]).resolve()
    summary = summarize(runs, acfg)
    phase_of = summary.phase_of(runs)
    written = []
    if per_run:
        for run in runs:
            if not len(run.metrics):
                continue  # nothing recorded yet: no figure of empty axes
            where = run.path.resolve()
            rel = where.relative_to(root) if where.is_relative_to(root) and where != root else run.path.name
            title = f"{run.path}  sigma={run.sigma:g}  phase={phase_of[run.path]}  status={run.status.get('status')}"
            written.append(run_figure(run, title, out / f"run_{re.sub(r'[^A-Za-z0-9_.=,-]+', '_', str(rel))}{ext}"))
    written += [path for _, path in sweep_figures(runs, summary.phases, phase_of, out, ext)]
    return [p for p in written if p is not None]
