"""J v by forward mode where only a network's input (a NIN layer's probe) carries a tangent.

PyTorch's forward-mode formula for a convolution or a Linear is conv(x_t, W) + conv(x, W_t): a
parameter with no tangent is given a zero one, and the second convolution runs in full on zeros
(a weight of zero strides, which oneDNN reads in the NCHW layout, so that the sum of the two mixes
layouts too). A max-pool's tangent is gathered from a copy of the input's tangent in NCHW order,
whatever the layout. For the CNN laid out channels-last those cost the Gauss-Newton measurement
(ProbedLoss.gauss_newton) more than the forward pass itself: 130 ms against 30 for 256 images on
one CPU thread. `input_jvp` runs the same forward pass under `TangentsOfTheInput`, which computes
these three from the input's tangent alone, in the primal's layout: the same numbers, with the
tangent's share of the work a second forward pass (bench/measure_profile.py)."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

LINEAR_MAPS = (torch.conv2d, torch.conv1d, torch.conv3d, F.linear)  # (input, weight, bias, *settings)
POOL_SETTINGS = ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")  # F.max_pool2d's, in order


def _tangent(t) -> torch.Tensor | None:
    return fwAD.unpack_dual(t).tangent if isinstance(t, torch.Tensor) else None


def _pool_tangent(t: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """The max-pool's tangent: each window's argmax (indices into its channel's H*W) read from t,
    in t's own layout: NHWC rows of a channels-last t, gathered without a copy of it."""
    if not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last):
        (n, c, h, w), (oh, ow) = t.shape, indices.shape[2:]
        rows = t.permute(0, 2, 3, 1).reshape(n, h * w, c)
        at = indices.permute(0, 2, 3, 1).reshape(n, oh * ow, c)
        return rows.gather(1, at).view(n, oh, ow, c).permute(0, 3, 1, 2)
    return t.flatten(2).gather(2, indices.flatten(2)).view(indices.shape)


class TangentsOfTheInput(TorchFunctionMode):
    """Inside a forward-AD level where the parameters carry no tangent: a convolution's and a
    Linear's tangent is the map of the input's tangent alone (no bias), a 2-D max-pool's is
    gathered in its layout. Anything else, or a parameter with a tangent, goes to PyTorch's own."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in LINEAR_MAPS and args:
            x, weight = args[0], args[1] if len(args) > 1 else kwargs.get("weight")
            bias = args[2] if len(args) > 2 else kwargs.get("bias")
            primal, tangent = fwAD.unpack_dual(x)
            if tangent is not None and _tangent(weight) is None and _tangent(bias) is None:
                out = func(primal, *args[1:], **kwargs)
                rest = (weight, None, *args[3:]) if len(args) > 2 else (weight,) if len(args) > 1 else ()
                return fwAD.make_dual(out, func(tangent, *rest, **{k: v for k, v in kwargs.items() if k != "bias"}))
        if func is F.max_pool2d and args and _tangent(args[0]) is not None and args[0].dim() == 4:
            primal, tangent = fwAD.unpack_dual(args[0])
            settings = dict(zip(POOL_SETTINGS, args[1:])) | kwargs
            out, indices = func(primal, **(settings | {"return_indices": True}))
            dual = fwAD.make_dual(out, _pool_tangent(tangent, indices))
            return (dual, indices) if settings.get("return_indices") else dual
        return func(*args, **kwargs)


@functools.cache
def load_forward_mode() -> None:
    """torch's forward-mode decompositions, which torch loads at a process's first make_dual (its
    own, or torch.func.jvp's) through torch.jit.script, deprecated in torch 2.14: loaded here once,
    before any forward-mode pass of nin's, with that FutureWarning about torch's own code silenced,
    so that no measurement prints it into a run's or a researcher's output."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.script.* is deprecated", category=FutureWarning)
        with fwAD.dual_level():
            fwAD.make_dual(torch.zeros(()), torch.zeros(()))


def input_jvp(fn: Callable[[dict], torch.Tensor], zeros: dict[str, torch.Tensor], tangents: dict[str, torch.Tensor]):
    """(fn(zeros), J v): fn's output and its derivative along `tangents`, by one forward-mode pass
    in which only `zeros` (the probes) carry tangents."""
    load_forward_mode()
    with fwAD.dual_level(), TangentsOfTheInput():
        duals = {name: fwAD.make_dual(zeros[name], tangents[name]) for name in zeros}
        out, jv = fwAD.unpack_dual(fn(duals))
        return out, jv if jv is not None else torch.zeros_like(out)
