# ruff: noqa: N806, E501
"""nin's Triton kernels against float64 references, and the fused step through them against cuBLAS/CPU.

Runs natively on CUDA. Without a GPU, `test_scale.py` runs this file under TRITON_INTERPRET=1 (the
kernels must be decorated in interpreter mode, so it needs a fresh process); a plain CPU session
skips it here.
"""

from __future__ import annotations

import pytest
import torch

triton_mlp = pytest.importorskip("nin_cli.triton_mlp")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
pytestmark = pytest.mark.skipif(DEVICE == "cpu" and not triton_mlp.INTERPRET, reason="needs CUDA or TRITON_INTERPRET=1")
# Relative error bounds: float32 products, TF32 (10-bit mantissa) and bfloat16 (8-bit) operands.
TOLERANCE = {"ieee": 1e-5, "tf32": 3e-3, "bf16": 1e-2}
DOTS = ["ieee", "bf16"] + (["tf32"] if DEVICE == "cuda" else [])
SHAPES = [
    (3, 40, 100, 70),
    (2, 128, 1024, 10),
    (2, 96, 784, 256),
]  # (K, batch, in, out): ragged tiles, the output layer, Fig. 1's first layer


def rel(a: torch.Tensor, ref: torch.Tensor) -> float:
    return float((a.double() - ref).norm() / ref.norm())


@pytest.fixture(autouse=True)
def exact_reference_matmuls():
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = tf32


@pytest.mark.parametrize("dot", DOTS)
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_matches_float64(dot, shape):
    K, B, n_in, n_out = shape
    g = torch.Generator().manual_seed(B)
    h, w = torch.randn(K, B, n_in, generator=g).relu(), torch.randn(K, n_out, n_in, generator=g) / n_in**0.5
    b, eps, nin = torch.randn(K, n_out, generator=g), torch.randn(K, B, generator=g), torch.randn(K, n_out, generator=g)
    ref = torch.bmm(h.double(), w.double().transpose(1, 2)) + b.double()[:, None] + eps.double()[..., None] * nin.double()[:, None]
    put = [t.to(DEVICE) for t in (h, w, b, eps, nin)]
    z = triton_mlp.linear_forward(*put, relu=False, dot=dot).cpu()
    assert rel(z, ref) < TOLERANCE[dot]
    assert torch.equal(triton_mlp.linear_forward(*put, relu=True, dot=dot).cpu(), z.relu())
    plain = triton_mlp.linear_forward(put[0], put[1], put[2], None, None, relu=False, dot=dot).cpu()
    assert rel(plain, ref - eps.double()[..., None] * nin.double()[:, None]) < TOLERANCE[dot]


@pytest.mark.parametrize("dot", DOTS)
@pytest.mark.parametrize("shape", SHAPES)
def test_backward_updates_in_place_and_returns_the_masked_input_gradient(dot, shape):
    K, B, n_in, n_out = shape
    g = torch.Generator().manual_seed(B + 1)
    h, w = torch.randn(K, B, n_in, generator=g).relu(), torch.randn(K, n_out, n_in, generator=g) / n_in**0.5
    dz, decay = 0.01 * torch.randn(K, B, n_out, generator=g), 1 - 0.01 * torch.rand(K, generator=g)
    step = -torch.bmm(dz.double().transpose(1, 2), h.double())
    dh_ref = torch.bmm(dz.double(), w.double()) * (h > 0)
    w_dev = w.clone().to(DEVICE)
    dh = triton_mlp.linear_backward_(dz.to(DEVICE), h.to(DEVICE), w_dev, decay.to(DEVICE), need_dh=True, dot=dot)
    assert rel(dh.cpu(), dh_ref) < TOLERANCE[dot]
    assert rel(w_dev.cpu() - w * decay[:, None, None], step) < TOLERANCE[dot]  # the update itself, not just the weights
    w_dev = w.clone().to(DEVICE)
    assert triton_mlp.linear_backward_(dz.to(DEVICE), h.to(DEVICE), w_dev, None, need_dh=False, dot=dot) is None
    assert rel(w_dev.cpu() - w, step) < TOLERANCE[dot]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_fused_step_through_triton_follows_the_cublas_step(precision):
    """Three steps of a 2-hidden-layer MLP with NINs on both hidden layers, weight decay and one
    stopped member: the Triton step and the cuBLAS/CPU step give the same losses and weights."""
    from nin_cli.fused_mlp import FusedMLPStep

    g = torch.Generator().manual_seed(0)
    shapes = {"fc1": (96, 784), "fc2": (96, 96), "out": (10, 96)}
    params = {}
    for name, (n_out, n_in) in shapes.items():
        params[f"layers.{name}.weight"] = torch.randn(2, n_out, n_in, generator=g) / n_in**0.5
        params[f"layers.{name}.bias"] = 0.1 * torch.randn(2, n_out, generator=g)
    for name in ("fc1", "fc2"):
        params[f"nins.{name}.weight"] = torch.randn(2, shapes[name][0], generator=g)
    x, y = torch.rand(2, 64, 1, 28, 28, generator=g), torch.randint(0, 10, (2, 64), generator=g)
    eps = {n: torch.randn(2, 64, generator=g) for n in ("fc1", "fc2")}
    results = []
    for triton in (True, False):
        p = {n: t.clone().to(DEVICE) for n, t in params.items()}
        lr, active = torch.tensor([0.05, 0.05], device=DEVICE), torch.tensor([True, False], device=DEVICE)
        step = FusedMLPStep(p, list(shapes), ["fc1", "fc2"], "ce", lr, 1e-3, active, precision, triton=triton)
        assert (step.kernels is not None) == triton
        losses = [step(x.to(DEVICE), y.to(DEVICE), {n: e.to(DEVICE) for n, e in eps.items()}).cpu() for _ in range(3)]
        results.append((torch.stack(losses), {n: t.cpu() for n, t in p.items()}))
    (tri_losses, tri), (ref_losses, ref) = results
    tolerance = 1e-5 if precision == "fp32" else 2e-2
    assert tri_losses.flatten().tolist() == pytest.approx(ref_losses.flatten().tolist(), rel=tolerance)
    assert tri_losses[2, 0] < tri_losses[0, 0]  # it trains
    for name, t in ref.items():
        assert torch.equal(tri[name][1], params[name][1]), name  # the stopped member did not move
        assert rel(tri[name], t.double()) < tolerance, name
