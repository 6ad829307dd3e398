"""The training engine on the embedded slice of real Fashion-MNIST and on synthetic data."""

from __future__ import annotations

import math

import pytest
import torch
from harness import QUICK, column, make_cfg, read_rows, without_timing

from nin_cli.nets.hessian import ProbedLoss
from nin_cli.nets.network import build_model
from nin_cli.nets.noise import NoiseSource, unit_noise
from nin_cli.nets.objectives import make_loss, mse_half
from nin_cli.seeding import generator
from nin_cli.train import train
from nin_cli.train.setup import prepare


def run(tmp_path, *overrides, name="run", base=QUICK):
    cfg = make_cfg(*base, *overrides)
    result = train(cfg, tmp_path / name)
    return result, tmp_path / name


def test_ce_mlp_reaches_80_percent_test_accuracy(tmp_path):
    result, d = run(tmp_path, "nin=none", "model.width=256", "epochs=3", "batch_size=64")
    assert result.status == "completed"
    loss = column(d, "train_loss")
    assert loss[-1] < 0.5 * loss[0]
    assert column(d, "test_acc")[-1] > 0.80


def test_metrics_csv_has_the_spec_columns_and_epoch_zero(tmp_path):
    _, d = run(tmp_path, "nin=all", "model.depth=2", "epochs=1")
    rows = read_rows(d)
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    expected = {"epoch", "step", "sigma", "train_loss", "train_loss_clean", "train_acc", "test_loss", "test_acc", "lr", "seconds"}
    expected |= {f"niw_norm_{n}" for n in ("fc1", "fc2", "out")} | {f"hessian_trace_{n}" for n in ("fc1", "fc2", "out")}
    expected |= {"weight_norm_fc2", "weight_norm_out"}
    estimated = {f"{c}_{n}" for c in ("hessian_trace", "niw_curvature", "niw_gradsq") for n in ("fc1", "fc2", "out")}
    expected |= estimated | {f"se_{c}" for c in estimated | {"train_loss_clean", "train_acc"}}
    assert expected == set(rows[0])
    # the 6000 training images are fewer than eval.train_samples: clean metrics on all, exact
    assert all(float(r["se_train_acc"]) == 0 == float(r["se_train_loss_clean"]) for r in rows)
    assert all(float(r[f"se_{c}"]) > 0 for r in rows for c in estimated)
    assert rows[0]["step"] == "0" and int(rows[1]["step"]) == math.ceil(6000 / 128)
    assert all(float(r["hessian_trace_out"]) > 0 for r in rows)  # CE is convex in the logits
    # the curvature along the NIW lies within the spectrum of <H_z>: 0 < c <= Tr H_z
    assert all(0 < float(r[f"niw_curvature_{n}"]) <= float(r[f"hessian_trace_{n}"]) for r in rows for n in ("fc1", "fc2"))


def test_niw_norm_decays_in_the_decay_range(tmp_path):
    _, d = run(tmp_path, "noise.sigma=10", "epochs=4")
    niw = column(d, "niw_norm_fc1")
    assert niw[-1] < 0.8 * niw[0]
    assert all(b <= a for a, b in zip(niw, niw[1:]))
    assert column(d, "test_acc")[-1] > 0.75  # training proceeds as without noise


def test_small_noise_leaves_the_niw_random_walking(tmp_path):
    _, d = run(tmp_path, "noise.sigma=0.3", "epochs=2")
    niw = column(d, "niw_norm_fc1")
    assert abs(niw[-1] - niw[0]) < 0.01 * niw[0]


@pytest.mark.parametrize("mode", ["fixed", "resample"])
def test_fixed_and_resampled_noise_both_train(tmp_path, mode):
    _, d = run(tmp_path, f"noise.mode={mode}", "noise.sigma=3", "epochs=2")
    assert column(d, "train_loss")[-1] < 0.5 * column(d, "train_loss")[0]
    assert column(d, "test_acc")[-1] > 0.75


def test_fixed_noise_is_the_same_every_epoch_and_resampled_is_not():
    cfg = make_cfg("noise.mode=fixed")
    order_1, order_2 = torch.randperm(100, generator=generator(0, "a")), torch.randperm(100, generator=generator(0, "b"))
    fixed = NoiseSource(cfg.noise, ["fc1"], 100, generator(0, "noise"), torch.device("cpu"))
    epoch_1, epoch_2 = fixed.epoch_units(order_1)["fc1"], fixed.epoch_units(order_2)["fc1"]
    assert torch.equal(epoch_1[order_1.argsort()], epoch_2[order_2.argsort()])  # each sample keeps its eps
    resampled = NoiseSource(make_cfg().noise, ["fc1"], 100, generator(0, "noise"), torch.device("cpu"))
    epoch_1, epoch_2 = resampled.epoch_units(order_1)["fc1"], resampled.epoch_units(order_1)["fc1"]
    assert not torch.equal(epoch_1, epoch_2)
    assert abs(float(torch.corrcoef(torch.stack([epoch_1, epoch_2]))[0, 1])) < 0.3


@pytest.mark.parametrize("dist", ["gaussian", "uniform", "rademacher", "laplace"])
def test_noise_distributions_have_zero_mean_and_unit_variance(dist):
    x = unit_noise(dist, 200_000, generator(1, "t"), torch.device("cpu"))
    assert abs(float(x.mean())) < 0.01
    assert abs(float(x.var()) - 1.0) < 0.02


def test_same_seed_gives_identical_csv_and_another_seed_does_not(tmp_path):
    _, a = run(tmp_path, "epochs=2", name="a")
    _, b = run(tmp_path, "epochs=2", name="b")
    _, c = run(tmp_path, "epochs=2", "seed=1", name="c")
    assert without_timing(read_rows(a)) == without_timing(read_rows(b))
    assert without_timing(read_rows(a)) != without_timing(read_rows(c))


def test_evaluation_uses_zero_noise(tmp_path):
    """Clean metrics at epoch 0 do not depend on sigma; the noisy train loss does."""
    _, quiet = run(tmp_path, "noise.sigma=0", "epochs=1", name="quiet")
    _, loud = run(tmp_path, "noise.sigma=200", "epochs=1", name="loud")  # NIW ~ N(0, 1/784): noise of size ~7
    q, lo = read_rows(quiet)[0], read_rows(loud)[0]
    for key in ("train_loss_clean", "train_acc", "test_loss", "test_acc"):
        assert q[key] == lo[key]
    assert float(lo["train_loss"]) > 2 * float(q["train_loss"])


def test_init_follows_the_spec():
    cfg = make_cfg("model.width=2000", "nin=all")
    model = build_model(cfg.model, cfg.nin, (1, 28, 28), 10, 0)
    w = model.layer("fc1").weight.detach()
    assert abs(float(w.std()) * math.sqrt(784) - 1.0) < 0.02
    assert float(model.layer("fc1").bias.detach().abs().max()) == 0.0
    # nin.init=layer (default): the NIW is one more input of the layer it joins, N(0, 1/fan_in)
    assert abs(float(model.nins["fc1"].weight.detach().std()) * math.sqrt(784) - 1.0) < 0.05
    assert abs(float(model.nins["out"].weight.detach().std()) * math.sqrt(2000) - 1.0) < 0.5  # 10 draws


@pytest.mark.parametrize(("init", "fan_in"), [("layer", 784), ("unit", 1)])
def test_niw_norm_at_epoch_zero_follows_nin_init(tmp_path, init, fan_in):
    _, d = run(tmp_path, f"nin.init={init}", "epochs=1", "dataset.train_size=500")
    width = 128
    assert column(d, "niw_norm_fc1")[0] == pytest.approx(math.sqrt(width / fan_in), rel=0.15)


def test_conv_niws_take_the_conv_fan_in():
    cfg = make_cfg("model=cnn", "nin=all")
    model = build_model(cfg.model, cfg.nin, (1, 28, 28), 10, 0)
    for name, fan_in in (("conv1", 1 * 9), ("conv2", 32 * 9), ("fc1", 64 * 7 * 7), ("out", 128)):
        std = float(model.nins[name].weight.detach().std())
        assert std * math.sqrt(fan_in) == pytest.approx(1.0, rel=0.2 if name != "out" else 0.6), name


def test_hutchinson_matches_the_exact_hessian_trace():
    cfg = make_cfg("model.width=8", "nin=all")
    model = build_model(cfg.model, cfg.nin, (5,), 3, 0)
    gen = generator(0, "data")
    x, y = torch.randn(16, 5, generator=gen), torch.randint(0, 3, (16,), generator=gen)
    shapes = {n: tuple(model.nins[n].weight.shape) for n in model.nins}
    est = ProbedLoss(model, x, y, torch.nn.functional.cross_entropy, shapes).traces(4000, generator(0, "h"))
    for name, shape in shapes.items():

        def loss_of(delta, name=name):
            return torch.nn.functional.cross_entropy(model(x, probes={name: delta}), y)

        hessian = torch.autograd.functional.hessian(loss_of, torch.zeros(16, *shape)).reshape(16, shape[0], 16, shape[0])
        per_sample = torch.stack([hessian[i, :, i, :].trace() for i in range(16)]) * 16  # Tr H_i (L is the mean)
        assert est[name].mean == pytest.approx(float(per_sample.mean()), rel=0.05)
        # the error is the spread of the samples' traces over sqrt(16) (4000 probes add little of their own)
        assert est[name].se == pytest.approx(float(per_sample.std() / 4), rel=0.1)


def test_linear_toy_model_regresses(tmp_path):
    _, d = run(
        tmp_path,
        "model=linear",
        "model.width=1",
        "dataset=linear_regression",
        "loss=mse",
        "noise.sigma=1",
        "optimizer.lr=0.05",
        "epochs=20",
        "batch_size=50",
    )
    loss = column(d, "train_loss_clean")
    assert loss[-1] < 0.01 * loss[0]
    assert math.isnan(column(d, "test_acc")[0])


def test_resnet18_trains_a_step_with_nins(tmp_path):
    _, d = run(
        tmp_path,
        "model=resnet18",
        "nin=all",
        "dataset.train_size=32",
        "dataset.test_size=16",
        "batch_size=16",
        "epochs=1",
        "hessian.samples=4",
        "eval.train_samples=32",
        base=("dataset=fashion_mnist_mini", "progress=false"),
    )
    rows = read_rows(d)
    assert len(rows) == 2 and all(math.isfinite(float(rows[-1][f"niw_norm_{n}"])) for n in ("conv1", "layer4", "fc"))


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        (["schedule=linear", "noise.schedule.end=0"], [2.0, 2.0, 1.0, 0.0]),  # linear from sigma to `end`
        (["schedule=exponential", "noise.schedule.gamma=0.5"], [2.0, 2.0, 1.0, 0.5]),  # sigma gamma^(epoch - 1)
        (["schedule=step", "noise.schedule.step_size=2", "noise.schedule.gamma=0.1"], [2.0, 2.0, 2.0, 0.2]),  # x gamma every step_size
    ],
)
def test_schedules_give_sigma_per_epoch(tmp_path, schedule, expected):
    _, d = run(tmp_path, *schedule, "noise.sigma=2", "epochs=3", "dataset.train_size=500")
    assert column(d, "sigma") == pytest.approx(expected)


def test_a_fraction_split_resplits_the_pooled_images_by_the_fraction():
    from nin_cli.data.datasets import load_dataset

    data = load_dataset(make_cfg("dataset=fashion_mnist_mini", "dataset.split=fraction", "dataset.train_fraction=0.5").dataset)
    assert (len(data.train), len(data.test)) == (3500, 3500)
    standard = load_dataset(make_cfg("dataset=fashion_mnist_mini").dataset)
    assert (len(standard.train), len(standard.test)) == (6000, 1000)
    # the pooled 7000 images, shuffled by dataset.split_seed: not the standard split's first half
    assert not torch.equal(data.train.x[:100], standard.train.x[:100])


def test_mse_loss_is_half_the_mean_squared_norm():
    out, target = torch.tensor([[1.0, 2.0]]), torch.tensor([1])
    assert float(mse_half(out, target)) == pytest.approx(0.5 * (1.0 + 1.0))


def test_mse_mean_is_torchs_mse_loss_on_one_hot_targets():
    gen = torch.Generator().manual_seed(0)
    out, target = torch.randn(32, 10, generator=gen), torch.randint(0, 10, (32,), generator=gen)
    expected = torch.nn.functional.mse_loss(out, torch.nn.functional.one_hot(target, 10).float())
    assert float(make_loss("mse", "classification", "mean")(out, target)) == pytest.approx(float(expected), rel=1e-6)
    assert float(make_loss("mse", "classification")(out, target)) == pytest.approx(float(expected), rel=1e-6)  # the default
    assert float(make_loss("mse", "classification", "half_sum")(out, target)) == pytest.approx(5 * float(expected), rel=1e-6)


def test_prepare_puts_data_on_the_device_as_tensors():
    s = prepare(make_cfg(*QUICK))
    assert isinstance(s.data.train.x, torch.Tensor) and s.data.train.x.shape == (6000, 1, 28, 28)
    assert abs(float(s.data.train.x.mean())) < 1e-4 and abs(float(s.data.train.x.std()) - 1) < 1e-3


def test_a_new_network_is_one_factory_and_one_config_file(tmp_path, monkeypatch):
    """What adding a network takes: a factory returning an nn.Module and conf/model/<name>.yaml that
    names it (here in a config directory on Hydra's search path), as nin's own networks are. What the
    steps can do with it is read from its structure (a tanh between its layers: not the fused MLP,
    stackable: vmap); it trains single and batched, and its NIW decays."""
    from nin_cli.train import train_many
    from nin_cli.train.setup import prepare
    from nin_cli.train.steps import choose_step

    (tmp_path / "toynets.py").write_text(
        "import math\nfrom collections import OrderedDict\nfrom torch import nn\n"
        "def toy(in_shape, n_out, width):\n"
        "    return nn.Sequential(OrderedDict(flatten=nn.Flatten(), hidden=nn.Linear(math.prod(in_shape), width),"
        " tanh=nn.Tanh(), out=nn.Linear(width, n_out)))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "conf" / "model").mkdir(parents=True)
    (tmp_path / "conf" / "model" / "toy.yaml").write_text("name: toy\ntarget: toynets:toy\ninit: fan_in\nwidth: 64\ndropout: 0.0\n")
    args = [*QUICK, f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "model=toy", "noise.sigma=10", "epochs=3"]
    cfgs = [make_cfg(*args, f"seed={k}") for k in (0, 1)]
    kind = prepare(cfgs[0]).model.kind
    assert not kind.fused and kind.stackable and choose_step(cfgs[0], 2, torch.device("cpu"), kind).kind == "vmap"
    single = train(cfgs[0], tmp_path / "single")
    batched = train_many(cfgs, [tmp_path / "b0", tmp_path / "b1"])
    assert single.status == "completed" and [r.status for r in batched] == ["completed"] * 2
    loss, niw = column(tmp_path / "single", "train_loss_clean"), column(tmp_path / "single", "niw_norm_hidden")
    assert loss[-1] < 0.6 * loss[0] and niw[-1] < 0.9 * niw[0]
    assert column(tmp_path / "b0", "train_loss", "steps.csv")[:6] == pytest.approx(
        column(tmp_path / "single", "train_loss", "steps.csv")[:6], rel=1e-4
    )
