"""Phase maps: where along a noise axis the majority phase over seeds changes, located by refining.

A map is a set of points on one axis (noise.sigma2_paper by default, in the papers' units; log
scale), optionally one map per value of a second key (lr, width, ...). At each point every seed's
run is classified (analysis/phases.py); the point's phase is the majority over its seeds (a tie is
`mixed`). A boundary is a pair of neighbouring points whose phases differ; it is bracketed once the
ratio of its two values is at most the tolerance. Refining puts one new point at the geometric
middle of each wider bracket. Everything here is a pure function of the runs' phases, so a map
restarted from its directory makes the same choices it would have made uninterrupted.
"""

from __future__ import annotations

import json
import math
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.patches import Patch, Rectangle
from omegaconf import DictConfig

from nin_cli.analysis.phases import PHASES, run_phase
from nin_cli.analysis.plots import PHASE_COLOURS
from nin_cli.analysis.predict import predict
from nin_cli.analysis.runs import find_runs, load_run
from nin_cli.analysis.summarize import markdown, write_csv
from nin_cli.config.resolve import resolve
from nin_cli.config.schema import load_settings
from nin_cli.errors import ConfigError, counted
from nin_cli.identity import identity
from nin_cli.nets.network import record_of
from nin_cli.records.store import FINISHED, RunRecords, atomic_write_text
from nin_cli.train.setup import build

MIXED = "mixed"
ORDER = {phase: i for i, phase in enumerate(PHASES)}


def rounded(value: float) -> float:
    """A point's value as it names a run directory: 3 significant digits."""
    return float(f"{value:.3g}")


def majority(phases: list[str]) -> str:
    """The phase most seeds are in; `mixed` on a tie. Runs without a phase (failed) do not vote."""
    votes = Counter(p for p in phases if p in ORDER)
    if not votes:
        return "unknown"
    (first, n), *rest = votes.most_common()
    return MIXED if rest and rest[0][1] == n else first


def votes_text(phases: list[str]) -> str:
    """`decay 2/3, catapult 1/3`, in phase order."""
    votes = Counter(phases)
    total = len(phases)
    return ", ".join(f"{p} {votes[p]}/{total}" for p in sorted(votes, key=lambda p: ORDER.get(p, 99)))


@dataclass
class Bracket:
    """Two neighbouring points with different majority phases."""

    lo: float
    hi: float
    below: str
    above: str
    votes_below: str
    votes_above: str

    @property
    def ratio(self) -> float:
        return self.hi / self.lo

    @property
    def name(self) -> str:
        return f"{self.below}/{self.above}"


@dataclass
class Axis:
    """The points of one map (one value of the second key): value -> the seeds' phases."""

    phases: dict[float, list[str]] = field(default_factory=dict)

    def brackets(self) -> list[Bracket]:
        values = sorted(v for v in self.phases if majority(self.phases[v]) != "unknown")
        out = []
        for lo, hi in zip(values, values[1:]):
            below, above = majority(self.phases[lo]), majority(self.phases[hi])
            if below != above:
                out.append(Bracket(lo, hi, below, above, votes_text(self.phases[lo]), votes_text(self.phases[hi])))
        return out

    def refinements(self, tolerance: float) -> list[float]:
        """The geometric middles of the brackets still wider than `tolerance`, widest first."""
        wide = sorted((b for b in self.brackets() if b.ratio > tolerance), key=lambda b: -b.ratio)
        out = []
        for b in wide:
            middle = rounded(math.sqrt(b.lo * b.hi))
            if b.lo < middle < b.hi and middle not in self.phases:
                out.append(middle)
        return out


def boundaries_table(axes: dict[object, Axis], axis_key: str, second_key: str | None, tolerance: float) -> pd.DataFrame:
    """A row per located boundary: its bracket, the ratio, whether within tolerance, the votes."""
    rows = []
    for second, axis in axes.items():
        for b in axis.brackets():
            row = {second_key: second} if second_key else {}
            row |= {
                "boundary": b.name,
                f"{axis_key} below": b.lo,
                f"{axis_key} above": b.hi,
                "ratio": round(b.ratio, 4),
                "bracketed": b.ratio <= tolerance,
                "seeds below": b.votes_below,
                "seeds above": b.votes_above,
            }
            rows.append(row)
    return pd.DataFrame(rows)


def points_table(axes: dict[object, Axis], axis_key: str, second_key: str | None) -> pd.DataFrame:
    rows = []
    for second, axis in axes.items():
        for value in sorted(axis.phases):
            row = {second_key: second} if second_key else {}
            row |= {axis_key: value, "phase": majority(axis.phases[value]), "seeds": votes_text(axis.phases[value])}
            rows.append(row)
    return pd.DataFrame(rows)


# --- a map as it runs: rounds of runs, read back from the sweep directory ---------------------------
AXES = ("noise.sigma2_paper", "noise.sigma")
SET_BY_THE_MAP = ("seed", "noise.sigma", "noise.sigma2_paper")


def decade_grid(lo: float, hi: float, per_decade: int) -> list[float]:
    """lo, hi, and the values 10^(k / per_decade) between them: anchored at powers of ten, so a
    wider range or a finer grid keeps every point a narrower or coarser one had."""
    k_lo, k_hi = math.ceil(math.log10(lo) * per_decade - 1e-9), math.floor(math.log10(hi) * per_decade + 1e-9)
    return sorted({rounded(lo), rounded(hi), *(rounded(10 ** (k / per_decade)) for k in range(k_lo, k_hi + 1))})


def split_values(text: object) -> list[str]:
    return [v.strip() for v in str(text).split(",") if v.strip()]


class MapRun:
    """One `hydra/sweeper=map` multirun: which runs each round needs, and the map they make."""

    def __init__(self, settings: dict, overrides: list, sweep_dir: Path, compose: Callable[[list[str]], DictConfig]):
        self.sweep_dir, self.compose = sweep_dir, compose
        self.axis = str(settings.get("axis", "noise.sigma2_paper"))
        self.tolerance, self.budget = float(settings.get("tolerance", 1.2)), int(settings.get("budget", 200))
        self.per_decade = int(settings.get("per_decade", 1))
        self.nin = str(settings["nin"]) if settings.get("nin") is not None else None
        if self.axis not in AXES:
            raise ConfigError(f"hydra.sweeper.axis={self.axis}: a map's axis is one of {', '.join(AXES)} (log scale)")
        if not self.tolerance > 1:
            raise ConfigError(f"hydra.sweeper.tolerance={self.tolerance}: a bracket's ratio hi/lo, so it must be > 1 (e.g. 1.2)")
        if self.budget < 1 or self.per_decade < 1:
            raise ConfigError("hydra.sweeper.budget and hydra.sweeper.per_decade must be >= 1")
        self.fixed, self.second_key, self.seconds = self._split(overrides)
        params = dict(settings.get("params") or {})
        self.seeds = split_values(settings.get("seeds") or params.get("seed", "0,1,2"))
        grid = [float(v) for v in split_values(params[self.axis])] if self.axis in params else []
        lo, hi = settings.get("lo"), settings.get("hi")
        lo, hi = (float(lo) if lo is not None else min(grid, default=None)), (float(hi) if hi is not None else max(grid, default=None))
        if lo is None or hi is None:
            raise ConfigError(f"give the map's range: hydra.sweeper.lo=... hydra.sweeper.hi=... (in {self.axis})")
        if not 0 < lo < hi:
            raise ConfigError(f"hydra.sweeper.lo={lo} and hi={hi}: the axis is on a log scale, so 0 < lo < hi")
        self.first_grid = decade_grid(lo, hi, self.per_decade)
        if settings.get("lo") is None and settings.get("hi") is None and grid:
            self.first_grid = sorted({rounded(v) for v in grid})  # the experiment's own coarse grid
        self.acfg = load_settings("analysis")
        self.bases = {self._key(self._resolved(second, self.first_grid[0], self.seeds[0]).flat): second for second in self.seconds}
        if self.nin is not None:
            self._check_nin(self._resolved(self.seconds[0], self.first_grid[0], self.seeds[0]))
        self.predicted = self._predict() if settings.get("predict") else {}
        for value in self.predicted.values():  # a bracket of the tolerance around each predicted boundary
            if lo <= value <= hi:
                self.first_grid = sorted({*self.first_grid, rounded(value / self.tolerance**0.5), rounded(value * self.tolerance**0.5)})
        self.last_round: list[list[str]] | None = None
        self.rounds = 0

    # the command line ---------------------------------------------------------------------------
    def _split(self, overrides: list) -> tuple[list[str], str | None, list[str | None]]:
        """(the fixed overrides, the second axis's key, its values): at most one key may be swept."""
        fixed, second_key, seconds = [], None, [None]
        for o in overrides:
            key = o.get_key_element()
            if key in SET_BY_THE_MAP or key == self.axis:
                raise ConfigError(
                    f"{o.input_line}: the map sets {self.axis} and seed itself; give its range with "
                    "hydra.sweeper.lo=... hydra.sweeper.hi=..., its seeds with hydra.sweeper.seeds='0,1,2'"
                )
            if o.is_sweep_override():
                if second_key is not None:
                    raise ConfigError(f"a map has one second axis: {second_key} and {key} are both swept")
                second_key, seconds = key, [str(v) for v in o.sweep_string_iterator()]
            else:
                fixed.append(o.input_line)
        return fixed, second_key, seconds

    def job(self, second: str | None, value: float, seed: str) -> list[str]:
        extra = [f"{self.second_key}={second}"] if self.second_key else []
        return [*self.fixed, *extra, f"{self.axis}={value:g}", f"seed={seed}"]

    def _resolved(self, second: str | None, value: float, seed: str):
        return resolve(self.compose(self.job(second, value, seed)))

    def _key(self, flat: dict) -> str:
        """Which row of the map a run is on: its run identity without the axis and the seed (the
        second key's value stays in it, so each row has its own key)."""
        skip = {*SET_BY_THE_MAP, self.axis}
        return json.dumps({k: v for k, v in identity(flat, "resume").items() if k not in skip}, sort_keys=True, default=str)

    def _predict(self) -> dict[str, float]:
        """`nin predict`'s boundaries for the base config, in the axis's units."""
        run = self._resolved(self.seconds[0], self.first_grid[0], self.seeds[0])
        result = predict(build(run.cfg), self.acfg)
        scale = 1 / result.sigma2_unit if self.axis == "noise.sigma2_paper" else None
        return {name: (s2 * scale if scale is not None else math.sqrt(s2)) for name, s2 in result.boundaries.items() if math.isfinite(s2)}

    def _check_nin(self, run) -> None:
        """hydra.sweeper.nin names a NIN the map's network has (built once, on the CPU, no data)."""
        record = record_of(run.cfg.model, run.cfg.nin, run.cfg.dataset, int(run.cfg.seed))
        if record is None:
            return  # a dataset factory: its runs say (run_phase names their NINs)
        nins = [nin["layer"] for nin in record["nins"]]
        if self.nin not in nins:
            raise ConfigError(
                f"hydra.sweeper.nin={self.nin}: the map's runs have no NIN there; their NINs are at: {', '.join(nins) or 'none'}"
            )

    # the directory --------------------------------------------------------------------------------
    def scan(self) -> dict[str | None, dict[float, dict[str, str]]]:
        """second value -> axis value -> seed -> phase, of the ended runs in the directory that belong to the map."""
        found: dict[str | None, dict[float, dict[str, str]]] = {s: {} for s in self.seconds}
        for run_dir in find_runs([self.sweep_dir]):
            status = RunRecords(run_dir).read_status()  # before reading its tables: only ended runs are points
            if not status or status["status"] not in FINISHED:
                continue
            run = load_run(run_dir)
            flat = run.config
            if not flat:  # its config damaged or gone: load_run says which
                print(f"nin: warning: {run_dir}: {'; '.join(run.warnings)}; not in the map", file=sys.stderr)
                continue
            second = self.bases.get(self._key(flat), "-")
            if second == "-" or str(flat.get("seed")) not in self.seeds or flat.get(self.axis) is None:
                continue
            phase = run_phase(run, self.acfg.phases, self.nin)[0]  # the run's phase, or the named NIN's
            found[second].setdefault(rounded(float(flat[self.axis])), {})[str(flat["seed"])] = phase
        return found

    @staticmethod
    def count(found) -> int:
        """Runs in a scan."""
        return sum(len(seeds) for points in found.values() for seeds in points.values())

    def axes(self, found) -> dict[str | None, Axis]:
        return {s: Axis({v: list(seeds.values()) for v, seeds in points.items()}) for s, points in found.items()}

    def next_round(self) -> list[list[str]] | None:
        """The jobs of the next round: the first grid's and any seed missing at a point, else one
        new point in each bracket wider than the tolerance; None once the map is done."""
        found = self.scan()
        have = self.count(found)
        todo: list[list[str]] = []
        for second in self.seconds:
            points = found[second]
            values = sorted({*self.first_grid, *points})
            todo += [self.job(second, v, s) for v in values for s in self.seeds if s not in points.get(v, {})]
        if not todo:
            axes = self.axes(found)
            for second in self.seconds:
                todo += [self.job(second, v, s) for v in axes[second].refinements(self.tolerance) for s in self.seeds]
        if not todo:
            return None
        room = self.budget - have
        if room <= 0:
            print(f"map: the budget of {self.budget} runs is spent ({have} runs)", file=sys.stderr)
            return None
        todo = todo[:room]
        if todo == self.last_round:
            print(
                f"nin: warning: map: {len(todo)} runs of the last round did not end (see their status.json); the map stops here",
                file=sys.stderr,
            )
            return None
        self.last_round, self.rounds = todo, self.rounds + 1
        print(f"map: round {self.rounds}: {counted(len(todo), 'run')} ({have} ended so far, budget {self.budget})", file=sys.stderr)
        return todo

    def finish(self) -> None:
        """boundaries.csv/.md, map_points.csv and map.png in the sweep directory; the boundaries printed."""
        found = self.scan()
        axes = self.axes(found)
        runs = self.count(found)
        bounds = boundaries_table(axes, self.axis, self.second_key, self.tolerance)
        if self.predicted and len(bounds):
            bounds["predicted"] = bounds["boundary"].map(self.predicted)
            middle = (bounds[f"{self.axis} below"] * bounds[f"{self.axis} above"]) ** 0.5
            bounds["located / predicted"] = (middle / bounds["predicted"]).round(3)
        write_csv(points_table(axes, self.axis, self.second_key), self.sweep_dir / "map_points.csv")
        write_csv(bounds, self.sweep_dir / "boundaries.csv")
        wide = int((~bounds["bracketed"]).sum()) if len(bounds) else 0
        line = f"{runs} runs; {len(bounds)} boundaries, {len(bounds) - wide} bracketed within a factor {self.tolerance:g}"
        line += f", {wide} wider (budget of {self.budget} runs spent)" if wide else ""
        text = [
            f"Map of {self.axis} (log scale), seeds {','.join(self.seeds)}: {line}.",
            "",
            markdown(bounds) if len(bounds) else "(no boundary)",
        ]
        atomic_write_text(self.sweep_dir / "boundaries.md", "\n".join(text) + "\n")
        map_figure(axes, self.axis, self.second_key, self.sweep_dir / "map.png")
        print(f"map: {line}: {self.sweep_dir / 'boundaries.csv'}", file=sys.stderr)
        if len(bounds):
            print(bounds.to_string(index=False), file=sys.stderr)


def ordered_rows(seconds: list) -> bool:
    """Whether the second key's values are numbers (rows in an order a boundary can be followed along)."""
    try:
        return all(s is not None and math.isfinite(float(s)) for s in seconds)
    except (TypeError, ValueError):
        return False


def map_figure(axes: dict[str | None, Axis], axis_key: str, second_key: str | None, path: Path) -> None:
    """The phase diagram: a row per value of the second key, each point's cell (out to the
    geometric middles with its neighbours) coloured by its majority phase, each point marked, and
    each boundary drawn at its bracket's geometric middle, joined across rows."""
    matplotlib.use("Agg")
    colours = {**{p: PHASE_COLOURS[p] for p in PHASES}, MIXED: PHASE_COLOURS["unknown"]}
    every = sorted({v for axis in axes.values() for v in axis.phases})
    if not every:
        return
    seconds = list(axes)
    fig, ax = plt.subplots(figsize=(8, 1.6 + 0.7 * len(seconds)))
    lines: dict[str, list[tuple[float, int]]] = {}
    for row, second in enumerate(seconds):
        values = sorted(axes[second].phases)
        edges = [values[0] / 1.5, *(math.sqrt(a * b) for a, b in zip(values, values[1:])), values[-1] * 1.5] if values else []
        for i, value in enumerate(values):
            phase = majority(axes[second].phases[value])
            ax.add_patch(Rectangle((edges[i], row - 0.4), edges[i + 1] - edges[i], 0.8, color=colours.get(phase, "white"), lw=0))
            ax.plot(value, row, "|", color="black", markersize=12)
        for b in axes[second].brackets():
            lines.setdefault(b.name, []).append((math.sqrt(b.lo * b.hi), row))
    if ordered_rows(seconds):  # a boundary joined across rows of a numeric second key (lr, width, ...)
        for i, (name, pts) in enumerate(lines.items()):
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "-" if len(pts) > 1 else "|", color="black", linewidth=1.5, markersize=30)
            ax.annotate(name, (pts[-1][0], pts[-1][1] + (0.45 if i % 2 == 0 else -0.6)), ha="center", fontsize=8)
    else:  # rows of names (nin.init=layer,input,...) have no order between them: each row's own boundaries
        for name, pts in lines.items():
            for x, row in pts:
                ax.plot([x, x], [row - 0.4, row + 0.4], color="black", linewidth=1.5)
                ax.annotate(name, (x, row + 0.42), ha="center", va="bottom", fontsize=7)
    ax.set_xscale("log")
    ax.set_xlim(every[0] / 1.5, every[-1] * 1.5)
    ax.set_yticks(range(len(seconds)), [str(s) if s is not None else "" for s in seconds])
    ax.set_ylim(-0.8, len(seconds) - 0.2)
    ax.set_xlabel(f"{axis_key} (ticks: runs; lines: boundaries at their brackets' middles)")
    if second_key:
        ax.set_ylabel(second_key)
    handles = [Patch(color=c, label=p) for p, c in colours.items()]
    ax.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=5, fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
