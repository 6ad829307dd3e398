"""A CNN's first block on the CPU, fused into one C kernel: relu(max_pool2x2(conv3x3(x) + bias +
eps_n * noise)), with noise the NIN's term on the convolution's output (conv(W_NI) under
nin.conv=input, W_NI under nin.conv=output). Eager PyTorch moves the convolution's
full-resolution output through memory five times a step (conv_block.c); this writes only the
pooled output. The same function to float rounding (tests/nets/test_conv_block.py).

Built ahead of time by `make setup` (`python -m nin_cli.nets.conv_block`), else on first use, with the
system's C compiler (`cc`, or $CC) into ~/.cache/nin, keyed by the
source, the compiler and the CPU's features (x86's `flags`, ARM's `Features`: -march=native code
is never loaded on another CPU). Where it does not apply (a GPU, more than an image's few channels,
an input that needs a gradient or carries a tangent, vmap, autocast, Hessian probes at the layer) or no compiler is
found, PyTorch's kernels run instead: `applies` is the one rule. The config's `fused_block`
(auto | on | off) switches it per model; what ran is in each run's env.json (nin_cli/train/engine.py)."""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import subprocess
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
import torch.autograd.forward_ad as fwAD
from torch import nn
from torch.autograd.function import once_differentiable

from nin_cli.errors import console

SOURCE = Path(__file__).with_name("conv_block.c")
FLAGS = ("-O3", "-march=native", "-std=gnu11", "-shared", "-fPIC")
FUSED_BLOCK = ("auto", "on", "off")  # the config's fused_block

_lock = threading.Lock()
_state: dict = {}  # "lib": the loaded library or None (tried and failed), "pool": the thread pool
os.register_at_fork(after_in_child=lambda: _state.pop("pool", None))  # a forked child has none of its threads


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "nin"


@functools.cache
def cpuinfo() -> dict[str, str]:
    """/proc/cpuinfo's fields, each as the first processor gives it ({} where there is none): what
    the kernel's cache key and each run's engine record (nin_cli/train/engine.py) read."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep:
                    fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def cpu_features() -> str:
    """What -march=native compiles for, on x86 (`flags`, the model) and ARM (`Features`, the
    implementer and part) alike: a library built on another CPU is never loaded."""
    keys = ("flags", "Features", "model name", "CPU implementer", "CPU architecture", "CPU part", "CPU variant")
    seen = cpuinfo()
    return os.uname().machine + "|" + "|".join(f"{k}: {seen[k]}" for k in keys if k in seen)


def _compiler(cc: str) -> str:
    """The compiler's own first line (another compiler, or version, builds another library)."""
    try:
        said = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return cc
    return said.splitlines()[0] if said else cc


def _build() -> ctypes.CDLL:
    cc = os.environ.get("CC", "cc")
    key = hashlib.sha256(SOURCE.read_bytes() + " ".join((_compiler(cc), *FLAGS)).encode() + cpu_features().encode()).hexdigest()[:16]
    path = cache_dir() / f"conv_block-{key}.so"
    if not path.exists():  # compiled to a temporary name and renamed: processes racing here all win
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=path.parent)
        os.close(fd)
        try:
            subprocess.run([cc, *FLAGS, str(SOURCE), "-o", tmp], check=True, capture_output=True, timeout=120)
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
    lib = ctypes.CDLL(str(path))
    p, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    lib.conv_block_forward.argtypes = [p] * 7 + [i64, i64] + [i32] * 4
    lib.conv_block_backward.argtypes = [p] * 8 + [i64, i64] + [i32] * 4
    return lib


def library() -> ctypes.CDLL | None:
    """The compiled kernel, built once per process; None where it cannot be built."""
    if "lib" not in _state:
        with _lock:
            if "lib" not in _state:
                try:
                    _state["lib"] = _build()
                except (OSError, subprocess.SubprocessError) as exc:
                    _state["lib"] = None
                    said = exc.stderr.decode(errors="replace").strip().splitlines() if getattr(exc, "stderr", None) else [str(exc)]
                    why = _state["why"] = said[-1] if said else type(exc).__name__
                    console.print(f"[yellow]nin: note: the fused CNN block could not be built ({why}); PyTorch's kernels run it, slower")
    return _state["lib"]


def _in_transform() -> bool:
    """Inside vmap, grad or jvp (torch.func), which the kernel's autograd.Function does not
    support: a forward-mode Hessian estimate passes the first block with its parameters unwrapped."""
    return torch._C._are_functorch_transforms_active()


IMAGE_CHANNELS = 4  # at most: the kernel is for an image's few channels; oneDNN's GEMMs win on more


def applies(layer: nn.Module, x: torch.Tensor) -> bool:
    """Whether the fused kernel computes this block: a 3x3, stride-1, padding-1 float32 conv of an
    image (a few channels, no gradient wanted for it) on the CPU, outside torch.func's transforms
    and autocast."""
    return (
        isinstance(layer, nn.Conv2d)
        and x.device.type == "cpu"
        and x.dtype == layer.weight.dtype == torch.float32
        and x.ndim == 4
        and x.shape[2] % 2 == 0
        and x.shape[3] % 2 == 0
        and not x.requires_grad
        and fwAD.unpack_dual(x).tangent is None  # nor a forward-mode tangent (nets/tangents.py's pass)
        and layer.kernel_size == (3, 3)
        and layer.stride == (1, 1)
        and layer.padding == (1, 1)
        and layer.dilation == (1, 1)
        and layer.groups == 1
        and layer.padding_mode == "zeros"
        and layer.out_channels % 8 == 0
        and layer.in_channels <= IMAGE_CHANNELS
        and not torch.is_autocast_enabled("cpu")
        and not _in_transform()
        and library() is not None
    )


def decision(model: nn.Module, in_shape: tuple[int, ...], device: torch.device) -> dict:
    """Whether a model's first block runs fused, as its config's `fused_block` and this machine
    make it: {"mode", "ran", "why"} (the record in env.json)."""
    mode = str(getattr(model, "fused_block", "auto"))
    block = getattr(model, "first_block", None)  # nets/structure.py: a Sequential beginning conv, 2x2 max-pool, ReLU
    if mode == "off":
        return {"mode": mode, "ran": False, "why": "fused_block=off"}
    if block is None or len(in_shape) != 3:
        return {"mode": mode, "ran": False, "why": "no convolutional first block"}
    if device.type != "cpu":
        return {"mode": mode, "ran": False, "why": f"the kernel is for the CPU; this run is on {device.type}"}
    if library() is None:
        return {"mode": mode, "ran": False, "why": f"not built here: {_state.get('why', 'no C compiler')}"}
    layer = block.layer
    x = torch.zeros(2, *in_shape, dtype=layer.weight.dtype)
    if not applies(layer, x):
        return {"mode": mode, "ran": False, "why": "the first block is not a 3x3 convolution of an image's few channels"}
    return {"mode": mode, "ran": True, "why": "built for this CPU"}


def _parts(n: int) -> int:
    return max(1, min(torch.get_num_threads(), n))


def _in_threads(work, n: int) -> None:
    """`work(t, n0, n1)` over `_parts(n)` disjoint sample ranges, one per torch thread (ctypes
    releases the GIL)."""
    parts = _parts(n)
    bounds = [n * t // parts for t in range(parts + 1)]
    if parts == 1:
        work(0, 0, n)
        return
    pool = _state.get("pool")
    if pool is None or pool._max_workers < parts:
        pool = _state["pool"] = ThreadPoolExecutor(parts)
    list(pool.map(lambda t: work(t, bounds[t], bounds[t + 1]), range(parts)))


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


class _ConvBlock(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, noise, eps):
        lib = library()
        n, c_in, h, w = x.shape
        c_out = weight.shape[0]
        xh = x.permute(0, 2, 3, 1).contiguous()
        wt = weight.permute(2, 3, 1, 0).reshape(9 * c_in, c_out).contiguous()
        b = bias.contiguous() if bias is not None else x.new_zeros(c_out)
        nz = noise.permute(1, 2, 0).contiguous() if noise is not None else None
        e = eps.contiguous() if noise is not None else None
        y = x.new_empty(n, h // 2, w // 2, c_out)
        grad = any(ctx.needs_input_grad[1:4])
        idx = torch.empty(y.shape, dtype=torch.uint8) if grad else None
        dims = (h, w, c_in, c_out)
        pointers = (xh.data_ptr(), wt.data_ptr(), b.data_ptr(), _ptr(nz), _ptr(e), y.data_ptr(), _ptr(idx))
        _in_threads(lambda t, n0, n1: lib.conv_block_forward(*pointers, n0, n1, *dims), n)
        if grad:
            ctx.save_for_backward(xh, y, idx, e)
            ctx.dims = dims
        return y.permute(0, 3, 1, 2)  # (N, C, H/2, W/2) in channels-last memory, as the next conv reads it

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y):
        lib = library()
        xh, y, idx, e = ctx.saved_tensors
        h, w, c_in, c_out = ctx.dims
        n = xh.shape[0]
        g = grad_y.permute(0, 2, 3, 1).contiguous()
        parts = _parts(n)
        dwt = torch.zeros(parts, 9 * c_in, c_out)  # one accumulator per thread, summed in a fixed order
        db = torch.zeros(parts, c_out)
        dn = torch.zeros(parts, h, w, c_out) if ctx.needs_input_grad[3] else None
        _in_threads(
            lambda t, n0, n1: lib.conv_block_backward(
                xh.data_ptr(),
                g.data_ptr(),
                y.data_ptr(),
                idx.data_ptr(),
                _ptr(e),
                dwt[t].data_ptr(),
                db[t].data_ptr(),
                None if dn is None else dn[t].data_ptr(),
                n0,
                n1,
                *ctx.dims,
            ),
            n,
        )
        d_weight = dwt.sum(0).reshape(3, 3, c_in, c_out).permute(3, 2, 0, 1) if ctx.needs_input_grad[1] else None
        d_bias = db.sum(0) if ctx.needs_input_grad[2] else None
        d_noise = dn.sum(0).permute(2, 0, 1) if dn is not None else None
        return None, d_weight, d_bias, d_noise, None


def conv_block(layer: nn.Conv2d, x: torch.Tensor, noise: torch.Tensor | None = None, eps: torch.Tensor | None = None) -> torch.Tensor:
    """relu(max_pool2d(layer(x) + eps[:, None, None, None] * noise, 2)) through the fused kernel
    (call where `applies(layer, x)`); noise (C_out, H, W) and eps (N,) together or not at all."""
    return _ConvBlock.apply(x, layer.weight, layer.bias, noise, eps)


if __name__ == "__main__":  # `make setup`: built ahead of time for this CPU, so that no training job compiles it
    built = library()
    print(f"nin: the fused CNN block {'is built for this CPU in ' + str(cache_dir()) if built else 'could not be built here'}")
