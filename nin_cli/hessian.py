"""Second-order quantities of the loss at the NIN layers and of the noisy loss.

H_z is the Hessian of the loss w.r.t. a NIN layer's pre-activations: a zero tensor `delta` is
added to z(l) (the model's `probes`) and the Hessian is taken w.r.t. delta. With L the batch mean,
everything below is per sample, averaged over the sample (<.>):
- Tr H_z by Hutchinson: one Rademacher vector v spans all NIN layers at once; v_l . (H v)_l is
  unbiased for Tr H_ll since the cross-layer terms average to zero;
- the curvature along the NIW and the gradient's second moment (metrics.csv, each epoch);
- the top eigenvalue of <H_z> and of the noisy loss's Hessian w.r.t. the data weights, by power
  iteration on Hessian-vector products (`nin predict`).
"""

from __future__ import annotations

from dataclasses import dataclass

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
    with torch.enable_grad():
        deltas, by_layer = _probe_grads(model, x, y, loss_fn, shapes)
        grads = [by_layer[n] for n in names]
        totals = dict.fromkeys(names, 0.0)
        for _ in range(probes):
            vs = [torch.randint(0, 2, d.shape, generator=gen, device=x.device).mul_(2).sub_(1).to(d.dtype) for d in deltas.values()]
            dot = sum((g * v).sum() for g, v in zip(grads, vs))
            hvs = torch.autograd.grad(dot, [deltas[n] for n in names], retain_graph=True)
            for n, hv, v in zip(names, hvs, vs):
                totals[n] += float((hv * v).sum())
    return {n: totals[n] / probes for n in names}


def _probe_grads(model, x, y, loss_fn: LossFn, shapes: dict[str, tuple[int, ...]], eps=None):
    """Zero probes on every NIN layer's pre-activation and the loss's gradient w.r.t. them, kept
    differentiable for Hessian-vector products."""
    deltas = {n: torch.zeros(len(x), *shapes[n], device=x.device, requires_grad=True) for n in shapes}
    loss = loss_fn(model(x, eps=eps, probes=deltas), y)
    grads = torch.autograd.grad(loss, list(deltas.values()), create_graph=True)
    return deltas, dict(zip(shapes, grads))


def mean_hvp(delta: torch.Tensor, grad: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """<H_z> v: the same direction v for every sample. With L the batch mean, the Hessian w.r.t.
    the per-sample probes is block diagonal with blocks H_i / |B|, so summing the blocks' products
    over the batch gives the per-sample mean <H_z> v."""
    (hv,) = torch.autograd.grad((grad * v).sum(), delta, retain_graph=True)
    return hv.sum(0)


@dataclass
class NIWCurvature:
    curvature: float  # W_NI^T <H_z> W_NI / |W_NI|^2: the NIW decays by 1 - eta sigma^2 times this per step
    grad_moment: float  # sum_j <g_{z,j}^2>: per-sample gradient w.r.t. z, squared, mean over samples


def niw_curvatures(model, x, y, loss_fn: LossFn, shapes: dict[str, tuple[int, ...]]) -> dict[str, NIWCurvature]:
    """What drives each NIW, from one backward pass and one Hessian-vector product per NIN layer:
    the curvature along it (the decay) and the gradient's second moment (the random walk, whose
    step has variance eta^2 sigma^2 grad_moment / |B|)."""
    names = [n for n in shapes if n in model.nins]
    if not names:
        return {}
    with torch.enable_grad():
        deltas, grads = _probe_grads(model, x, y, loss_fn, {n: shapes[n] for n in names})
        out = {}
        for n in names:
            w = model.nins[n].weight.detach()
            curvature = float((mean_hvp(deltas[n], grads[n], w) * w).sum() / (w * w).sum())
            # L is the batch mean, so a sample's own gradient is |B| times its slice of dL/d delta
            moment = float(((grads[n].detach() * len(x)) ** 2).sum() / len(x))
            out[n] = NIWCurvature(curvature, moment)
    return out


def top_eigenvalues(
    model, x, y, loss_fn: LossFn, shapes: dict[str, tuple[int, ...]], gen: torch.Generator, iterations: int = 50, tol: float = 1e-4
) -> dict[str, float]:
    """The largest-magnitude eigenvalue of <H_z> at each NIN layer, by power iteration on
    Hessian-vector products (stops when it changes by less than `tol`, relative)."""
    out = {}
    with torch.enable_grad():
        deltas, grads = _probe_grads(model, x, y, loss_fn, shapes)
        for n in shapes:
            v = torch.randn(shapes[n], generator=gen, device=x.device)
            v /= v.norm()
            value = 0.0
            for _ in range(iterations):
                hv = mean_hvp(deltas[n], grads[n], v)
                new = float((hv * v).sum())
                v = hv / hv.norm().clamp_min(1e-30)
                if abs(new - value) <= tol * abs(new):
                    value = new
                    break
                value = new
            out[n] = value
    return out


def noisy_sharpness(
    model, x, y, loss_fn: LossFn, xi: dict[str, torch.Tensor], sigma: float, gen: torch.Generator, iterations: int = 30, tol: float = 1e-3
) -> float:
    """Top eigenvalue of the Hessian of the noisy training loss w.r.t. the data weights (every
    parameter but the NIWs), at noise scale sigma with fixed unit draws `xi` (eps = sigma xi per
    sample and NIN), by power iteration on Hessian-vector products."""
    params = [p for name, p in model.named_parameters() if not name.startswith("nins.")]
    eps = {n: sigma * v for n, v in xi.items()}
    with torch.enable_grad():
        loss = loss_fn(model(x, eps=eps), y)
        grads = torch.autograd.grad(loss, params, create_graph=True)
        vs = [torch.randn(p.shape, generator=gen, device=p.device) for p in params]
        value = 0.0
        for _ in range(iterations):
            norm = torch.sqrt(sum((v * v).sum() for v in vs))
            vs = [v / norm for v in vs]
            hvs = torch.autograd.grad(sum((g * v).sum() for g, v in zip(grads, vs)), params, retain_graph=True)
            new = float(sum((h * v).sum() for h, v in zip(hvs, vs)))
            vs = [h.detach() for h in hvs]
            if abs(new - value) <= tol * abs(new):
                return new
            value = new
    return value
