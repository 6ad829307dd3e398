"""A researcher's own network, data and configs (nin_cli/nets/network.py and nin.py, data/user_data.py, config/sources.py):
the networks of examples/nin_examples (plain PyTorch) trained through nin's configs from the
examples' own config directory, as a user meets them: the generic path gives the shipped models'
rows for the same seed, and everything a shipped model gets works for it."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from harness import EXAMPLE_CONF, EXAMPLES, make_cfg, nin, read_rows, without_timing

from nin_cli.config.preflight import check_command
from nin_cli.errors import ConfigError
from nin_cli.nets.network import build_model
from nin_cli.train import train

SMALL = [
    "dataset=fashion_mnist_mini",
    "dataset.train_size=256",
    "dataset.test_size=100",
    "progress=false",
    "hessian.samples=64",
    "eval.train_samples=256",
    "epochs=2",
]


def renamed(rows: list[dict[str, str]], names: dict[str, str]) -> list[dict[str, str]]:
    """Columns named after one model's layers, renamed to another's (niw_norm_fc1 -> niw_norm_1)."""
    out = []
    for row in rows:
        new = {}
        for key, value in row.items():
            for old, mine in names.items():
                if key.endswith(f"_{old}"):
                    key = key[: -len(old)] + mine
                    break
            new[key] = value
        out.append(new)
    return out


@pytest.mark.parametrize(
    "shipped, mine, names",
    [
        (
            ["model=mlp", "model.depth=2", "model.width=64"],
            ["model=my_mlp", "model.depth=2", "model.width=64"],
            {"fc1": "1", "fc2": "3", "out": "5"},
        ),
        (["model=cnn"], ["model=my_cnn"], {"conv1": "features.0", "conv2": "features.3", "fc1": "classifier.1", "out": "classifier.3"}),
    ],
    ids=["mlp", "cnn"],
)
def test_a_plain_sequential_factory_gives_the_shipped_models_rows(tmp_path, shipped, mine, names):
    """The same network as a plain nn.Sequential, with the papers' init: same weights, same noise,
    the same NIN mechanism and accelerators (read from the structure), so the same metrics.csv,
    every column (NIW norms, the fed layers' norms, Tr H_z, curvature), bit for bit."""
    train(make_cfg(*SMALL, *shipped, "nin=all", "noise.sigma=3"), tmp_path / "shipped")
    train(make_cfg(EXAMPLES, *SMALL, *mine, "nin=all", "noise.sigma=3"), tmp_path / "mine")
    theirs = renamed(read_rows(tmp_path / "shipped"), names)
    ours = read_rows(tmp_path / "mine")
    assert len(ours) == 3 and any(k.startswith("hessian_trace_") for k in ours[0])
    assert without_timing(theirs) == without_timing(ours)  # one mechanism, one structure: the same numbers, bit for bit
    assert float(ours[-1]["train_loss_clean"]) < float(ours[0]["train_loss_clean"])


def test_a_plain_mlp_factory_takes_the_fused_step_which_its_hooks_and_vmap_agree_with(tmp_path):
    """A factory's Sequential of Linear and ReLU layers is the shipped MLP's structure: the engine
    picks the fused step for it; the same members through their NIN hooks and autograd (the loop
    step) and stacked under vmap take the same steps to float rounding."""
    from nin_cli.records.store import RunRecords
    from nin_cli.train import Member
    from nin_cli.train.loop import Ensemble
    from nin_cli.train.setup import prepare

    cfgs = [make_cfg(EXAMPLES, *SMALL, "model=my_mlp", "model.width=32", "nin=all", f"noise.sigma={s}") for s in (3, 30)]
    assert Ensemble([Member(prepare(c), RunRecords(tmp_path / "chosen" / str(k))) for k, c in enumerate(cfgs)]).choice.kind == "fused"
    losses = {}
    for kind in ("fused", "vmap", "loop"):
        ensemble = Ensemble([Member(prepare(c), RunRecords(tmp_path / kind / str(k))) for k, c in enumerate(cfgs)], kind)
        losses[kind] = [loss for _ in range(2) for loss in ensemble.train_epoch([3.0, 30.0])[0]]
    assert losses["fused"] == pytest.approx(losses["loop"], rel=1e-4)
    assert losses["vmap"] == pytest.approx(losses["loop"], rel=1e-4)
    assert losses["loop"][2] < losses["loop"][0]  # sigma 3 learns


def assert_rows_close(theirs: list[dict[str, str]], ours: list[dict[str, str]], rel: float) -> None:
    """The same columns and, in every one but the wall-clock seconds, the same numbers to float rounding."""
    theirs, ours = without_timing(theirs), without_timing(ours)
    assert [list(r) for r in ours] == [list(r) for r in theirs]
    for a, b in zip(theirs, ours):
        for key in a:
            assert math.isclose(float(a[key]), float(b[key]), rel_tol=rel, abs_tol=1e-5), (key, a[key], b[key])


def test_torchvision_resnet18_trains_with_nins_at_named_layers(tmp_path):
    cfg = make_cfg(
        EXAMPLES, *SMALL, "model=resnet18_gray", "nin=layers", "nin.layers=[layer1.0.conv1,fc]", "dataset.train_size=64",
        "dataset.test_size=32", "batch_size=32", "epochs=1", "hessian.samples=4", "noise.sigma=1",
    )  # fmt: skip
    assert train(cfg, tmp_path).status == "completed"
    row = read_rows(tmp_path)[-1]
    for column in (
        "niw_norm_layer1.0.conv1",
        "niw_norm_fc",
        "weight_norm_layer1.0.conv1",
        "hessian_trace_fc",
        "niw_curvature_layer1.0.conv1",
    ):
        assert math.isfinite(float(row[column])), column
    saved = (tmp_path / "config.yaml").read_text()
    assert "init: factory" in saved and "target: nin_examples.networks:resnet18_gray" in saved


def test_the_generic_niw_is_drawn_like_the_layer_it_joins():
    cfg = make_cfg(EXAMPLES, "model=my_cnn", "nin=layers", "nin.layers=[features.0,classifier.1]")
    model = build_model(cfg.model, cfg.nin, (1, 28, 28), 10, 0)
    conv, fc = model.nins["features.0"].weight, model.nins["classifier.1"].weight
    assert tuple(conv.shape) == (1, 28, 28) and tuple(fc.shape) == (128,)  # the conv's input, the Linear's output
    assert conv.std().item() == pytest.approx(1 / 3, rel=0.1)  # N(0, 1/fan_in), fan_in = 1 x 3 x 3
    assert fc.std().item() == pytest.approx(1 / math.sqrt(64 * 7 * 7), rel=0.2)
    assert model.layer_names == ["features.0", "features.3", "classifier.1", "classifier.3"]  # as the forward pass reaches them


def test_nins_own_models_take_module_apply():
    cfg = make_cfg("model=cnn")
    model = build_model(cfg.model, cfg.nin, (1, 28, 28), 10, 0)
    seen = []
    model.apply(lambda m: seen.append(type(m).__name__))
    assert "Conv2d" in seen and "NoiseInjection" in seen


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model=my_cnn", "nin=layers", "nin.layers=[features.9]"], "which model my_cnn does not have"),
        (["model=my_cnn", "nin=layers", "nin.layers=[features.1]"], "a MaxPool2d: a NIN joins a Linear or a Conv2d"),
        (["model=my_cnn", "nin=layers", "nin.layers=[feature.0]"], "did you mean features.0?"),
        (["model=my_cnn", "nin.layers=[features.0]"], "use nin=layers"),
        (["model=my_mlp", "model._target_=nin_examples.nowhere.mlp"], "does not import"),
        (["model=my_mlp", "model._target_=nin_examples.networks.nothing"], "has no nothing"),
        (["model=my_mlp", "model._target_=nin_examples.data.blobs"], "does not take its arguments"),
        (["model=bn_mlp", "+model.target=math:sqrt"], "names two factories"),
        (["model=my_mlp", "model.widht=3"], "did you mean model.width?"),
        (["model=my_mlp", "model=mlp32"], "unknown model 'mlp32'"),
        (
            ["model=my_cnn", "dataset=linear_regression"],
            "model factory nin_examples.networks.cnn(channels=[32, 64], hidden=128, in_shape=(1,)",
        ),
        (["model=my_cnn", "dataset=linear_regression", "+model.in_shape=[1,28,28]"], "forward pass fails on inputs of shape 1:"),
        (["dataset=arrays"], "dataset.path must be set"),
        (["dataset=arrays", "dataset.path=/no/such.npz"], "no such file"),
    ],
)
def test_a_network_or_data_that_cannot_train_is_one_line_before_anything_trains(overrides, message):
    with pytest.raises(ConfigError) as caught:
        check_command(overrides, multirun=False, config_dirs=[str(EXAMPLE_CONF)])
    assert message in str(caught.value)


def test_a_forward_pass_that_never_reaches_a_module_and_one_that_returns_no_module(tmp_path, monkeypatch):
    (tmp_path / "mynets.py").write_text(
        "import torch\n"
        "class Skips(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.used, self.unused = torch.nn.Linear(784, 10), torch.nn.Linear(784, 10)\n"
        "    def forward(self, x):\n"
        "        return self.used(x.flatten(1))\n"
        "class Twice(Skips):\n"
        "    def forward(self, x):\n"
        "        return self.used(x.flatten(1)) + self.used(x.flatten(1))\n"
        "def skips():\n    return Skips()\n"
        "def twice():\n    return Twice()\n"
        "def nothing():\n    return 3\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    base = ["model=mlp", "nin=layers"]
    cases = [
        (["model.target=mynets:skips", "nin.layers=[unused]"], "never reaches"),
        (["model.target=mynets:twice", "nin.layers=[used]"], "runs 2 times in one forward pass"),
        (["model.target=mynets:nothing", "nin.layers=[used]"], "returned int, not a torch.nn.Module"),
    ]
    for extra, message in cases:
        with pytest.raises(ConfigError, match=message):
            check_command([*base, *extra, "~model.depth", "~model.width"], multirun=False)


@pytest.mark.e2e
def test_config_dirs_from_the_command_line_in_every_form(tmp_path):
    for flag in (
        ["--config-dir", str(EXAMPLE_CONF)],
        [f"--config-dir={EXAMPLE_CONF}"],
        [f"hydra.searchpath=[file://{EXAMPLE_CONF}]"],
        [EXAMPLES],
    ):
        proc = nin("train", *flag, "+experiment=mine", "--cfg", "job", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert "_target_: nin_examples.networks.cnn" in proc.stdout and "- features.0" in proc.stdout
    typo = nin("train", "--config-dir", str(EXAMPLE_CONF), "model=my_cnnn", cwd=tmp_path)
    assert (
        typo.returncode == 2
        and typo.stderr.strip().splitlines() == [typo.stderr.strip().splitlines()[0]]
        and "did you mean my_cnn?" in typo.stderr
    )


@pytest.mark.parametrize(
    "option, text, message",
    [
        ("model/typo.yaml", "name: typo\ndepht: 2\n", "typo.yaml: unknown config key 'model.depht'; did you mean model.depth?"),
        ("model/wrong.yaml", "name: wrong\ndepth: two\n", "wrong.yaml: model.depth must be an integer, got 'two'"),
        ("dataset/mine.yaml", "name: fashion_mnist\ntrian_size: 10\n", "mine.yaml: unknown config key 'dataset.trian_size'"),
    ],
)
def test_a_user_file_with_an_unknown_key_or_a_wrong_type_is_one_line_naming_it(tmp_path, option, text, message):
    (tmp_path / option).parent.mkdir(parents=True)
    (tmp_path / option).write_text(text)
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("?", r"\?")):
        check_command([], multirun=False, config_dirs=[str(tmp_path)])


@pytest.mark.e2e
def test_tags_and_notes_are_recorded_shown_and_not_the_runs_identity(tmp_path):
    import nin_cli as nin_api

    first = make_cfg(EXAMPLES, *SMALL, "model=my_mlp", "model.width=32", "tags=[baseline,v2]", "notes=first try")
    train(first, tmp_path / "run")
    again = make_cfg(EXAMPLES, *SMALL, "model=my_mlp", "model.width=32", "tags=[other]")
    assert train(again, tmp_path / "run").status == "completed"  # the same run: found finished, not refused
    table = nin_api.load_runs(tmp_path / "run")
    assert table.loc[0, "tags"] == "baseline,v2" and table.loc[0, "notes"] == "first try"
    proc = summary_markdown(tmp_path / "run")
    assert "baseline,v2" in proc


def summary_markdown(path: Path) -> str:
    proc = nin("summarize", str(path), "--format", "markdown")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def save_arrays(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def images(rng, n: int, classes: int = 3):
    y = rng.integers(0, classes, n)
    x = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
    for k in range(classes):  # a bright square per class: learnable in a few steps
        x[y == k, 4 * k : 4 * k + 6, 4 * k : 4 * k + 6] = 250
    return x, y


def test_an_npz_of_images_trains_a_cnn_and_is_standardized_like_fashion_mnist(tmp_path):
    rng = np.random.default_rng(0)
    (x_train, y_train), (x_test, y_test) = images(rng, 512), images(rng, 128)
    path = save_arrays(tmp_path / "mine.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    cfg = make_cfg(
        "model=cnn", "dataset=arrays", f"dataset.path={path}", "progress=false", "hessian.samples=64", "epochs=3", "noise.sigma=1"
    )
    train(cfg, tmp_path / "run")
    rows = read_rows(tmp_path / "run")
    assert float(rows[-1]["test_acc"]) > 0.9 and float(rows[-1]["train_loss_clean"]) < float(rows[0]["train_loss_clean"]) / 3
    from nin_cli.data.datasets import load_dataset

    data = load_dataset(cfg.dataset)
    assert data.in_shape == (1, 28, 28) and data.n_out == 3
    assert abs(float(data.train.x.mean())) < 1e-4 and float(data.train.x.std()) == pytest.approx(1.0, rel=1e-3)
    assert float(data.mean) == pytest.approx(x_train.mean() / 255, rel=1e-4)


def test_flat_features_with_float_targets_train_a_regression(tmp_path):
    rng = np.random.default_rng(1)
    w = rng.normal(size=(8, 2))
    x_train, x_test = rng.normal(3.0, 5.0, (400, 8)).astype(np.float32), rng.normal(3.0, 5.0, (100, 8)).astype(np.float32)
    path = save_arrays(tmp_path / "reg.npz", x_train=x_train, y_train=(x_train - 3) / 5 @ w, x_test=x_test, y_test=(x_test - 3) / 5 @ w)
    cfg = make_cfg("model=mlp", "model.width=32", "dataset=arrays", f"dataset.path={path}", "loss=mse", "optimizer.lr=0.01")
    cfg.merge_with({"progress": False, "epochs": 5, "hessian": {"samples": 50}, "batch_size": 50})
    train(cfg, tmp_path / "run")
    rows = read_rows(tmp_path / "run")
    assert float(rows[-1]["test_loss"]) < float(rows[0]["test_loss"]) / 2
    assert math.isnan(float(rows[-1]["test_acc"]))  # no accuracy for a regression


def test_a_dataset_factory_trains_as_the_arrays_do(tmp_path):
    cfg = make_cfg(EXAMPLES, "model=my_mlp", "model.width=32", "dataset=blobs", "progress=false", "epochs=3", "hessian.samples=64")
    train(cfg, tmp_path)
    rows = read_rows(tmp_path)
    assert float(rows[-1]["test_acc"]) > 0.9 and "niw_norm_1" in rows[0]


def damaged(how: str) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.normal(size=(100, 6)).astype(np.float32),
        "y_train": rng.integers(0, 5, 100),
        "x_test": rng.normal(size=(40, 6)).astype(np.float32),
        "y_test": rng.integers(0, 5, 40),
    }
    if how == "nan":
        arrays["x_train"][3, 2] = np.nan
    elif how == "out_of_range":
        arrays["y_test"][0] = 7
    elif how == "other_shape":
        arrays["x_test"] = rng.normal(size=(40, 7)).astype(np.float32)
    elif how == "short":
        arrays["y_train"] = arrays["y_train"][:99]
    elif how == "float_images":
        arrays["x_train"], arrays["x_test"] = rng.normal(size=(100, 8, 8)), rng.normal(size=(40, 8, 8))
    elif how == "missing":
        del arrays["y_test"]
    return arrays


@pytest.mark.parametrize(
    "how, message",
    [
        ("nan", "x_train holds 1 NaN or infinite values"),
        ("out_of_range", "y_test holds labels from 0 to 7, outside 0..4 (dataset.n_classes)"),
        ("other_shape", "x_test's samples have shape"),
        ("short", "y_train has 99 entries for the 100 samples of x_train"),
        ("float_images", "give uint8 pixels or floats in [0, 1]"),
        ("missing", "lacks y_test"),
    ],
)
def test_damaged_arrays_are_one_line_naming_the_array(tmp_path, how, message):
    from nin_cli.data.datasets import load_dataset

    path = save_arrays(tmp_path / "d.npz", **damaged(how))
    cfg = make_cfg("dataset=arrays", f"dataset.path={path}", "dataset.n_classes=5").dataset
    with pytest.raises(ConfigError) as caught:
        load_dataset(cfg)
    assert message in str(caught.value)


@pytest.mark.e2e
def test_a_batched_sweep_of_my_networks_replays_single_runs_and_analysis_never_imports_them(tmp_path):
    """The plain MLP's members take the shipped MLP's fused step (its structure is that MLP's); the
    batch-normalised one steps them in turn (its running statistics are buffers). Each member's
    rows equal its single run's. summarize, report, plot and progress read the records without
    importing the network's code."""
    sweep = tmp_path / "sweep"
    small = [*SMALL, "model.width=32"]
    for model, step in (("my_mlp", "fused step"), ("bn_mlp", "loop step")):
        proc = nin(
            "train", "-m", "--config-dir", str(EXAMPLE_CONF), "hydra/launcher=batched", f"model={model}", *small, "noise.sigma=1,30",
            f"hydra.sweep.dir={sweep / model}",
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert step in proc.stdout + proc.stderr
        single = tmp_path / f"single_{model}"
        train(make_cfg(EXAMPLES, f"model={model}", *small, "noise.sigma=30"), single)
        member = next(c.parent for c in (sweep / model).glob("*/config.yaml") if "  sigma: 30\n" in c.read_text())
        assert_rows_close(read_rows(single), read_rows(member), rel=1e-4)  # stacked products round as a single run's may not
    code = (
        "import sys\nfrom nin_cli.interface.cli import main\n"
        f"for args in (['summarize', {str(sweep)!r}], ['report', {str(sweep / 'my_mlp')!r}], ['plot', {str(sweep)!r}], "
        f"['progress', {str(sweep / 'my_mlp')!r}]):\n    main(args)\n"
        "assert not any(m.startswith('nin_examples') for m in sys.modules), [m for m in sys.modules if 'nin_examples' in m]\n"
        "print('read without importing')"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0 and "read without importing" in proc.stdout, proc.stderr[-2000:]


@pytest.mark.e2e
def test_my_cnn_is_extended_evaluated_and_loaded_from_its_installed_factory(tmp_path):
    import nin_cli as nin_api

    run = tmp_path / "run"
    small = [*SMALL, "model=my_cnn", "nin=layers", "nin.layers=[features.0,classifier.1]", "noise.sigma=3"]
    args = ["train", "--config-dir", str(EXAMPLE_CONF), *small, f"hydra.run.dir={run}"]
    assert nin(*args).returncode == 0
    extended = nin(*args[:-1], "epochs=3", "extend=true", f"hydra.run.dir={run}")
    assert extended.returncode == 0, extended.stderr
    assert "from factory nin_examples.networks.cnn" in extended.stderr and "networks.py" in extended.stderr
    straight = tmp_path / "straight"
    train(make_cfg(EXAMPLES, *small, "epochs=3"), straight)
    assert without_timing(read_rows(run)) == without_timing(read_rows(straight))
    robust = nin("evaluate", str(run), "test_size=200", "gaussian=[0.3]", "attacks=[fgsm]", "epsilons=[0.1]", "corruptions=null")
    assert robust.returncode == 0, robust.stderr
    assert "from factory nin_examples.networks.cnn" in robust.stderr and (run / "robustness.csv").exists()
    model = nin_api.load_model(run)
    x = torch.zeros(2, 1, 28, 28)
    assert model(x).shape == (2, 10) and not torch.equal(model(x, eps={"features.0": torch.ones(2)}), model(x))


@pytest.mark.e2e
def test_a_map_and_a_prediction_of_my_network(tmp_path):
    axis = [
        "hydra.sweeper.axis=noise.sigma",
        "hydra.sweeper.lo=1",
        "hydra.sweeper.hi=1000",
        "hydra.sweeper.seeds=0",
        "hydra.sweeper.budget=6",
    ]
    proc = nin(
        "map",
        "--config-dir",
        str(EXAMPLE_CONF),
        "model=my_mlp",
        "model.width=32",
        *SMALL,
        "hydra/launcher=batched",
        *axis,
        f"hydra.sweep.dir={tmp_path}",
    )
    assert proc.returncode == 0, proc.stderr
    mine = ["--config-dir", str(EXAMPLE_CONF), "model=my_mlp", "model.width=32", *SMALL]
    predicted = nin("predict", *mine, "--sigmas", "1,30", "--samples", "64", "--out", str(tmp_path / "predict"))
    assert predicted.returncode == 0 and "niw_curvature" in (tmp_path / "predict" / "predict_layers.csv").read_text(), predicted.stderr
    points = (tmp_path / "boundaries.csv").read_text()
    assert "decay" in points or "divergent" in points
    assert len(list(tmp_path.glob("*/metrics.csv"))) <= 6


@pytest.mark.e2e
@pytest.mark.launchers
def test_a_submitit_launcher_hands_the_config_directory_to_its_jobs(tmp_path):
    """batched_local: each ensemble a process of its own (submitit), with no Hydra job around it,
    still checks and builds the user's model from the command's --config-dir."""
    proc = nin(
        "train", "-m", "--config-dir", str(EXAMPLE_CONF), "hydra/launcher=batched_local", "hydra.launcher.poll_s=1", "model=my_mlp",
        "model.width=32", *SMALL, "epochs=1", "noise.sigma=1,3", f"hydra.sweep.dir={tmp_path}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    statuses = [json.loads(p.read_text())["status"] for p in tmp_path.glob("*/status.json")]
    assert statuses == ["completed", "completed"]
    assert all("_target_: nin_examples.networks.mlp" in p.read_text() for p in tmp_path.glob("*/config.yaml"))


def test_a_deep_copy_of_a_factory_model_carries_its_own_nins():
    """Hooks bound to the model they were wired in: a copy (copy.deepcopy, as a researcher's code or
    an evaluation may make) injects its own noise through its own NIWs, not through the original's."""
    import copy

    cfg = make_cfg(EXAMPLES, "model=my_cnn", "nin=all")
    model = build_model(cfg.model, cfg.nin, (1, 28, 28), 10, 0)
    twin = copy.deepcopy(model)
    x = torch.randn(4, 1, 28, 28)
    eps = {n: 3.0 * torch.randn(4) for n in model.nins}
    torch.testing.assert_close(twin(x, eps), model(x, eps))
    assert not torch.allclose(twin(x, eps), twin(x))
    with torch.no_grad():
        for nin in twin.nins.values():
            nin.weight.zero_()
    torch.testing.assert_close(twin(x, eps), model(x))  # the copy's NIWs, now zero, carry no noise


def test_the_accelerators_are_read_from_the_structure_and_old_checkpoints_load():
    """nin's networks and a researcher's identical ones get the same accelerators (the fused MLP step,
    the C first block), read from the structure; a checkpoint an older nin wrote, whose shipped
    networks held their layers under `layers.`, loads into today's network (config/legacy.py)."""
    from nin_cli.nets.network import build_model
    from nin_cli.train.setup import load_weights

    def built(*args):
        cfg = make_cfg(EXAMPLES, *args)
        return build_model(cfg.model, cfg.nin, (1, 28, 28), 10, 0)

    shipped, mine = built("model=cnn"), built("model=my_cnn")
    assert shipped.first_block.conv == "conv1" and mine.first_block.conv == "features.0"
    assert built("model=mlp").kind.fused and built("model=my_mlp").kind.fused and not built("model=bn_mlp").kind.fused
    assert built("model=linear").first_block is None and not built("model=linear").kind.fused  # no biases
    dropout = built("model=mlp", "model.dropout=0.2").kind
    assert dropout.dropout and not dropout.fused and not built("model=mlp").kind.dropout
    old = {k.replace("net.", "layers.", 1): v + 1 for k, v in shipped.state_dict().items()}  # an older nin's names
    assert "layers.conv1.weight" in old and "nins.conv1.weight" in old
    load_weights(shipped, {"model": old})
    now = shipped.state_dict()
    assert all(torch.equal(now[k.replace("layers.", "net.", 1)], v) for k, v in old.items())
    assert float(shipped.layer("conv1").bias.detach().abs().min()) == 1.0  # zero biases, plus one
