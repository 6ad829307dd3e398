"""The CNN's first block (conv1, its input NIN, 2x2 max-pool, ReLU), forward and backward at batch
128, six ways side by side in one process, timed in turn (median of --repeats rounds):

- plain: nn.Conv2d, ReLU, max-pool as the plain loop's nn.Sequential has them (no NIN);
- kernel: nin's path on the CPU since 2026-11-30, the block as one C kernel
  (nin_cli/nets/conv_block.c) that writes only the pooled output;
- nin: nin's path in PyTorch's kernels (fused_block=off, and on a GPU): channels-last conv, the
  noise crossing the conv once as one image and added by a rank-1 GEMM onto the output, max-pool,
  then ReLU on a quarter of the values;
- in-place: nin's path with the rank-1 add written into the conv's output (`addmm_`), which
  saves addmm's copy of it;
- compiled: the same, with the noise add, the pool and the ReLU fused by torch.compile;
- function: a custom autograd Function (not in nin yet) that adds the noise to the image and
  convolves it once, and takes the NIW's gradient as conv^T of one image, sum_n eps_n g_n (a GEMV
  over the batch's output gradients): no pass over the conv's output for the noise, no input
  gradient of the batch.

Why: this block's tensors are the network's largest (128 x 32 x 28 x 28 floats, 12.8 MB): the
conv's output, the noise add, the pool's read and its zero-filled gradient move them through
memory five times a step, and eager PyTorch cannot fuse them. The compiled row measures whether
inductor's fusion pays on this CPU; the kernel row, what writing the fusion by hand does.

    python bench/cnn_region.py [--repeats 15]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from nin_cli.nets import conv_block

N, C, H, W = 128, 32, 28, 28


class NoisyImageConv(torch.autograd.Function):
    """conv(h + eps W_NI) for an h that needs no gradient (the image), 3x3 with padding 1."""

    @staticmethod
    def forward(ctx, h, niw, eps, weight, bias):
        z = torch.addcmul(h, eps.view(-1, 1, 1, 1), niw)
        ctx.save_for_backward(z, eps, weight)
        return F.conv2d(z, weight, bias, padding=1)

    @staticmethod
    def backward(ctx, g):
        z, eps, weight = ctx.saved_tensors
        conv_backward = torch.ops.aten.convolution_backward
        common = ([1, 1], [1, 1], [1, 1], False, [0, 0], 1)
        _, g_weight, g_bias = conv_backward(g, z, weight, [weight.shape[0]], *common, [False, True, True])
        g_sum = (eps[None] @ g.permute(0, 2, 3, 1).reshape(len(eps), -1)).view(1, *g.shape[2:], g.shape[1]).permute(0, 3, 1, 2)
        g_niw = conv_backward(g_sum, z[:1], weight, None, *common, [True, False, False])[0]
        return None, g_niw[0], None, g_weight, g_bias


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    torch.manual_seed(0)
    plain_conv = nn.Conv2d(1, C, 3, padding=1)
    conv = nn.Conv2d(1, C, 3, padding=1).to(memory_format=torch.channels_last)
    conv.load_state_dict(plain_conv.state_dict())
    niw = (torch.randn(1, H, W) / 3).requires_grad_()
    x, eps = torch.randn(N, 1, H, W), torch.randn(N)

    def plain() -> torch.Tensor:
        return F.max_pool2d(F.relu(plain_conv(x)), 2)

    def nin() -> torch.Tensor:
        noise = conv._conv_forward(niw[None], conv.weight, None)
        out = conv(x).permute(0, 2, 3, 1)
        flat = torch.addmm(out.reshape(N, -1), eps[:, None], noise.permute(0, 2, 3, 1).reshape(1, -1))
        return F.relu(F.max_pool2d(flat.view(out.shape).permute(0, 3, 1, 2), 2))

    def kernel() -> torch.Tensor:
        return conv_block.conv_block(conv, x, conv._conv_forward(niw[None], conv.weight, None)[0], eps)

    def in_place() -> torch.Tensor:
        noise = conv._conv_forward(niw[None], conv.weight, None)
        out = conv(x)
        out.permute(0, 2, 3, 1).reshape(N, -1).addmm_(eps[:, None], noise.permute(0, 2, 3, 1).reshape(1, -1))
        return F.relu(F.max_pool2d(out, 2))

    fused = torch.compile(lambda out, noise, e: F.relu(F.max_pool2d(out + e.view(-1, 1, 1, 1) * noise, 2)), dynamic=False)

    def compiled() -> torch.Tensor:
        return fused(conv(x), conv._conv_forward(niw[None], conv.weight, None), eps)

    def function() -> torch.Tensor:
        return F.relu(F.max_pool2d(NoisyImageConv.apply(x, niw, eps, conv.weight, conv.bias), 2))

    grad = torch.randn(N, C, H // 2, W // 2).to(memory_format=torch.channels_last)
    params = [conv.weight, conv.bias, niw]

    def step(block: Callable[[], torch.Tensor]) -> list[torch.Tensor]:
        for p in [*params, *plain_conv.parameters()]:
            p.grad = None
        block().backward(grad)
        return [p.grad.clone() for p in params if p.grad is not None]

    t0 = time.perf_counter()
    reference, fused_grads = step(nin), step(compiled)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; torch.compile took {time.perf_counter() - t0:.1f} s")
    for name, grads in (("kernel", step(kernel)), ("in-place", step(in_place)), ("compiled", fused_grads), ("function", step(function))):
        diff = max(float((a - b).abs().max() / a.abs().max()) for a, b in zip(reference, grads))
        print(f"{name} vs nin: largest relative gradient difference {diff:.1e}")
    blocks = {"plain": plain, "kernel": kernel, "nin": nin, "in-place": in_place, "compiled": compiled, "function": function}
    times: dict[str, list[float]] = {name: [] for name in blocks}
    for _ in range(args.repeats):
        for name, block in blocks.items():
            t0 = time.perf_counter()
            for _ in range(10):
                step(block)
            times[name].append((time.perf_counter() - t0) / 10)
    base = statistics.median(times["plain"])
    for name, ts in times.items():
        print(f"{name:<10} {statistics.median(ts) * 1000:8.2f} ms   {base / statistics.median(ts):5.2f}x plain")


if __name__ == "__main__":
    main()
