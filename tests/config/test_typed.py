"""What runs is what was typed: conflicting inputs refused before anything trains, a run
directory's name equal to its config.yaml and to the sigma that trained, analysis joined by run
name, every user error one line, and shell completion as the shell calls it."""

from __future__ import annotations

import functools
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from harness import QUICK, nin, nin_in_process, read_rows
from omegaconf import OmegaConf

import nin_cli as api
from nin_cli.config.schema import flatten
from nin_cli.units import sigma2_per_paper_unit

BIN = str(Path(sys.executable).parent)
# The linear toy model of +experiment=linear_toy, typed out (its grid sweeps noise.sigma): seconds a run.
LINEAR_TOY = [
    "model=linear",
    "dataset=linear_regression",
    "loss=mse",
    "loss.reduction=half_sum",
    "nin.init=layer",
    "dataset.n_train=2000",
    "dataset.n_test=1000",
    "batch_size=100",
    "optimizer.lr=0.01",
    "epochs=12",
    "seed=2",
    "progress=false",
    "hessian.samples=500",
]


def one_error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("nin: error: "), err
    return lines[0]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["noise.sigma=3", "noise.sigma2_paper=0.01"],
            "noise.sigma=3 (typed) and noise.sigma2_paper=0.01 (typed) both set the noise scale",
        ),
        (
            ["-m", "+experiment=fig3", "noise.sigma=2.8,88.5", "seed=0"],
            "noise.sigma=2.8,88.5 (typed) and noise.sigma2_paper=1e-5,1e-4,1e-3,1e-2,1e-1,1,10,100 (the experiment's grid",
        ),
        (
            ["-m", "+experiment=fig3", "seed=0"],
            "seed=0 is typed and the experiment's grid sweeps seed=0,1,2: one would silently replace the other; "
            "to run other values of the grid's key, replace its entry: \"hydra.sweeper.params={seed:'0'}\"",
        ),
        (
            ["-m", "+experiment=fig3", "noise.sigma2_paper=1,10"],
            "replace its entry: \"hydra.sweeper.params={noise.sigma2_paper:'1,10'}\"",
        ),
        (["dataset.train_size=100000"], "dataset.train_size=100000 but fashion_mnist_mini has 6000 training images"),
        (["dataset.test_size=1001"], "dataset.test_size=1001 but fashion_mnist_mini has 1000 test images"),
        (
            ["dataset.split=fraction", "dataset.train_fraction=0.5", "dataset.train_size=3501"],
            "fashion_mnist_mini with split=fraction train_fraction=0.5 has 3500 training images",
        ),
    ],
)
def test_conflicting_inputs_are_refused_in_one_line_before_training(tmp_path, capsys, args, expected):
    code, _, err = nin_in_process(capsys, "train", *QUICK, *args, f"hydra.run.dir={tmp_path}/run", f"hydra.sweep.dir={tmp_path}/sweep")
    assert code == 2 and expected in one_error_line(err)
    assert not list(tmp_path.rglob("metrics.csv"))


def test_the_sigma_hint_converts_the_typed_values_into_the_grids_units(capsys):
    code, _, err = nin_in_process(capsys, "train", "-m", "+experiment=fig3", "noise.sigma=2.8,88.5")
    unit = 784 / 0.01
    assert code == 2
    assert f"\"hydra.sweeper.params={{noise.sigma2_paper:'{2.8**2 / unit:.6g},{88.5**2 / unit:.6g}'}}\"" in one_error_line(err)


def named_pairs(run_dir: Path) -> dict[str, str]:
    return dict(part.split("=", 1) for part in run_dir.name.split(","))


def check_names_match_what_trained(sweep: Path, expected_runs: int) -> None:
    """For every run: each key=value of its directory's name equals config.yaml, and the sigma in
    metrics.csv (what trained) equals the named sigma, or sqrt(named sigma2_paper x one unit)."""
    runs = sorted(p.parent for p in sweep.rglob("config.yaml") if p.parent.parent == sweep)
    assert len(runs) == expected_runs and not [r for r in runs if ".." in r.name]
    for run in runs:
        flat = flatten(OmegaConf.to_container(OmegaConf.load(run / "config.yaml")))
        for key, value in named_pairs(run).items():
            saved = flat[key] if key in flat else flat[f"{key}.name"]  # a group's option is its name
            if isinstance(saved, (int, float)) and not isinstance(saved, bool):
                assert float(value) == pytest.approx(float(saved), rel=1e-12), (run.name, key)
            else:
                assert value == str(saved), (run.name, key)
        trained = [float(r["sigma"]) for r in read_rows(run)]
        assert trained == pytest.approx([flat["noise.sigma"]] * len(trained), rel=1e-6), run.name
        named = named_pairs(run)
        if "noise.sigma" in named:
            assert trained == pytest.approx([float(named["noise.sigma"])] * len(trained), rel=1e-6), run.name
        if "noise.sigma2_paper" in named:
            expected = math.sqrt(float(named["noise.sigma2_paper"]) * sigma2_per_paper_unit(flat))
            assert trained == pytest.approx([expected] * len(trained), rel=1e-6), run.name


# few typed keys, so that every run directory's name stays whole (long names are cut and hashed)
FEW_KEYS = ["dataset=fashion_mnist_mini", "progress=false", "model.width=16", "hessian.probes=0"]


@pytest.mark.parametrize(
    ("name", "args", "runs"),
    [
        ("plain", ["noise.sigma=0.5,3", "seed=0,1"], 4),
        ("grid", ["+experiment=fig3", "hydra/launcher=batched"], 24),
        ("grid_overridden", ["+experiment=fig3", "hydra.sweeper.params={noise.sigma2_paper:'0.001,0.1',seed:1}"], 2),
        ("batched", ["hydra/launcher=batched", "noise.sigma2_paper=0.01,1", "seed=3,4", "optimizer.lr=0.02,0.05"], 8),
    ],
)
@pytest.mark.e2e
def test_every_run_directory_name_equals_its_config_and_its_trained_sigma(tmp_path, capsys, name, args, runs):
    sweep = tmp_path / name
    code, _, err = nin_in_process(capsys, "train", "-m", *FEW_KEYS, *args, "epochs=1", f"hydra.sweep.dir={sweep}")
    assert code == 0, err
    check_names_match_what_trained(sweep, runs)


@pytest.fixture(scope="module")
def toy_sweep(tmp_path_factory):
    """A linear-toy sweep in paper units whose directory order (text) is not its numeric order:
    u0.04 < u0.53 < u1e-06 < u9 as names; 1e-6 < 0.04 < 0.53 < 9 as numbers (sigma = 0.01, 2,
    7.28, 30: decoupled, decay, catapult, divergent). Short names of its own (hydra.sweep.subdir):
    the typed settings would make the default names long, cut and hashed."""
    sweep = tmp_path_factory.mktemp("toy") / "sweep"
    grid = ["noise.sigma2_paper=0.000001,0.04,0.53,9", "hydra/launcher=batched", "hydra.sweep.subdir=u${noise.sigma2_paper}"]
    proc = nin("train", "-m", *LINEAR_TOY, *grid, f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir() and p.name.startswith("u")) == ["u0.04", "u0.53", "u1e-06", "u9"]
    return sweep


@pytest.mark.e2e
def test_load_runs_joins_config_columns_by_run_not_by_position(toy_sweep):
    table = api.load_runs(toy_sweep)
    assert table["run"].is_unique and len(table) == 4
    unit = 1 / 0.01  # d_in / (N_w eta) with d_in = N_w = 1
    for _, row in table.iterrows():
        assert row["noise.sigma"] ** 2 == pytest.approx(row["noise.sigma2_paper"] * unit, rel=1e-9), row["run"]
        saved = OmegaConf.load(toy_sweep / row["run"] / "config.yaml")
        assert saved.noise.sigma2_paper == pytest.approx(row["noise.sigma2_paper"]), row["run"]
    phases = table.set_index("noise.sigma2_paper")["phase"]
    assert phases.loc[1e-6] == "decoupled" and phases.loc[9] == "divergent", phases


@pytest.mark.e2e
def test_report_figures_colour_each_run_by_its_own_phase(toy_sweep, monkeypatch):
    from nin_cli.analysis import plots
    from nin_cli.analysis.report import write_report

    drawn: list[tuple[float, str]] = []
    overlay = plots._overlay

    def spy(ax, curves, legend):
        drawn.extend((sigma, phase) for sigma, _, _, phase in curves)
        return overlay(ax, curves, legend)

    monkeypatch.setattr(plots, "_overlay", spy)
    write_report(toy_sweep)
    runs = pd.read_csv(toy_sweep / "runs.csv")
    phase_at = {round(s, 9): p for s, p in zip(runs["noise.sigma"], runs["phase"])}
    assert len(set(phase_at.values())) >= 3, phase_at  # the sweep spans several phases, so a mix-up shows
    assert drawn and all(phase == phase_at[round(sigma, 9)] for sigma, phase in drawn), (drawn, phase_at)


@pytest.mark.parametrize(
    ("args", "code", "expected"),
    [
        (["train", "--model", "mlp"], 2, "nin train: unknown option --model (a config value is key=value: model=...)"),
        (["train", "-m", "hydra/launcher=batched", "hydra.launcher.ensemblesize=4"], 2, "did you mean hydra.launcher.ensemble_size?"),
        (
            ["train", "-m", "hydra/launcher=batched_local", "hydra.launcher.batch_size=4"],
            2,
            "hydra.launcher.batch_size is now hydra.launcher.ensemble_size (runs trained together; batch_size is the minibatch's): "
            "hydra.launcher.ensemble_size=4",
        ),
        (["train", "experiment=fig3"], 2, "use +experiment=fig3"),
        (["train", "--cfg", "job", "noise.sigma=-1", "model.width=0"], 2, "must be >= "),
        (["train", "--cfg", "job", "noise.sigma=-1"], 2, "noise.sigma must be >= 0, got -1"),
        (["frobnicate"], 2, "unknown command 'frobnicate'"),
    ],
)
def test_each_user_error_is_one_line(capsys, args, code, expected):
    got, out, err = nin_in_process(capsys, *args)
    assert got == code and expected in one_error_line(err)


def test_a_slurm_launcher_without_slurm_is_one_line(capsys, monkeypatch):
    monkeypatch.setenv("PATH", BIN)  # no sbatch on it, whatever this machine has
    code, _, err = nin_in_process(capsys, "train", "-m", "hydra/launcher=slurm", *QUICK)
    assert code == 2 and "hydra/launcher=slurm submits to SLURM, but sbatch is not on PATH" in one_error_line(err)


def test_bare_nin_prints_usage_and_exits_2(capsys):
    code, out, err = nin_in_process(capsys)
    assert code == 2 and err.startswith("usage: nin COMMAND") and "summarize" in err and out == ""


def test_progress_on_a_directory_without_runs_says_so(tmp_path, capsys):
    code, _, err = nin_in_process(capsys, "progress", str(tmp_path))
    assert code == 1 and f"{tmp_path} holds no runs and no sweep record" in one_error_line(err)
    code, _, err = nin_in_process(capsys, "progress", str(tmp_path), "--watch", "--every", "0.01")
    assert code == 1 and "holds no runs" in one_error_line(err)


@pytest.mark.parametrize("fmt", ["markdown", "rich"])
@pytest.mark.e2e
def test_a_closed_pipe_ends_quietly(toy_sweep, fmt):
    """The reader is gone before nin writes a byte: every write fails with EPIPE, as under `| head`.
    Python's print (markdown) and rich's console (rich) alike end with exit 1 and no message."""
    read, write = os.pipe()
    os.close(read)
    command = [sys.executable, "-m", "nin_cli", "summarize", str(toy_sweep), "--format", fmt]
    proc = subprocess.run(command, stdout=write, stderr=subprocess.PIPE, text=True)
    os.close(write)
    assert proc.returncode == 1 and "nin: error" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert "wrote runs.csv" not in proc.stderr  # it stopped at the first write


@functools.cache
def completion_script(shell: str) -> str:
    """What `nin --shell-completion install=<shell>` prints (the console script, as a user installs it)."""
    return subprocess.run([f"{BIN}/nin", "--shell-completion", f"install={shell}"], capture_output=True, text=True, check=True).stdout


def complete(line: str, shell: str = "bash") -> list[str]:
    """What the installed completion offers on `line`, asked the way bash asks it."""
    script = completion_script(shell)
    words = line.split() + ([""] if line.endswith(" ") else [])
    array = " ".join(f"'{w}'" for w in words)
    driver = f"""{script}
COMP_LINE='{line}'; COMP_POINT=${{#COMP_LINE}}; COMP_WORDS=({array}); COMP_CWORD={len(words) - 1}
_nin_completion
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    proc = subprocess.run(["bash", "-c", driver], capture_output=True, text=True, env={**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"})
    assert proc.returncode == 0, proc.stderr
    return [w for w in proc.stdout.split("\n") if w]


@pytest.mark.e2e
def test_shell_completion_as_bash_calls_it():
    assert complete("nin su") == ["summarize"]
    assert {"train", "plot", "progress", "predict"} <= set(complete("nin "))
    assert sorted(complete("nin train model=")) == ["model=cnn", "model=fc", "model=linear", "model=mlp", "model=resnet18"]
    assert "noise.sigma=" in complete("nin train noise.si")
    assert "+experiment=fig3" in complete("nin train +experiment=")
    assert sorted(complete("nin summarize --f")) == ["--format"]
    assert sorted(complete("nin summarize DIR --format ")) == ["markdown", "rich"]
    assert complete("nin export ") == ["tensorboard"]


def test_completing_a_train_line_loads_hydra_and_no_torch():
    """TAB on a `nin train` line asks Hydra alone (0.3 s a TAB): not the runner and torch (2 s)."""
    code = (
        "import sys\nfrom nin_cli.interface.completion import candidates\n"
        "print(sorted(candidates('nin train model=m')), 'torch' in sys.modules)"
    )
    answer = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert answer == "['model=mlp'] False"


@pytest.mark.e2e
def test_zsh_gets_the_same_completion_through_bashcompinit():
    proc = subprocess.run([f"{BIN}/nin", "-sc", "install=zsh"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("autoload -Uz bashcompinit && bashcompinit\n")
    assert "complete -o nospace -o default -F _nin_completion nin" in proc.stdout


@pytest.mark.e2e
def test_progress_watch_ends_when_every_run_has(toy_sweep, capsys):
    code, out, err = nin_in_process(capsys, "progress", str(toy_sweep), "--watch", "--every", "0.01")
    assert code == 0 and "4/4 runs ended" in out + err
    code, out, _ = nin_in_process(capsys, "progress", str(toy_sweep))
    assert code == 0 and out.startswith("4/4 runs ended (3 completed, 1 diverged)")


@pytest.mark.e2e
def test_a_trained_network_reaches_the_catapult(toy_sweep):
    """The linear toy model at sigma = 7.28 (sigma^2 = 0.53 units; its catapult window at seed 2 is
    sigma 6.78-7.83, docs/map/linear_toy_fine_boundaries.csv, so 7% inside each edge; the toy's windows
    are at most about 25% wide at 3 seeds, docs/phases.md): its
    NIW and loss grow, then fall back; the run completes as a catapult."""
    runs = api.load_runs(toy_sweep).set_index("noise.sigma2_paper")
    assert runs.loc[0.53, "phase"] == "catapult" and runs.loc[0.53, "status"] == "completed", runs[["phase", "phase_reason"]]


def test_the_one_sweep_expansion_makes_the_jobs_hydras_sweeper_makes():
    """nin expands a sweep once (nin_cli/config/resolve.py, Hydra's public override parser); the jobs
    equal those of Hydra's basic sweeper, which launches them, and glob() takes a group's options."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper  # the reference, in the test only
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from nin_cli.config.overrides import sweep_jobs

    grid = {"noise.sigma2_paper": "1e-5,1e-3", "seed": "range(0,3)"}
    typed = ["model.width=64", "optimizer.lr=0.01,0.05"]
    ours = sweep_jobs(grid, typed)
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in grid.items()] + typed)
    theirs = [list(job) for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
    assert ours == theirs and len(ours) == 12
    assert sweep_jobs({}, ["model=glob(*,exclude=[resnet18,linear])"]) == [["model=cnn"], ["model=fc"], ["model=mlp"]]
