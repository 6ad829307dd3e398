"""The NINR poster's table in one command: every sweep it needs, evaluated, and the table written.

    make poster                       # or: python scripts/poster.py [--jobs 2] [--table-only]

Runs the NINR comparison (+experiment=ninr_comparison: 9 methods x 3 seeds for the FC net and the
CNN, 60k training images, 10 epochs, each run evaluated clean, under noise, MNIST-C and the attacks on
the first 1,000 test images) as four sweeps into fixed directories under outputs/sweeps/poster/, two
at a time (one per core, one thread each). A sweep whose every run is finished and evaluated is
skipped; an interrupted one resumes where it stopped (the same command again). Then writes, from
those sweeps alone:

- docs/ninr/poster_clean.csv: nin's clean accuracy per model and method beside the poster's
  (docs/ninr/poster_reference.csv: the cells of the poster's table known here);
- the README's table, between its `poster:begin` / `poster:end` markers;
- docs/ninr/'s comparison files (scripts/ninr_docs.py);
- docs/ninr/poster_log.csv: each sweep's wall-clock minutes, appended whenever it trains.

The table's sweeps take longer than a working session on 2 cores (about 3.5 hours, most of it the
CNN's training and attacks), and outputs/ does not outlive a checkout. So each sweep, once complete,
is kept in docs/ninr/poster_runs/<sweep>/: every run's records but its checkpoint (config.yaml,
status.json, metrics.csv, steps.csv gzipped, network.json, env.json with the commit that trained it, train.log,
robustness.csv and .yaml). A later invocation restores a kept sweep into outputs/ instead of
training it again, and trains only what is not kept.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import math
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
from ninr_docs import main as ninr_docs  # a sibling script: scripts/ is on the path of `python scripts/poster.py`

from nin_cli.analysis.runs import load_runs
from nin_cli.analysis.summarize import last

ROOT = Path(__file__).resolve().parent.parent
SWEEPS_DIR = ROOT / "outputs" / "sweeps" / "poster"
DOCS = ROOT / "docs" / "ninr"
REFERENCE = DOCS / "poster_reference.csv"
TABLE = DOCS / "poster_clean.csv"
LOG = DOCS / "poster_log.csv"
README = ROOT / "README.md"
BEGIN, END = "<!-- poster:begin -->", "<!-- poster:end -->"
KEPT = DOCS / "poster_runs"
KEPT_FILES = ("config.yaml", "status.json", "metrics.csv", "network.json", "env.json", "train.log", "robustness.csv", "robustness.yaml")

METHODS = ("none", "l2", "dropout", "in_ninr_decay", "in_ninr_catapult", "full_ninr_decay", "full_ninr_catapult", "cdt02", "cdt04")
SEEDS = (0, 1, 2)
# Longest first, so that two workers finish close together (FC ~50 min, CNN ~5 min a run, on this 2-core CPU).
SWEEPS: dict[str, tuple[str, tuple[str, ...]]] = {
    "cnn_regularizers": ("cnn", ("none", "l2", "dropout", "cdt02", "cdt04")),
    "fc": ("fc", METHODS),
    "cnn_in_ninr": ("cnn", ("in_ninr_decay", "in_ninr_catapult")),
    "cnn_full_ninr": ("cnn", ("full_ninr_decay", "full_ninr_catapult")),
}


def command(name: str) -> list[str]:
    model, methods = SWEEPS[name]
    params = f"{{model:{model},method:'{','.join(methods)}',seed:'{','.join(map(str, SEEDS))}'}}"
    return [
        str(Path(sys.executable).parent / "nin"),
        "train",
        "-m",
        "+experiment=ninr_comparison",
        "hydra/launcher=batched",
        "evaluate=true",
        "robustness.attack_test_size=1000",
        f"hydra.sweeper.params={params}",
        "progress=false",
        f"hydra.sweep.dir={SWEEPS_DIR / name}",
    ]


def finished(name: str) -> int:
    """How many of the sweep's runs are finished and evaluated (robustness.csv written)."""
    path = SWEEPS_DIR / name
    if not path.is_dir():
        return 0
    return sum(
        1 for run in load_runs([path]) if run.status.get("status") in ("completed", "diverged") and (run.path / "robustness.csv").is_file()
    )


def expected_runs(name: str) -> int:
    return len(SWEEPS[name][1]) * len(SEEDS)


def keep(name: str) -> bool:
    """A complete sweep's records (but checkpoints) into docs/ninr/poster_runs/<name>/; whether it was complete."""
    if finished(name) != expected_runs(name):
        return False
    target = KEPT / name
    shutil.rmtree(target, ignore_errors=True)
    for run in load_runs([SWEEPS_DIR / name]):
        where = target / run.path.name
        where.mkdir(parents=True)
        for file in KEPT_FILES:
            if (run.path / file).is_file():
                shutil.copy2(run.path / file, where / file)
        with open(run.path / "steps.csv", "rb") as raw, open(where / "steps.csv.gz", "wb") as out:
            with gzip.GzipFile(filename="", mode="wb", compresslevel=9, fileobj=out, mtime=0) as packed:  # the same bytes each time
                shutil.copyfileobj(raw, packed)
    return True


def restore(name: str) -> int:
    """A kept sweep's runs into outputs/ where they are not finished there; how many were restored."""
    kept = sorted(p for p in (KEPT / name).glob("*") if p.is_dir())
    if len(kept) != expected_runs(name):
        return 0
    for run in kept:
        where = SWEEPS_DIR / name / run.name
        where.mkdir(parents=True, exist_ok=True)
        for file in KEPT_FILES:
            if (run / file).is_file():
                shutil.copy2(run / file, where / file)
        with gzip.open(run / "steps.csv.gz", "rb") as packed, open(where / "steps.csv", "wb") as raw:
            shutil.copyfileobj(packed, raw)
    return len(kept)


def run_sweep(name: str) -> tuple[str, str, float]:
    expected = expected_runs(name)
    if finished(name) < expected and restore(name):
        print(f"{name}: restored from {KEPT.relative_to(ROOT) / name} (trained and evaluated by an earlier invocation)", flush=True)
    done = finished(name)
    if done == expected:
        print(f"{name}: complete ({done} runs), skipped", flush=True)
        return name, "skipped", 0.0
    print(f"{name}: {done}/{expected} runs finished; training the rest (log: {SWEEPS_DIR / name}.log)", flush=True)
    SWEEPS_DIR.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with open(SWEEPS_DIR / f"{name}.log", "a") as log:
        code = subprocess.call(command(name), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    seconds = time.monotonic() - start
    status = "ran" if code == 0 and keep(name) else f"incomplete (exit {code})"
    print(f"{name}: {status} in {seconds / 60:.1f} min", flush=True)
    return name, status, seconds


def verdict(mean: float, poster: float, spread: float) -> str:
    if math.isnan(poster) or math.isnan(mean):
        return "-"
    if math.isnan(spread):
        return f"{mean - poster:+.1f} (no ± quoted)"
    return "yes" if abs(mean - poster) <= spread else f"no ({mean - poster:+.1f})"


def clean_accuracy(paths: list[Path]) -> pd.DataFrame:
    """nin's cell per (model, method): mean, std and count over seeds of each finished run's last test accuracy (%)."""
    runs = [run for run in load_runs(paths) if run.status.get("status") in ("completed", "diverged")]
    if not runs:
        sys.exit(f"no finished run under {', '.join(map(str, paths))}")
    clean = pd.DataFrame(
        {"model": run.config.get("model.name"), "method": run.config.get("method"), "acc": 100 * last(run, "test_acc")} for run in runs
    )
    ours = clean.groupby(["model", "method"])["acc"].agg(["mean", "std", "count"]).reset_index()
    reference = pd.read_csv(REFERENCE)
    cells = ours.merge(reference, on=["model", "method"], how="outer").rename(
        columns={"mean": "nin_mean", "std": "nin_std", "count": "seeds"}
    )
    cells["within"] = [verdict(*row) for row in cells[["nin_mean", "poster_mean", "poster_std"]].itertuples(index=False, name=None)]
    order = {name: i for i, name in enumerate(("fc", "cnn", *METHODS))}
    return cells.sort_values(["model", "method"], key=lambda col: col.map(order)).reset_index(drop=True)


def markdown(cells: pd.DataFrame) -> str:
    def cell(mean: float, std: float, seeds: float = 3) -> str:
        if math.isnan(mean):
            return "-"
        if seeds < 2:
            return f"{mean:.1f} (1 seed)"
        return f"{mean:.1f}" + ("" if math.isnan(std) else f" ± {std:.1f}")

    lines = ["| method | FC: poster | FC: nin | within | CNN: poster | CNN: nin | within |", "|---|---|---|---|---|---|---|"]
    indexed = cells.set_index(["model", "method"])
    for method in METHODS:
        row = [method]
        for model in ("fc", "cnn"):
            c = indexed.loc[(model, method)] if (model, method) in indexed.index else None
            if c is None:
                row += ["-", "-", "-"]
                continue
            seeds = 0.0 if math.isnan(c["seeds"]) else float(c["seeds"])
            row += [cell(c["poster_mean"], c["poster_std"]), cell(c["nin_mean"], c["nin_std"], seeds), c["within"]]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def write_readme(table: str) -> None:
    text = README.read_text()
    head, begin, rest = text.partition(BEGIN)
    _, end, tail = rest.partition(END)
    if not begin or not end:
        sys.exit(f"README.md has no {BEGIN} ... {END} markers for the table")
    README.write_text(f"{head}{BEGIN}\n{table}\n{END}{tail}")


def log(results: list[tuple[str, str, float]]) -> None:
    new = not LOG.exists()
    with open(LOG, "a", newline="") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(["date", "sweep", "status", "minutes"])
        stamp = time.strftime("%Y-%m-%d %H:%M")
        for name, status, seconds in results:
            if status != "skipped":  # a log of what trained: a complete sweep restored or kept is not a row
                writer.writerow([stamp, name, status, f"{seconds / 60:.1f}"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2, help="sweeps trained at once (one per core; default 2)")
    parser.add_argument("--table-only", action="store_true", help="write the table from the sweeps as they stand; train nothing")
    args = parser.parse_args()
    paths = [SWEEPS_DIR / name for name in SWEEPS]
    if args.table_only:
        for name in SWEEPS:  # a kept sweep where outputs/ has less; a complete one kept
            if finished(name) < expected_runs(name):
                restore(name)
            keep(name)
    if not args.table_only:
        start = time.monotonic()
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            results = list(pool.map(run_sweep, SWEEPS))
        log(results)
        print(f"all sweeps: {(time.monotonic() - start) / 60:.1f} min wall-clock with {args.jobs} at once")
        if any(status.startswith("incomplete") for _, status, _ in results):
            sys.exit("some sweeps are incomplete (their logs say why); run the same command again to resume them")
    cells = clean_accuracy([path for path in paths if path.is_dir()])
    cells.assign(seeds=cells["seeds"].astype("Int64")).to_csv(TABLE, index=False, float_format="%.2f")
    table = markdown(cells)
    write_readme(table)
    ninr_docs([str(path) for path in paths if path.is_dir()])
    print(table)
    print(f"wrote {TABLE.relative_to(ROOT)}, the README's table and docs/ninr/'s comparison files")


if __name__ == "__main__":
    main()
