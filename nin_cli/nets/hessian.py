"""Second-order quantities of the loss at the NIN layers and of the noisy loss.

H_z is the Hessian of the loss w.r.t. a NIN layer's pre-activations: a zero tensor `delta` is
added to z(l) (the model's `probes`) and the Hessian is taken w.r.t. delta. With L the batch mean,
everything below is per sample, averaged over the sample (<.>):
- Tr H_z by Hutchinson: one Rademacher vector v spans all NIN layers at once; v_l . (H v)_l is
  unbiased for Tr H_ll since the cross-layer terms average to zero;
- the curvature along the NIW and the gradient's second moment (metrics.csv, each epoch);
  these three are per-sample values averaged over the samples, returned with the standard error
  of that average (the Hessian is block diagonal over samples, so each sample's block is read off
  one Hessian-vector product of the batch);
- the top eigenvalue of <H_z> and of the noisy loss's Hessian w.r.t. the data weights, by power
  iteration on Hessian-vector products (`nin predict`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch.func import grad, jvp

from nin_cli.nets.objectives import Estimate, LossFn, mean_and_error
from nin_cli.nets.structure import piecewise_linear
from nin_cli.nets.tangents import input_jvp, load_forward_mode


@dataclass
class NIWCurvature:
    curvature: Estimate  # W_NI^T <H_z> W_NI / |W_NI|^2: the NIW decays by 1 - eta sigma^2 times this per step
    grad_moment: Estimate  # sum_j <g_{z,j}^2>: per-sample gradient w.r.t. z, squared, mean over samples


HVP_MODES = ("reverse", "forward")


def rademacher(n: int, shapes: dict, probes: int, gen: torch.Generator, device) -> list[dict[str, torch.Tensor]]:
    """`probes` Rademacher vectors spanning every probed layer (`shapes`, per sample), one for each
    of `n` samples, drawn apart from their use so that a replayed measurement takes them as inputs."""
    return [
        {name: torch.randint(0, 2, (n, *shape), generator=gen, device=device).mul_(2).sub_(1).float() for name, shape in shapes.items()}
        for _ in range(probes)
    ]


def hvp_mode(model, device: torch.device) -> str:
    """How ProbedLoss takes its Hessian-vector products: by forward-mode over reverse-mode
    differentiation for a network with convolutions on CUDA (a convolution's double backward also
    computes its weight's gradient, a convolution with image-sized kernels that no one asked for:
    28.7 against 8.6 ms an HVP for the CNN on an H200, bench/measure_profile.py --hvp), else by a
    double backward through one retained graph (1.6 against 4.4 ms for the Fig. 3 MLP there; on
    the CPU the CNN's first block runs a C kernel that forward mode does not go through)."""
    return "forward" if device.type == "cuda" and getattr(model, "conv_layers", ()) else "reverse"


class ProbedLoss:
    """The loss on (x, y) with zero probes on the NIN layers' pre-activations, its gradient w.r.t.
    them, and Hessian-vector products w.r.t. them (`hvp`), which every second-order measure below
    takes. `mode` (hvp_mode): `reverse` keeps the first backward pass's graph and differentiates
    it again for each product; `forward` differentiates the gradient in the product's direction
    by forward mode (torch.func.jvp), a forward and backward pass each.

    The traces and NIW curvatures need only quadratic forms v . H v. Where the NIN layer sits in a
    piecewise-linear network (structure.piecewise_linear: ReLU, max-pooling, Linear, Conv...), H_z
    is J^T H_loss J exactly, and the form is u . H_loss u with u = J v: one forward-mode pass and
    the loss's Hessian on the logits, no backward pass (`gauss_newton`; the pass takes the input's
    tangent alone, nets/tangents.py). It is taken where it was measured to pay
    (bench/measure_profile.py): one NIN, at a convolution, on the CPU, where the double backward
    would also compute the convolutions' weight gradients (the CNN's Hessian estimates about 2x
    faster: docs/speed.md). A NIN at a Linear is reached by a double backward
    through the layers after it alone, which a forward pass from the input cannot beat (the Fig. 3
    MLP's took 2x longer that way); each more NIN layer needs a pass of its own; on CUDA the
    measurement is replayed as one captured graph, tested with the HVPs' forward mode and not yet
    with this."""

    def __init__(
        self, model, x, y, loss_fn: LossFn, shapes: dict[str, tuple[int, ...]], mode: str | None = None, gauss_newton: bool | None = None
    ):
        self.model, self.n, self.names = model, len(x), list(shapes)
        self.mode = mode or hvp_mode(model, x.device)
        if self.mode not in HVP_MODES:
            raise ValueError(f"unknown HVP mode {self.mode!r}; one of {', '.join(HVP_MODES)}")
        if gauss_newton is None:
            gauss_newton = (
                x.device.type == "cpu"
                and len(self.names) == 1
                and self.names[0] in getattr(model, "conv_layers", ())
                and piecewise_linear(getattr(model, "net", model))
            )
        self.gauss_newton = gauss_newton
        self.logits_of = lambda deltas: model(x, probes=deltas)
        self.loss_of = lambda deltas: loss_fn(self.logits_of(deltas), y)
        self.loss_on = lambda logits: loss_fn(logits, y)
        self.deltas = {n: torch.zeros(len(x), *shapes[n], device=x.device, requires_grad=True) for n in self.names}

    def _gradients(self, create_graph: bool) -> dict[str, torch.Tensor]:
        with torch.enable_grad():
            loss = self.loss_of(self.deltas)
            return dict(zip(self.names, torch.autograd.grad(loss, list(self.deltas.values()), create_graph=create_graph)))

    @functools.cached_property
    def graph_grads(self) -> dict[str, torch.Tensor]:
        """dL/d delta with its graph kept: what the reverse-mode products differentiate again."""
        return self._gradients(create_graph=True)

    @functools.cached_property
    def grads(self) -> dict[str, torch.Tensor]:
        """dL/d delta per layer (the gradient's moment reads it): the reverse products' own where
        they will be taken, else a first-order backward pass of its own."""
        if self.mode == "reverse" and not self.gauss_newton:
            return self.graph_grads
        return self._gradients(create_graph=False)

    def hvp(self, directions: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """H v for v spanning the layers named in `directions` (zero elsewhere), w.r.t. the batch
        mean's per-sample probes: each sample's block H_i v_i / |B|, per named layer."""
        names = [n for n in self.names if n in directions]
        if self.mode == "forward":
            load_forward_mode()
            zeros = {n: torch.zeros_like(d) for n, d in self.deltas.items()}
            tangents = {n: directions[n].expand_as(zeros[n]) if n in directions else zeros[n] for n in self.names}
            _, hv = jvp(grad(self.loss_of), (zeros,), (tangents,))
            return {n: hv[n] for n in names}
        with torch.enable_grad():
            dot = sum((self.graph_grads[n] * directions[n]).sum() for n in names)
            return dict(zip(names, torch.autograd.grad(dot, [self.deltas[n] for n in names], retain_graph=True)))

    def forms(self, directions: dict[str, torch.Tensor], scale: float = 1.0) -> dict[str, torch.Tensor]:
        """Each named layer's per-sample v_l . (H v)_l, (N,), on hvp's scale (the batch mean's)
        times `scale`, for v spanning `directions` (one tensor for every sample, or one a sample)."""
        if not self.gauss_newton:  # (H v scaled) . v, in the order the records were always computed in
            return {n: (hv * scale * directions[n]).flatten(1).sum(1) for n, hv in self.hvp(directions).items()}
        (name,) = self.names
        zeros = {name: torch.zeros_like(self.deltas[name])}
        with torch.no_grad():  # forward mode only: no graph for the parameters
            logits, u = input_jvp(self.logits_of, zeros, {name: directions[name].expand_as(zeros[name])})
            _, hu = jvp(grad(self.loss_on), (logits,), (u,))
        return {name: (u * hu).flatten(1).sum(1) * scale}

    def sample_hvp(self, name: str, v: torch.Tensor) -> torch.Tensor:
        """(N, ...) H_i v_i per sample, for v (N, ...) or one v for every sample. With L the batch
        mean, the Hessian w.r.t. the per-sample probes is block diagonal with blocks H_i / |B|."""
        return self.hvp({name: v})[name] * self.n

    def mean_hvp(self, name: str, v: torch.Tensor) -> torch.Tensor:
        """<H_z> v: the same direction v for every sample, the per-sample products averaged."""
        return self.sample_hvp(name, v).mean(0)

    def rademacher(self, probes: int, gen: torch.Generator) -> list[dict[str, torch.Tensor]]:
        return rademacher(self.n, {n: d.shape[1:] for n, d in self.deltas.items()}, probes, gen, self.deltas[self.names[0]].device)

    def sample_traces(self, vectors: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Each sample's Hutchinson estimate of Tr H_z per layer, (N,), averaged over `vectors`."""
        per_sample = {n: torch.zeros(self.n, device=self.deltas[n].device) for n in self.names}
        for vs in vectors:
            for n, form in self.forms(vs).items():
                per_sample[n] += form * (self.n / len(vectors))
        return per_sample

    def traces(self, probes: int, gen: torch.Generator) -> dict[str, Estimate]:
        """<Tr H_z> per layer, by Hutchinson with `probes` Rademacher vectors spanning all layers,
        drawn per sample; the error is that of the mean over samples of each sample's estimate."""
        if not self.names or probes <= 0:
            return {}
        return {n: mean_and_error(v) for n, v in self.sample_traces(self.rademacher(probes, gen)).items()}

    def sample_curvatures(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per NIN, each sample's curvature along the NIW and its gradient's second moment, (N,) each."""
        out = {}
        for n in self.names:
            if n not in self.model.nins:
                continue
            w = self.model.nins[n].weight.detach()
            curvature = self.forms({n: w}, scale=self.n)[n] / (w * w).sum()
            # L is the batch mean, so a sample's own gradient is |B| times its slice of dL/d delta
            moment = (self.grads[n].detach() * self.n).pow(2).flatten(1).sum(1)
            out[n] = (curvature, moment)
        return out

    def niw_curvatures(self) -> dict[str, NIWCurvature]:
        """What drives each NIW: the curvature along it (the decay; one Hessian-vector product) and
        the gradient's second moment (the random walk, whose step has variance
        eta^2 sigma^2 grad_moment / |B|)."""
        return {n: NIWCurvature(mean_and_error(c), mean_and_error(m)) for n, (c, m) in self.sample_curvatures().items()}

    def top_eigenvalues(self, gen: torch.Generator, iterations: int = 50, tol: float = 1e-4) -> dict[str, float]:
        """The largest-magnitude eigenvalue of <H_z> at each layer, by power iteration."""
        out = {}
        for n in self.names:
            start = torch.randn(self.deltas[n].shape[1:], generator=gen, device=self.deltas[n].device)
            out[n] = power_iteration(lambda v, n=n: [self.mean_hvp(n, v[0])], [start], iterations, tol)
        return out


def power_iteration(hvp, start: list[torch.Tensor], iterations: int, tol: float) -> float:
    """The largest-magnitude eigenvalue of a symmetric operator given as Hessian-vector products on
    a list of tensors: the Rayleigh quotient of the normalized iterate, stopping when it changes by
    less than `tol` (relative) or after `iterations`."""
    v, value = start, 0.0
    for _ in range(iterations):
        norm = torch.sqrt(sum((t * t).sum() for t in v)).clamp_min(1e-30)
        v = [t / norm for t in v]
        hv = [h.detach() for h in hvp(v)]
        new = float(sum((h * t).sum() for h, t in zip(hv, v)))
        v = hv
        if abs(new - value) <= tol * abs(new):
            return new
        value = new
    return value


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

        def hvp(vs: list[torch.Tensor]) -> list[torch.Tensor]:
            return list(torch.autograd.grad(sum((g * v).sum() for g, v in zip(grads, vs)), params, retain_graph=True))

        start = [torch.randn(p.shape, generator=gen, device=p.device) for p in params]
        return power_iteration(hvp, start, iterations, tol)
