"""The CNN's first block fused into one C kernel on the CPU (nin_cli/nets/conv_block.py): the same
function and gradients as PyTorch's conv, noise, max-pool and ReLU, and the same training."""

from __future__ import annotations

import json
import os

import pytest
import torch
import torch.nn.functional as F
from harness import CNIN_CNN, cnn, column, loss_and_gradients, nin

from nin_cli.nets import conv_block

# Where a compiler is expected (CI sets NIN_EXPECT_COMPILER=1), a kernel that does not build fails
# these tests instead of skipping them.
needs_kernel = pytest.mark.skipif(
    conv_block.library() is None and os.environ.get("NIN_EXPECT_COMPILER") != "1", reason="no C compiler here (make test-fast)"
)


def eager_block(conv, x, noise, eps):
    z = conv(x)
    if noise is not None:
        z = z + eps[:, None, None, None] * noise
    return F.relu(F.max_pool2d(z, 2))


def outputs_and_gradients(block, conv, x, noise, eps, grad):
    conv.zero_grad()
    if noise is not None:
        noise.grad = None
    y = block(conv, x, noise, eps)
    (y * grad).sum().backward()
    return [y.detach(), conv.weight.grad, conv.bias.grad] + ([noise.grad] if noise is not None else [])


@needs_kernel
@pytest.mark.parametrize("c_in", [1, 3, 2])
@pytest.mark.parametrize("noisy", [False, True])
@pytest.mark.parametrize("threads", [1, 2])
def test_the_fused_block_is_pytorchs_function_with_its_gradients(c_in, noisy, threads):
    torch.manual_seed(c_in)
    conv = torch.nn.Conv2d(c_in, 16, 3, padding=1).to(memory_format=torch.channels_last)
    x = torch.randn(13, c_in, 12, 10)
    noise = torch.randn(16, 12, 10, requires_grad=True) if noisy else None
    eps = torch.randn(13) if noisy else None
    grad = torch.randn(13, 16, 6, 5)
    assert conv_block.applies(conv, x)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        fused = outputs_and_gradients(conv_block.conv_block, conv, x, noise, eps, grad)
    finally:
        torch.set_num_threads(before)
    eager = outputs_and_gradients(eager_block, conv, x, noise, eps, grad)
    assert fused[0].shape == eager[0].shape == (13, 16, 6, 5)
    for a, b in zip(fused, eager):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * float(b.abs().max()))


@needs_kernel
def test_a_nan_propagates_as_through_pytorchs_kernels():
    """A diverging run stays a diverging run: NaN wins the max-pool and survives the ReLU."""
    conv = torch.nn.Conv2d(1, 8, 3, padding=1)
    x = torch.randn(2, 1, 8, 8)
    x[0, 0, 3, 3] = float("nan")
    fused, eager = conv_block.conv_block(conv, x), eager_block(conv, x, None, None)
    assert torch.equal(fused.isnan(), eager.isnan()) and bool(fused.isnan().any())
    torch.testing.assert_close(fused.nan_to_num(), eager.nan_to_num())


def test_where_the_kernel_does_not_apply_pytorchs_kernels_run():
    conv = torch.nn.Conv2d(1, 8, 3, padding=1)
    x = torch.randn(2, 1, 8, 8)
    assert not conv_block.applies(conv, x.requires_grad_())  # an input gradient (attacks): not computed
    assert not conv_block.applies(torch.nn.Conv2d(1, 8, 5, padding=2), torch.randn(2, 1, 8, 8))
    assert not conv_block.applies(torch.nn.Conv2d(1, 6, 3, padding=1), torch.randn(2, 1, 8, 8))
    assert not conv_block.applies(conv, torch.randn(2, 1, 7, 8))
    assert not conv_block.applies(torch.nn.Conv2d(32, 64, 3, padding=1), torch.randn(2, 32, 8, 8))  # a hidden layer's input
    assert not conv_block.applies(conv.double(), torch.randn(2, 1, 8, 8, dtype=torch.float64))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not conv_block.applies(torch.nn.Conv2d(1, 8, 3, padding=1), torch.randn(2, 1, 8, 8))
    model = cnn("nin=all")
    x, eps = torch.randn(3, 4, 1, 28, 28), {n: torch.randn(3, 4) for n in model.nins}
    under_vmap = torch.func.vmap(lambda x, e: model(x, e))(x, eps)  # batched tensors: PyTorch's kernels
    torch.testing.assert_close(under_vmap, torch.stack([model(x[i], {n: e[i] for n, e in eps.items()}) for i in range(3)]))


@needs_kernel
@pytest.mark.parametrize("placement", ["input", "output"])
def test_a_cnn_with_and_without_the_fused_block_computes_the_same_loss_and_gradients(placement):
    model = cnn("nin=all", f"nin.conv={placement}")
    x, y = torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))
    eps = {n: 3.0 * torch.randn(16) for n in model.nins}
    results = []
    for fused in ("on", "off"):
        model.fused_block = fused
        results.append(loss_and_gradients(model, x, y, eps))
    (fused_loss, fused_grads), (eager_loss, eager_grads) = results
    torch.testing.assert_close(fused_loss, eager_loss, rtol=1e-5, atol=1e-6)
    assert fused_grads.keys() == eager_grads.keys() and "nins.conv1.weight" in fused_grads
    for name, g in eager_grads.items():
        torch.testing.assert_close(fused_grads[name], g, rtol=1e-4, atol=1e-5 * float(g.abs().max()), msg=name)


@pytest.mark.e2e
@needs_kernel
def test_a_cnn_run_trains_the_same_with_and_without_the_fused_block(tmp_path):
    """Three epochs of in-NINR on the mini data: the same losses, accuracies and NIW norm to float
    rounding (the kernels sum in another order), whether the fused block runs or not."""
    args = [*CNIN_CNN, "epochs=3", "noise.sigma=3"]
    fused = nin("train", *args, f"hydra.run.dir={tmp_path / 'fused'}")
    eager = nin("train", *args, "fused_block=off", f"hydra.run.dir={tmp_path / 'eager'}")
    assert fused.returncode == 0 and eager.returncode == 0, fused.stderr + eager.stderr
    ran = {d: json.loads((tmp_path / d / "env.json").read_text())["engine"]["fused_block"] for d in ("fused", "eager")}
    assert ran["fused"]["ran"] and not ran["eager"]["ran"] and ran["eager"]["why"] == "fused_block=off", ran
    losses = column(tmp_path / "fused", "train_loss_clean")
    assert losses[-1] < losses[0]
    for key in ("train_loss_clean", "test_acc", "niw_norm_conv1"):
        assert column(tmp_path / "fused", key) == pytest.approx(column(tmp_path / "eager", key), rel=2e-3, abs=2e-3), key


@pytest.mark.e2e
@needs_kernel
def test_what_ran_is_recorded_and_a_resume_that_would_change_it_is_refused_unless_allowed(tmp_path):
    """env.json says the fused block ran (and the step, precision, threads, CPU); resumed with
    fused_block=off the arithmetic would change: one line, the records untouched, until
    engine_change=allow, which trains on and records both sessions."""
    run = tmp_path / "run"
    args = [*CNIN_CNN, "noise.sigma=1", f"hydra.run.dir={run}"]
    assert nin("train", *args, "epochs=1").returncode == 0
    env = json.loads((run / "env.json").read_text())
    engine = env["engine"]
    assert engine["fused_block"] == {"mode": "auto", "ran": True, "why": "built for this CPU"}, engine
    assert (
        engine["step"].startswith("loop")
        and engine["precision"] == "fp32"
        and engine["arithmetic"] == "fp32"
        and engine["threads"] >= 1
        and engine["cpu"]
    )
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != ".lock"}
    refused = nin("train", *args, "epochs=2", "extend=true", "fused_block=off")
    assert refused.returncode == 2 and "trained with the fused first block, resumes without it" in refused.stderr
    assert "engine_change=allow" in refused.stderr.strip().splitlines()[-1]
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != ".lock"} == before
    allowed = nin("train", *args, "epochs=2", "extend=true", "fused_block=off", "engine_change=allow")
    assert allowed.returncode == 0, allowed.stderr
    env = json.loads((run / "env.json").read_text())
    assert not env["engine"]["fused_block"]["ran"] and env["previous"][-1]["engine"]["fused_block"]["ran"]
    assert len(column(run, "train_loss_clean")) == 3


@pytest.mark.e2e
def test_fused_block_on_where_it_cannot_run_is_one_line(tmp_path):
    proc = nin("train", "dataset=fashion_mnist_mini", "model.width=16", "epochs=1", "progress=false", "fused_block=on",
                   f"hydra.run.dir={tmp_path}")  # fmt: skip
    assert proc.returncode == 2
    expected = "fused_block=on, but the fused first block cannot run here (no convolutional first block); use fused_block=auto or off"
    assert proc.stderr.strip() == f"nin: error: {expected}"
