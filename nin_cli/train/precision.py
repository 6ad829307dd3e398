"""CUDA's float32 matmuls and convolutions, in IEEE float32 or on TF32 tensor cores: set and read
in this one place, through one API per torch version.

torch 2.9 added per-backend settings (`torch.backends.cuda.matmul.fp32_precision`,
`torch.backends.cudnn.conv.fp32_precision`) and, once one of them is set, refuses a read of the
legacy `allow_tf32` flags ("you have used mix of the legacy and new APIs"): a GPU run that set the
precision one way and read it the other failed before its first epoch. torch 2.4-2.8 have only the
legacy flags. Nothing else in nin touches either; a CPU is unaffected by both.

What a run's arithmetic is, by its config and device (`arithmetic`), is what the engine record
keeps and what a resume compares: `fp32` (IEEE float32 throughout: every CPU run, and CUDA under
precision=fp32), `tf32` (CUDA under precision=tf32: float32 matmul and convolution inputs rounded to
a 10-bit mantissa) or `bf16` (precision=bf16: the step's and the evaluation's matmuls in bfloat16).
"""

from __future__ import annotations

import torch

NEW_API = hasattr(torch.backends.cuda.matmul, "fp32_precision")  # torch >= 2.9


def set_tf32(enabled: bool) -> None:
    """TF32 for CUDA's float32 matmuls and cuDNN's convolutions (about 8x the IEEE float32 rate on
    a Hopper GPU, inputs rounded to a 10-bit mantissa, float32 accumulation), or IEEE float32."""
    if NEW_API:
        mode = "tf32" if enabled else "ieee"
        torch.backends.cuda.matmul.fp32_precision = mode
        torch.backends.cudnn.conv.fp32_precision = mode
    else:
        torch.backends.cuda.matmul.allow_tf32 = enabled
        torch.backends.cudnn.allow_tf32 = enabled


def _new_api_mode(node, parents) -> str:
    """A new-API setting as it applies: `none` defers to the enclosing setting (the global one last)."""
    for setting in (node, *parents):
        mode = getattr(setting, "fp32_precision", "none")
        if mode != "none":
            return mode
    return "ieee"


def tf32_flags() -> dict[str, bool]:
    """Whether CUDA's float32 matmuls and cuDNN's convolutions may use TF32 now, read through the
    API they are set with (never the legacy flags once the new ones exist)."""
    if NEW_API:
        backends = torch.backends
        matmul = _new_api_mode(backends.cuda.matmul, (backends,))
        conv = _new_api_mode(backends.cudnn.conv, (backends.cudnn, backends))
        return {"matmul": matmul == "tf32", "conv": conv == "tf32"}
    return {"matmul": bool(torch.backends.cuda.matmul.allow_tf32), "conv": bool(torch.backends.cudnn.allow_tf32)}


def configure(device: torch.device, precision: str) -> None:
    """Set CUDA's float32 arithmetic for a run's `precision` (TF32 only under precision=tf32, and
    under bf16 for what autocast leaves in float32); nothing on a CPU."""
    if device.type == "cuda":
        set_tf32(precision in ("tf32", "bf16"))


def arithmetic(device_type: str, precision: str) -> str:
    """The float format a run's matmuls compute in: bf16, tf32 (CUDA only) or fp32."""
    if precision == "bf16":
        return "bf16"
    return "tf32" if precision == "tf32" and device_type == "cuda" else "fp32"
