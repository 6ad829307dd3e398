"""cNINR as the NINR paper builds it (Fig. 4): a NIN at a convolution joins the convolution's input,
x(l) + W_NI eps with W_NI of x(l)'s shape, so its noise passes through the kernels; the older
placement on the convolution's output stays an option, and run directories written before the
choice existed keep their meaning."""

from __future__ import annotations

import math

import pytest
import torch
from harness import CNIN_CNN, NEEDS_CUDA, cnn, column, make_cfg, nin, read_rows, without_timing
from omegaconf import OmegaConf

import nin_cli as api
from nin_cli.config.resolve import load
from nin_cli.nets.nin import ConvInputNoise
from nin_cli.seeding import generator
from nin_cli.train import train, train_many
from nin_cli.train.precision import set_tf32


@pytest.mark.parametrize(
    ("placement", "shapes"),
    [
        ("input", {"conv1": (1, 28, 28), "conv2": (32, 14, 14), "fc1": (128,), "out": (10,)}),
        ("output", {"conv1": (32, 28, 28), "conv2": (64, 14, 14), "fc1": (128,), "out": (10,)}),
    ],
)
def test_conv_niws_have_the_shape_of_where_they_join(placement, shapes):
    model = cnn("nin=all", f"nin.conv={placement}")
    assert {n: tuple(model.nins[n].weight.shape) for n in model.nins} == shapes
    # initialised like the weights of the convolution the noise feeds: N(0, 1/(C_in k k))
    assert float(model.nins["conv1"].weight.detach().std()) * math.sqrt(1 * 9) == pytest.approx(1.0, rel=0.15)
    assert float(model.nins["conv2"].weight.detach().std()) * math.sqrt(32 * 9) == pytest.approx(1.0, rel=0.1)
    x = torch.randn(4, 1, 28, 28)
    eps = {n: torch.randn(4) for n in model.nins}
    assert not torch.allclose(model(x, eps), model(x))  # noise changes the output in training
    assert torch.equal(model(x, {n: torch.zeros(4) for n in model.nins}), model(x))  # eps = 0 is evaluation


@pytest.mark.parametrize(("placement", "reaches"), [("input", True), ("output", False)])
def test_the_noise_reaches_conv1s_kernel_gradient_only_under_the_papers_placement(placement, reaches):
    """d<g, z1>/dK for a fixed g: with the NIN on conv1's input, z1 = K * (x + W eps) and the
    kernel's gradient carries the noise; on its output, z1 = K * x + W eps and it does not."""
    model = cnn(f"nin.conv={placement}")
    model.fused_block = "off"  # conv1 through its module, whose output the hook below reads
    x = torch.randn(8, 1, 28, 28)
    g = torch.randn(8, 32, 28, 28, generator=torch.Generator().manual_seed(1))
    conv1 = model.layer("conv1")
    seen = []
    conv1.register_forward_hook(lambda module, args, out: seen.append(out))  # after the NIN's hooks: z1 with its noise

    def kernel_grad(eps: torch.Tensor) -> torch.Tensor:
        seen.clear()
        model(x, {"conv1": eps})
        return torch.autograd.grad((seen[0] * g).sum(), conv1.weight)[0]

    clean, noisy = kernel_grad(torch.zeros(8)), kernel_grad(3 * torch.randn(8))
    assert (not torch.allclose(clean, noisy)) == reaches


def test_the_noise_crossing_a_convolution_as_one_image_is_the_convolution_of_the_noisy_input():
    """Training computes conv(h + W eps) as conv(h) + eps conv(W) (the NIW's gradient then needs no
    input gradient of the batch): the same outputs and gradients as the noisy input convolved, to
    float rounding, at the image (conv1) and inside the net (conv2)."""
    model = cnn("nin=all")
    gen = generator(0, "test")
    x, y = torch.randn(16, 1, 28, 28, generator=gen), torch.randint(0, 10, (16,), generator=gen)
    eps = {n: 3 * torch.randn(16, generator=gen) for n in model.nins}

    def noisy_input(x):  # the method written out: the noise added to each convolution's input, each Linear's output
        func = torch.nn.functional
        h = x
        for name in model.conv_layers:
            conv = model.layer(name)
            h = torch.relu(func.max_pool2d(func.conv2d(model.nins[name](h, eps[name]), conv.weight, conv.bias, padding=1), 2))
        fc1, out = model.layer("fc1"), model.layer("out")
        h = torch.relu(model.nins["fc1"](func.linear(h.flatten(1), fc1.weight, fc1.bias), eps["fc1"]))
        return model.nins["out"](func.linear(h, out.weight, out.bias), eps["out"])

    params = list(model.parameters())
    fast, reference = model(x, eps), noisy_input(x)
    assert torch.allclose(fast, reference, rtol=1e-5, atol=1e-5) and not torch.allclose(fast, model(x), atol=1e-2)
    grads = torch.autograd.grad(torch.nn.functional.cross_entropy(fast, y), params)
    expected = torch.autograd.grad(torch.nn.functional.cross_entropy(reference, y), params)
    for (name, _), g, e in zip(model.named_parameters(), grads, expected):
        assert float((g - e).norm()) <= 1e-5 * float(e.norm()) + 1e-9, name


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=NEEDS_CUDA)])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
@pytest.mark.parametrize(
    "c_in, c_out, kernel, stride, padding, dilation, groups",
    [(1, 8, 3, 1, 1, 1, 1), (3, 6, 5, 2, 2, 1, 1), (4, 5, (3, 2), (2, 1), (0, 1), 1, 1), (4, 4, 3, 1, 2, 2, 1), (4, 8, 3, 1, 1, 1, 2)],
    ids=["3x3", "5x5-stride2", "rect-stride-uneven", "dilated", "grouped"],
)
def test_the_probes_niw_gradient_at_a_convolutions_input_is_autograds(
    restored_precision, device, layout, c_in, c_out, kernel, stride, padding, dilation, groups
):
    """The probe's path (the noise added to the input, the NIW's gradient taken at the output and
    crossed back as one image, ConvInputNoise): the NIW's and the kernel's gradients autograd gives
    for conv(x + W_NI eps), for strides that drop the image's last rows, dilation, groups and both
    layouts, to float32 rounding, on the CPU and on a GPU (TF32 off, as nin runs unless asked)."""
    set_tf32(False)  # cuDNN's convolutions in IEEE float32, as nin runs them (torch's default is TF32)
    gen = generator(0, "test")
    conv = torch.nn.Conv2d(c_in, c_out, kernel, stride, padding, dilation, groups).to(device, memory_format=layout)
    x = torch.randn(6, c_in, 11, 9, generator=gen).to(device).contiguous(memory_format=layout)
    eps, niw0 = 3 * torch.randn(6, generator=gen).to(device), torch.randn(c_in, 11, 9, generator=gen).to(device)
    results = []
    for probe_path in (False, True):
        niw = niw0.clone().requires_grad_()
        if probe_path:
            out = ConvInputNoise.apply(conv(torch.addcmul(x, eps.view(-1, 1, 1, 1), niw.detach())), eps, niw, conv)
        else:
            out = conv(x + eps.view(-1, 1, 1, 1) * niw)
        grad = torch.randn(out.shape, generator=generator(1, "test")).to(device)
        results.append((out.detach(), *torch.autograd.grad(out, (niw, conv.weight), grad)))
    assert ConvInputNoise.fits(conv) and results[1][1].abs().max() > 0
    for ours, theirs in zip(results[1], results[0]):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)  # sums of a few hundred terms of size 1-10


def test_the_next_layer_norm_of_an_input_nin_is_the_convolution_it_feeds(tmp_path):
    train(make_cfg(*CNIN_CNN, "epochs=1", "nin=all", "noise.sigma=1"), tmp_path / "all")
    header = list(read_rows(tmp_path / "all")[0])
    norms = [c for c in header if c.startswith(("niw_norm_", "weight_norm_"))]
    assert norms == [*(f"niw_norm_{n}" for n in ("conv1", "conv2", "fc1", "out")), *(f"weight_norm_{n}" for n in ("conv1", "conv2", "out"))]


def test_a_cnn_member_of_an_ensemble_replays_its_single_run(tmp_path):
    cfgs = [make_cfg(*CNIN_CNN, "epochs=2", "nin=all", f"noise.sigma={s}", f"seed={k}") for k, s in ((0, 0.5), (1, 2.0))]
    batched = [tmp_path / f"batched{k}" for k in range(2)]
    assert [r.status for r in train_many(cfgs, batched)] == ["completed"] * 2
    for k, cfg in enumerate(cfgs):
        train(cfg, tmp_path / f"single{k}")
        first_b, first_s = read_rows(batched[k])[0], read_rows(tmp_path / f"single{k}")[0]
        assert without_timing([first_b]) == without_timing([first_s])  # the same init and NIW, exactly
        steps_b = column(batched[k], "train_loss", "steps.csv")[:8]
        steps_s = column(tmp_path / f"single{k}", "train_loss", "steps.csv")[:8]
        assert steps_b == pytest.approx(steps_s, rel=1e-4)  # the same noise through conv1's kernels
        assert column(batched[k], "niw_norm_conv1") == pytest.approx(column(tmp_path / f"single{k}", "niw_norm_conv1"), rel=1e-3)


@pytest.mark.e2e
def test_a_run_from_before_the_choice_reads_and_resumes_as_the_old_placement(tmp_path):
    run = tmp_path / "old"
    args = [*CNIN_CNN, "epochs=1", "nin=all", "noise.sigma=1", "nin.conv=output", f"hydra.run.dir={run}"]
    assert nin("train", *args).returncode == 0
    config = run / "config.yaml"
    config.write_text("".join(line for line in config.read_text().splitlines(True) if not line.strip().startswith("conv:")))
    assert "conv" not in OmegaConf.load(config).nin
    assert load(config).flat["nin.conv"] == "output"  # what it trained with
    model = api.load_model(run)  # the checkpoint's NIW shapes are the old placement's
    assert tuple(model.nins["conv1"].weight.shape) == (8, 28, 28)
    new = nin("train", *[a for a in args if a != "nin.conv=output"])
    assert new.returncode == 2 and "differs in: nin.conv" in new.stderr and "resume it as it was trained: nin.conv=output" in new.stderr
    again = nin("train", *args)
    assert again.returncode == 0 and "already completed" in again.stderr, again.stderr
