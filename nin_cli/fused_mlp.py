"""The batched SGD step of K plain MLPs, written out by hand.

For K stacked 3x1024 MLPs a step moves far more bytes than it computes: autograd writes each
weight gradient, then the update reads it back with the weights and writes the weights again
(through transposed, strided views under vmap). Here each layer's update is one GEMM that
accumulates into the weights in place, W <- W - (lr dZ)^T h, so the weights are read twice
(forward, input gradient) and written once per step, and the gradient is never stored.

It covers what the Fig. 1-3 and NINR sweeps train most: model=mlp|fc without dropout, loss ce or
mse, NINs on any layers, plain SGD with optional weight decay; single runs use it as an ensemble
of one. Everything else takes autograd (vmapped in the batched engine).

With `dtype=torch.bfloat16` (precision=bf16) the GEMMs take bfloat16 copies of the weights and
activations, as autocast would: weights, biases, NIN weights, the loss and every update stay in
float32, so only the matmul inputs and the weight gradient are rounded (8-bit mantissa).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

Tensors = dict[str, torch.Tensor]


def fused_mlp_applies(cfg: DictConfig) -> bool:
    plain_sgd = cfg.optimizer.name == "sgd" and float(cfg.optimizer.momentum) == 0.0
    return plain_sgd and cfg.model.name in ("mlp", "fc") and float(cfg.model.get("dropout", 0.0)) == 0.0 and cfg.loss.name in ("ce", "mse")


class FusedMLPStep:
    """step(x, y, eps) -> (K,) noisy losses; updates `params` (stacked, leading member axis) in place."""

    def __init__(
        self,
        params: Tensors,
        layers: list[str],
        nin_layers: list[str],
        loss: str,
        lr: torch.Tensor,
        wd: float,
        active: torch.Tensor,
        dtype: torch.dtype = torch.float32,
    ):
        self.w = [params[f"layers.{n}.weight"] for n in layers]  # (K, out, in)
        self.b = [params[f"layers.{n}.bias"] for n in layers]  # (K, out)
        self.nin = [params.get(f"nins.{n}.weight") if n in nin_layers else None for n in layers]  # (K, out)
        self.layers, self.loss, self.lr, self.wd, self.active = layers, loss, lr, wd, active
        self.dtype = dtype

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, y: torch.Tensor, eps: Tensors) -> torch.Tensor:
        if self.dtype != torch.float32:
            return self._mixed_step(x, y, eps)
        n = x.shape[1]
        hs = [x.flatten(2)]  # the input of each layer
        for i, name in enumerate(self.layers):
            z = torch.baddbmm(self.b[i].unsqueeze(1), hs[-1], self.w[i].transpose(1, 2))
            if self.nin[i] is not None:
                z.addcmul_(eps[name].unsqueeze(2), self.nin[i].unsqueeze(1))
            if i + 1 < len(self.layers):
                hs.append(z.relu_())
        losses, dz = self._loss_and_grad(z, y, n)
        dz.mul_((self.lr * self.active)[:, None, None])  # lr-scaled; zero for members that stopped
        for i in reversed(range(len(self.layers))):
            dh = torch.bmm(dz, self.w[i]) if i > 0 else None  # before this layer's weights change
            self._decay(i)
            self.w[i].baddbmm_(dz.transpose(1, 2), hs[i], alpha=-1.0)
            self._update_bias_and_nin(i, dz, eps)
            if dh is not None:
                dz = dh.mul_(hs[i] > 0)  # through the ReLU that produced this layer's input
        return losses

    def _mixed_step(self, x: torch.Tensor, y: torch.Tensor, eps: Tensors) -> torch.Tensor:
        """The same step with the GEMMs in self.dtype (float32 accumulation inside the GEMM)."""
        n, low = x.shape[1], self.dtype
        ws = [w.to(low) for w in self.w]
        hs = [x.flatten(2).to(low)]  # each layer's input, as the GEMMs read it
        for i, name in enumerate(self.layers):
            z = torch.bmm(hs[-1], ws[i].transpose(1, 2)).float().add_(self.b[i].unsqueeze(1))
            if self.nin[i] is not None:
                z.addcmul_(eps[name].unsqueeze(2), self.nin[i].unsqueeze(1))
            if i + 1 < len(self.layers):
                hs.append(z.relu_().to(low))
        losses, dz = self._loss_and_grad(z, y, n)
        dz.mul_((self.lr * self.active)[:, None, None])
        for i in reversed(range(len(self.layers))):
            dz_low = dz.to(low)
            dh = torch.bmm(dz_low, ws[i]) if i > 0 else None
            self._decay(i)
            self.w[i].sub_(torch.bmm(dz_low.transpose(1, 2), hs[i]))
            self._update_bias_and_nin(i, dz, eps)
            if dh is not None:
                dz = dh.float().mul_(hs[i] > 0)
        return losses

    def _decay(self, i: int) -> None:
        if self.wd:
            decay = (1.0 - self.lr * self.wd * self.active)[:, None]
            self.w[i].mul_(decay.unsqueeze(2))
            self.b[i].mul_(decay)
            if self.nin[i] is not None:
                self.nin[i].mul_(decay)

    def _update_bias_and_nin(self, i: int, dz: torch.Tensor, eps: Tensors) -> None:
        """dz: the lr-scaled float32 gradient at this layer's outputs, (K, n, out)."""
        self.b[i].sub_(dz.sum(1))
        if self.nin[i] is not None:
            self.nin[i].sub_(torch.bmm(eps[self.layers[i]].unsqueeze(1), dz).squeeze(1))

    def _loss_and_grad(self, out: torch.Tensor, y: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-member mean loss over the batch and its gradient with respect to the outputs."""
        if self.loss == "ce":
            logp = out.log_softmax(-1)
            losses = -logp.gather(-1, y.unsqueeze(-1)).squeeze(-1).mean(1)
            grad = logp.exp_()
            grad.scatter_add_(-1, y.unsqueeze(-1), torch.full_like(grad[..., :1], -1.0))
            return losses, grad.div_(n)
        target = F.one_hot(y, out.shape[-1]).to(out.dtype) if y.dtype == torch.long else y
        diff = out - target
        return 0.5 * diff.pow(2).sum(-1).mean(1), diff.div_(n)
