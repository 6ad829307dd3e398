"""Hutchinson estimate of Tr H_z: the Hessian of the loss w.r.t. a NIN layer's pre-activations.

A zero tensor `delta` is added to z(l) (the model's `probes`); the Hessian w.r.t. delta is H_z.
One Rademacher vector v spans all NIN layers at once: v_l . (H v)_l is unbiased for Tr H_ll since
the cross-layer terms average to zero. With L the batch mean, the result is <Tr H_z> per sample.
"""

from __future__ import annotations

import torch

from nin_cli.objectives import LossFn


def hutchinson_traces(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: LossFn,
    shapes: dict[str, tuple[int, ...]],
    probes: int,
    gen: torch.Generator,
) -> dict[str, float]:
    if not shapes:
        return {}
    names = list(shapes)
    deltas = {n: torch.zeros(len(x), *shapes[n], device=x.device, requires_grad=True) for n in names}
    with torch.enable_grad():
        loss = loss_fn(model(x, probes=deltas), y)
        grads = torch.autograd.grad(loss, [deltas[n] for n in names], create_graph=True)
        totals = dict.fromkeys(names, 0.0)
        for _ in range(probes):
            vs = [torch.randint(0, 2, d.shape, generator=gen, device=x.device).mul_(2).sub_(1).to(d.dtype) for d in deltas.values()]
            dot = sum((g * v).sum() for g, v in zip(grads, vs))
            hvs = torch.autograd.grad(dot, [deltas[n] for n in names], retain_graph=True)
            for n, hv, v in zip(names, hvs, vs):
                totals[n] += float((hv * v).sum())
    return {n: totals[n] / probes for n in names}
