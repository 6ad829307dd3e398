"""One run of an ensemble: its generators, noise, counters, records, checkpoint and epoch rows.

A member does not step itself: the loop (train/loop.py) steps every member of an ensemble at once
through a Step (train/steps.py), a single run being an ensemble of one. Each member draws exactly
the random numbers its single run would, so a member's files are its single run's files.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass

import torch

from nin_cli.config.legacy import checkpoint_device
from nin_cli.nets.noise import NoiseSource, sigma_at
from nin_cli.nets.optimizers import make_optimizer
from nin_cli.records.faults import fault_point
from nin_cli.records.loggers import RunLogger
from nin_cli.records.store import FINISHED, RunRecords
from nin_cli.seeding import generator, resumed_generator
from nin_cli.train.rows import divergence_reason, epoch_row, initial_row, metric_columns, norm_groups, step_columns
from nin_cli.train.setup import Setup, load_weights


@dataclass
class RunResult:
    status: str
    epoch: int
    reason: str | None = None
    last_row: dict | None = None


class Member:
    """One run's mutable state between steps."""

    def __init__(self, setup: Setup, records: RunRecords):
        s = self.s = setup
        cfg = s.cfg
        self.records = records
        self.columns = metric_columns(
            s.model, s.nin_layers, bool(cfg.hessian.get("niw_curvature", False)), bool(cfg.eval.get("standard_errors", False))
        )
        self.step_columns = step_columns(s.model, s.nin_layers)
        self.norm_groups = norm_groups(s.model, s.nin_layers)
        self.optimizer = make_optimizer(cfg, s.model.parameters())
        self.data_gen = generator(cfg.seed, "data", s.device)
        self.input_gen = generator(cfg.seed, "input_noise", s.device)
        self.noise = NoiseSource(cfg.noise, s.nin_layers, len(s.data.train), generator(cfg.seed, "noise", s.device), s.device)
        self.input_noise = float(cfg.regularization.input_noise) / s.data.pixel_std
        # the global generators' states this run's own draws inside a step (dropout) go on from: its
        # own stream, swapped in around its step (own_rng), so that its masks are its single run's
        # whatever was built or trained before it in the process
        self.rng = generator(cfg.seed, "dropout").get_state()
        self.cuda_rng = generator(cfg.seed, "dropout", s.device).get_state() if s.device.type == "cuda" else None
        self.epoch = 0  # the last epoch whose metrics row is recorded
        self.step = 0
        self.resumed = False  # loaded from a checkpoint: its epoch-0 rows are on disk already
        self.ref_loss = float("nan")
        self.finished = False
        self.last_row: dict | None = None
        self.logger: RunLogger | None = None  # live logging (loggers.py), opened with the run's records

    @property
    def epochs(self) -> int:
        return int(self.s.cfg.epochs)

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def sigma(self, epoch: int) -> float:
        """The noise scale of training epoch `epoch` (1-based)."""
        return sigma_at(self.s.cfg.noise, epoch, self.epochs)

    # checkpoint -------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "epoch": self.epoch,
            "step": self.step,
            "ref_loss": self.ref_loss,
            "model": self.s.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "data_gen": self.data_gen.get_state(),
            "input_gen": self.input_gen.get_state(),
            "noise": self.noise.state_dict(),
            "torch_rng": self.rng,
            "cuda_rng": [self.cuda_rng] if self.cuda_rng is not None else None,
            "device": self.s.device.type,  # whose generators' states these are
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from a checkpoint. One written on another kind of device (a run trained on a GPU
        resumed on a CPU, or the reverse) holds generator states this device's generators cannot
        take: the data order's, the noise's and the input noise's streams go on from seeds derived
        from the run's seed and the epoch resumed from (seeding.resumed_generator), the same on
        every such resume, and the run's log says so."""
        self.epoch, self.step, self.ref_loss = state["epoch"], state["step"], state["ref_loss"]
        self.resumed = True
        load_weights(self.s.model, state)
        self.optimizer.load_state_dict(state["optimizer"])
        saved_on = checkpoint_device(state)
        if saved_on == self.s.device.type:
            self.data_gen.set_state(state["data_gen"])
            self.input_gen.set_state(state["input_gen"])
            self.noise.load_state_dict(state["noise"])
        else:
            seed, device = self.s.cfg.seed, self.s.device
            self.data_gen = resumed_generator(seed, "data", self.epoch, device)
            self.input_gen = resumed_generator(seed, "input_noise", self.epoch, device)
            self.noise.load_state_dict({**state["noise"], "gen": resumed_generator(seed, "noise", self.epoch, device).get_state()})
            self.records.log(
                f"resumed on {device.type} from a checkpoint written on {saved_on}: data order and noise draw from "
                f"streams re-seeded at epoch {self.epoch} (a {saved_on} generator's state does not carry over)"
            )
        self.rng = state["torch_rng"]
        if state.get("cuda_rng") is not None and self.s.device.type == "cuda":
            saved = state["cuda_rng"]  # this run's device's (an older checkpoint: every device's, by index)
            self.cuda_rng = saved[self.s.device.index or 0] if len(saved) > 1 else saved[0]

    @contextlib.contextmanager
    def own_rng(self):
        """The global generators on this run's own states inside (its dropout masks), and the
        states it leaves saved for its next step and its checkpoint."""
        cuda = self.cuda_rng is not None
        torch.set_rng_state(self.rng)
        if cuda:
            torch.cuda.set_rng_state(self.cuda_rng, self.s.device)
        try:
            yield
        finally:
            self.rng = torch.get_rng_state()
            if cuda:
                self.cuda_rng = torch.cuda.get_rng_state(self.s.device)

    def checkpoint(self) -> None:
        self.records.save_checkpoint(self.state_dict())

    # an epoch's random draws --------------------------------------------------------------------
    def epoch_draws(self, sigma: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The epoch's sample order and its scaled NIN noise in that order (entries a:b feed the step
        over order[a:b]); drawn once per epoch, in the same order by every step."""
        n, device = len(self.s.data.train), self.s.device
        perm = torch.randperm(n, generator=self.data_gen, device=device)
        return perm, {name: sigma * u for name, u in self.noise.epoch_units(perm).items()}

    def input_noise_draw(self, shape: torch.Size) -> torch.Tensor:
        """regularization.input_noise: Gaussian noise on one batch of inputs."""
        return self.input_noise * torch.randn(shape, generator=self.input_gen, device=self.s.device)

    # rows ---------------------------------------------------------------------------------------
    def initial_row(self) -> dict:
        """Epoch 0: the state before training (rows.initial_row), its clean loss the divergence check's reference."""
        row = initial_row(self.s, self.sigma(1), self.lr)
        self.ref_loss = row["train_loss_clean"]
        return row

    def begin(self) -> RunResult | None:
        """Write epoch 0 (the state before training) unless resuming past it; the result if the run
        was already trained through (killed between its last checkpoint and its final status)."""
        if not self.resumed:
            row = self.initial_row()
            first_step = {k: row[k] for k in self.step_columns} | {"step": 0}
            self.records.steps.append([first_step])
            self.records.metrics.append([row])
            fault_point("metrics_row")
            self.send(row, [first_step])
            self.checkpoint()
        return self.finish("completed", None) if self.epoch >= self.epochs else None

    def end_epoch(self, sigma: float, train_loss: float, step_rows: list[dict], seconds: float) -> RunResult | None:
        """Record a finished epoch (the model holds its weights after it); the run's result once it
        is over (diverged, target reached, done)."""
        s, cfg, records = self.s, self.s.cfg, self.records
        row = epoch_row(s, self.epoch + 1, self.step, sigma, train_loss, seconds, self.lr)
        records.steps.append(step_rows)
        records.metrics.append([row])
        self.epoch += 1
        self.last_row = row
        records.log(f"epoch {self.epoch}: train_loss {row['train_loss']:.6g}, test_acc {row['test_acc']:.4f}")
        fault_point("metrics_row")
        self.send(row, step_rows)
        reason = divergence_reason(row, self.ref_loss, cfg, s.model)
        if reason:
            return self.finish("diverged", reason)
        reached = cfg.target_train_acc is not None and row["train_acc"] >= cfg.target_train_acc
        if self.epoch % cfg.checkpoint.every == 0 or self.epoch == self.epochs or reached:
            self.checkpoint()
        if reached:
            return self.finish("completed", f"reached train accuracy {row['train_acc']:.4f} >= target_train_acc {cfg.target_train_acc}")
        if self.epoch >= self.epochs:
            return self.finish("completed", None)
        records.write_status("running", self.epoch, self.epochs)
        return None

    def finish(self, status: str, reason: str | None) -> RunResult:
        self.records.write_status(status, self.epoch, self.epochs, reason)
        self.records.log(f"{status} at epoch {self.epoch}" + (f": {reason}" if reason else ""))
        self.close(status)
        return RunResult(status, self.epoch, reason, self.last_row)

    def send(self, row: dict, step_rows: list[dict]) -> None:
        """The rows just written to the CSVs, to the live logger (if any)."""
        if self.logger is None:
            return
        try:
            self.logger.log(row, step_rows)
        except Exception as exc:  # the CSVs hold the rows; a logging backend's trouble does not stop training
            self.records.log(f"live logging stopped: {exc}")
            print(
                f"nin: warning: {self.records.dir}: logger={self.logger.kind} failed ({exc}); training goes on, "
                "the CSVs hold every row; rerun to resume and send the rest",
                file=sys.stderr,
            )
            self.logger = None

    def close(self, status: str) -> None:
        """The run is over for this process (finished, or stopped by a failure): free its directory."""
        self.finished = status in FINISHED
        if self.logger is not None:
            logger, self.logger = self.logger, None
            with contextlib.suppress(Exception):  # as in send: logging never fails a run
                logger.close(status)
        self.records.lock.release()
