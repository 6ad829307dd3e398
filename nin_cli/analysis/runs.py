"""Finding and reading run directories, unfinished and damaged ones included."""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from nin_cli.config.resolve import load
from nin_cli.errors import ConfigError, RecordError
from nin_cli.records.locks import RunLock

MARKERS = ("metrics.csv", "status.json")


@dataclass
class Run:
    path: Path
    config: dict
    status: dict
    metrics: pd.DataFrame
    steps: pd.DataFrame | None
    warnings: list[str] = field(default_factory=list)
    network: dict = field(default_factory=dict)  # network.json ({} for a run recorded before it existed)

    @property
    def sigma(self) -> float:
        return float(self.config.get("noise.sigma", math.nan))

    @property
    def nin_layers(self) -> list[str]:
        return [c.removeprefix("niw_norm_") for c in self.metrics.columns if c.startswith("niw_norm_")]

    def feeds(self, nin: str) -> str | None:
        """The layer whose weight norm goes with a NIN's (its weight_norm_ column's name): from
        network.json, else, for a run recorded before it, the weight columns in NIN order."""
        for entry in self.network.get("nins", []):
            if entry.get("layer") == nin:
                return entry.get("feeds")
        weights = [c.removeprefix("weight_norm_") for c in self.metrics.columns if c.startswith("weight_norm_")]
        nins = self.nin_layers
        if len(weights) == len(nins):
            return weights[nins.index(nin)] if nin in nins else None
        return weights[0] if weights and nins and nin == nins[0] else None

    def steps_per_epoch(self) -> float:
        m = self.metrics
        if len(m) >= 2 and m["epoch"].iloc[-1] > 0:
            return float(m["step"].iloc[-1] / m["epoch"].iloc[-1])
        return math.nan


def find_runs(paths: list[str | Path]) -> list[Path]:
    """Every directory under `paths` that holds a run (a metrics.csv or a status.json)."""
    found: set[Path] = set()
    for root in map(Path, paths):
        if not root.exists():
            warnings.warn(f"{root}: no such file or directory", stacklevel=2)
            continue
        candidates = [root] if root.is_file() else [root, *root.rglob("*")]
        for p in candidates:
            if p.is_dir() and any((p / m).exists() for m in MARKERS) and not foreign(p):
                found.add(p)
            elif p.is_file() and p.name in MARKERS and not foreign(p.parent):
                found.add(p.parent)
    return sorted(found)


def foreign(path: Path) -> bool:
    """A directory another tool's logger wrote (Lightning's CSVLogger: a metrics.csv beside
    hparams.yaml), not a nin run: the nin probe's records sit in a folder of their own below it."""
    return (path / "hparams.yaml").exists() and not any((path / name).exists() for name in ("status.json", "config.yaml"))


NAN_TEXT = ("nan", "-nan", "+nan")


REQUIRED = ("train_loss",)  # beside the key: what every metrics.csv and steps.csv nin wrote has


def read_table(path: Path, key: str, problems: list[str]) -> pd.DataFrame | None:
    """A run's CSV, keeping only complete numeric rows; what was dropped becomes a warning.

    A row is damaged when it has the wrong number of fields or a cell that is not a number
    ("nan" and "inf" are numbers: a regression run has no accuracy, a diverged one a NaN loss).
    pandas' C reader does the work: rows with extra fields are skipped (and counted from its
    warnings); "nan" reads as NaN, but an empty cell stays text (no other NA parsing), so a row cut
    short leaves its column text, and only such columns are parsed again, cell by cell.
    """
    if not path.exists():
        return None
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            header = f.readline().rstrip("\r\n").split(",")
        missing = [c for c in (key, *REQUIRED) if c not in header]
        if missing:
            problems.append(f"{path.name} has no {', '.join(missing)} column (its header is damaged)")
            return None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", pd.errors.ParserWarning)
            raw = pd.read_csv(path, keep_default_na=False, na_values=list(NAN_TEXT), on_bad_lines="warn", encoding_errors="replace")
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        problems.append(f"{path.name} unreadable ({type(exc).__name__})")
        return None
    bad = sum(str(w.message).count("Skipping line") for w in caught)
    damaged = pd.Series(False, index=raw.index)
    for c in raw.columns:
        if not pd.api.types.is_numeric_dtype(raw[c]):  # text: "nan", or damage
            number = pd.to_numeric(raw[c], errors="coerce")
            damaged |= number.isna() & ~raw[c].astype(str).str.strip().str.lower().isin(NAN_TEXT)
            raw[c] = number
    if len(raw) and not damaged.iloc[-1] and not _ends_a_line(path):  # nin writes whole lines: the last was cut
        damaged.iloc[-1] = True
        problems.append(f"{path.name}: its last line is cut short")
    table = raw[~damaged].astype(float).reset_index(drop=True)
    table.columns = header
    bad += int(damaged.sum())
    if bad:
        problems.append(f"{path.name}: skipped {bad} damaged row(s)")
    return table


def _ends_a_line(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def load_run(path: Path) -> Run:
    problems: list[str] = []
    config: dict = {}
    for name in ("config.yaml", ".hydra/config.yaml"):
        if (path / name).exists():
            try:
                config = load(path / name).flat
                break
            except (RecordError, ConfigError) as exc:  # a damaged YAML must not stop a summary of 500 runs
                problems.append(f"{name} unreadable: {exc}")
    else:
        problems.append("no config.yaml")
    try:
        status = json.loads((path / "status.json").read_text())
    except FileNotFoundError:
        status = {"status": "unknown"}
        problems.append("no status.json")
    except (json.JSONDecodeError, UnicodeDecodeError):
        status = {"status": "unknown"}
        problems.append("status.json damaged")
    metrics = read_table(path / "metrics.csv", "epoch", problems)
    if metrics is None:
        metrics = pd.DataFrame({"epoch": [], "step": []})
        problems.append("no usable metrics.csv")
    ended = status.get("epoch")
    if isinstance(ended, int) and len(metrics) and float(metrics["epoch"].iloc[-1]) < ended:
        problems.append(f"metrics.csv ends at epoch {int(metrics['epoch'].iloc[-1])}, status.json says epoch {ended}: rows are missing")
    steps = read_table(path / "steps.csv", "step", problems)
    problems += record_gaps(metrics, "epoch") + record_gaps(steps, "step", every=None)
    if status.get("status") == "running":
        holder = RunLock(path).holder()
        problems.append(
            f"still training (process {holder})" if holder else "status says running but no process holds the run: it was killed; resume it"
        )
    try:
        network = json.loads((path / "network.json").read_text())
    except FileNotFoundError:
        network = {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        network = {}
        problems.append("network.json damaged")
    return Run(path, config, status, metrics, steps, problems, network if isinstance(network, dict) else {})


def record_gaps(table: pd.DataFrame | None, key: str, every: int | None = 1) -> list[str]:
    """Duplicated keys, and (for epochs) keys missing between 0 and the last: a record a resume broke."""
    if table is None or not len(table):
        return []
    keys = table[key].astype(int).tolist()
    problems = []
    if len(set(keys)) != len(keys):
        problems.append(f"{key} rows duplicated ({len(keys) - len(set(keys))} extra)")
    if every and sorted(set(keys)) != list(range(0, max(keys) + 1, every)):
        missing = sorted(set(range(0, max(keys) + 1, every)) - set(keys))
        problems.append(f"{key}s missing: {', '.join(map(str, missing[:10]))}{' ...' if len(missing) > 10 else ''}")
    return problems


def load_runs(paths: list[str | Path]) -> list[Run]:
    return [load_run(p) for p in find_runs(paths)]
