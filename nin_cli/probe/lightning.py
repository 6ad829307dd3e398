"""`NINProbe`: the probe of live.py as a Lightning callback, for a LightningModule left as it is.

    trainer = lightning.Trainer(max_epochs=5, callbacks=[NINProbe("input", sigma=3.0)])
    trainer.fit(module, train_loader)

At the first training batch of a fit the callback attaches NINs to the module (the batch gives the
input shape and, unless `measure_on` is given, the fixed set the clean loss is measured on; a
batch is `(x, y, ...)`), adds the NIWs to the trainer's first optimizer as a parameter group of
their own, records every batch's loss and norms, measures and classifies at each training epoch's
end, logs each NIN's NIW norm, phase (its index in PHASES), confidence and tau_niw to the
trainer's loggers under `nin/<layer>/...`, and detaches when the fit ends (or fails). The run
directory (default: `<trainer.log_dir>/nin_probe`) is a nin run: `nin summarize` reads it.

Needs the `lightning` extra: pip install -e '.[lightning]' (in nin's checkout).
"""

from __future__ import annotations

from pathlib import Path

try:
    from lightning.pytorch.callbacks import Callback
    from lightning.pytorch.utilities import rank_zero_info
except ImportError as exc:  # the extra is optional: one line that says which
    raise ImportError("nin_cli.probe.lightning needs Lightning: pip install -e '.[lightning]' (in nin's checkout)") from exc

from nin_cli.probe.live import Probe


class NINProbe(Callback):
    """NINs as a probe of a LightningModule's training (see the module's docstring). Keywords are
    `nin_cli.probe.attach`'s, but for the optimizer (the trainer's) and run_dir (optional here)."""

    def __init__(self, nins: str | list[str] = "input", *, sigma: float, run_dir: str | Path | None = None, **settings):
        self.nins, self.sigma, self.run_dir, self.settings = nins, sigma, run_dir, settings
        self.probe: Probe | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if self.probe is not None:
            return
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise ValueError("NINProbe reads a training batch as (x, y, ...); pass measure_on=(x, y) for other batches")
        settings = dict(self.settings)
        settings.setdefault("measure_on", (batch[0].detach(), batch[1].detach()))
        dataset = getattr(trainer.train_dataloader, "dataset", None)
        if "samples_per_epoch" not in settings and dataset is not None and hasattr(dataset, "__len__"):
            settings["samples_per_epoch"] = len(dataset)
        settings.setdefault("epochs", trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None)
        run_dir = Path(self.run_dir) if self.run_dir is not None else Path(trainer.log_dir or trainer.default_root_dir) / "nin_probe"
        self.probe = Probe(pl_module, self.nins, sigma=self.sigma, optimizer=trainer.optimizers[0], run_dir=run_dir, **settings)
        rank_zero_info(f"nin: probe attached at {', '.join(self.probe.layers)}; records in {run_dir}")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self.probe is None:
            return
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        self.probe.step(loss)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.probe is None:
            return
        logged, statuses = self.probe.labels(self.probe.epoch_end())
        for status in statuses:
            rank_zero_info(f"nin: epoch {self.probe.epoch}: {status}")
        pl_module.log_dict(logged, on_epoch=True, on_step=False)

    def on_fit_end(self, trainer, pl_module) -> None:
        if self.probe is not None:
            self.probe.detach()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if self.probe is not None:
            self.probe.detach("interrupted" if isinstance(exception, KeyboardInterrupt) else "failed")
