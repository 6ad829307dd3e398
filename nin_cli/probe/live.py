"""NINs as a probe of a live network in the researcher's own training loop.

`attach` wires NINs into a network the researcher already has and trains themselves, the way
`nin train` wires them into a factory's network (nets/nin.py's NINModel: the same hooks, layer
rules and NIW initialisation, drawn as `nin train model.init=factory` draws them for the seed), and
records into a run directory in nin's own format, so that `nin summarize`, `report`, `plot`,
`progress` and `load_runs` read it like any run:

    probe = nin_cli.probe.attach(model, "input", sigma=3.0, optimizer=opt, run_dir="runs/mine",
                                 measure_on=(x_sub, y_sub), samples_per_epoch=len(train_set))
    for epoch in range(epochs):
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(); loss.backward(); opt.step()
            probe.step(loss)
        probe.epoch_end()
        print(probe.status())          # each NIN's regime and decay time so far
    probe.detach()                     # the model computes as before; the run is completed

While the network trains (`model.training`), each forward pass draws the NINs' noise: the same
stream as `nin train` (seed's `noise` stream, one block of `samples_per_epoch` unit draws per NIN
at a time, scaled by the epoch's sigma), so a loop over nin's data order reproduces nin's run. In
evaluation mode no noise is drawn. The measurement of an epoch's row is nin's own
(train/rows.py): clean loss and accuracy on `measure_on`, the test set if given, the norms, and
Tr H_z and the NIW curvature on its first `hessian_samples`.

Events: when a NIW's norm first rises above `event_growth` x its initial value, or the noisy loss
above `event_loss_growth` x its epoch-0 value (a catapult or a divergence beginning), the probe
saves a checkpoint (events/step_<n>.pt) and measures at once,
beside the fixed schedule (`measure_every` steps); both go to measurements.csv with the trigger
that caused them, and train.log says so.
"""

from __future__ import annotations

import io
import math
import time
from collections import deque
from pathlib import Path

import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from nin_cli.analysis.phases import PHASES, nin_decay_times, nin_phases
from nin_cli.analysis.runs import Run
from nin_cli.config.resolve import flat
from nin_cli.config.schema import conf_dir, load_settings
from nin_cli.data.datasets import Dataset, Split
from nin_cli.errors import ConfigError
from nin_cli.nets.network import nin_record, resolve_nin_layers
from nin_cli.nets.nin import NINModel
from nin_cli.nets.noise import sigma_at, unit_noise
from nin_cli.nets.objectives import make_loss
from nin_cli.probe.status import NINStatus, confidence
from nin_cli.records.provenance import provenance
from nin_cli.records.store import CsvTable, RunRecords, atomic_write_bytes, atomic_write_text
from nin_cli.seeding import generator
from nin_cli.train.rows import (
    divergence_reason,
    epoch_row,
    initial_row,
    measure,
    metric_columns,
    model_norms,
    norm_groups,
    probe_vectors,
    step_columns,
)
from nin_cli.train.setup import Setup
from nin_cli.units import sigma2_per_paper_unit

MEASUREMENTS = "measurements.csv"  # the probe's measurements between epoch ends (schedule and events)
EVENTS = "events"  # the checkpoints saved at events


def probe_config(
    model: nn.Module, layers: list[str] | str, noise: DictConfig, optimizer, loss: str, seed: int, settings: dict
) -> DictConfig:
    """config.yaml of a probe: nin's keys for what the probe did (the network named by its class,
    the NINs, the noise, the optimizer's first group), the measurement's settings, and `probe`."""
    base = OmegaConf.load(conf_dir() / "train.yaml")
    group = optimizer.param_groups[0] if optimizer is not None else {}
    placement = {"preset": layers, "layers": []} if isinstance(layers, str) else {"preset": "layers", "layers": list(layers)}
    cls = type(model)
    cfg = {
        "seed": int(seed),
        "device": str(next(model.parameters()).device.type),
        "epochs": settings["epochs"],
        "batch_size": None,  # the loop's: set at the first step
        "precision": "fp32",
        "cuda_graphs": False,
        # `class`, not a factory's `target`: the live instance's class, which nin cannot rebuild from its arguments
        "model": {"name": cls.__name__, "class": f"{cls.__module__}:{cls.__qualname__}", "init": "live"},
        "dataset": {"name": settings["dataset"]},
        "nin": {**placement, "init": settings["init"], "conv": settings["conv"]},
        "noise": OmegaConf.to_container(noise),
        "optimizer": {"name": type(optimizer).__name__.lower() if optimizer is not None else "none", "lr": group.get("lr")},
        "loss": {"name": loss, "reduction": "mean"},
        "eval": {"batch_size": "auto", "train_samples": None, "standard_errors": True},
        "hessian": {
            "probes": settings["hessian_probes"],
            "samples": settings["hessian_samples"],
            "niw_curvature": settings["hessian_niw_curvature"],
        },
        "log": {"every_steps": settings["every_steps"]},
        "divergence": OmegaConf.to_container(base.divergence),
        "probe": {k: settings[k] for k in ("samples_per_epoch", "measure_every", "event_growth", "event_loss_growth", "events")},
    }
    return OmegaConf.create(cfg)


def noise_config(sigma: float, distribution: str, schedule: dict | None) -> DictConfig:
    """nin's noise group for the probe: conf/noise/<distribution>.yaml and conf/schedule/<kind>.yaml
    with the given sigma (resample mode: a loop hands the probe no sample index for `fixed`)."""
    path = conf_dir() / "noise" / f"{distribution}.yaml"
    if not path.exists():
        options = ", ".join(sorted(p.stem for p in path.parent.glob("*.yaml")))
        raise ConfigError(f"unknown noise distribution {distribution!r}; choose from {options}")
    noise = OmegaConf.load(path)
    kind = (schedule or {}).get("kind", "constant")
    spath = conf_dir() / "schedule" / f"{kind}.yaml"
    if not spath.exists():
        raise ConfigError(f"unknown noise schedule {kind!r}; choose from {', '.join(sorted(p.stem for p in spath.parent.glob('*.yaml')))}")
    noise.schedule = OmegaConf.merge(OmegaConf.load(spath), schedule or {})
    noise.sigma, noise.mode = float(sigma), "resample"
    noise.pop("sigma2_paper", None)
    return noise


def join_scheduler(scheduler, group: dict, first: dict) -> None:
    """The NIWs' parameter group in a learning-rate scheduler made before it joined the optimizer:
    it follows the schedule of the optimizer's first group from its own initial lr (a scheduler
    keeps a value per group, and torch's raises at its next step where the groups outnumber them).
    The keys a scheduler put in the first group (initial_lr, max_lr, ...) are the NIWs' too, where
    the NIW group has none; chained and sequential schedulers join through each of theirs."""
    for key, value in first.items():
        if key != "params" and key not in group:
            group[key] = value
    group["initial_lr"] = group["lr"]
    for inner in getattr(scheduler, "_schedulers", ()):
        join_scheduler(inner, group, first)
    for name in ("base_lrs", "lr_lambdas", "min_lrs", "_last_lr"):
        values = getattr(scheduler, name, None)
        if isinstance(values, list) and values:
            values.append(group["lr"] if name in ("base_lrs", "_last_lr") else values[0])


class Probe:
    """NINs attached to a live network (see the module's docstring); made by `attach`."""

    def __init__(
        self,
        model: nn.Module,
        nins: str | list[str],
        *,
        sigma: float | None = None,
        sigma2_paper: float | None = None,
        optimizer: torch.optim.Optimizer | None,
        scheduler=None,
        run_dir: str | Path,
        measure_on: tuple[torch.Tensor, torch.Tensor],
        test: tuple[torch.Tensor, torch.Tensor] | None = None,
        loss: str = "ce",
        samples_per_epoch: int | None = None,
        seed: int = 0,
        distribution: str = "gaussian",
        schedule: dict | None = None,
        epochs: int | None = None,
        init: str | float = "layer",
        conv: str = "input",
        every_steps: int = 1,
        measure_every: int = 0,
        hessian_probes: int = 1,
        hessian_samples: int = 256,
        niw_curvature: bool = False,
        events: bool = True,
        event_growth: float = 1.25,
        event_loss_growth: float = 3.0,
        dataset: str = "own",
    ):
        if measure_on is None or len(measure_on) != 2:
            raise ConfigError("the probe measures the clean loss on a fixed set: pass measure_on=(x, y), a few hundred training samples")
        if (sigma is None) == (sigma2_paper is None):
            raise ConfigError("give the noise scale once: sigma=, or sigma2_paper= (sigma^2 in the papers' units)")
        self.records = RunRecords(run_dir)
        if self.records.has_run():
            raise ConfigError(f"{run_dir} holds a run already; give the probe a new run_dir")
        device = next(model.parameters()).device
        x, y = (t.to(device) for t in measure_on)
        self.model, self.optimizer, self.device = model, optimizer, device
        self.noise_cfg = noise_config(sigma or 0.0, distribution, schedule)
        if self.noise_cfg.schedule.kind == "linear" and epochs is None:
            raise ConfigError("a linear noise schedule runs to its end at the last epoch: pass epochs=")
        settings = {
            "epochs": epochs,
            "dataset": dataset,
            "init": init,
            "conv": conv,
            "every_steps": int(every_steps),
            "hessian_probes": int(hessian_probes),
            "hessian_samples": int(hessian_samples),
            "hessian_niw_curvature": bool(niw_curvature),
            "samples_per_epoch": samples_per_epoch,
            "measure_every": int(measure_every),
            "event_growth": float(event_growth),
            "event_loss_growth": float(event_loss_growth),
            "events": bool(events),
        }
        self.cfg = probe_config(model, nins, self.noise_cfg, optimizer, loss, seed, settings)
        in_shape = tuple(x.shape[1:])
        self.wrapper = NINModel(model, in_shape, type(model).__name__)
        self.wrapper.channels_last, self.wrapper.live = False, True  # the network stays as its owner laid it out
        if not isinstance(nins, str):
            self.wrapper.check_layers([str(n) for n in nins])  # says what a named module is, if not a layer
        layers = resolve_nin_layers(self.cfg.nin, self.wrapper.layer_names, type(model).__name__)
        if not layers:
            raise ConfigError("the probe attaches no NIN: name a layer, or use 'input' or 'all'")
        self.wrapper.attach_nins(layers, in_shape, generator(int(seed), "init"), init, conv)
        self.wrapper.nins.to(device)
        self.layers = layers
        if sigma2_paper is not None:
            try:
                self._paper_sigma(float(sigma2_paper))
            except ConfigError:
                self.wrapper.unwire()  # refused before anything trains: the network as it was
                raise
        task = "regression" if y.dtype.is_floating_point else "classification"
        test_split = Split(*(t.to(device) for t in test)) if test is not None else Split(x[:0], y[:0])
        data = Dataset(dataset, Split(x, y), test_split, in_shape, 0, task, population=samples_per_epoch)
        shapes = {n: tuple(self.wrapper.nins[n].weight.shape) for n in layers}
        self.setup = Setup(self.cfg, device, data, self.wrapper, layers, shapes, make_loss(loss, task))
        self.groups = norm_groups(self.wrapper, layers)
        # the norm columns' tensors, read in one call a logged step (a group of several: a layer's weights)
        self.norm_tensors = [self.wrapper.get_parameter(p) for group in self.groups for p in group]
        self.norm_column = torch.tensor([i for i, group in enumerate(self.groups) for _ in group], device=device)
        self.columns = metric_columns(self.wrapper, layers, bool(niw_curvature), True)
        self.step_columns = step_columns(self.wrapper, layers)
        self.measure_columns = [
            "step",
            "epoch",
            "trigger",
            *[c for c in self.columns if c not in ("epoch", "step", "sigma", "lr", "seconds", "train_loss")],
        ]
        # the noise: nin's stream, in blocks of one epoch's samples per NIN (nin's order of draws)
        self.noise_gen = generator(int(seed), "noise", device)
        self.block = samples_per_epoch
        self.units: dict[str, torch.Tensor] = {}
        self.batch = 0
        self.wrapper.live_noise = self._draw
        self.niws = [self.wrapper.nins[n].weight for n in layers]
        self.group = None
        if optimizer is not None:
            optimizer.add_param_group({"params": self.niws})
            self.group = optimizer.param_groups[-1]
            if scheduler is not None:
                join_scheduler(scheduler, self.group, optimizer.param_groups[0])
        # plain values for the per-step path (an OmegaConf lookup costs microseconds at every step)
        self.every, self.measure_every = int(every_steps), int(measure_every)
        self.events_on, self.event_growth, self.event_loss_growth = bool(events), float(event_growth), float(event_loss_growth)
        # on a GPU the event check is read back a logged step later, so that no step waits on the device
        self.defer = device.type == "cuda"
        self.pending: deque[tuple[int, torch.Tensor | None, torch.Tensor, torch.Tensor, torch.cuda.Event | None]] = deque()
        self.sigma_now = self.sigma(1)
        self.epoch, self.step_count, self.seconds = 0, 0, time.perf_counter()
        self.losses: list[tuple[torch.Tensor, int]] = []  # the epoch's noisy batch losses and batch sizes
        self.logged: list[tuple[int, torch.Tensor | None, torch.Tensor]] = []  # (step, noisy loss, norms)
        self.metrics_rows: list[dict] = []
        self.steps_rows: list[dict] = []
        self.events_seen: set[str] = set()
        self.diverged: str | None = None
        self.attached = True
        try:
            self._open(Path(run_dir))
        except BaseException:
            self.detach("failed")
            raise

    def _paper_sigma(self, u: float) -> None:
        """sigma from sigma^2 in the papers' units (d_in / eta for CE, d_in / (N_w eta) for MSE),
        d_in and N_w those of the layer the first NIN joins, eta the optimizer's learning rate."""
        unit = sigma2_per_paper_unit(self.cfg, nin_record(self.wrapper, self.layers)["paper_unit"])
        if not (math.isfinite(unit) and math.isfinite(u) and u >= 0):
            raise ConfigError(f"sigma2_paper={u!r} needs a number >= 0 and the optimizer (its learning rate is the unit's eta)")
        self.noise_cfg.sigma = self.cfg.noise.sigma = math.sqrt(u * unit)
        self.cfg.probe.sigma2_paper = u  # not noise.sigma2_paper, which a reader would convert again

    # records ------------------------------------------------------------------------------------
    def _open(self, run_dir: Path) -> None:
        self.records.lock.acquire()
        atomic_write_text(self.records.config_path, OmegaConf.to_yaml(self.cfg))
        self.records.metrics.start(self.columns, None)
        self.records.steps.start(self.step_columns, None)
        self.measurements = CsvTable(run_dir / MEASUREMENTS)
        self.measurements.start(self.measure_columns, None)
        self.records.write_env({**provenance(self.device), "engine": {"step": "the researcher's own loop (nin_cli.probe)"}})
        self.records.write_network(nin_record(self.wrapper, self.layers))
        row = initial_row(self.setup, self.sigma(1), self.lr)
        self.ref_loss = row["train_loss_clean"]
        first = {k: row[k] for k in self.step_columns} | {"step": 0}
        self._append([row], [first])
        self.niw0 = model_norms(self.wrapper, self.groups, self.device)[: len(self.layers)].tolist()
        # the NIW event's thresholds on the device, made once (a tensor made from host values waits on it)
        self.growth_at = self.event_growth * torch.tensor(self.niw0, device=self.device)
        self.loss0 = float(row["train_loss"])  # the epoch-0 noisy loss, the loss event's reference
        self.records.write_status("running", 0, self.cfg.epochs or 0)
        self.records.log(f"probe attached: NINs at {', '.join(self.layers)}, sigma {self.noise_cfg.sigma:g}")

    def _append(self, metrics: list[dict], steps: list[dict]) -> None:
        self.records.steps.append(steps)
        self.records.metrics.append(metrics)
        self.metrics_rows += metrics
        self.steps_rows += steps

    @property
    def run_dir(self) -> Path:
        return self.records.dir

    @property
    def lr(self) -> float:
        return float(self.group["lr"]) if self.group is not None else math.nan

    def sigma(self, epoch: int) -> float:
        return sigma_at(self.noise_cfg, epoch, int(self.cfg.epochs or 1))

    # the noise ----------------------------------------------------------------------------------
    def _draw(self, name: str, n: int) -> torch.Tensor:
        """n scaled draws of NIN `name`'s noise for a forward pass of the network while it trains."""
        buffer = self.units.get(name)
        if buffer is None or len(buffer) < n:
            fresh = unit_noise(self.noise_cfg.distribution, max(self.block or n, n), self.noise_gen, self.device)
            buffer = fresh if buffer is None or not len(buffer) else torch.cat([buffer, fresh])
        self.units[name], units = buffer[n:], buffer[:n]
        self.batch = n
        return self.sigma_now * units

    # the loop's calls ---------------------------------------------------------------------------
    def step(self, loss: torch.Tensor | float | None = None) -> None:
        """After the optimizer's step: the batch's noisy loss and, every `every_steps`, the norms.
        Kept as tensors, a few operations a step; made into rows at the epoch's end."""
        if not self.attached:
            return
        self.step_count += 1
        value = None
        if loss is not None:
            value = loss.detach() if isinstance(loss, torch.Tensor) else torch.tensor(float(loss))
            self.losses.append((value, self.batch))
        if self.every > 0 and self.step_count % self.every == 0:
            norms = self._norms()
            self.logged.append((self.step_count, value, norms))
            if self.events_on and len(self.events_seen) <= len(self.layers):
                if self.defer:
                    self._check_later(value, norms)
                else:
                    self._check_events(value, norms)
        if self.measure_every > 0 and self.step_count % self.measure_every == 0:
            self._measure("schedule")

    def _norms(self) -> torch.Tensor:
        """The norm columns (model_norms' values), in one call over the tensors behind them."""
        norms = torch.stack(torch._foreach_norm([t.detach() for t in self.norm_tensors]))
        if len(norms) == len(self.groups):
            return norms
        return torch.zeros(len(self.groups), device=norms.device).index_add_(0, self.norm_column, norms.square()).sqrt()

    def _check_later(self, loss: torch.Tensor | None, norms: torch.Tensor) -> None:
        """The event check without waiting on the device: this step's comparisons are copied to
        the host as the device gets to them, and read at a later logged step once they are there;
        only where one has fired does the full check run (and wait), for the step it was made at."""
        self._resolve(wait=False)
        rises = norms[: len(self.layers)] > self.growth_at
        if loss is not None and math.isfinite(self.loss0) and self.loss0 > 0:
            # a loss handed as a float is a CPU tensor (step's `value`): to the device of the norms
            ratio = loss.float().reshape(1).to(rises.device) / self.loss0
            rises = torch.cat([rises, (ratio > self.event_loss_growth) | ~torch.isfinite(ratio)])
        self.pending.append((self.step_count, loss, norms, *_read_back(rises)))

    def _resolve(self, wait: bool) -> None:
        """The checks of _check_later whose comparisons are on the host, in step order (all of
        them: `wait`); where one fired, the full check of its step."""
        while self.pending:
            step, loss, norms, host, arrived = self.pending[0]
            if arrived is not None and not arrived.query():
                if not wait:
                    return
                arrived.synchronize()
            self.pending.popleft()
            if bool(host.any()) and len(self.events_seen) <= len(self.layers):
                self._check_events(loss, norms, at=step)

    def _check_events(self, loss: torch.Tensor | None, norms: torch.Tensor, at: int | None = None) -> None:
        """The first logged step at which a NIW's norm rises past event_growth x its first, and the
        first at which the noisy batch loss rises past event_loss_growth x its epoch-0 value (a
        catapult's rise shows in the loss before, or without, the NIW's): checkpoint and measure.
        `at`: the step the values are of, where the check reads them later (on a GPU)."""
        rises = [
            (f"niw_growth_{name}", f"the NIW at {name} rose to {now / start:.3g}x its initial norm (> {self.event_growth:g}x)")
            for name, now, start in zip(self.layers, norms[: len(self.layers)].tolist(), self.niw0)
            if now > self.event_growth * start
        ]
        if loss is not None and math.isfinite(self.loss0) and self.loss0 > 0:
            ratio = float(loss) / self.loss0
            if ratio > self.event_loss_growth or not math.isfinite(ratio):
                rises.append(
                    ("loss_growth", f"the noisy batch loss rose to {ratio:.3g}x its epoch-0 value (> {self.event_loss_growth:g}x)")
                )
        for trigger, what in rises:
            if trigger in self.events_seen:
                continue
            self.events_seen.add(trigger)
            path = self._save_event()
            self._measure(trigger)
            seen = "" if at is None or at == self.step_count else f" (seen at step {self.step_count})"
            self.records.log(
                f"event at step {at or self.step_count}{seen}: {what}: measured now (measurements.csv, trigger {trigger}),"
                f" checkpoint {path.name}"
            )

    def _save_event(self) -> Path:
        folder = self.run_dir / EVENTS
        folder.mkdir(exist_ok=True)
        state = {
            "step": self.step_count,
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "niws": {n: p.detach().cpu() for n, p in zip(self.layers, self.niws)},
            "optimizer": self.optimizer.state_dict() if self.optimizer is not None else None,
        }
        buf = io.BytesIO()
        torch.save(state, buf)
        path = folder / f"step_{self.step_count}.pt"
        atomic_write_bytes(path, buf.getvalue(), fault="checkpoint")
        return path

    def _measure(self, trigger: str) -> None:
        was = self.model.training
        values = measure(
            self.setup, probe_vectors(self.setup, generator(int(self.cfg.seed), f"hutchinson/step{self.step_count}", self.device))
        )
        self.model.train(was)
        row = {k: float(v) for k, v in values.items()}
        self.measurements.append([{"step": self.step_count, "epoch": self.epoch, "trigger": trigger, **row}])

    def epoch_end(self) -> dict:
        """The epoch's row (metrics.csv) and its steps' rows (steps.csv), measured as `nin train`
        measures; returns the row."""
        if not self.attached:
            return {}
        self._resolve(wait=True)  # an event of the epoch's last logged steps, on a GPU
        seconds = time.perf_counter() - self.seconds
        epoch = self.epoch + 1
        sigma = self.sigma(epoch)
        samples = sum(b for _, b in self.losses)
        losses = torch.stack([v.float().reshape(()) for v, _ in self.losses]) if self.losses else None
        train_loss = (
            float(losses @ torch.tensor([float(b) for _, b in self.losses], device=losses.device)) / samples if samples else math.nan
        )
        was = self.model.training
        row = epoch_row(self.setup, epoch, self.step_count, sigma, train_loss, seconds, self.lr)
        self.model.train(was)
        nan = torch.tensor(math.nan, device=self.device)
        steps = [st for st, _, _ in self.logged]
        values = (
            torch.stack(
                [torch.cat([(v if v is not None else nan).float().reshape(1).to(self.device), n]) for _, v, n in self.logged]
            ).tolist()
            if self.logged
            else []
        )
        names = self.step_columns[3:]
        step_rows = [{"step": st, "epoch": epoch, "sigma": sigma, **dict(zip(names, vals))} for st, vals in zip(steps, values)]
        self._append([row], step_rows)
        self.epoch, self.logged, self.losses = epoch, [], []
        self.sigma_now = self.sigma(epoch + 1)
        self.seconds = time.perf_counter()
        if self.diverged is None:
            self.diverged = divergence_reason(row, self.ref_loss, self.cfg, self.wrapper)
            if self.diverged:
                self.records.log(f"diverged at epoch {epoch}: {self.diverged}")
        self.records.write_status("diverged" if self.diverged else "running", epoch, self.cfg.epochs or epoch, self.diverged)
        return row

    # reading ------------------------------------------------------------------------------------
    def run(self) -> Run:
        """The probe's records so far as a Run, as `load_runs` reads a run directory."""
        status = {"status": "diverged" if self.diverged else "running", "reason": self.diverged}
        metrics = pd.DataFrame(self.metrics_rows, columns=self.columns).astype(float)
        steps = pd.DataFrame(self.steps_rows, columns=self.step_columns).astype(float)
        return Run(self.run_dir, flat(self.cfg), status, metrics, steps, [], nin_record(self.wrapper, self.layers))

    def status(self) -> list[NINStatus]:
        """Each NIN's regime and decay times from the records so far, by `nin summarize`'s
        classifier and fits (conf/analysis.yaml), with a confidence (NINStatus)."""
        acfg = load_settings("analysis")
        run = self.run()
        out = []
        for nin, (phase, why) in nin_phases(run, acfg.phases).items():
            taus = nin_decay_times(run, acfg.fits, nin)
            out.append(
                NINStatus(
                    nin, phase, why, taus["tau_niw"], taus["tau_niw_err"], taus["tau_weight"], confidence(run, nin, phase, acfg, taus)
                )
            )
        return out

    def labels(self, row: dict) -> tuple[dict[str, float], list[NINStatus]]:
        """What the callbacks log at an epoch's end (`row`: epoch_end's): each NIN's NIW norm, phase
        (its index in PHASES), confidence and tau_niw (where finite) under `nin/<layer>/...`, and
        the statuses they came from."""
        statuses = self.status()
        logged: dict[str, float] = {}
        for status in statuses:
            key = f"nin/{status.nin}"
            logged[f"{key}/niw_norm"] = float(row.get(f"niw_norm_{status.nin}", math.nan))
            logged[f"{key}/phase"] = float(PHASES.index(status.phase)) if status.phase in PHASES else math.nan
            logged[f"{key}/confidence"] = status.confidence
            if math.isfinite(status.tau_niw):
                logged[f"{key}/tau_niw"] = status.tau_niw
        return logged, statuses

    # the end ------------------------------------------------------------------------------------
    def detach(self, status: str = "completed") -> None:
        """Remove the NINs: the hooks go, the NIWs leave the optimizer, the network computes as it
        did before `attach`; the run's status is written (`completed`, or `diverged` if it did)."""
        if not self.attached:
            return
        if status == "completed":
            self._resolve(wait=True)  # an event of the last logged steps, on a GPU
        self.pending.clear()
        self.attached = False
        self.wrapper.unwire()
        self.wrapper.live_noise = None
        if self.optimizer is not None and self.group is not None:
            self.optimizer.param_groups = [g for g in self.optimizer.param_groups if g is not self.group]
            for p in self.niws:
                self.optimizer.state.pop(p, None)
        if self.records.status_path.exists():  # else it failed before its records were opened
            final = "diverged" if self.diverged and status == "completed" else status
            self.records.write_status(final, self.epoch, self.cfg.epochs or self.epoch, self.diverged)
            self.records.log(f"probe detached: {final} at epoch {self.epoch}")
        self.records.lock.release()

    def __enter__(self) -> Probe:
        return self

    def __exit__(self, kind, exc, tb) -> None:
        self.detach("completed" if kind is None else ("interrupted" if kind is KeyboardInterrupt else "failed"))


def _read_back(flags: torch.Tensor) -> tuple[torch.Tensor, torch.cuda.Event | None]:
    """flags on the host, and the CUDA event that marks their arrival: from a GPU they are copied
    into pinned memory as the device gets to them, with no wait; on the CPU they are there now (None)."""
    if not flags.is_cuda:
        return flags.clone(), None
    host = torch.empty(flags.shape, dtype=flags.dtype, pin_memory=True)
    host.copy_(flags, non_blocking=True)
    done = torch.cuda.Event()
    done.record()
    return host, done


def attach(model: nn.Module, nins: str | list[str] = "input", **settings) -> Probe:
    """NINs on a live network for the researcher's own loop; `Probe`'s keywords (sigma, optimizer,
    run_dir and measure_on are needed). nins: 'input' (the first Linear or Conv2d the forward pass
    reaches), 'all', or module names (`model.named_modules()`'s)."""
    return Probe(model, nins, **settings)
