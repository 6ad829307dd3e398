"""Whether two trees of run directories hold the same records: every run of one in the other (joined
by its path, the run's identity), and every value of every metrics.csv and steps.csv row equal, but
the wall-clock columns. What a structural change is proved by: the same commands before and after,
their records compared value by value.

    python scripts/same_records.py BEFORE AFTER     # exit 1 where a value, a column or a run differs
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

TABLES = ("metrics.csv", "steps.csv")
CLOCK = ("seconds",)  # wall-clock columns: the only ones a rerun may change
JSONS = ("network.json",)


def runs(root: Path) -> dict[str, Path]:
    return {str(p.parent.relative_to(root)): p.parent for p in root.rglob("metrics.csv")}


def compare(before: Path, after: Path) -> tuple[int, list[str]]:
    """(values compared, what differs)."""
    a, b = runs(before), runs(after)
    differ = [f"run {r}: only in {before}" for r in sorted(a.keys() - b.keys())]
    differ += [f"run {r}: only in {after}" for r in sorted(b.keys() - a.keys())]
    compared = 0
    for run in sorted(a.keys() & b.keys()):
        for name in TABLES:
            if not (a[run] / name).exists() and not (b[run] / name).exists():
                continue
            x, y = pd.read_csv(a[run] / name), pd.read_csv(b[run] / name)
            if list(x.columns) != list(y.columns) or len(x) != len(y):
                differ.append(f"{run}/{name}: columns or rows differ ({len(x)} x {list(x.columns)} against {len(y)} x {list(y.columns)})")
                continue
            for column in (c for c in x.columns if c not in CLOCK):
                same = (x[column] == y[column]) | (x[column].isna() & y[column].isna())
                compared += len(same)
                if not same.all():
                    first = int((~same).to_numpy().argmax())
                    was, now = x[column][first], y[column][first]
                    differ.append(f"{run}/{name}: {column} differs in {int((~same).sum())} rows (first: row {first}: {was!r}, {now!r})")
        for name in JSONS:
            if (a[run] / name).exists() or (b[run] / name).exists():
                compared += 1
                if json.loads((a[run] / name).read_text()) != json.loads((b[run] / name).read_text()):
                    differ.append(f"{run}/{name} differs")
    return compared, differ


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    args = parser.parse_args()
    compared, differ = compare(args.before, args.after)
    for line in differ:
        print(line)
    print(f"{len(runs(args.before))} runs, {compared} values compared, {len(differ)} differing")
    sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main()
