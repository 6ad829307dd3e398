"""Orchestration at the speed of the work: the pre-flight composes a sweep once per distinct
structure and applies each job's values (preflight.JobComposer), and what it gives is Hydra's own
composition of every job, key for key, and the same resolved run."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from nin_cli.config import resolve, without_hydra
from nin_cli.preflight import JobComposer, command_sources, sweep_jobs
from nin_cli.sources import using

CONF = Path(__file__).resolve().parents[1] / "examples" / "nin_examples" / "conf"


def jobs_both_ways(command: list[str], grid: dict[str, str], config_dirs: list[str] = ()) -> int:
    """Every job of a sweep composed by JobComposer and by Hydra: the same config (Hydra's node
    aside: its choices), the same resolved run. Returns how many jobs were compared."""
    sources, overrides = command_sources(command, list(config_dirs))
    jobs = sweep_jobs(grid, overrides)
    with using(sources), initialize_config_dir(config_dir=str(sources.dirs[0]), version_base="1.3"):
        ours = JobComposer(compose, sources)
        for job in jobs:
            mine = ours(job)
            theirs = compose("train", overrides=job, return_hydra_config=True)
            assert dict(mine.hydra.runtime.choices) == dict(theirs.hydra.runtime.choices), job
            plain_mine = OmegaConf.to_yaml(OmegaConf.masked_copy(mine, [k for k in mine if k != "hydra"]))
            plain_theirs = OmegaConf.to_yaml(OmegaConf.masked_copy(theirs, [k for k in theirs if k != "hydra"]))
            assert plain_mine == plain_theirs, job
            assert resolve(mine).flat == resolve(without_hydra(theirs)).flat, job
        assert len(ours.templates) <= len(jobs)
    return len(jobs)


@pytest.mark.parametrize(
    "command, grid, config_dirs, structures",
    [
        # the NINR comparison's grid: model and method choices (the methods' sigma interpolates the model's presets)
        (
            ["+experiment=ninr_comparison", "~hydra.sweeper.params"],
            {"model": "fc,cnn", "method": "none,in_ninr_decay,cdt02", "seed": "0,1"},
            [],
            6,
        ),
        # values only: one structure for every job, a list value and a null among them
        (
            ["model=mlp", "nin=layers"],
            {"noise.sigma": "1,3,1e-2", "nin.layers": "[fc1],[fc1,out]", "eval.train_samples": "null,100"},
            [],
            1,
        ),
        # a config directory of one's own: a factory's argument swept
        (["model=my_mlp"], {"model.width": "16,32", "seed": "0,1"}, [str(CONF)], 1),
    ],
    ids=["ninr-grid", "values", "own-config-dir"],
)
def test_a_sweep_composed_once_per_structure_is_hydras_composition_of_every_job(command, grid, config_dirs, structures):
    assert jobs_both_ways(command, grid, config_dirs) == len(sweep_jobs(grid, [])) >= 4
    sources, overrides = command_sources(command, list(config_dirs))
    with using(sources), initialize_config_dir(config_dir=str(sources.dirs[0]), version_base="1.3"):
        composer = JobComposer(compose, sources)
        for job in sweep_jobs(grid, overrides):
            composer(job)
        assert len(composer.templates) == structures
