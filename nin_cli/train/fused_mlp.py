"""The batched SGD step of K plain MLPs, written out by hand.

For K stacked 3x1024 MLPs a step moves far more bytes than it computes: autograd writes each
weight gradient, then the update reads it back with the weights and writes the weights again
(through transposed, strided views under vmap). Here each layer's update is one GEMM that
accumulates into the weights in place, W <- W - (lr dZ)^T h, so the weights are read twice
(forward, input gradient) and written once per step, and the gradient is never stored.

It covers what the Fig. 1-3 and NINR sweeps train most: model=mlp|fc, and a researcher's network
of the same structure (nets/structure.py plain_mlp: a Sequential of Linear and ReLU layers), without
dropout, loss ce or mse, NINs on any layers, plain SGD with optional weight decay; single runs use
it as an ensemble of one. train/steps.py's choose_step decides where it applies (the models' and losses' `fused`
capability); everything else takes autograd.

With `dtype=torch.bfloat16` (precision=bf16) the GEMMs take bfloat16 copies of the weights and
activations, as autocast would: weights, biases, NIN weights, the loss and every update stay in
float32, so only the matmul inputs and the weight gradient are rounded (8-bit mantissa).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from nin_cli.nets.objectives import mse_output_scale, one_hot_targets

Tensors = dict[str, torch.Tensor]


def relu_backward(grad: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """The gradient through a ReLU from its output, in float32: one pass over both tensors.
    Multiplying by the mask `out > 0` built a bool tensor and converted it, three passes and
    about 9% of Fig. 3's epoch on the CPU (bench/step_profile.py)."""
    return torch.ops.aten.threshold_backward(grad, out, 0.0).float()


class FusedMLPStep:
    """step(x, y, eps) -> (K,) noisy losses; updates `params` (stacked, leading member axis) in place."""

    def __init__(
        self,
        params: Tensors,
        layers: list[str],
        nin_layers: list[str],
        names: Callable[[str], tuple[str, str, str]],
        loss: str,
        lr: torch.Tensor,
        wd: float,
        active: torch.Tensor,
        dtype: torch.dtype = torch.float32,
        reduction: str = "mean",
    ):
        # names(layer): its weight's, bias's and NIW's parameter names (the shipped MLP's or a factory's Sequential)
        self.w = [params[names(n)[0]] for n in layers]  # (K, out, in)
        self.b = [params[names(n)[1]] for n in layers]  # (K, out)
        self.nin = [params.get(names(n)[2]) if n in nin_layers else None for n in layers]  # (K, out)
        self.layers, self.loss, self.lr, self.wd, self.active = layers, loss, lr, wd, active
        self.dtype = dtype
        self.reduction = reduction

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, y: torch.Tensor, eps: Tensors) -> torch.Tensor:
        n, low = x.shape[1], self.dtype
        ws = [w.to(low) for w in self.w]  # the weights themselves in float32, bf16 copies otherwise
        hs = [x.flatten(2).to(low)]  # the input of each layer, as the GEMMs read it
        for i, name in enumerate(self.layers):
            z = self._affine(i, hs[-1], ws[i])
            if self.nin[i] is not None:
                z.addcmul_(eps[name].unsqueeze(2), self.nin[i].unsqueeze(1))
            if i + 1 < len(self.layers):
                hs.append(z.relu_().to(low))
        losses, dz = self._loss_and_grad(z, y, n)
        dz.mul_((self.lr * self.active)[:, None, None])  # lr-scaled; zero for members that stopped
        decay = (1.0 - self.lr * self.wd * self.active)[:, None] if self.wd else None
        for i in reversed(range(len(self.layers))):
            dz_low = dz.to(low)
            dh = torch.bmm(dz_low, ws[i]) if i > 0 else None  # before this layer's weights change
            if decay is not None:
                self._decay(i, decay)
            self._descend(i, dz_low, hs[i])
            self.b[i].sub_(dz.sum(1))
            if self.nin[i] is not None:
                self.nin[i].sub_(torch.bmm(eps[self.layers[i]].unsqueeze(1), dz).squeeze(1))
            if dh is not None:
                dz = relu_backward(dh, hs[i])  # through the ReLU that produced this layer's input
        return losses

    def _affine(self, i: int, h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Layer i's float32 pre-activations h W^T + b; in float32 one GEMM with the bias folded in."""
        if self.dtype == torch.float32:
            return torch.baddbmm(self.b[i].unsqueeze(1), h, w.transpose(1, 2))
        return torch.bmm(h, w.transpose(1, 2)).float().add_(self.b[i].unsqueeze(1))

    def _descend(self, i: int, dz: torch.Tensor, h: torch.Tensor) -> None:
        """W_i -= dz^T h (dz lr-scaled). In float32 the GEMM accumulates into the weights in place;
        bfloat16 GEMMs cannot write a float32 result, so their gradient is stored, then subtracted."""
        if self.dtype == torch.float32:
            self.w[i].baddbmm_(dz.transpose(1, 2), h, alpha=-1.0)
        else:
            self.w[i].sub_(torch.bmm(dz.transpose(1, 2), h))

    def _decay(self, i: int, decay: torch.Tensor) -> None:
        self.w[i].mul_(decay.unsqueeze(2))
        self.b[i].mul_(decay)
        if self.nin[i] is not None:
            self.nin[i].mul_(decay)

    def _loss_and_grad(self, out: torch.Tensor, y: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-member mean loss over the batch and its gradient with respect to the outputs."""
        if self.loss == "ce":
            logp = out.log_softmax(-1)
            losses = -logp.gather(-1, y.unsqueeze(-1)).squeeze(-1).mean(1)
            grad = logp.exp_()
            grad.scatter_add_(-1, y.unsqueeze(-1), torch.full_like(grad[..., :1], -1.0))
            return losses, grad.div_(n)
        diff = out - one_hot_targets(out, y)
        scale = mse_output_scale(self.reduction, out.shape[-1])
        return 0.5 * scale * diff.pow(2).sum(-1).mean(1), diff.mul_(scale / n)
