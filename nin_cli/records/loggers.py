"""Live logging of a run to TensorBoard, MLflow or Weights & Biases (`logger=...`; default none).

The CSVs stay the source of truth: a run sends each row after it is written to metrics.csv and
steps.csv, nothing else. Every value goes against the training step (steps.csv's steps, and each
epoch row at the step it ended on, with `metrics/epoch` beside it), so one axis holds both. Each
run, and so each member of a batched ensemble, is one logged run, with its config as its
hyperparameters. A resumed run continues the same logged run: `logger.json` in the run directory
names it and the last step sent, and rows at or before that step (recomputed after a checkpoint)
are not sent twice. Each backend is an install extra; without it, one line names the extra.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import secrets
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from nin_cli.errors import ConfigError, install_hint
from nin_cli.records.store import FINISHED, atomic_write_text

STATE = "logger.json"
Point = tuple[int, str, float]  # (step, tag, value)


def open_logger(cfg: DictConfig, run_dir: Path, flat: dict[str, Any]) -> RunLogger | None:
    """The run's logger for `cfg.logger.kind`, continuing the logged run `run_dir` already has."""
    kind = str(cfg.get("logger", {}).get("kind", "none"))
    if kind == "none":
        return None
    backend = {"tensorboard": TensorBoardLogger, "mlflow": MlflowLogger, "wandb": WandbLogger}[kind]
    return backend(cfg.logger, Path(run_dir), flat)


def missing(kind: str) -> ConfigError:
    """The one line for a backend whose package is not installed (each backend's package and extra share its name)."""
    return ConfigError(f"logger={kind} needs the {kind} package: {install_hint(kind)}")


def check_installed(kind: str) -> None:
    """Before anything trains: the backend's package, or one line naming the extra."""
    if kind != "none" and importlib.util.find_spec(kind) is None:
        raise missing(kind)


def points(metrics_row: dict | None, step_rows: list[dict]) -> list[Point]:
    """A row's values as (step, tag, value): steps.csv's columns as steps/<col>, metrics.csv's as metrics/<col>."""
    out = [(int(r["step"]), f"steps/{k}", float(v)) for r in step_rows for k, v in r.items() if k not in ("step", "epoch", "sigma")]
    if metrics_row is not None:
        step = int(metrics_row["step"])
        out += [(step, f"metrics/{k}", float(v)) for k, v in metrics_row.items() if k not in ("step", "seconds")]
    return out


class RunLogger:
    """One logged run. Subclasses open it (new, or the one `logger.json` names) and send points."""

    kind = "none"
    durable_on_send = True  # a point sent is kept even if this process is killed the next moment

    def __init__(self, settings: DictConfig, run_dir: Path, flat: dict[str, Any]):
        self.settings, self.run_dir, self.flat = settings, run_dir, flat
        state = self._read_state()
        continuing = state.get("kind") == self.kind
        self.through = int(state["through"]) if continuing else -1  # the last step already sent
        self.id = self.open(state.get("id") if continuing else None)
        if not continuing:
            self.hyperparameters()
        self._save()

    def log(self, metrics_row: dict | None, step_rows: list[dict]) -> None:
        """Send what is newer than the last step sent; then note how far it got."""
        new = [p for p in points(metrics_row, step_rows) if p[0] > self.through]
        if not new:
            return
        self.send(new)
        self.through = max(p[0] for p in new)
        if self.durable_on_send:
            self._save()

    def _read_state(self) -> dict:
        path = self.run_dir / STATE
        try:
            return json.loads(path.read_text()) if path.exists() else {}
        except (OSError, ValueError):
            return {}  # damaged: a new logged run rather than a lost one

    def _save(self) -> None:
        atomic_write_text(self.run_dir / STATE, json.dumps({"kind": self.kind, "id": self.id, "through": self.through}) + "\n")

    # what a backend provides
    def open(self, existing_id: str | None) -> str:
        raise NotImplementedError

    def hyperparameters(self) -> None:
        raise NotImplementedError

    def send(self, new: list[Point]) -> None:
        raise NotImplementedError

    def close(self, status: str) -> None:
        self.end(status)
        self._save()

    def end(self, status: str) -> None:
        raise NotImplementedError


def _plain(value: Any) -> bool | int | float | str:
    return value if isinstance(value, bool | int | float | str) else str(value)


class TensorBoardLogger(RunLogger):
    """Event files in `<run_dir>/tensorboard` (or logger.dir/<run name>). A resumed run writes
    with purge_step at the next unsent step, so TensorBoard hides anything a crash left past it."""

    kind = "tensorboard"

    def open(self, existing_id: str | None) -> str:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise missing(self.kind) from None
        root = self.settings.get("dir")
        folder = existing_id or str(Path(root) / _name(self.run_dir) if root else self.run_dir / "tensorboard")
        self.writer = SummaryWriter(log_dir=folder, purge_step=self.through + 1 if existing_id else None)
        return folder

    def hyperparameters(self) -> None:
        from torch.utils.tensorboard.summary import hparams

        for summary in hparams({k: _plain(v) for k, v in self.flat.items() if v is not None}, {}):
            self.writer.file_writer.add_summary(summary)
        self.writer.add_text("config", "\n".join(f"    {k}: {v}" for k, v in self.flat.items()))
        self.writer.flush()

    def send(self, new: list[Point]) -> None:
        for step, tag, value in new:
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def end(self, status: str) -> None:
        self.writer.close()


class MlflowLogger(RunLogger):
    """An MLflow run in experiment `logger.experiment` at `logger.tracking_uri` (MLflow's own
    default when null), tagged with the run directory; the config as its params."""

    kind = "mlflow"

    def open(self, existing_id: str | None) -> str:
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise missing(self.kind) from None
        logging.getLogger("mlflow").setLevel(logging.WARNING)  # not its database migrations on every new store
        logging.getLogger("alembic").setLevel(logging.WARNING)
        self.client = MlflowClient(tracking_uri=self.settings.get("tracking_uri"))
        if existing_id:
            self.client.update_run(existing_id, status="RUNNING")
            history = self.client.get_metric_history(existing_id, "metrics/epoch")
            self.through = max([self.through, *(m.step for m in history)])  # what the server has, if a crash beat logger.json
            return existing_id
        name = str(self.settings.get("experiment") or "nin")
        found = self.client.get_experiment_by_name(name)
        experiment = found.experiment_id if found else self.client.create_experiment(name)
        run = self.client.create_run(experiment, run_name=_name(self.run_dir), tags={"nin.run_dir": str(self.run_dir.resolve())})
        return run.info.run_id

    def hyperparameters(self) -> None:
        from mlflow.entities import Param

        params = [Param(k, str(v)[:6000]) for k, v in self.flat.items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params a call
            self.client.log_batch(self.id, params=params[i : i + 100])

    def send(self, new: list[Point]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(tag, value, now, step) for step, tag, value in new]
        for i in range(0, len(metrics), 1000):  # and at most 1000 metrics
            self.client.log_batch(self.id, metrics=metrics[i : i + 1000])

    def end(self, status: str) -> None:
        self.client.set_terminated(self.id, "FINISHED" if status in FINISHED else "KILLED")


class WandbLogger(RunLogger):
    """A W&B run in project `logger.project` (mode `logger.mode`: offline by default, `online`
    to sync as it trains), resumed by its id. W&B's own writer buffers what it is given, and a
    process killed outright (SIGKILL, OOM) loses that buffer; so the last step sent is taken as
    kept only when the run closes (finished, interrupted, failed), and after a hard kill the
    resumed run sends again everything after it: W&B keeps the first value of a step and
    drops a repeated one when it syncs, where a gap could never be filled."""

    kind = "wandb"
    durable_on_send = False

    def open(self, existing_id: str | None) -> str:
        try:
            import wandb
        except ImportError:
            raise missing(self.kind) from None
        run_id = existing_id or secrets.token_hex(6)
        self.run = wandb.init(
            project=str(self.settings.get("project") or "nin"),
            dir=str(self.settings.get("dir") or self.run_dir),
            mode=str(self.settings.get("mode") or "offline"),
            id=run_id,
            name=_name(self.run_dir),
            resume="allow",
            reinit="create_new",  # the members of an ensemble are runs side by side in one process
            config={k: _plain(v) for k, v in self.flat.items()},
            settings=wandb.Settings(console="off", silent=True, x_disable_stats=True),
        )
        return run_id

    def hyperparameters(self) -> None:
        pass  # given to wandb.init as the run's config

    def send(self, new: list[Point]) -> None:
        by_step: dict[int, dict[str, float]] = {}
        for step, tag, value in new:
            by_step.setdefault(step, {})[tag] = value
        for step in sorted(by_step):
            self.run.log(by_step[step], step=step)

    def end(self, status: str) -> None:
        self.run.finish(exit_code=0 if status in FINISHED else 1)


def _name(run_dir: Path) -> str:
    """The run as a sweep names it: its directory, with the sweep's folder in front."""
    return f"{run_dir.parent.name}/{run_dir.name}"
