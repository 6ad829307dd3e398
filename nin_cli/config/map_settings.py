"""The map sweeper's keys (`hydra.sweeper.KEY=VALUE` of `nin map`), each with its default and what
it means, and `nin map --help`, which prints them. The sweeper itself is a Hydra plugin
(hydra_plugins/nin_map_sweeper), which registers this schema as `hydra/sweeper=map`; the keys live
here so that the CLI reads them without importing a plugin. (No `from __future__ import annotations`:
OmegaConf reads the annotations as types.)
"""

from dataclasses import dataclass, field, fields
from typing import Any


def _key(default: Any, text: str) -> Any:
    """A sweeper key: its default and what it means (`nin map --help` prints both)."""
    return field(default=default, metadata={"help": text})


@dataclass
class MapSweeperConf:
    _target_: str = "hydra_plugins.nin_map_sweeper.map_sweeper.MapSweeper"
    axis: str = _key("noise.sigma2_paper", "the noise axis, on a log scale (noise.sigma2_paper or noise.sigma)")
    lo: float | None = _key(None, "the range's lower end; null: the experiment's grid for the axis")
    hi: float | None = _key(None, "the range's upper end; null: the experiment's grid for the axis")
    per_decade: int = _key(1, "the first grid: lo, hi and 10^(k / per_decade) between (a wider range keeps every point)")
    seeds: str | None = _key(None, "seeds of every point, e.g. '0,1,2' (quoted); null: the experiment's seeds, else 0,1,2")
    tolerance: float = _key(1.2, "a boundary is located once its bracket's ratio hi/lo is at most this")
    budget: int = _key(200, "runs at most, those already in the directory included")
    predict: bool = _key(False, "also put points around `nin predict`'s boundaries in the first grid")
    nin: str | None = _key(None, "the NIN whose phase the map follows (a layer's name); null: the run's own phase, its first NIN's")
    params: dict | None = field(default_factory=dict)  # an experiment's grid (hydra.sweeper.params): its seeds and axis values seed the map


def help_text() -> str:
    """`nin map --help`: what the map does, and every key of the sweeper with its default."""
    lines = [
        "usage: nin map [OVERRIDES...]   (nin train's overrides, and the sweeper's keys below)",
        "",
        "Locate the phase boundaries adaptively: a coarse grid on a noise axis, then a new point at the",
        "geometric middle of every bracket where the seeds' majority phase changes, round after round,",
        "on any launcher (hydra/launcher=batched, batched_local, batched_slurm, ...). Writes",
        "boundaries.csv, map_points.csv and map.png to hydra.sweep.dir; the same command resumes it.",
        "A key swept beside it (optimizer.lr=0.01,0.02) gives each value its own map.",
        "",
        "  nin map +experiment=fig3 hydra/launcher=batched hydra.sweeper.tolerance=1.5",
        "",
        "The sweeper's keys (hydra.sweeper.KEY=VALUE):",
    ]
    for f in fields(MapSweeperConf):
        if "help" in f.metadata:
            default = "null" if f.default is None else str(f.default).lower() if isinstance(f.default, bool) else f.default
            lines.append(f"  {f.name:<11} default {default!s:<20} {f.metadata['help']}")
    lines += ["", "Every config key and group of nin train applies too: nin train --help."]
    return "\n".join(lines)
