# ruff: noqa: N803, N806, E501  (Triton kernels name their compile-time constants in capitals)
"""Triton kernels for the fused MLP step on CUDA: one pass over each layer's weights per GEMM stage.

The Fig. 1 ensemble (64 stacked 3x1024 MLPs, batch 128) is bound by weight traffic: each 128-row
product reads a whole weight matrix for little arithmetic. cuBLAS reads the weights three times per
step (forward, input gradient, in-place update) and writes them once, and runs these thin batched
products well below the copy bandwidth. Here
- `linear_forward` reads W once and adds the bias, the NIN term and the ReLU in its epilogue;
- `linear_backward_` reads each W tile once, uses it for the input gradient dz W, then subtracts
  dz^T h from it (weight decay included) and writes it back: the weights cross memory twice in the
  backward pass instead of three times, the gradient is never stored, and the ReLU mask of the
  layer below is applied on the way out.

Products follow `precision=`: "ieee" (fp32), "tf32" (TF32 tensor cores, as cuBLAS under TF32) or
"bf16" (bfloat16 operands). Accumulation, weights and updates are float32 throughout; under bf16
the weight gradient is not rounded before it is subtracted.

The batch must fit one tile (at most 128 rows; the fused step falls back to cuBLAS beyond that).
Set TRITON_INTERPRET=1 before import to run the kernels on the CPU (the tests do).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

MAX_BATCH = 128
DOTS = ("ieee", "tf32", "bf16")
# Tile shapes and launch settings, chosen on an H100 for the Fig. 1 ensemble (bench/speed.py).
FORWARD = {"BLOCK_N": 128, "BLOCK_K": 64, "num_warps": 8, "num_stages": 3}
BACKWARD = {"BLOCK_M": 64, "BLOCK_N": 64, "num_warps": 4, "num_stages": 2}
# The CPU interpreter multiplies bfloat16 tiles wrongly and truncates when it casts to bfloat16
# (triton 3.8): there the operands are rounded to nearest even by hand and multiplied in float32,
# which gives the same products as the tensor cores.
INTERPRET = tl.constexpr(os.environ.get("TRITON_INTERPRET") == "1")


@triton.jit
def _round_bf16(x):
    """float32 -> nearest bfloat16 (ties to even), kept in float32."""
    bits = x.to(tl.uint32, bitcast=True)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def _dot(a, b, DOT: tl.constexpr):
    if DOT == "bf16" and INTERPRET:
        out = tl.dot(_round_bf16(a), _round_bf16(b), input_precision="ieee")
    elif DOT == "bf16":
        out = tl.dot(a.to(tl.bfloat16), b.to(tl.bfloat16))
    else:
        out = tl.dot(a, b, input_precision=DOT)
    return out


@triton.jit
def _forward_kernel(
    h_ptr, w_ptr, b_ptr, eps_ptr, nin_ptr, z_ptr,
    B, N_IN, N_OUT,
    HAS_NIN: tl.constexpr, RELU: tl.constexpr, DOT: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """z[k, :, n-block] = act(h[k] W[k, n-block]^T + b + eps[k] nin[k, n-block]); W read once.
    The n-blocks of one model are neighbours in the launch order, so they share its h from L2."""
    k = tl.program_id(1)
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_b = tl.program_id(2) * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_k = tl.arange(0, BLOCK_K)
    mask_b, mask_n = offs_b < B, offs_n < N_OUT
    h_rows = h_ptr + k * B * N_IN + offs_b[:, None] * N_IN
    w_rows = w_ptr + k * N_OUT * N_IN + offs_n[:, None] * N_IN
    acc = tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float32)
    for start in range(0, N_IN, BLOCK_K):
        cols = start + offs_k
        mask_k = cols < N_IN
        h = tl.load(h_rows + cols[None, :], mask=mask_b[:, None] & mask_k[None, :], other=0.0)
        w = tl.load(w_rows + cols[None, :], mask=mask_n[:, None] & mask_k[None, :], other=0.0)
        acc += _dot(h, tl.trans(w), DOT)
    acc += tl.load(b_ptr + k * N_OUT + offs_n, mask=mask_n, other=0.0)[None, :]
    if HAS_NIN:
        eps = tl.load(eps_ptr + k * B + offs_b, mask=mask_b, other=0.0)
        acc += eps[:, None] * tl.load(nin_ptr + k * N_OUT + offs_n, mask=mask_n, other=0.0)[None, :]
    if RELU:
        acc = tl.maximum(acc, 0.0)
    tl.store(z_ptr + k * B * N_OUT + offs_b[:, None] * N_OUT + offs_n[None, :], acc, mask=mask_b[:, None] & mask_n[None, :])


@triton.jit
def _backward_kernel(
    dz_ptr, h_ptr, w_ptr, decay_ptr, dh_ptr,
    B, N_IN, N_OUT,
    NEED_DH: tl.constexpr, HAS_DECAY: tl.constexpr, DOT: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """For a strip of W's columns (input features): dh = (dz W) * (h > 0) from the weights before
    the step, and W <- decay W - dz^T h, one read and one write of each W tile. The strips of one
    model are neighbours in the launch order, so they share its dz from L2."""
    k = tl.program_id(1)
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_b = tl.arange(0, BLOCK_B)
    offs_m = tl.arange(0, BLOCK_M)
    mask_b, mask_n = offs_b < B, offs_n < N_IN
    h = tl.load(h_ptr + k * B * N_IN + offs_b[:, None] * N_IN + offs_n[None, :], mask=mask_b[:, None] & mask_n[None, :], other=0.0)
    dz_rows = dz_ptr + k * B * N_OUT + offs_b[:, None] * N_OUT
    w_base = w_ptr + k * N_OUT * N_IN + offs_n[None, :]
    if HAS_DECAY:
        decay = tl.load(decay_ptr + k)
    dh = tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float32)
    for start in range(0, N_OUT, BLOCK_M):
        rows = start + offs_m
        mask_m = rows < N_OUT
        dz = tl.load(dz_rows + rows[None, :], mask=mask_b[:, None] & mask_m[None, :], other=0.0)
        w_ptrs = w_base + rows[:, None] * N_IN
        mask_w = mask_m[:, None] & mask_n[None, :]
        w = tl.load(w_ptrs, mask=mask_w, other=0.0)
        if NEED_DH:
            dh += _dot(dz, w, DOT)
        if HAS_DECAY:
            w = w * decay
        w -= _dot(tl.trans(dz), h, DOT)
        tl.store(w_ptrs, w, mask=mask_w)
    if NEED_DH:
        dh = tl.where(h > 0, dh, 0.0)
        tl.store(dh_ptr + k * B * N_IN + offs_b[:, None] * N_IN + offs_n[None, :], dh, mask=mask_b[:, None] & mask_n[None, :])


def _block_b(batch: int) -> int:
    return max(16, triton.next_power_of_2(batch))


def linear_forward(
    h: torch.Tensor, w: torch.Tensor, b: torch.Tensor, eps: torch.Tensor | None, nin: torch.Tensor | None, relu: bool, dot: str
) -> torch.Tensor:
    """(K, B, in) x (K, out, in) -> (K, B, out) float32 pre-activations (post-ReLU if relu)."""
    K, B, n_in = h.shape
    n_out = w.shape[1]
    assert w.is_contiguous() and b.is_contiguous() and (nin is None or nin.is_contiguous())
    h = h.contiguous()
    eps = eps.contiguous() if eps is not None else None
    z = torch.empty(K, B, n_out, device=h.device, dtype=torch.float32)
    config = dict(FORWARD, BLOCK_B=min(_block_b(B), MAX_BATCH))
    config["BLOCK_N"] = min(config["BLOCK_N"], max(16, triton.next_power_of_2(n_out)))  # the 10-way output layer
    grid = (triton.cdiv(n_out, config["BLOCK_N"]), K, triton.cdiv(B, config["BLOCK_B"]))
    _forward_kernel[grid](
        h, w, b, eps if eps is not None else b, nin if nin is not None else b, z, B, n_in, n_out,
        HAS_NIN=nin is not None, RELU=relu, DOT=dot, **config,
    )  # fmt: skip
    return z


def linear_backward_(
    dz: torch.Tensor, h: torch.Tensor, w: torch.Tensor, decay: torch.Tensor | None, need_dh: bool, dot: str
) -> torch.Tensor | None:
    """Updates w (K, out, in) in place by -dz^T h (dz lr-scaled, (K, B, out)); returns the layer
    below's output gradient (dz W) * (h > 0), (K, B, in), when need_dh."""
    K, B, n_in = h.shape
    n_out = w.shape[1]
    if B > MAX_BATCH:
        raise ValueError(f"linear_backward_ takes at most {MAX_BATCH} rows, got {B}")
    assert w.is_contiguous() and h.is_contiguous() and dz.is_contiguous()
    dh = torch.empty_like(h) if need_dh else None
    config = dict(BACKWARD, BLOCK_B=_block_b(B))
    config["BLOCK_M"] = min(config["BLOCK_M"], max(16, triton.next_power_of_2(n_out)))
    grid = (triton.cdiv(n_in, config["BLOCK_N"]), K)
    _backward_kernel[grid](
        dz, h, w, decay if decay is not None else w, dh if dh is not None else w, B, n_in, n_out,
        NEED_DH=need_dh, HAS_DECAY=decay is not None, DOT=dot, **config,
    )  # fmt: skip
    return dh
