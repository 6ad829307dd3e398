"""Orchestration at the speed of the work: the pre-flight composes a sweep once per distinct
structure and applies each job's values (preflight.JobComposer), and what it gives is Hydra's own
composition of every job, key for key, and the same resolved run."""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import EXAMPLE_CONF
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf, open_dict

from nin_cli.config.overrides import parse, sweep_jobs
from nin_cli.config.preflight import JobComposer, command_sources
from nin_cli.config.resolve import resolve, without_hydra
from nin_cli.config.sources import using


def jobs_both_ways(command: list[str], grid: dict[str, str], config_dirs: list[str] = ()) -> tuple[int, JobComposer]:
    """Every job of a sweep composed by JobComposer and by Hydra: the same config (Hydra's node
    aside: its choices), the same resolved run. The composer starts from the command's own
    composition, as the pre-flight's does (a job that sweeps no group choice builds on it). Returns
    how many jobs were compared, and the composer."""
    sources, overrides = command_sources(command, list(config_dirs))
    jobs = sweep_jobs(grid, overrides)
    with using(sources), initialize_config_dir(config_dir=str(sources.dirs[0]), version_base="1.3"):
        ours = JobComposer(compose, sources)
        ours.composed_already(parse(overrides), compose("train", overrides=overrides, return_hydra_config=True))
        made = []
        for job in jobs:
            current, composition = ours(job)
            theirs = compose("train", overrides=job, return_hydra_config=True)
            assert resolve(current).flat == resolve(without_hydra(theirs)).flat, job
            made.append((job, composition, theirs))
        live: dict[int, DictConfig] = {}  # the launcher's way: each job's values set over the last's of its structure
        for job, composition, theirs in made:  # the launcher's, made after every job was resolved
            if composition.in_place:
                set_over = live.setdefault(id(composition.template), composition.template.copy())
                composition.apply(set_over)
            for mine in (composition.make(), *([set_over] if composition.in_place else [])):
                assert dict(mine.hydra.runtime.choices) == dict(theirs.hydra.runtime.choices), job
                plain_mine = OmegaConf.to_yaml(OmegaConf.masked_copy(mine, [k for k in mine if k != "hydra"]))
                plain_theirs = OmegaConf.to_yaml(OmegaConf.masked_copy(theirs, [k for k in theirs if k != "hydra"]))
                assert plain_mine == plain_theirs, job
        assert len(ours.templates) <= len(jobs)
    return len(jobs), ours


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
        (["model=my_mlp"], {"model.width": "16,32", "seed": "0,1"}, [str(EXAMPLE_CONF)], 1),
    ],
    ids=["ninr-grid", "values", "own-config-dir"],
)
def test_a_sweep_composed_once_per_structure_is_hydras_composition_of_every_job(command, grid, config_dirs, structures):
    compared, composer = jobs_both_ways(command, grid, config_dirs)
    assert compared == len(sweep_jobs(grid, [])) >= 4
    assert len(composer.templates) == structures
    assert len(composer.compositions) <= structures  # Hydra composed each structure once at most (the command's own: before)


def test_an_overlay_of_hundreds_of_runs_draws_the_medians_of_sigma_bins_with_a_colour_bar(tmp_path):
    """300 runs' NIW curves (sigma from 1 to 1000, decaying faster with sigma): at most MAX_LINES
    lines, each a bin's median, no legend entry per run, a colour bar for sigma, and the figure laid
    out without matplotlib's warning that its axes collapsed."""
    import warnings

    import matplotlib.pyplot as plt
    import numpy as np

    from nin_cli.analysis.plots import MAX_LINES, _overlay

    t = np.linspace(0, 10, 50)
    sigmas = np.geomspace(1, 1000, 300)
    curves = [(float(s), t, np.exp(-t * np.log10(s) / 3), "decay") for s in sigmas]
    fig, ax = plt.subplots(figsize=(8, 5), constrained_layout=True)
    _overlay(ax, curves, legend={"ncol": 2})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig.savefig(tmp_path / "overlay.png", dpi=60)
    assert 10 <= len(ax.lines) <= MAX_LINES and ax.get_legend() is None and len(fig.axes) == 2  # the colour bar's axes
    slowest, fastest = ax.lines[0].get_ydata(), ax.lines[-1].get_ydata()
    assert slowest[-1] > fastest[-1]  # the bins keep the order of sigma: the smallest sigma's median decays least
    plt.close(fig)


@pytest.mark.e2e
def test_a_sweep_of_more_sigmas_than_a_legend_names_reports_every_figure_without_a_legend_per_run(tmp_path, monkeypatch):
    """`nin train -m` of 41 sigmas (more than MAX_LINES): its report and figures are written
    without matplotlib's warning that the axes collapsed under a legend entry per run, and the Tr H_z
    figure colours the runs by sigma on a colour bar."""
    import matplotlib.pyplot as plt
    from harness import nin

    from nin_cli.analysis.plots import MAX_LINES, hessian_trace_figure
    from nin_cli.analysis.runs import load_runs

    sweep = tmp_path / "sweep"
    done = nin(
        "train", "-m", "+experiment=linear_toy", "hydra.sweeper.params={noise.sigma:'range(1,42)'}", "epochs=1",
        "hydra/launcher=batched", "progress=false", f"hydra.sweep.dir={sweep}",
    )  # fmt: skip
    assert done.returncode == 0 and (sweep / "report.md").exists(), done.stderr
    assert "warning" not in done.stderr, done.stderr
    figures: list = []
    monkeypatch.setattr(plt, "close", figures.append)
    runs = load_runs([sweep])
    assert len({r.sigma for r in runs}) == 41 > MAX_LINES
    assert hessian_trace_figure(runs, tmp_path / "hessian.png") is not None
    (fig,) = figures
    assert fig.axes[0].get_legend() is None and len(fig.axes) == 2  # the panel and its colour bar
    assert len(fig.axes[0].lines) == 41


def test_the_batched_launcher_records_a_job_as_hydras_run_job_does(tmp_path):
    """record_job (the batched launchers' bookkeeping, without run_job's copies of the config) gives
    a job what Hydra's run_job gives it: the run directory, .hydra/config.yaml, hydra.yaml and
    overrides.yaml holding the same YAML, the task called on the same config, the same return."""
    import yaml
    from hydra._internal.callbacks import Callbacks
    from hydra.core.utils import run_job
    from hydra.types import HydraContext, RunMode

    from hydra_plugins.nin_batched_launcher.batched_launcher import record_job
    from nin_cli.config.schema import conf_dir

    job = ["+experiment=linear_toy", "noise.sigma=3", "seed=1", "notes='" + "a note long enough that YAML folds it over lines, " * 3 + "'"]
    given: dict[str, list] = {"hydra": [], "nin": []}
    recorded = {}
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        for who in ("hydra", "nin"):
            cfg = compose("train", overrides=[*job, f"hydra.sweep.dir={tmp_path / who}"], return_hydra_config=True)
            with open_dict(cfg):
                cfg.hydra.overrides.task = job
                cfg.hydra.job.id = cfg.hydra.job.num = 7
                cfg.hydra.mode = RunMode.MULTIRUN
            context = HydraContext(config_loader=None, callbacks=Callbacks(cfg))
            if who == "hydra":
                task = lambda task_cfg: given["hydra"].append(OmegaConf.to_yaml(task_cfg))  # noqa: E731
                ret = run_job(task, cfg, "hydra.sweep.dir", "hydra.sweep.subdir", context)
                out = Path(ret.hydra_cfg.hydra.runtime.output_dir)
            else:
                ret, out = record_job(context, cfg, lambda job: given["nin"].append(OmegaConf.to_yaml(job.cfg)))
            recorded[who] = (ret, out)
    (theirs, their_dir), (mine, my_dir) = recorded["hydra"], recorded["nin"]
    assert my_dir.name == their_dir.name and my_dir.parent.name == "nin" and my_dir.is_dir()
    assert given["hydra"] == given["nin"] and len(given["nin"]) == 1
    for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
        text = (their_dir / ".hydra" / name).read_text().replace(str(tmp_path / "hydra"), str(tmp_path / "nin"))
        assert yaml.safe_load((my_dir / ".hydra" / name).read_text()) == yaml.safe_load(text), name
    assert (mine.status, mine.overrides, OmegaConf.to_yaml(mine.cfg)) == (theirs.status, theirs.overrides, OmegaConf.to_yaml(theirs.cfg))
    their_node = OmegaConf.to_yaml(theirs.hydra_cfg).replace(str(tmp_path / "hydra"), str(tmp_path / "nin"))
    assert OmegaConf.to_yaml(mine.hydra_cfg) == their_node and OmegaConf.is_struct(mine.cfg)
