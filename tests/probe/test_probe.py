"""NINs as a probe inside the researcher's own loop (nin_cli/probe): the same rows as `nin train`
for the same network, data order, seed and noise; the network left as it was on detach; events
measured and checkpointed where a NIW starts to grow; a real Lightning Trainer's fit recorded as a
run that `nin summarize` reads with a phase per NIN."""

from __future__ import annotations

import functools
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from harness import EXAMPLES, NEEDS_CUDA, make_cfg, read_rows, without_timing
from nin_examples.networks import cnn, mlp
from torch import nn

from nin_cli.analysis.summarize import summarize_paths
from nin_cli.data.datasets import load_dataset
from nin_cli.errors import ConfigError
from nin_cli.factories import seeded
from nin_cli.interface.api import load_data, load_runs
from nin_cli.nets.nin import NoiseInjection, add_noise
from nin_cli.probe import attach
from nin_cli.seeding import generator
from nin_cli.train import train

RUN = ["dataset=fashion_mnist_mini", "dataset.train_size=512", "dataset.test_size=200", "progress=false", "epochs=2", "batch_size=64"]
MEASURE = ["hessian.samples=64", "eval.train_samples=256", "hessian.niw_curvature=true", "optimizer.lr=0.05"]


def own_loop(net: nn.Module, data, probe, epochs: int, batch: int, seed: int = 0) -> None:
    """A plain PyTorch loop over nin's data order for the seed (its `data` stream)."""
    gen, n = generator(seed, "data"), len(data.train)
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        for start in range(0, n, batch):
            idx = perm[start : start + batch]
            loss = F.cross_entropy(net(data.train.x[idx]), data.train.y[idx])
            probe.optimizer.zero_grad()
            loss.backward()
            probe.optimizer.step()
            probe.step(loss)
        probe.epoch_end()


@pytest.mark.parametrize(
    "network, model, rel",
    [
        (lambda d: mlp(d.in_shape, d.n_out, depth=1, width=32), ["model=my_mlp", "model.width=32"], 1e-5),
        # nin trains the CNN in channels-last order, the probe leaves the network in its own: float rounding
        (lambda d: cnn(d.in_shape, d.n_out, channels=(4, 8), hidden=16), ["model=my_cnn", "model.channels=[4,8]", "model.hidden=16"], 1e-3),
    ],
    ids=["mlp", "cnn"],
)
def test_the_probe_in_a_plain_loop_gives_nin_trains_rows(tmp_path, network, model, rel):
    """The Fig. 3 MLP's structure (a Sequential of Linear and ReLU, here 32 wide) and the CNN,
    a NIN at every layer (at a convolution's input), trained by `nin train` and by a plain loop
    with the probe: the same metrics.csv and steps.csv, every column (noisy loss, NIW and weight
    norms, clean and test metrics, Tr H_z and the NIW curvature) to float rounding."""
    cfg = make_cfg(EXAMPLES, *RUN, *MEASURE, *model, "model.init=factory", "nin=all", "noise.sigma=3")
    assert train(cfg, tmp_path / "nin").status == "completed"
    data = load_data(tmp_path / "nin")
    with seeded(0):  # the factory's own initialisation, as `nin train model.init=factory` draws it
        net = network(data)
    probe = attach(
        net, "all", sigma=3.0, optimizer=torch.optim.SGD(net.parameters(), lr=0.05), run_dir=tmp_path / "probe",
        measure_on=(data.train.x[:256], data.train.y[:256]), test=(data.test.x, data.test.y), samples_per_epoch=len(data.train),
        epochs=2, hessian_samples=64, niw_curvature=True,
    )  # fmt: skip
    own_loop(net, data, probe, epochs=2, batch=64)
    probe.detach()
    for table in ("metrics.csv", "steps.csv"):
        theirs, ours = without_timing(read_rows(tmp_path / "nin", table)), without_timing(read_rows(tmp_path / "probe", table))
        assert [list(r) for r in ours] == [list(r) for r in theirs] and len(ours) == (3 if table == "metrics.csv" else 17)
        for a, b in zip(theirs, ours):
            for key in a:
                assert math.isclose(float(a[key]), float(b[key]), rel_tol=rel, abs_tol=1e-6) or (a[key] == b[key] == "nan"), (
                    table, key, a[key], b[key],
                )  # fmt: skip
    assert any(k.startswith("niw_curvature_") for k in read_rows(tmp_path / "probe")[0])
    rows = read_rows(tmp_path / "probe")
    assert float(rows[-1]["train_loss_clean"]) < float(rows[0]["train_loss_clean"])  # it learned: a test that can fail


@pytest.mark.parametrize("shape, layout", [((64, 300), "matrix"), ((16, 6, 5, 5), "nchw"), ((16, 6, 5, 5), "nhwc")])
def test_the_probes_noise_is_nins_own_arithmetic_in_every_layout(shape, layout):
    """add_noise (in place by addmm_ for a Linear's output, NoiseAdd for images in their own layout)
    gives NoiseInjection's z + W_NI eps and the same gradients of z and of the NIW, to float32
    rounding (a fused multiply-add, and the batch summed by a matrix product)."""
    gen = torch.Generator().manual_seed(0)
    z0 = torch.randn(shape, generator=gen)
    if layout == "nhwc":
        z0 = z0.contiguous(memory_format=torch.channels_last)
    eps, niw0, grad = torch.randn(shape[0], generator=gen), torch.randn(shape[1:], generator=gen), torch.randn(shape, generator=gen)
    results = []
    for noisy in (lambda z, w: NoiseInjection.forward(SimpleNamespace(weight=w), z, eps), lambda z, w: add_noise(z, eps, w)):
        z, niw = z0.clone().requires_grad_(), niw0.clone().requires_grad_()
        out = noisy(z * 1.0, niw)  # a fresh tensor of z's layout, as a layer's output is
        assert out.is_contiguous(memory_format=torch.channels_last if layout == "nhwc" else torch.contiguous_format)
        results.append((out.detach(), *torch.autograd.grad(out, (z, niw), grad)))
    for theirs, ours in zip(*results):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)  # values of 1-10, sums over the batch (up to 64 terms)


HALF = [pytest.param("cpu", torch.bfloat16, id="cpu-bf16"), pytest.param("cuda", torch.float16, id="cuda-fp16", marks=NEEDS_CUDA)]


@pytest.mark.parametrize("device, half", HALF)
@pytest.mark.parametrize(
    "network, conv",
    [
        (lambda: mlp((1, 28, 28), 10, depth=1, width=32), "input"),
        (lambda: cnn((1, 28, 28), 10, channels=(4, 8), hidden=16), "input"),
        (lambda: cnn((1, 28, 28), 10, channels=(4, 8), hidden=16).to(memory_format=torch.channels_last), "input"),
        (lambda: cnn((1, 28, 28), 10, channels=(4, 8), hidden=16).to(memory_format=torch.channels_last), "output"),
    ],
    ids=["mlp", "cnn", "cnn-channels-last", "cnn-channels-last-output"],
)
def test_a_loop_in_half_precision_autocast_trains_the_niws_as_in_float32(tmp_path, network, conv, device, half):
    """A loop under torch.autocast (bfloat16 on the CPU, float16 on a GPU): the layers' outputs in
    half precision, the NIWs in float32. The probe adds the noise in the layer's dtype and the NIWs
    move as they do in float32, to half precision's rounding."""
    data = load_dataset(make_cfg(*RUN).dataset, torch.device(device))
    moved = {}
    for precision in ("fp32", "half"):
        with seeded(0):
            net = network().to(device)
        opt = torch.optim.SGD(net.parameters(), lr=0.05)
        probe = attach(
            net, "all", sigma=3.0, conv=conv, optimizer=opt, run_dir=tmp_path / precision,
            measure_on=(data.train.x[:64], data.train.y[:64]), samples_per_epoch=128,
        )  # fmt: skip
        start = [w.detach().clone() for w in probe.niws]
        for idx in torch.arange(128, device=device).view(4, 32):
            with torch.autocast(device, dtype=half, enabled=precision == "half"):
                loss = F.cross_entropy(net(data.train.x[idx]), data.train.y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            probe.step(loss)
        probe.epoch_end()
        probe.detach()
        assert all(w.dtype == torch.float32 for w in probe.niws)
        moved[precision] = [w.detach() - w0 for w, w0 in zip(probe.niws, start)]
        assert math.isfinite(float(read_rows(tmp_path / precision)[-1][f"niw_norm_{probe.layers[0]}"]))
    # how far each NIW moved in half precision from where it moved in float32, relative to the move:
    # in bfloat16 at most 0.08-0.24 by network at seeds 0-2 (the most at a convolution's input, whose
    # gradient sums many terms that cancel); a NIW that did not learn, or from other noise, reads 1 or more
    for low, full in zip(moved["half"], moved["fp32"]):
        assert float(full.norm()) > 0 and float((low - full).norm() / full.norm()) < 0.5


def test_detach_leaves_the_network_and_optimizer_as_they_were(tmp_path):
    data = load_data_mini(tmp_path)
    with seeded(1):
        net = mlp(data.in_shape, data.n_out, depth=2, width=16)
    before = net(data.train.x[:8]).detach()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    probe = attach(net, ["1", "3"], sigma=10.0, optimizer=opt, run_dir=tmp_path / "p", measure_on=(data.train.x[:64], data.train.y[:64]))
    assert len(opt.param_groups) == 2 and net(data.train.x[:8]).detach().sub(before).abs().max() > 0  # noisy while it trains
    net.eval()
    assert torch.equal(net(data.train.x[:8]).detach(), before)  # no noise in evaluation
    net.train()
    probe.detach()
    assert len(opt.param_groups) == 1 and not any(m._forward_hooks or m._forward_pre_hooks for m in net.modules())
    assert torch.equal(net(data.train.x[:8]).detach(), before)
    assert (tmp_path / "p" / "status.json").read_text().count('"completed"') == 1


@pytest.mark.parametrize("conv", ["input", "output"])
def test_a_channels_last_network_keeps_its_layout_and_trains_the_same_niws(tmp_path, conv):
    """The CNN laid out channels-last (PyTorch's fast CPU layout for convolutions) and in NCHW, the
    same draws, a NIN at each convolution: the same NIWs after training to float rounding, and the
    channels-last network's activations stay channels-last with the probe attached (the noise and
    the NIW's gradient read the layout as it is, not through an NCHW copy)."""
    data = load_data_mini(tmp_path)
    niws, layouts = {}, []
    for layout in (torch.contiguous_format, torch.channels_last):
        with seeded(2):
            net = cnn(data.in_shape, data.n_out, channels=(4, 8), hidden=16).to(memory_format=layout)
        x = data.train.x.contiguous(memory_format=layout)
        probe = attach(
            net, ["features.0", "features.3"], sigma=3.0, conv=conv, optimizer=torch.optim.SGD(net.parameters(), lr=0.05),
            run_dir=tmp_path / f"{conv}-{layout}", measure_on=(x[:64], data.train.y[:64]), samples_per_epoch=len(x),
        )  # fmt: skip
        drawn = [w.detach().clone() for w in probe.niws]
        kept = functools.partial(lambda layout, m, args, out: layouts.append(out.is_contiguous(memory_format=layout)), layout)
        seen = net.features[3].register_forward_hook(kept)
        for start in range(0, 256, 64):
            loss = F.cross_entropy(net(x[start : start + 64]), data.train.y[start : start + 64])
            probe.optimizer.zero_grad()
            loss.backward()
            probe.optimizer.step()
            probe.step(loss)
        seen.remove()
        niws[layout] = [w.detach().clone() for w in probe.niws]
        assert all(w.ne(w0).any() for w, w0 in zip(niws[layout], drawn))  # trained: a test that can fail
        probe.detach()
    assert all(layouts) and len(layouts) == 8
    nchw, nhwc = niws[torch.contiguous_format], niws[torch.channels_last]
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(nchw, nhwc))


def load_data_mini(tmp_path: Path):
    """Fashion-MNIST's mini set as nin trains on it (RUN's 512 training and 200 test images)."""
    return load_dataset(make_cfg(*RUN).dataset, torch.device("cpu"))


def test_a_growing_niw_is_measured_and_checkpointed_when_it_starts_to_grow(tmp_path):
    """sigma 300 makes the NIW grow: at the first logged step where its norm is above 1.1x its
    initial one, the probe saves a checkpoint and measures, and at the first where the noisy loss
    is above 3x its epoch-0 value (if one is); each is in the records at its step."""
    data = load_data_mini(tmp_path)
    with seeded(0):
        net = mlp(data.in_shape, data.n_out, depth=1, width=32)
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    probe = attach(net, "input", sigma=300.0, optimizer=opt, run_dir=tmp_path / "p", measure_on=(data.train.x[:128], data.train.y[:128]),
                   samples_per_epoch=len(data.train), event_growth=1.1, measure_every=4)  # fmt: skip
    with probe:
        own_loop(net, data, probe, epochs=2, batch=64)
    steps = read_rows(tmp_path / "p", "steps.csv")
    first = next(int(r["step"]) for r in steps if float(r["niw_norm_1"]) > 1.1 * float(steps[0]["niw_norm_1"]))
    saved = torch.load(tmp_path / "p" / "events" / f"step_{first}.pt", weights_only=True)
    assert saved["step"] == first and set(saved["niws"]) == {"1"}
    triggers = {(int(r["step"]), r["trigger"]) for r in read_rows(tmp_path / "p", "measurements.csv")}
    assert (first, "niw_growth_1") in triggers and (4, "schedule") in triggers and (8, "schedule") in triggers
    loss0 = float(read_rows(tmp_path / "p")[0]["train_loss"])  # epoch 0's noisy loss
    rose = [int(r["step"]) for r in steps[1:] if float(r["train_loss"]) > 3 * loss0]
    assert {t for t in triggers if t[1] == "loss_growth"} == ({(rose[0], "loss_growth")} if rose else set())
    assert f"event at step {first}" in (tmp_path / "p" / "train.log").read_text()


def growing_probe(data, run_dir: Path, device: torch.device = torch.device("cpu")):
    """The 32-unit MLP whose NIW grows at sigma 300 (the event test's), attached on `device`."""
    with seeded(0):
        net = mlp(data.in_shape, data.n_out, depth=1, width=32).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    return net, attach(net, "input", sigma=300.0, optimizer=opt, run_dir=run_dir, measure_on=(data.train.x[:128], data.train.y[:128]),
                       samples_per_epoch=len(data.train), event_growth=1.1, measure_every=4)  # fmt: skip


def test_a_check_read_back_later_as_on_a_gpu_finds_the_same_events_one_step_later(tmp_path):
    """On a GPU the event check is read back at a later logged step, so that no step waits on the
    device (Probe.defer). Its host side, run here on the CPU: the same events as the check made at
    once, each seen one logged step later (at an epoch's end, at that step), train.log naming the
    step each was made at; the checkpoint is of the step that saw it; the NIW's trajectory is the same."""
    data = load_data_mini(tmp_path)
    events = {}
    for defer in (False, True):
        net, probe = growing_probe(data, tmp_path / f"defer={defer}")
        probe.defer = defer
        with probe:
            own_loop(net, data, probe, epochs=2, batch=64)
        events[defer] = {(int(r["step"]), r["trigger"]) for r in read_rows(probe.run_dir, "measurements.csv") if r["trigger"] != "schedule"}
    now, later = tmp_path / "defer=False", tmp_path / "defer=True"
    assert read_rows(now, "steps.csv") == read_rows(later, "steps.csv")
    ends = {8, 16}  # 512 images in batches of 64: the epochs' last steps, where epoch_end reads the check
    assert events[False] and events[True] == {(s if s in ends else s + 1, t) for s, t in events[False]}
    log = (later / "train.log").read_text()
    for s, _ in events[False]:
        seen = s if s in ends else s + 1
        assert f"event at step {s}" + ("" if s in ends else f" (seen at step {seen})") in log
        assert torch.load(later / "events" / f"step_{seen}.pt", weights_only=True)["step"] == seen


@NEEDS_CUDA
def test_on_a_gpu_the_probes_step_never_waits_on_the_device(tmp_path):
    """probe.step under torch's sync debug mode set to raise, with no scheduled measurement and
    thresholds no step reaches: the norms, the losses and the event checks stay on the device. Then
    the growing NIW's event, read back from the device, is found and recorded, with the loss handed
    to the probe as a float (a CPU value beside the norms on the device)."""
    device = torch.device("cuda")
    data = load_dataset(make_cfg(*RUN).dataset, device)

    def loop(probe, net, strict: bool) -> None:
        gen = generator(0, "data")
        with probe:
            for _ in range(2):
                perm = torch.randperm(len(data.train), generator=gen).to(device)
                for start in range(0, len(data.train), 64):
                    idx = perm[start : start + 64]
                    loss = F.cross_entropy(net(data.train.x[idx]), data.train.y[idx])
                    probe.optimizer.zero_grad()
                    loss.backward()
                    probe.optimizer.step()
                    torch.cuda.set_sync_debug_mode("error" if strict else "default")
                    try:
                        probe.step(loss if strict else float(loss))
                    finally:
                        torch.cuda.set_sync_debug_mode("default")
                probe.epoch_end()

    net, probe = growing_probe(data, tmp_path / "quiet", device)
    probe.event_loss_growth, probe.measure_every = 1e9, 0
    probe.growth_at = probe.growth_at * 1e9
    assert probe.defer
    loop(probe, net, strict=True)
    assert not (tmp_path / "quiet" / "events").exists()
    net, probe = growing_probe(data, tmp_path / "grows", device)
    loop(probe, net, strict=False)
    assert "niw_growth_1" in {r["trigger"] for r in read_rows(tmp_path / "grows", "measurements.csv")}


def test_the_probes_status_is_summarize_s_verdict_and_bad_input_is_one_line(tmp_path):
    data = load_data_mini(tmp_path)
    with seeded(0):
        net = mlp(data.in_shape, data.n_out, depth=1, width=32)
    with pytest.raises(ConfigError, match="NIN on layer 'fc1', which model Sequential does not have; its layers are: 1, 3"):
        attach(net, ["fc1"], sigma=3.0, optimizer=None, run_dir=tmp_path / "bad", measure_on=(data.train.x[:8], data.train.y[:8]))
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    probe = attach(net, "all", sigma=3.0, optimizer=opt, run_dir=tmp_path / "p", measure_on=(data.train.x[:128], data.train.y[:128]))
    own_loop(net, data, probe, epochs=3, batch=64)
    live = {s.nin: s for s in probe.status()}
    probe.detach()
    runs = load_runs(tmp_path / "p")
    assert set(live) == {"1", "3"} and all(0.0 <= s.confidence <= 1.0 for s in live.values())
    for nin, status in live.items():
        assert runs[f"phase_{nin}"].iloc[0] == status.phase
    with pytest.raises(ConfigError, match="holds a run already"):
        attach(net, "input", sigma=3.0, optimizer=opt, run_dir=tmp_path / "p", measure_on=(data.train.x[:8], data.train.y[:8]))


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_a_lightning_trainer_fit_with_the_callback_is_a_run_summarize_reads(tmp_path, precision):
    """A LightningModule written as its users write them, fit by a real Trainer on the CPU with
    NINProbe, in float32 and in Lightning's mixed precision: the records are a nin run with a phase
    for each of its two NINs."""
    lightning = pytest.importorskip("lightning")
    from torch.utils.data import DataLoader, TensorDataset

    from nin_cli.probe.lightning import NINProbe

    class LitMLP(lightning.LightningModule):
        def __init__(self, width: int = 32, lr: float = 0.05):
            super().__init__()
            self.save_hyperparameters()
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, width), nn.ReLU(), nn.Linear(width, 10))

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = F.cross_entropy(self(x), y)
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

    data = load_data_mini(tmp_path)
    loader = DataLoader(TensorDataset(data.train.x, data.train.y), batch_size=64, shuffle=True)
    torch.manual_seed(0)
    trainer = lightning.Trainer(
        max_epochs=3, callbacks=[NINProbe(["net.1", "net.3"], sigma=3.0)], default_root_dir=tmp_path / "lt",
        logger=lightning.pytorch.loggers.CSVLogger(tmp_path / "lt"), enable_progress_bar=False, enable_model_summary=False,
        precision=precision,
    )  # fmt: skip
    module = LitMLP()
    trainer.fit(module, loader)
    assert {"nin/net.1/phase", "nin/net.3/phase", "nin/net.1/niw_norm"} <= set(trainer.logged_metrics)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in module.modules())  # detached at the fit's end
    summary, _ = summarize_paths([str(tmp_path / "lt")], [], tmp_path)
    table = summary.runs
    assert len(table) == 1 and table["status"].iloc[0] == "completed"  # Lightning's own metrics.csv is not taken for a run
    assert {table["phase_net.1"].iloc[0], table["phase_net.3"].iloc[0]} <= {"decoupled", "decay", "catapult", "divergent"}
    assert len(read_rows(next((tmp_path / "lt").rglob("nin_probe")), "steps.csv")) == 1 + 3 * 8


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
def test_a_hugging_face_trainer_with_the_callback_is_a_run_summarize_reads(tmp_path, bf16):
    """A model written as the Hugging Face Trainer takes one (batches of keywords, a dict with the
    loss and the logits back), trained by a real `transformers.Trainer` on the CPU with
    NINProbeCallback, in float32 and in bfloat16 mixed precision: the records are a nin run with a
    phase for each of its two NINs, a step row for each optimizer step, the labels in the Trainer's
    log history, and the model as it was."""
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from torch.utils.data import Dataset

    from nin_cli.probe.huggingface import NINProbeCallback

    class ImageClassifier(nn.Module):
        def __init__(self, width: int = 32):
            super().__init__()
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, width), nn.ReLU(), nn.Linear(width, 10))

        def forward(self, pixel_values, labels=None):
            logits = self.net(pixel_values)
            loss = F.cross_entropy(logits, labels) if labels is not None else None
            return {"loss": loss, "logits": logits}

    class Images(Dataset):
        def __init__(self, split):
            self.split = split

        def __len__(self):
            return len(self.split.y)

        def __getitem__(self, i):
            return {"pixel_values": self.split.x[i], "labels": self.split.y[i]}

    data = load_data_mini(tmp_path)
    torch.manual_seed(0)
    model = ImageClassifier()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "hf"), num_train_epochs=3, per_device_train_batch_size=64, learning_rate=0.05, optim="sgd",
        lr_scheduler_type="constant", use_cpu=True, report_to="none", save_strategy="no", logging_strategy="no",
        disable_tqdm=True, seed=0, dataloader_num_workers=0, bf16=bf16,
    )  # fmt: skip
    callback = NINProbeCallback(["net.1", "net.3"], sigma=3.0)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=Images(data.train), callbacks=[callback])
    trainer.train()
    run = tmp_path / "hf" / "nin_probe"
    logged = [row for row in trainer.state.log_history if "nin/net.1/phase" in row]
    assert len(logged) == 3 and {"nin/net.3/phase", "nin/net.1/niw_norm", "nin/net.1/confidence"} <= set(logged[-1])
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())  # detached at the training's end
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())  # it trained, with the NIWs gone from it
    assert set(model.state_dict()) == set(before)
    summary, _ = summarize_paths([str(run)], [], tmp_path)
    table = summary.runs
    assert len(table) == 1 and table["status"].iloc[0] == "completed"
    assert {table["phase_net.1"].iloc[0], table["phase_net.3"].iloc[0]} <= {"decoupled", "decay", "catapult", "divergent"}
    steps = read_rows(run, "steps.csv")
    assert len(steps) == 1 + 3 * 8 and all(math.isfinite(float(r["train_loss"])) for r in steps[1:])  # 512 images, batches of 64


@pytest.mark.parametrize("kind", ["step", "lambda", "sequential"])
def test_a_scheduler_made_before_attach_takes_the_niws_in(tmp_path, kind):
    """A loop's learning-rate scheduler, made with the optimizer before the probe adds the NIWs'
    group: given to attach, it schedules that group as the first (torch's would raise at its next
    step where the groups outnumber its values); the rows' lr is the NIWs'."""
    from torch.optim import lr_scheduler

    data = load_data_mini(tmp_path)
    net = mlp(data.in_shape, data.n_out, depth=1, width=16)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    halve = {
        "step": lambda: lr_scheduler.StepLR(opt, step_size=1, gamma=0.5),
        "lambda": lambda: lr_scheduler.LambdaLR(opt, lambda epoch: 0.5**epoch),
        "sequential": lambda: lr_scheduler.SequentialLR(
            opt, [lr_scheduler.ConstantLR(opt, factor=1.0, total_iters=0), lr_scheduler.ExponentialLR(opt, gamma=0.5)], milestones=[1]
        ),
    }[kind]
    sched = halve()
    sub = (data.train.x[:64], data.train.y[:64])
    probe = attach(net, "input", sigma=1.0, optimizer=opt, scheduler=sched, run_dir=tmp_path / "run", measure_on=sub, epochs=3)
    lrs = []
    for _ in range(3):
        for start in range(0, 256, 64):
            loss = F.cross_entropy(net(data.train.x[start : start + 64]), data.train.y[start : start + 64])
            opt.zero_grad()
            loss.backward()
            opt.step()
            probe.step(loss)
        sched.step()
        lrs.append([g["lr"] for g in opt.param_groups])
        probe.epoch_end()
    probe.detach()
    assert all(model == niws for model, niws in lrs) and len(lrs[0]) == 2  # the NIWs' group on the first group's schedule
    assert lrs[-1][0] <= 0.1 * 0.5**2  # the schedule ran: halved at least twice
    assert [float(r["lr"]) for r in read_rows(tmp_path / "run")][1:] == pytest.approx([lr for lr, _ in lrs])


def test_sigma_in_the_papers_units_is_that_of_the_first_nins_layer(tmp_path):
    """sigma2_paper=u: sigma^2 = u d_in / eta with d_in the fan-in of the layer the first NIN joins
    (784 at the MLP's first Linear) and eta the optimizer's rate; given with sigma too, refused."""
    data = load_data_mini(tmp_path)
    net = mlp(data.in_shape, data.n_out, depth=1, width=16)
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    sub = (data.train.x[:32], data.train.y[:32])
    with pytest.raises(ConfigError, match="give the noise scale once"):
        attach(net, "input", sigma=1.0, sigma2_paper=0.01, optimizer=opt, run_dir=tmp_path / "both", measure_on=sub)
    with attach(net, "input", sigma2_paper=0.01, optimizer=opt, run_dir=tmp_path / "p", measure_on=sub) as probe:
        assert probe.noise_cfg.sigma == pytest.approx(math.sqrt(0.01 * 784 / 0.01))
    runs = load_runs(tmp_path / "p")
    assert runs["sigma2_paper"].iloc[0] == pytest.approx(0.01) and runs["noise.sigma"].iloc[0] == pytest.approx(28.0)
