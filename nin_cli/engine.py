"""The training loop: one run from a resolved config to a finished run directory.

Data sits on the device as tensors and batches are index gathers. Each source of randomness has
its own generator (seeding.py), saved in the checkpoint, so a run resumed after SIGTERM or SIGKILL
writes exactly the rows an uninterrupted run would have written.
"""

from __future__ import annotations

import math
import os
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from omegaconf import DictConfig, OmegaConf
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from nin_cli.conventions import fill_legacy, resolve_paper_sigma
from nin_cli.data import Dataset, Split, load_dataset
from nin_cli.errors import ConfigError, RecordError, console
from nin_cli.faults import fault_point
from nin_cli.fused_mlp import FusedMLPStep, fused_mlp_applies
from nin_cli.graphs import Step, graphed_on_cuda
from nin_cli.hessian import hutchinson_traces
from nin_cli.models import NINModel, build_model
from nin_cli.noise import NoiseSource, sigma_at
from nin_cli.objectives import LossFn, accuracy, make_loss
from nin_cli.records import RunRecords, atomic_write_text
from nin_cli.schema import check_train_config
from nin_cli.seeding import generator

# Keys that may change between a run and its resumption without making it another run.
RUNTIME_KEYS = ("resume", "overwrite", "progress", "device", "cuda_graphs", "eval", "evaluate", "robustness")


class Interrupted(Exception):
    """Raised from a signal handler (SIGTERM, SIGINT) so the loop can record the interruption and stop cleanly."""

    @property
    def exit_code(self) -> int:
        """The shell's convention: 128 + the signal number (130 for Ctrl-C, 143 for SIGTERM)."""
        return 128 + int(getattr(signal, str(self), signal.SIGTERM))


@dataclass
class Setup:
    """Everything a run builds from its config before the first step."""

    cfg: DictConfig
    device: torch.device
    data: Dataset
    model: NINModel
    nin_layers: list[str]
    shapes: dict[str, tuple[int, ...]]
    loss_fn: LossFn
    columns: list[str] = field(default_factory=list)
    step_columns: list[str] = field(default_factory=list)


@dataclass
class RunResult:
    status: str
    epoch: int
    reason: str | None = None
    last_row: dict | None = None


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but torch sees no CUDA device; use device=cpu or device=auto")
    if name not in ("cpu", "cuda"):
        raise ConfigError(f"device must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)


PRECISIONS = ("fp32", "tf32", "bf16")


def set_tf32(enabled: bool) -> None:
    """CUDA float32 matmuls and convolutions on TF32 tensor cores (about 8x the fp32 rate on an
    H100; 10-bit mantissa inputs, fp32 accumulation) or in full IEEE fp32. CPUs are unaffected."""
    mode = "tf32" if enabled else "ieee"
    if hasattr(torch.backends.cuda.matmul, "fp32_precision"):  # torch >= 2.9
        torch.backends.cuda.matmul.fp32_precision = mode
        torch.backends.cudnn.conv.fp32_precision = mode
    else:
        torch.backends.cuda.matmul.allow_tf32 = enabled
        torch.backends.cudnn.allow_tf32 = enabled


def validate(cfg: DictConfig) -> None:
    """Every key known, typed, finite and in range (nin_cli/schema.py): before any data is loaded."""
    check_train_config(cfg)


def step_dtype(cfg: DictConfig) -> torch.dtype:
    """The dtype of the training step's and the epoch evaluation's matmuls: bfloat16 under
    precision=bf16, else float32. Weights, updates, losses and the Hessian estimate are float32
    either way (TF32 matmuls on CUDA unless precision=fp32)."""
    return torch.bfloat16 if cfg.precision == "bf16" else torch.float32


def matmul_autocast(cfg: DictConfig, device: torch.device):
    """bf16 autocast for autograd steps and evaluation when precision=bf16 (a no-op otherwise)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16", cache_enabled=False)  # graph-safe


def norm_columns(model: NINModel, nin_layers: list[str]) -> list[str]:
    cols = [f"niw_norm_{n}" for n in nin_layers]
    return cols + [f"weight_norm_{model.next_layer(n)}" for n in nin_layers if model.next_layer(n)]


def metric_columns(model: NINModel, nin_layers: list[str]) -> list[str]:
    cols = ["epoch", "step", "sigma", "train_loss", "train_loss_clean", "train_acc", "test_loss", "test_acc"]
    cols += norm_columns(model, nin_layers)
    cols += [f"hessian_trace_{n}" for n in nin_layers]
    return cols + ["lr", "seconds"]


def step_columns(model: NINModel, nin_layers: list[str]) -> list[str]:
    """steps.csv: the noisy batch loss and the norms every `log.every_steps` steps, for fast dynamics."""
    return ["step", "epoch", "sigma", "train_loss", *norm_columns(model, nin_layers)]


def norm_tensors(model: NINModel, nin_layers: list[str]) -> list[torch.Tensor]:
    """The norms of norm_columns, as 0-d tensors (no host sync)."""
    norms = [model.nins[n].weight.detach().norm() for n in nin_layers]
    return norms + [model.layer_weight_norm(model.next_layer(n)) for n in nin_layers if model.next_layer(n)]


def step_rows(s: Setup, steps: list[int], values: list[list[float]], epoch: int, sigma: float) -> list[dict]:
    """steps.csv rows from the values logged at `steps` (noisy loss, then the norms)."""
    names = s.step_columns[3:]
    return [{"step": st, "epoch": epoch, "sigma": sigma, **dict(zip(names, vals))} for st, vals in zip(steps, values)]


def prepare(cfg: DictConfig, data: Dataset | None = None, check: bool = True) -> Setup:
    """Validate (unless a trained run is being rebuilt as it was) and build data (unless shared
    in), model and loss; bad input raises ConfigError here."""
    if check:
        validate(cfg)
    device = resolve_device(cfg.device)
    if device.type == "cuda":
        set_tf32(cfg.precision != "fp32")
    data = data or load_dataset(cfg.dataset, device)
    loss_fn = make_loss(cfg.loss.name, data.task, cfg.loss.reduction)
    model = build_model(cfg.model, cfg.nin, data.in_shape, data.n_out, generator(cfg.seed, "init"))
    model.to(device)
    nin_layers = list(model.nins.keys())
    shapes = {n: tuple(model.nins[n].weight.shape) for n in nin_layers}
    return Setup(cfg, device, data, model, nin_layers, shapes, loss_fn, metric_columns(model, nin_layers), step_columns(model, nin_layers))


def make_optimizer(cfg: DictConfig, params) -> torch.optim.Optimizer:
    wd = float(cfg.regularization.weight_decay)
    if cfg.optimizer.name == "adam":
        return torch.optim.Adam(params, lr=cfg.optimizer.lr, betas=tuple(cfg.optimizer.betas), weight_decay=wd)
    return torch.optim.SGD(params, lr=cfg.optimizer.lr, momentum=cfg.optimizer.momentum, weight_decay=wd)


@torch.no_grad()
def evaluate(model, split: Split, loss_fn: LossFn, batch_size: int, eps_fn=None) -> tuple[float, float]:
    """Mean loss and accuracy over a split; eps = 0 unless `eps_fn(n)` supplies noise."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=split.x.device)
    correct = torch.zeros((), device=split.x.device)
    for start in range(0, len(split), batch_size):
        x, y = split.x[start : start + batch_size], split.y[start : start + batch_size]
        out = model(x, eps_fn(len(x)) if eps_fn else None)
        loss_sum += loss_fn(out, y) * len(x)
        correct += accuracy(out, y).to(loss_sum.device) * len(x)
    model.train(was_training)
    n = len(split)
    return float(loss_sum) / n, float(correct) / n


def train_subset(split: Split, n: int | None) -> Split:
    return split if not n else Split(split.x[:n], split.y[:n])


def epoch_row(s: Setup, epoch: int, step: int, sigma: float, train_loss: float, seconds: float, lr: float) -> dict:
    """The metrics.csv row for the model's current state (clean metrics use eps = 0)."""
    cfg, model = s.cfg, s.model
    with matmul_autocast(cfg, s.device):
        train_loss_clean, train_acc = evaluate(model, train_subset(s.data.train, cfg.eval.train_samples), s.loss_fn, cfg.eval.batch_size)
        test_loss, test_acc = evaluate(model, s.data.test, s.loss_fn, cfg.eval.batch_size)
    row = {
        "epoch": epoch,
        "step": step,
        "sigma": sigma,
        "train_loss": train_loss,
        "train_loss_clean": train_loss_clean,
        "train_acc": train_acc,
        "test_loss": test_loss,
        "test_acc": test_acc,
        "lr": lr,
        "seconds": seconds,
    }
    row.update({c: float(v) for c, v in zip(norm_columns(model, s.nin_layers), norm_tensors(model, s.nin_layers))})
    if s.nin_layers and cfg.hessian.probes > 0:
        h = train_subset(s.data.train, cfg.hessian.samples)
        model.eval()
        traces = hutchinson_traces(
            model, h.x, h.y, s.loss_fn, s.shapes, cfg.hessian.probes, generator(cfg.seed, f"hutchinson/{epoch}", s.device)
        )
        model.train()
        row.update({f"hessian_trace_{n}": v for n, v in traces.items()})
    return row


def divergence_reason(row: dict, ref_loss: float, cfg: DictConfig, model: NINModel) -> str | None:
    """Why the run counts as diverged, or None. The noisy loss only counts when non-finite: a
    catapult's noisy loss can climb by orders of magnitude and still recover."""
    for key in ("train_loss", "train_loss_clean"):
        if not math.isfinite(row[key]):
            return f"{key} is {row[key]}"
    clean = row["train_loss_clean"]
    if clean > cfg.divergence.max_loss:
        return f"train_loss_clean {clean:.3g} > divergence.max_loss {cfg.divergence.max_loss:g}"
    if clean > cfg.divergence.factor * ref_loss:
        return f"train_loss_clean {clean:.3g} > {cfg.divergence.factor:g} x its epoch-0 value {ref_loss:.3g}"
    if not all(torch.isfinite(p).all() for p in model.parameters()):
        return "non-finite weights"
    return None


def comparable(cfg: DictConfig) -> dict:
    plain = OmegaConf.to_container(cfg, resolve=True)
    return {k: v for k, v in plain.items() if k not in RUNTIME_KEYS and k != "hydra"}


def check_same_run(records: RunRecords, cfg: DictConfig) -> None:
    if not records.config_path.exists():
        return
    try:
        saved = comparable(fill_legacy(OmegaConf.load(records.config_path)))
    except Exception as exc:  # YAML or OmegaConf errors: the file is damaged
        raise RecordError(f"{records.config_path} is damaged ({type(exc).__name__}); cannot tell which run this directory holds") from None
    if "tf32" in saved and "precision" not in saved:  # written before precision replaced the tf32 switch
        saved["precision"] = "tf32" if saved.pop("tf32") else "fp32"
    current = comparable(cfg)
    if saved != current:
        diff = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
        hint = "; use a new output directory"
        if any(k in ("nin", "loss") for k in diff):
            hint += " (a run from before nin.init/loss.reduction existed resumes with nin.init=unit loss.reduction=half_sum)"
        raise ConfigError(f"{records.dir} holds a run with another config (differs in: {', '.join(diff)}){hint}")


@contextmanager
def signals_raise():
    """Turn SIGTERM and SIGINT into Interrupted (main thread only), restoring the old handlers afterwards."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Interrupted(signal.Signals(signum).name)

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


def progress_bar(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
        disable=not enabled,
        transient=False,
    )


class Trainer:
    """Holds one run's mutable state; `run` trains it to completion or divergence."""

    def __init__(self, setup: Setup, records: RunRecords):
        s = self.s = setup
        cfg = s.cfg
        self.records = records
        self.optimizer = make_optimizer(cfg, s.model.parameters())
        self.fused_step: Step | None = None
        if fused_mlp_applies(cfg):  # an ensemble of one, over views of the model's own parameters
            views = {n: p.detach().unsqueeze(0) for n, p in s.model.named_parameters()}
            lr, wd = torch.tensor([float(cfg.optimizer.lr)], device=s.device), float(cfg.regularization.weight_decay)
            active = torch.ones(1, dtype=torch.bool, device=s.device)
            fused = FusedMLPStep(
                views, s.model.layer_names, s.nin_layers, cfg.loss.name, lr, wd, active, step_dtype(cfg), cfg.loss.reduction
            )
            # One model's step is ~30 kernel launches that take far longer to issue than to run.
            self.fused_step = graphed_on_cuda(fused, cfg, s.device)
        self.data_gen = generator(cfg.seed, "data", s.device)
        self.input_gen = generator(cfg.seed, "input_noise", s.device)
        self.noise = NoiseSource(cfg.noise, s.nin_layers, len(s.data.train), generator(cfg.seed, "noise", s.device), s.device)
        self.input_noise = float(cfg.regularization.input_noise) / s.data.pixel_std
        self.epoch = 0  # the last epoch whose metrics row is recorded
        self.step = 0
        self.resumed = False  # loaded from a checkpoint: its epoch-0 rows are on disk already
        self.ref_loss = float("nan")
        self.finished = False
        self.last_row: dict | None = None

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
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if self.s.device.type == "cuda" else None,
        }

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.step, self.ref_loss = state["epoch"], state["step"], state["ref_loss"]
        self.resumed = True
        self.s.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.data_gen.set_state(state["data_gen"])
        self.input_gen.set_state(state["input_gen"])
        self.noise.load_state_dict(state["noise"])
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None and self.s.device.type == "cuda":
            torch.cuda.set_rng_state_all(state["cuda_rng"])

    # training ---------------------------------------------------------------------------------
    def initial_row(self) -> dict:
        """Epoch 0: the state before training; its noisy loss uses a separate noise stream."""
        s, cfg = self.s, self.s.cfg
        sigma = sigma_at(cfg.noise, 1, cfg.epochs)
        eval_noise = NoiseSource(
            OmegaConf.merge(cfg.noise, {"mode": "resample"}), s.nin_layers, 0, generator(cfg.seed, "eval_noise", s.device), s.device
        )
        sub = train_subset(s.data.train, cfg.eval.train_samples)
        with matmul_autocast(cfg, s.device):
            noisy_loss, _ = evaluate(s.model, sub, s.loss_fn, cfg.eval.batch_size, lambda n: eval_noise.fresh(n, sigma))
        row = epoch_row(s, 0, 0, sigma, noisy_loss, 0.0, self.lr)
        self.ref_loss = row["train_loss_clean"]
        return row

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def train_epoch(self, sigma: float, on_step=None) -> tuple[float, list[dict]]:
        """One pass over the training data; returns the mean noisy loss and the steps.csv rows."""
        s, cfg = self.s, self.s.cfg
        train = s.data.train
        s.model.train()
        perm = torch.randperm(len(train), generator=self.data_gen, device=s.device)
        loss_sum = torch.zeros((), device=s.device)
        every = int(cfg.log.every_steps)
        logged: list[tuple[int, torch.Tensor]] = []
        scaled = {n: sigma * u for n, u in self.noise.epoch_units(perm).items()}  # once per epoch, as the ensemble does
        for start in range(0, len(train), cfg.batch_size):
            idx = perm[start : start + cfg.batch_size]
            x, y = train.x[idx], train.y[idx]
            if self.input_noise > 0:
                x = x + self.input_noise * torch.randn(x.shape, generator=self.input_gen, device=s.device)
            eps = {n: e[start : start + cfg.batch_size] for n, e in scaled.items()}
            if self.fused_step:
                loss = self.fused_step(x[None], y[None], {n: e[None] for n, e in eps.items()})[0]
            else:
                with matmul_autocast(cfg, s.device):
                    loss = s.loss_fn(s.model(x, eps), y)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
            loss_sum += loss.detach() * len(idx)
            self.step += 1
            if every > 0 and self.step % every == 0:
                logged.append((self.step, torch.stack([loss.detach(), *norm_tensors(s.model, s.nin_layers)])))
            if on_step:
                on_step()
            fault_point("step")
        values = torch.stack([v for _, v in logged]).tolist() if logged else []
        return float(loss_sum) / len(train), step_rows(s, [st for st, _ in logged], values, self.epoch + 1, sigma)

    def checkpoint(self) -> None:
        self.records.save_checkpoint(self.state_dict())

    def begin(self) -> RunResult | None:
        """Write epoch 0 (the state before training) unless resuming past it; the result if the run
        was already trained through (killed between its last checkpoint and its final status)."""
        if not self.resumed:
            row = self.initial_row()
            self.records.steps.append([{k: row[k] for k in self.s.step_columns} | {"step": 0}])
            self.records.metrics.append([row])
            fault_point("metrics_row")
            self.checkpoint()
        return self.finish("completed", None) if self.epoch >= int(self.s.cfg.epochs) else None

    def end_epoch(self, sigma: float, train_loss: float, step_rows: list[dict], seconds: float) -> RunResult | None:
        """Record a finished epoch; the run's result once it is over (diverged, target reached, done)."""
        s, cfg, records = self.s, self.s.cfg, self.records
        epochs = int(cfg.epochs)
        row = epoch_row(s, self.epoch + 1, self.step, sigma, train_loss, seconds, self.lr)
        records.steps.append(step_rows)
        records.metrics.append([row])
        self.epoch += 1
        self.last_row = row
        records.log(f"epoch {self.epoch}: train_loss {row['train_loss']:.6g}, test_acc {row['test_acc']:.4f}")
        fault_point("metrics_row")
        reason = divergence_reason(row, self.ref_loss, cfg, s.model)
        if reason:
            return self.finish("diverged", reason)
        reached = cfg.target_train_acc is not None and row["train_acc"] >= cfg.target_train_acc
        if self.epoch % cfg.checkpoint.every == 0 or self.epoch == epochs or reached:
            self.checkpoint()
        if reached:
            return self.finish("completed", f"reached train accuracy {row['train_acc']:.4f} >= target_train_acc {cfg.target_train_acc}")
        if self.epoch >= epochs:
            return self.finish("completed", None)
        records.write_status("running", self.epoch, epochs)
        return None

    def finish(self, status: str, reason: str | None) -> RunResult:
        self.records.write_status(status, self.epoch, int(self.s.cfg.epochs), reason)
        self.records.log(f"{status} at epoch {self.epoch}" + (f": {reason}" if reason else ""))
        self.close(status)
        return RunResult(status, self.epoch, reason, self.last_row)

    def close(self, status: str) -> None:
        """The run is over for this process (finished, or stopped by a failure): free its directory."""
        self.finished = status in ("completed", "diverged")
        self.records.lock.release()

    def run(self) -> RunResult:
        s, cfg = self.s, self.s.cfg
        epochs = int(cfg.epochs)
        n_steps = math.ceil(len(s.data.train) / cfg.batch_size)
        done = self.begin()
        if done:
            return done
        with progress_bar(cfg.progress) as bar:
            run_task = bar.add_task("epochs", total=epochs, completed=self.epoch, info="")
            step_task = bar.add_task("steps", total=n_steps, info="")
            while True:
                sigma = sigma_at(cfg.noise, self.epoch + 1, epochs)
                bar.reset(step_task, total=n_steps)
                t0 = time.perf_counter()
                train_loss, step_rows = self.train_epoch(sigma, on_step=lambda: bar.advance(step_task))
                result = self.end_epoch(sigma, train_loss, step_rows, time.perf_counter() - t0)
                row = self.last_row
                bar.update(run_task, completed=self.epoch, info=f"loss {row['train_loss']:.4g}  test acc {row['test_acc']:.4f}")
                if result:
                    return result


def open_run(cfg: DictConfig, run_dir, data: Dataset | None = None) -> Trainer | RunResult:
    """A Trainer ready to run (fresh or resumed from the directory's checkpoint) that holds the
    directory's lock, or the result of a run that already finished there (a rerun sweep skips it)."""
    resolve_paper_sigma(cfg)
    records = RunRecords(run_dir)
    records.lock.acquire()
    try:
        opened = _open_locked(cfg, records, data)
    except RecordError as exc:  # damaged or inconsistent records: say so in the run's status too
        records.try_write_status("failed", records.last_recorded_epoch(), int(cfg.epochs), str(exc))
        records.lock.release()
        raise
    except Interrupted as exc:  # a signal while opening: the rows on disk are what is recorded
        records.try_write_status("interrupted", records.last_recorded_epoch(), int(cfg.epochs), f"{exc}; rerun to resume")
        records.lock.release()
        raise
    except BaseException:
        records.lock.release()
        raise
    if isinstance(opened, RunResult):
        records.lock.release()
    return opened


def _open_locked(cfg: DictConfig, records: RunRecords, data: Dataset | None) -> Trainer | RunResult:
    records.remove_stale_temporaries()
    status = records.read_status()
    if not cfg.resume and records.has_run():
        if not cfg.overwrite:
            held = f"status {status['status']} at epoch {status['epoch']}" if status else "its records"
            raise ConfigError(
                f"{records.dir} already holds a run ({held}); resume=false would replace it: "
                "add overwrite=true to start it over, or use another directory"
            )
        records.clear()
        status = None
    if cfg.resume:
        check_same_run(records, cfg)
        if status and status["status"] in ("completed", "diverged"):
            console.print(f"[dim]{records.dir}: already {status['status']} at epoch {status['epoch']}; skipping")
            return RunResult(status["status"], status["epoch"], status.get("reason"))
    setup = prepare(cfg, data)
    trainer = Trainer(setup, records)
    state = records.load_checkpoint() if cfg.resume else None
    if state is not None:
        trainer.load_state_dict(state)
        check_rows_match_checkpoint(records, setup, trainer)
        console.print(f"[yellow]{records.dir}: resuming from the checkpoint of epoch {trainer.epoch}")
    else:
        check_nothing_recorded_past_epoch_zero(records, setup)
    records.metrics.start(setup.columns, keep_through=trainer.epoch if trainer.resumed else None)
    records.steps.start(setup.step_columns, keep_through=trainer.step if trainer.resumed else None)
    atomic_write_text(records.config_path, OmegaConf.to_yaml(cfg, resolve=True))
    records.write_env(provenance(setup.device))
    records.log(f"resumed from the checkpoint of epoch {trainer.epoch}" if trainer.resumed else "started")
    records.write_status("running", trainer.epoch, int(cfg.epochs))
    return trainer


def expected_step_keys(last_step: int, every: int) -> list[int]:
    """steps.csv keys through `last_step`: step 0 (the state before training), then every `every`-th step."""
    return [0, *(range(every, last_step + 1, every) if every > 0 else [])]


def describe_keys(keys: list[int]) -> str:
    if not keys:
        return "no rows"
    dups = len(keys) - len(set(keys))
    return f"{len(keys)} rows ({keys[0]}..{keys[-1]}{f', {dups} duplicated' if dups else ''})"


def check_rows_match_checkpoint(records: RunRecords, s: Setup, trainer: Trainer) -> None:
    """Resume only onto complete records: every epoch and logged step up to the checkpoint, once."""
    redo = "restore the files, or start the run over with resume=false overwrite=true"
    epochs = records.metrics.keys(s.columns, trainer.epoch)
    if epochs != list(range(trainer.epoch + 1)):
        raise RecordError(
            f"cannot resume {records.dir}: checkpoint.pt is at epoch {trainer.epoch} but metrics.csv holds "
            f"{describe_keys(epochs)} for epochs 0..{trainer.epoch}; {redo}"
        )
    steps = records.steps.keys(s.step_columns, trainer.step)
    if steps != expected_step_keys(trainer.step, int(s.cfg.log.every_steps)):
        raise RecordError(
            f"cannot resume {records.dir}: checkpoint.pt is at step {trainer.step} but steps.csv holds "
            f"{describe_keys(steps)} for steps 0..{trainer.step}; {redo}"
        )


def check_nothing_recorded_past_epoch_zero(records: RunRecords, s: Setup) -> None:
    """A fresh start rewrites the CSVs: refuse if that would drop trained epochs (checkpoint.pt lost)."""
    trained = [e for e in records.metrics.keys(s.columns, 2**62) if e > 0]
    if trained:
        raise RecordError(
            f"{records.dir}: metrics.csv holds trained epochs (up to {max(trained)}) but checkpoint.pt is missing, "
            "so the run cannot resume; restore checkpoint.pt, or start over with resume=false overwrite=true"
        )


def provenance(device: torch.device) -> dict:
    """env.json: what produced the run's numbers (one entry per start or resume)."""
    import platform
    import socket
    import subprocess
    import sys
    from pathlib import Path

    from nin_cli import __version__

    commit = None
    source = Path(__file__).resolve().parent.parent
    if (source / ".git").exists():
        try:
            out = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
            dirty = subprocess.run(["git", "-C", str(source), "status", "--porcelain", "-uno"], capture_output=True, text=True, timeout=5)
            commit = out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "") if out.returncode == 0 else None
        except (OSError, subprocess.SubprocessError):
            commit = None
    return {
        "nin_version": __version__,
        "git_commit": commit,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "command": " ".join(sys.argv),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


@contextmanager
def recorded_outcome(trainers: list[Trainer]):
    """Signals and crashes end up in each unfinished run's status.json (and free its lock) before they propagate."""
    try:
        with signals_raise():
            yield
    except Interrupted as exc:
        for t in trainers:
            if not t.finished:
                t.records.try_write_status("interrupted", t.epoch, int(t.s.cfg.epochs), f"{exc}; rerun with the same directory to resume")
                t.records.log(f"interrupted by {exc} at epoch {t.epoch}")
                t.close("interrupted")
        raise
    except BaseException as exc:
        for t in trainers:
            if not t.finished:
                t.records.try_write_status("failed", t.epoch, int(t.s.cfg.epochs), f"{type(exc).__name__}: {exc}")
                t.records.log(f"failed at epoch {t.epoch}: {type(exc).__name__}: {exc}")
                t.close("failed")
        raise


def train(cfg: DictConfig, run_dir) -> RunResult:
    """Train (or resume, or skip if already finished) the run in `run_dir`."""
    with signals_raise():
        opened = open_run(cfg, run_dir)
        if isinstance(opened, RunResult):
            return opened
        with recorded_outcome([opened]):
            return opened.run()
