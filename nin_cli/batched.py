"""Train K runs of a sweep at once: parameters stacked along a leading member axis, one vmapped
forward/backward per step (torch.func), each member with its own init, data order and noise.

Each member is an ordinary engine.Trainer (its own generators, run directory, checkpoint and
rows); only the step loop is shared. A member therefore draws exactly the random numbers its
single run would, writes the same files, and can be resumed by either engine.
"""

from __future__ import annotations

import json
import math
import time

import torch
from omegaconf import DictConfig
from torch.func import functional_call, vmap

from nin_cli.data import load_dataset
from nin_cli.engine import (
    RunResult,
    Trainer,
    comparable,
    console,
    matmul_autocast,
    open_run,
    progress_bar,
    recorded_outcome,
    resolve_device,
    signals_raise,
    step_dtype,
    step_rows,
    train,
)
from nin_cli.errors import ConfigError
from nin_cli.faults import fault_point
from nin_cli.fused_mlp import FusedMLPStep, fused_mlp_applies, plain_sgd
from nin_cli.graphs import graphed_on_cuda
from nin_cli.noise import sigma_at

# What may differ between members of one batch; everything else must match.
PER_MEMBER = ("seed", "noise.sigma", "noise.sigma2_paper", "noise.schedule", "optimizer.lr")


def structure(cfg: DictConfig) -> dict:
    plain = comparable(cfg)
    for key in PER_MEMBER:
        head, _, tail = key.partition(".")
        if tail:
            plain.get(head, {}).pop(tail, None)
        else:
            plain.pop(head, None)
    return plain


def stacking_refusal(cfg: DictConfig) -> str | None:
    """Why runs of this config cannot be stacked into an ensemble, or None."""
    if not plain_sgd(cfg):
        return "the ensemble steps plain SGD (optimizer=sgd, momentum 0)"
    if cfg.model.name == "resnet18":
        return "the ensemble cannot stack resnet18's batch-norm buffers"
    return None


def check_batchable(cfgs: list[DictConfig]) -> None:
    """One ensemble: members may differ only in PER_MEMBER keys, and must be stackable."""
    first = structure(cfgs[0])
    for cfg in cfgs[1:]:
        other = structure(cfg)
        if other != first:
            diff = sorted(k for k in set(first) | set(other) if first.get(k) != other.get(k))
            raise ConfigError(f"batched runs may differ only in {', '.join(PER_MEMBER)}; these differ in: {', '.join(diff)}")
    reason = stacking_refusal(cfgs[0])
    if reason:
        raise ConfigError(f"{reason}; use another launcher")


def structure_groups(cfgs: list[DictConfig]) -> list[list[int]]:
    """Indices of the runs that can share an ensemble, in sweep order."""
    groups: dict[str, list[int]] = {}
    for i, cfg in enumerate(cfgs):
        groups.setdefault(json.dumps(structure(cfg), sort_keys=True, default=str), []).append(i)
    return list(groups.values())


class BatchedTrainer:
    """Steps K Trainers together; they share data, architecture and step count."""

    def __init__(self, members: list[Trainer], fused: bool = True):
        self.members = members
        self.active = list(members)
        self.epoch = min(m.epoch for m in members)  # the ensemble's last trained epoch
        head = members[0].s
        self.template = head.model
        self.names = [n for n, _ in self.template.named_parameters()]
        self.params = {n: torch.stack([m.s.model.get_parameter(n).detach() for m in members]).requires_grad_(True) for n in self.names}
        self.lr = torch.tensor([m.lr for m in members], device=head.device)
        self.wd = float(head.cfg.regularization.weight_decay)
        dropout = float(head.cfg.model.get("dropout", 0.0)) > 0
        loss_fn = head.loss_fn

        def member_loss(params, x, y, eps):
            return loss_fn(functional_call(self.template, params, (x,), {"eps": eps}), y)

        self.losses = vmap(member_loss, randomness="different" if dropout else "error")
        self.param_list = [self.params[n] for n in self.names]
        self.active_mask = torch.ones(len(members), dtype=torch.bool, device=head.device)
        self.fused = None
        if fused and fused_mlp_applies(head.cfg):
            layers = self.template.layer_names
            self.fused = FusedMLPStep(
                self.params,
                layers,
                head.nin_layers,
                head.cfg.loss.name,
                self.lr,
                self.wd,
                self.active_mask,
                step_dtype(head.cfg),
                head.cfg.loss.reduction,
            )
        # Dropout draws inside the step: keep such steps eager rather than replaying their RNG.
        self.step_fn = self.step if dropout else graphed_on_cuda(self.step, head.cfg, head.device)
        # norm_columns order: NIW norms, then the weight norms of each NIN's next layer
        nins = head.nin_layers
        self.norm_params = [[f"nins.{n}.weight"] for n in nins]
        self.norm_params += [
            [f"layers.{nxt}.{p}" for p, _ in self.template.layers[nxt].named_parameters() if p.endswith("weight")]
            for n in nins
            if (nxt := self.template.next_layer(n))
        ]

    def norms(self) -> torch.Tensor:
        """(K, n_norm_columns), without leaving the device."""
        norm = torch.linalg.vector_norm
        cols = [norm(torch.stack([norm(self.params[p].detach().flatten(1), dim=1) for p in group]), dim=0) for group in self.norm_params]
        return torch.stack(cols, dim=1) if cols else torch.zeros(len(self.members), 0, device=self.lr.device)

    def step(self, x: torch.Tensor, y: torch.Tensor, eps: dict[str, torch.Tensor]) -> torch.Tensor:
        """One SGD step of every active member; their noisy losses, (K,)."""
        if self.fused:
            losses = self.fused(x, y, eps)
        else:
            with matmul_autocast(self.members[0].s.cfg, self.lr.device):
                losses = self.losses(self.params, x, y, eps)
            grads = torch.autograd.grad(torch.where(self.active_mask, losses, 0.0).sum(), self.param_list)
            with torch.no_grad():
                if self.wd:
                    grads = torch._foreach_add(grads, self.param_list, alpha=self.wd)
                # members not stepping (finished, or waiting) keep their weights: no decay either
                torch._foreach_sub_(self.param_list, torch._foreach_mul(grads, self.masked_lrs()))
        return losses.detach()

    def masked_lrs(self) -> list[torch.Tensor]:
        lr = self.lr * self.active_mask
        return [lr.view(-1, *[1] * (p.ndim - 1)) for p in self.param_list]

    def sync_member(self, k: int, member: Trainer) -> None:
        with torch.no_grad():
            for n in self.names:
                member.s.model.get_parameter(n).copy_(self.params[n][k])

    def stepping(self) -> list[Trainer]:
        """Members trained this epoch: active, and not ahead of the ensemble (a member resumed from a
        later checkpoint waits, untouched and drawing nothing, until the others catch up with it, so
        every member's arithmetic is that of the uninterrupted ensemble)."""
        return [m for m in self.active if m.epoch == self.epoch]

    def train_epoch(self, sigmas: list[float], on_step=None) -> tuple[list[float], list[list[dict]]]:
        head = self.members[0].s
        train, bs, device = head.data.train, int(head.cfg.batch_size), head.device
        every = int(head.cfg.log.every_steps)
        stepping = self.stepping()
        steps_now = [m in stepping for m in self.members]  # once per epoch, not per step
        idle = torch.arange(len(train), device=device)
        perms = [torch.randperm(len(train), generator=m.data_gen, device=device) if go else idle for m, go in zip(self.members, steps_now)]
        self.active_mask.copy_(torch.tensor(steps_now))
        order = torch.stack(perms)
        each = [
            m.noise.epoch_units(p) if go else {n: torch.zeros(len(train), device=device) for n in head.nin_layers}
            for m, p, go in zip(self.members, perms, steps_now)
        ]
        scale = torch.tensor(sigmas, device=device)[:, None]
        units = {n: scale * torch.stack([u[n] for u in each]) for n in head.nin_layers}  # (K, n_train)
        loss_sum = torch.zeros(len(self.members), device=device)
        logged: list[tuple[int, torch.Tensor]] = []
        step = stepping[0].step
        for start in range(0, len(train), bs):
            idx = order[:, start : start + bs]
            x, y = train.x[idx], train.y[idx]
            if self.members[0].input_noise > 0:
                x = x + torch.stack(
                    [
                        m.input_noise * torch.randn(x.shape[1:], generator=m.input_gen, device=device)
                        if go
                        else torch.zeros(x.shape[1:], device=device)
                        for m, go in zip(self.members, steps_now)
                    ]
                )
            eps = {n: u[:, start : start + bs] for n, u in units.items()}
            losses = self.step_fn(x, y, eps)
            loss_sum += losses * idx.shape[1]
            step += 1
            if every > 0 and step % every == 0:
                logged.append((step, torch.cat([losses[:, None], self.norms()], dim=1)))
            if on_step:
                on_step()
            fault_point("step")
        for m in stepping:
            m.step = step
        steps = [st for st, _ in logged]
        values = (
            torch.stack([v for _, v in logged]).transpose(0, 1).tolist() if logged else [[] for _ in self.members]
        )  # (K, n_logged, cols)
        rows = [step_rows(head, steps, values[k], m.epoch + 1, sigmas[k]) for k, m in enumerate(self.members)]
        return (loss_sum / len(train)).tolist(), rows

    def run(self) -> list[RunResult]:
        head = self.members[0].s
        epochs = int(head.cfg.epochs)
        results: dict[int, RunResult] = {}
        for k, m in enumerate(self.members):
            done = m.begin()
            if done:  # trained through before an interruption: nothing left to step
                results[k] = done
                self.active.remove(m)
        n_steps = math.ceil(len(head.data.train) / head.cfg.batch_size)
        with progress_bar(head.cfg.progress) as bar:
            task = bar.add_task(f"{len(self.members)} models", total=epochs, completed=self.epoch, info="")
            step_task = bar.add_task("steps", total=n_steps, info="")
            while self.active:
                self.epoch = max(self.epoch, min(m.epoch for m in self.active))  # none left at the ensemble's epoch
                epoch = self.epoch + 1
                sigmas = [sigma_at(m.s.cfg.noise, epoch, epochs) for m in self.members]
                bar.reset(step_task, total=n_steps)
                t0 = time.perf_counter()
                stepping = self.stepping()
                losses, rows = self.train_epoch(sigmas, on_step=lambda: bar.advance(step_task))
                seconds = (time.perf_counter() - t0) / len(stepping)  # per model, comparable with a single run
                self.epoch = epoch
                for k, m in enumerate(self.members):
                    if m not in stepping:
                        continue
                    self.sync_member(k, m)
                    result = m.end_epoch(sigmas[k], losses[k], rows[k], seconds)
                    if result:
                        results[k] = result
                        self.active.remove(m)
                bar.update(task, completed=epoch, info=f"{len(self.active)} still training")
        return [results[k] for k in range(len(self.members))]


def train_many(cfgs: list[DictConfig], run_dirs: list, batch_size: int = 64) -> list[RunResult]:
    """Train every (cfg, run_dir) of a sweep. Runs that differ only in PER_MEMBER keys train
    together in ensembles of at most `batch_size` members that share a start epoch; a group the
    ensemble cannot stack (not plain SGD, resnet18) trains one run at a time.

    Finished runs are skipped, interrupted ones resume from their checkpoints.
    """
    with signals_raise():  # a signal while runs are being opened is an interruption too
        return _train_many(cfgs, run_dirs, batch_size)


def _train_many(cfgs: list[DictConfig], run_dirs: list, batch_size: int) -> list[RunResult]:
    results: list[RunResult | None] = [None] * len(cfgs)
    groups = structure_groups(cfgs)
    if len(groups) > 1:
        console.print(f"[bold]batched: {len(cfgs)} runs in {len(groups)} groups of runs that differ only in {', '.join(PER_MEMBER)}")
    for idx in groups:
        reason = stacking_refusal(cfgs[idx[0]])
        if reason:
            console.print(f"[yellow]batched: {reason}; training these {len(idx)} runs one at a time")
            for i in idx:
                results[i] = train(cfgs[i], run_dirs[i])
            continue
        for i, result in zip(idx, train_group([cfgs[i] for i in idx], [run_dirs[i] for i in idx], batch_size)):
            results[i] = result
    return results  # type: ignore[return-value]


def train_group(cfgs: list[DictConfig], run_dirs: list, batch_size: int) -> list[RunResult]:
    """One structure group: ensembles of at most `batch_size` members, in sweep order."""
    check_batchable(cfgs)
    data = load_dataset(cfgs[0].dataset, resolve_device(cfgs[0].device))
    results: list[RunResult | None] = [None] * len(cfgs)
    pending: list[tuple[int, Trainer]] = []
    for i, (cfg, run_dir) in enumerate(zip(cfgs, run_dirs)):
        opened = open_run(cfg, run_dir, data)
        if isinstance(opened, RunResult):
            results[i] = opened
        else:
            pending.append((i, opened))
    # Members resumed from different epochs share one ensemble (the later ones wait for the
    # earlier): the stacked arithmetic, and so every row, is that of the uninterrupted ensemble.
    for start in range(0, len(pending), batch_size):
        chunk = pending[start : start + batch_size]
        trainers = [t for _, t in chunk]
        console.print(f"[bold]batched: training {len(trainers)} models together from epoch {min(t.epoch for t in trainers)}")
        with recorded_outcome(trainers):
            for (i, _), result in zip(chunk, BatchedTrainer(trainers).run()):
                results[i] = result
    return results  # type: ignore[return-value]
