"""The training step of an ensemble of K runs, as a strategy behind one interface.

A Step takes one batch per member, stacked along a leading member axis: x (K, B, ...), y (K, B),
eps {layer: (K, B)} (the scaled NIN noise), steps every active member once and returns their
noisy batch losses (K,). Three implementations exist; `choose_step` picks one and says why:

- `fused`: the hand-written SGD step of plain MLPs (train/fused_mlp.py), on stacked weights;
- `vmap`:  one vmapped forward and backward over stacked weights (torch.func), hand-written SGD;
- `loop`:  each member's own model and torch.optim optimizer, in turn: any model, any optimizer.

On CUDA each is replayed as one captured graph (train/graphs.py) where its arithmetic allows: the
stacked steps always but under dropout, the loop step under SGD (with or without momentum) and
without dropout, so that a single run of any network is not bound by kernel launches.

All three give every member the arithmetic of its single run up to float rounding (tested: every
Step agrees with the loop step, which is a single run's own autograd step).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Protocol

import torch
from omegaconf import DictConfig
from torch.func import functional_call, vmap

from nin_cli.nets.nin import ModelKind
from nin_cli.nets.objectives import fused_loss
from nin_cli.nets.optimizers import plain_sgd
from nin_cli.train.fused_mlp import FusedMLPStep
from nin_cli.train.graphs import graphed_on_cuda
from nin_cli.train.member import Member
from nin_cli.train.setup import matmul_autocast, step_dtype

Batch = tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]
STEPS = ("fused", "vmap", "loop")


class Step(Protocol):
    kind: str

    def __call__(self, x: torch.Tensor, y: torch.Tensor, eps: dict[str, torch.Tensor]) -> torch.Tensor:
        """Step the active members on their batches; their noisy losses (K,), 0 for the others."""

    def set_active(self, active: list[bool]) -> None:
        """Which members step from now on (the others keep their weights and draw nothing)."""

    def param(self, name: str) -> torch.Tensor:
        """A parameter of every member, stacked: (K, ...)."""

    def sync(self) -> None:
        """Make each member's model hold its stepped weights (before it is evaluated or saved)."""


@dataclass(frozen=True)
class StepChoice:
    kind: str
    reason: str


def choose_step(cfg: DictConfig, k: int, device: torch.device, model: ModelKind) -> StepChoice:
    """The one rule for which step trains an ensemble of `k` members of this config, and why
    (`model`: what the built network's structure allows, NINModel.kind)."""
    dropout = draws_inside(model, cfg)
    if not plain_sgd(cfg):
        return StepChoice(
            "loop", f"optimizer {cfg.optimizer.name} (momentum {cfg.optimizer.get('momentum', '-')}) keeps state per parameter"
        )
    if model.fused and fused_loss(cfg.loss) and not dropout:
        return StepChoice("fused", f"plain SGD on {cfg.model.name}: the hand-written fused MLP step")
    if k == 1:
        return StepChoice("loop", "a single run: autograd and torch.optim on its own model")
    if dropout:
        return StepChoice("loop", "dropout: each member draws its masks from its own stream, so stepped in turn")
    if not model.stackable:
        return StepChoice("loop", f"model {cfg.model.name} has buffers (batch-norm statistics, say) that vmap cannot stack")
    if model.conv and device.type == "cpu":
        return StepChoice("loop", "on the CPU a vmapped convolution is slower than stepping the members in turn")
    return StepChoice("vmap", f"{k} members stacked: one vmapped forward and backward per step")


def make_step(kind: str, members: list[Member]) -> Step:
    if kind == "loop":
        return LoopStep(members)
    if kind == "fused":
        return FusedStep(members)
    if kind == "vmap":
        return VmapStep(members)
    raise ValueError(f"unknown step {kind!r}; one of {', '.join(STEPS)}")


def draws_inside(model: ModelKind, cfg: DictConfig) -> bool:
    """Whether a training step draws random numbers of its own (dropout: the config's, or a Dropout
    module in the network, NINModel.kind), which a replayed graph would not draw as the eager step
    does, and which each member draws from its own stream (Member.own_rng)."""
    return float(cfg.model.get("dropout", 0.0)) > 0 or model.dropout


def loop_graphable(cfg: DictConfig, model: torch.nn.Module) -> bool:
    """The loop step can be captured as a CUDA graph: torch.optim's SGD keeps its state in tensors
    it updates in place (Adam's step count is a host-side number unless built capturable), and no
    dropout draws inside the step."""
    return cfg.optimizer.name == "sgd" and not draws_inside(model.kind, cfg)


class LoopStep:
    """Each member steps its own model with autograd and its torch.optim optimizer."""

    kind = "loop"

    def __init__(self, members: list[Member]):
        self.members = members
        self.active = [True] * len(members)
        head = members[0].s
        self.cfg, self.device = head.cfg, head.device
        self.graphable = loop_graphable(head.cfg, head.model)
        self.draws = draws_inside(head.model.kind, head.cfg)  # dropout: each member's masks from its own stream (Member.own_rng)
        self.run = self.graphed()

    def graphed(self):
        """The step as a CUDA graph where it can be (a fresh capture: it steps the members active now)."""
        return graphed_on_cuda(self.step, self.cfg, self.device) if self.graphable else self.step

    def set_active(self, active: list[bool]) -> None:
        if list(active) != self.active:
            self.active = list(active)
            self.run = self.graphed()  # a captured graph steps the members it was captured with

    def __call__(self, x, y, eps):
        return self.run(x, y, eps)

    def step(self, x, y, eps) -> torch.Tensor:
        losses = []
        for k, m in enumerate(self.members):
            if not self.active[k]:
                losses.append(torch.zeros((), device=self.device))
                continue
            with m.own_rng() if self.draws else contextlib.nullcontext():
                with matmul_autocast(self.cfg, self.device):
                    loss = m.s.loss_fn(m.s.model(x[k], {n: e[k] for n, e in eps.items()}), y[k])
                m.optimizer.zero_grad(set_to_none=True)
                loss.backward()
            m.optimizer.step()
            losses.append(loss.detach().float())
        return torch.stack(losses)

    def param(self, name: str) -> torch.Tensor:
        return torch.stack([m.s.model.get_parameter(name) for m in self.members])

    def sync(self) -> None:
        pass  # the members' models are what it steps


class StackedStep:
    """Weights of K members stacked along a leading axis; plain SGD written out (lr per member)."""

    kind = "stacked"

    def __init__(self, members: list[Member]):
        head = members[0].s
        self.members, self.cfg, self.device = members, head.cfg, head.device
        self.names = [n for n, _ in head.model.named_parameters()]
        self.params = {n: torch.stack([m.s.model.get_parameter(n).detach() for m in members]).requires_grad_(True) for n in self.names}
        self.param_list = [self.params[n] for n in self.names]
        self.lr = torch.tensor([m.lr for m in members], device=head.device)
        self.wd = float(head.cfg.regularization.weight_decay)
        self.active = torch.ones(len(members), dtype=torch.bool, device=head.device)  # one object: CUDA graphs read it
        self.run = self.step

    def set_active(self, active: list[bool]) -> None:
        self.active.copy_(torch.tensor(active))

    def __call__(self, x, y, eps):
        return self.run(x, y, eps)

    def step(self, x, y, eps) -> torch.Tensor:
        raise NotImplementedError

    def param(self, name: str) -> torch.Tensor:
        return self.params[name]

    def sync(self) -> None:
        with torch.no_grad():
            for k, m in enumerate(self.members):
                for n in self.names:
                    m.s.model.get_parameter(n).copy_(self.params[n][k])


class FusedStep(StackedStep):
    """The hand-written MLP step (train/fused_mlp.py), replayed as a CUDA graph on CUDA."""

    kind = "fused"

    def __init__(self, members: list[Member]):
        super().__init__(members)
        head = members[0].s
        self.fused = FusedMLPStep(
            self.params,
            head.model.layer_names,
            head.nin_layers,
            head.model.affine_names,
            head.cfg.loss.name,
            self.lr,
            self.wd,
            self.active,
            step_dtype(head.cfg),
            head.cfg.loss.reduction,
        )
        # A step is ~30 kernel launches (per layer, for all members) that take longer to issue than to run.
        self.run = graphed_on_cuda(self.fused, head.cfg, head.device)


class VmapStep(StackedStep):
    """One vmapped forward and backward of every member (torch.func), then SGD on the stack."""

    kind = "vmap"

    def __init__(self, members: list[Member]):
        super().__init__(members)
        head = members[0].s
        template, loss_fn = head.model, head.loss_fn
        dropout = draws_inside(template.kind, head.cfg)

        def member_loss(params, x, y, eps):
            return loss_fn(functional_call(template, params, (x,), {"eps": eps}), y)

        self.losses = vmap(member_loss, randomness="different" if dropout else "error")
        # Dropout draws inside the step: keep such steps eager rather than replaying their RNG.
        self.run = self.step if dropout else graphed_on_cuda(self.step, head.cfg, head.device)

    def step(self, x, y, eps) -> torch.Tensor:
        with matmul_autocast(self.cfg, self.device):
            losses = self.losses(self.params, x, y, eps)
        grads = torch.autograd.grad(torch.where(self.active, losses, 0.0).sum(), self.param_list)
        with torch.no_grad():
            if self.wd:
                grads = torch._foreach_add(grads, self.param_list, alpha=self.wd)
            # members not stepping (finished, or waiting) keep their weights: no decay either
            lr = self.lr * self.active
            torch._foreach_sub_(self.param_list, torch._foreach_mul(grads, [lr.view(-1, *[1] * (p.ndim - 1)) for p in self.param_list]))
        return losses.detach().float()
