"""A researcher's first day with their own network, at the CLI: a residual MLP with batch norm in a
package of their own (on PYTHONPATH, not installed), their own 3-class .npz data, configs written as
Hydra users write them (no `name:`), NINs at two named modules. Each step works, or fails before
anything trains in one line that says the fix."""

from __future__ import annotations

import os
import textwrap

import numpy as np
import pytest
from harness import nin, read_rows

NETWORK = """
import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.fc1 = nn.Linear(width, width)
        self.bn = nn.BatchNorm1d(width)
        self.fc2 = nn.Linear(width, width)

    def forward(self, x):
        return x + self.fc2(torch.relu(self.bn(self.fc1(x))))


class ResMLP(nn.Module):
    def __init__(self, in_features=12, width=24, blocks=2, n_out=3):
        super().__init__()
        self.stem = nn.Linear(in_features, width)
        self.blocks = nn.ModuleList(Block(width) for _ in range(blocks))
        self.head = nn.Linear(width, n_out)

    def forward(self, x):
        h = torch.relu(self.stem(x))
        for block in self.blocks:
            h = block(h)
        return self.head(h)
"""


@pytest.fixture
def user(tmp_path) -> dict:
    """The researcher's directory: their package, their config directory, their data."""
    (tmp_path / "mynets").mkdir()
    (tmp_path / "mynets" / "__init__.py").write_text("")
    (tmp_path / "mynets" / "nets.py").write_text(NETWORK)
    conf = tmp_path / "conf"
    for group, name, text in (
        ("model", "resmlp", "_target_: mynets.nets.ResMLP\nin_features: 12\nwidth: 24\nblocks: 2\nn_out: 3\n"),
        ("model", "mlp24", "name: mlp\ndepth: 1\nwidth: 24\n"),  # a shipped architecture, keys left out
        ("dataset", "mine", f"defaults:\n  - arrays\npath: {tmp_path / 'mine.npz'}\n"),
        (
            "experiment",
            "first",
            "# @package _global_\ndefaults:\n  - override /nin: layers\nepochs: 4\nbatch_size: 64\nnin:\n  layers: [stem, blocks.0.fc1]\n",
        ),
    ):
        (conf / group).mkdir(parents=True, exist_ok=True)
        (conf / group / f"{name}.yaml").write_text(text)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(900, 12)).astype(np.float32)
    y = (x @ rng.normal(size=(12, 3))).argmax(1)
    np.savez(tmp_path / "mine.npz", x_train=x[:700], y_train=y[:700], x_test=x[700:], y_test=y[700:])
    np.savez(tmp_path / "from_one.npz", x_train=x[:700], y_train=y[:700] + 1, x_test=x[700:], y_test=y[700:] + 1)
    eye = np.eye(3, dtype=np.float32)
    np.savez(tmp_path / "one_hot.npz", x_train=x[:700], y_train=eye[y[:700]], x_test=x[700:], y_test=eye[y[700:]])
    env = {"PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return {"dir": tmp_path, "conf": str(conf), "env": env}


def as_user(user: dict, *args: str):
    """`nin ARGS` in the user's directory, with their package on PYTHONPATH."""
    return nin(*args, cwd=user["dir"], env=user["env"])


def one_line(proc) -> str:
    """The command failed with exactly one `nin: error:` line and no traceback; that line."""
    errors = [line for line in proc.stderr.splitlines() if line.startswith("nin: error:")]
    assert proc.returncode != 0 and len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    return errors[0]


@pytest.mark.e2e
def test_a_new_users_network_trains_sweeps_and_gets_a_phase_and_tau_per_nin(user):
    base = ["--config-dir", user["conf"], "model=resmlp", "dataset=mine", "+experiment=first", "progress=false"]
    run = user["dir"] / "run"
    trained = as_user(user, "train", *base, "noise.sigma=10", f"hydra.run.dir={run}")
    assert trained.returncode == 0, trained.stderr
    saved = (run / "config.yaml").read_text()
    assert "name: resmlp" in saved  # named by the option that chose it
    assert {"niw_norm_stem", "niw_norm_blocks.0.fc1", "weight_norm_blocks.0.fc1"} <= set(read_rows(run)[0])
    extended = as_user(user, "train", *base, "noise.sigma=10", "epochs=5", "extend=true", f"hydra.run.dir={run}")
    assert extended.returncode == 0 and len(read_rows(run)) == 6, extended.stderr
    evaluated = as_user(user, "evaluate", str(run), "test_size=100", "--no-progress")  # not images: clean and Gaussian noise
    assert evaluated.returncode == 0 and "need images" in evaluated.stderr + evaluated.stdout, evaluated.stderr
    table = read_rows(run, "robustness.csv")
    assert {r["perturbation"] for r in table} == {"clean", "gaussian"} and float(table[0]["accuracy"]) > 0.5
    sweep = user["dir"] / "sweep"
    swept = as_user(user, "train", "-m", *base, "noise.sigma=3,30", "seed=0,1", "hydra/launcher=batched", f"hydra.sweep.dir={sweep}")
    assert swept.returncode == 0, swept.stderr
    assert as_user(user, "summarize", str(sweep)).returncode == 0
    runs = read_rows(sweep, "runs.csv")
    assert len(runs) == 4
    for row in runs:  # each NIN its own phase and tau_niw; the run's phase is one of theirs, and says which
        phases = {n: row[f"phase_{n}"] for n in ("stem", "blocks.0.fc1")}
        assert set(phases.values()) <= {"decoupled", "decay", "catapult", "divergent"}
        assert row["phase_nin"] in phases and row["phase"] == phases[row["phase_nin"]]
        assert row["tau_niw"] == row[f"tau_niw_{row['phase_nin']}"]
    phases = read_rows(sweep, "phases.csv")
    assert len(phases) == 2 and "phases_stem" in phases[0] and "tau_niw_blocks.0.fc1_mean" in phases[0]
    # the papers' units for a network of one's own: the fan-in of the layer its first NIN joins (stem: 12 inputs)
    assert [round(float(r["sigma2_paper"]), 6) for r in phases] == [round(s**2 * 0.05 / 12, 6) for s in (3, 30)]
    predicted = as_user(user, "predict", *base, "--measured", str(sweep / "phases.csv"), "--out", str(user["dir"] / "predict"))
    assert predicted.returncode == 0, predicted.stderr
    assert {r["measured_phase"] for r in read_rows(user["dir"] / "predict", "predict.csv")} <= {
        "decoupled",
        "decay",
        "catapult",
        "divergent",
    }
    mapped = as_user(user, "map", *base, "epochs=2", "hydra.sweeper.lo=0.01", "hydra.sweeper.hi=10", "hydra.sweeper.seeds=0",
                 "hydra.sweeper.budget=2", "hydra/launcher=batched", f"hydra.sweep.dir={user['dir'] / 'map'}")  # fmt: skip
    assert mapped.returncode == 0 and (user["dir"] / "map" / "boundaries.csv").exists(), mapped.stderr  # on its default axis


@pytest.mark.e2e
@pytest.mark.parametrize(
    "args, says",
    [
        # labels 1..3 for a 3-output network: would fail mid-training
        (["model=resmlp", "dataset=mine", "dataset.path={dir}/from_one.npz"], "has 4 classes (labels 1..3, read as classes 0..3): relabel"),
        # class labels written one-hot: it is classification, not a regression
        (["model=resmlp", "dataset=mine", "dataset.path={dir}/one_hot.npz"], "written one-hot (3 columns of 0/1, one 1 a row)"),
        # nin=all over an experiment that names layers: the fix is nin.layers=[]
        (["model=resmlp", "dataset=mine", "+experiment=first", "nin=all"], "add nin.layers=[] for nin=all"),
        # a typo in a module name: the close name and every layer
        (["model=resmlp", "dataset=mine", "nin=layers", "nin.layers=[blocks.0.fc]"], "its layers are: stem, "),
    ],
)
def test_a_new_users_missteps_are_one_line_with_the_fix_before_anything_trains(user, args, says):
    run = user["dir"] / "run"
    refused = as_user(user, "train", "--config-dir", user["conf"], *[a.format(dir=user["dir"]) for a in args], f"hydra.run.dir={run}")
    assert says in one_line(refused)
    assert not (run / "metrics.csv").exists()


@pytest.mark.e2e
def test_configs_of_a_shipped_architecture_and_unknown_options_need_no_omegaconf(user, tmp_path):
    run = tmp_path / "mlp24"
    small = ["dataset=fashion_mnist_mini", "dataset.train_size=256", "dataset.test_size=100", "epochs=1", "progress=false"]
    trained = as_user(user, "train", "--config-dir", user["conf"], "model=mlp24", *small, f"hydra.run.dir={run}")
    assert trained.returncode == 0, trained.stderr  # the keys it leaves out (dropout, init, presets) are mlp's
    assert "width: 24" in (run / "config.yaml").read_text() and "dropout: 0.0" in (run / "config.yaml").read_text()
    assert "add --config-dir DIR with model/resmlp.yaml" in one_line(as_user(user, "train", "model=resmlp"))
    line = one_line(as_user(user, "train", "-m", "hydra/launcher=local", "hydra.launcher.timeout_min=${nope}", *small))
    assert "hydra.launcher.timeout_min=${nope} does not resolve" in line
    assert "is not an override" in one_line(as_user(user, "predict", "--sigmas", "1", "10"))


def test_predict_sets_measured_phases_of_a_sweep_of_integer_sigmas_beside_its_own(tmp_path):
    """phases.csv of a sweep typed noise.sigma=1,10 holds integers; predict's sigmas are floats:
    the two are joined by value (a pandas MergeError before)."""
    from harness import QUICK

    from nin_cli.analysis.predict import predict_setting

    (tmp_path / "phases.csv").write_text(
        textwrap.dedent(
            """\
            noise.sigma,sigma2_paper,n_runs,phase,phases,tau_niw_mean
            1,6.4e-05,1,decoupled,decoupled:1,inf
            10,0.0064,1,decay,decay:1,1.8
            """
        )
    )
    predict_setting([*QUICK, "device=cpu", "model.width=32"], 64, None, str(tmp_path / "phases.csv"), tmp_path / "out")
    table = read_rows(tmp_path / "out", "predict.csv")
    assert [(float(r["noise.sigma"]), r["measured_phase"]) for r in table] == [(1.0, "decoupled"), (10.0, "decay")]


def test_from_python_train_a_run_read_its_data_and_feed_its_model_raw_inputs(tmp_path):
    """nin_cli.train_run is `nin train` from a notebook (its checks, its records, its row of
    load_runs); load_data gives the data as the run saw it; load_model(raw_inputs=True) takes [0, 1]
    pixels and gives what the trained model gives their standardized form."""
    import torch

    import nin_cli
    from nin_cli.errors import ConfigError

    small = ["device=cpu", "dataset=fashion_mnist_mini", "dataset.train_size=512", "dataset.test_size=200", "model.width=32", "epochs=2"]
    row = nin_cli.train_run(*small, "progress=false", "noise.sigma=3", run_dir=tmp_path / "run")
    assert row["status"] == "completed" and row["epoch"] == 2 and row["phase"] in ("decoupled", "decay")
    assert len(read_rows(tmp_path / "run")) == 3
    with pytest.raises(ConfigError, match="did you mean noise.sigma"):
        nin_cli.train_run(*small, "noise.sigmaa=3", run_dir=tmp_path / "typo")
    data = nin_cli.load_data(tmp_path / "run")
    assert tuple(data.test.x.shape) == (200, 1, 28, 28) and abs(float(data.train.x.mean())) < 0.05
    standardized, raw = nin_cli.load_model(tmp_path / "run"), nin_cli.load_model(tmp_path / "run", raw_inputs=True)
    x = data.test.x[:16]
    pixels = x * data.std + data.mean
    assert 0.0 <= float(pixels.min()) and float(pixels.max()) <= 1.0 + 1e-5
    with torch.no_grad():
        torch.testing.assert_close(raw(pixels), standardized(x), rtol=1e-4, atol=1e-4)
