"""docs/ninr/'s comparison files from the sweeps as they stand, and the robustness table to paste.

    python scripts/ninr_docs.py [SWEEP ...]   # default: make poster's sweeps, outputs/sweeps/poster

Writes docs/ninr/ninr_runs.csv, robustness_summary.csv, robustness_mnist_c.csv (what `nin
summarize` writes) and robustness.png, robustness_mnist_c.png (what `nin plot --no-runs` draws);
prints the robustness table for docs/ninr.md. The poster's table: scripts/poster.py (`make poster`)."""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from nin_cli.analysis.plots import plot_paths
from nin_cli.analysis.summarize import markdown, summarize_paths

DOCS = Path(__file__).resolve().parent.parent / "docs" / "ninr"
SUMMARIES = {"runs.csv": "ninr_runs.csv", **{name: name for name in ("robustness_summary.csv", "robustness_mnist_c.csv")}}
FIGURES = ("robustness.png", "robustness_mnist_c.png")


def main(sweeps: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        summary, _ = summarize_paths(sweeps, [], Path(tmp))
        for name, target in SUMMARIES.items():
            if (Path(tmp) / name).exists():  # the robustness tables exist once a run is evaluated
                shutil.copy(Path(tmp) / name, DOCS / target)
        plot_paths(sweeps, [], Path(tmp), ".png", per_run=False)
        for name in FIGURES:
            if (Path(tmp) / name).exists():
                shutil.copy(Path(tmp) / name, DOCS / name)
    if summary.robustness is not None:
        print(markdown(summary.robustness) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:] or ["outputs/sweeps/poster"])
