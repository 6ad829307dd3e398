"""docs/ninr/'s comparison files from the sweeps as they stand, and the two tables to paste.

    python scripts/ninr_docs.py [FC_SWEEP CNN_SWEEP]   # default: outputs/sweeps/ninr_cmp_fc outputs/sweeps/ninr_cmp_cnn

Writes docs/ninr/ninr_runs.csv, robustness_summary.csv, robustness_mnist_c.csv (`nin summarize`)
and robustness.png, robustness_mnist_c.png (`nin plot --no-runs`); prints the robustness table for
docs/ninr.md and the poster table for the README (scripts/poster_table.py)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs" / "ninr"
SUMMARIES = {"runs.csv": "ninr_runs.csv", **{name: name for name in ("robustness_summary.csv", "robustness_mnist_c.csv")}}
FIGURES = ("robustness.png", "robustness_mnist_c.png")


def nin(*args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "nin_cli", *args], cwd=REPO, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(proc.stderr.strip().splitlines()[-1])
    return proc.stdout


def main(sweeps: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        summary = nin("summarize", *sweeps, "--out", tmp, "--format", "markdown")
        for name, target in SUMMARIES.items():
            shutil.copy(Path(tmp) / name, DOCS / target)
        nin("plot", *sweeps, "--no-runs", "--out", tmp)
        for name in FIGURES:
            shutil.copy(Path(tmp) / name, DOCS / name)
    block = summary.split("### robustness: test accuracy by method")[1].split("###")[0]
    print("\n".join(line for line in block.splitlines()[1:] if line.startswith("|")) + "\n")
    poster = subprocess.run([sys.executable, str(REPO / "scripts" / "poster_table.py"), *sweeps], cwd=REPO, capture_output=True, text=True)
    print(poster.stdout)


if __name__ == "__main__":
    main(sys.argv[1:] or ["outputs/sweeps/ninr_cmp_fc", "outputs/sweeps/ninr_cmp_cnn"])
