"""The only training loop: K members (a single run is K = 1) stepped together, epoch by epoch.

Members may start at different epochs (resumed from different checkpoints): one ensemble holds
them all, and a member that is ahead waits, untouched and drawing nothing, until the others catch
up with it, so every member's arithmetic is that of the uninterrupted ensemble.
"""

from __future__ import annotations

import math
import time

import torch

from nin_cli.errors import progress_bar
from nin_cli.records.faults import fault_point
from nin_cli.train.member import Member, RunResult
from nin_cli.train.rows import stacked_norms, step_rows
from nin_cli.train.steps import Step, StepChoice, choose_step, make_step


class Ensemble:
    """Members that share data, architecture and step count, stepped by one Step."""

    def __init__(self, members: list[Member], kind: str | None = None):
        head = members[0].s
        self.members = members
        self.active = list(members)
        self.epoch = min(m.epoch for m in members)  # the ensemble's last trained epoch
        self.choice = choose_step(head.cfg, len(members), head.device, head.model.kind) if kind is None else StepChoice(kind, "asked for")
        self.step: Step = make_step(self.choice.kind, members)
        self.groups = members[0].norm_groups

    def norms(self) -> torch.Tensor:
        """(K, n_norm_columns), without leaving the device."""
        head = self.members[0].s
        return stacked_norms(self.step.param, self.groups, len(self.members), head.device)

    def stepping(self) -> list[Member]:
        """Members trained this epoch: active, and not ahead of the ensemble."""
        return [m for m in self.active if m.epoch == self.epoch]

    def train_epoch(self, sigmas: list[float], on_step=None) -> tuple[list[float], list[list[dict]]]:
        """One pass over the training data for every stepping member: their mean noisy losses and
        steps.csv rows (members not stepping get zeros and no rows of their own)."""
        head = self.members[0].s
        train, bs, device = head.data.train, int(head.cfg.batch_size), head.device
        every = int(head.cfg.log.every_steps)
        stepping = self.stepping()
        steps_now = [m in stepping for m in self.members]  # once per epoch, not per step
        self.step.set_active(steps_now)
        idle = torch.arange(len(train), device=device)
        zeros = {n: torch.zeros(len(train), device=device) for n in head.nin_layers}
        draws = [m.epoch_draws(s) if go else (idle, zeros) for m, s, go in zip(self.members, sigmas, steps_now)]
        order = torch.stack([perm for perm, _ in draws])
        eps_all = {n: torch.stack([e[n] for _, e in draws]) for n in head.nin_layers}  # (K, n_train)
        noisy_inputs = self.members[0].input_noise > 0
        loss_sum = torch.zeros(len(self.members), device=device)
        logged: list[tuple[int, torch.Tensor]] = []
        step = stepping[0].step
        for start in range(0, len(train), bs):
            idx = order[:, start : start + bs]
            x, y = train.x[idx], train.y[idx]
            if noisy_inputs:
                x = x + torch.stack(
                    [
                        m.input_noise_draw(x.shape[1:]) if go else torch.zeros(x.shape[1:], device=device)
                        for m, go in zip(self.members, steps_now)
                    ]
                )
            losses = self.step(x, y, {n: e[:, start : start + bs] for n, e in eps_all.items()})
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
        values = torch.stack([v for _, v in logged]).transpose(0, 1).tolist() if logged else [[] for _ in self.members]
        rows = [step_rows(m.step_columns, steps, values[k], m.epoch + 1, sigmas[k]) for k, m in enumerate(self.members)]
        self.step.sync()
        return (loss_sum / len(train)).tolist(), rows

    def run(self, progress: bool = True) -> list[RunResult]:
        head = self.members[0]
        epochs, k = head.epochs, len(self.members)
        results: dict[int, RunResult] = {}
        for i, m in enumerate(self.members):
            done = m.begin()
            if done:  # trained through before an interruption: nothing left to step
                results[i] = done
                self.active.remove(m)
        n_steps = math.ceil(len(head.s.data.train) / head.s.cfg.batch_size)
        with progress_bar(progress) as bar:
            task = bar.add_task("epochs" if k == 1 else f"{k} models", total=epochs, completed=self.epoch, info="")
            step_task = bar.add_task("steps", total=n_steps, info="")
            while self.active:
                self.epoch = max(self.epoch, min(m.epoch for m in self.active))  # none left at the ensemble's epoch
                epoch = self.epoch + 1
                sigmas = [m.sigma(epoch) for m in self.members]
                bar.reset(step_task, total=n_steps)
                t0 = time.perf_counter()
                stepping = self.stepping()
                losses, rows = self.train_epoch(sigmas, on_step=lambda: bar.advance(step_task))
                seconds = (time.perf_counter() - t0) / len(stepping)  # per model, comparable with a single run
                self.epoch = epoch
                for i, m in enumerate(self.members):
                    if m in stepping:
                        result = m.end_epoch(sigmas[i], losses[i], rows[i], seconds)
                        if result:
                            results[i] = result
                            self.active.remove(m)
                row = head.last_row or {}
                info = (
                    f"loss {row.get('train_loss', math.nan):.4g}  test acc {row.get('test_acc', math.nan):.4f}"
                    if k == 1
                    else f"{len(self.active)} still training"
                )
                bar.update(task, completed=epoch, info=info)
        return [results[i] for i in range(k)]


def describe(ensemble: Ensemble) -> str:
    """One line for the log: how many members, from which epoch, which step and why."""
    k = len(ensemble.members)
    return f"training {k} models together from epoch {ensemble.epoch} ({ensemble.choice.kind} step: {ensemble.choice.reason})"
