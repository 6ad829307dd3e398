"""`NINProbeCallback`: the probe of live.py as a Hugging Face `TrainerCallback`, for a model that
`transformers.Trainer` trains as it is.

    trainer = Trainer(model, args, train_dataset=train, callbacks=[NINProbeCallback("input", sigma=3.0)])
    trainer.train()

A Trainer calls its model with each batch as keywords (`model(**batch)`) and reads the loss from
what it returns; the probe measures a network as a function of its inputs. The callback therefore
reads a batch's inputs and labels under `input_key` and `label_key` (`pixel_values` and `labels`
by default), and measures the model as `model(**{input_key: x})`'s logits, under the model's own
module names.

At the first training forward pass of a train (the batch gives the input shape and, unless
`measure_on` is given, the fixed set the clean loss is measured on; the data loader is not read
again, so the Trainer's data order is its own) the callback attaches NINs to the model and adds
the NIWs to the Trainer's optimizer as a parameter group of their own. It records each optimizer
step's noisy loss (the mean over the step's forward passes, read from the model's outputs) and the
norms, measures and classifies at each epoch's end, puts each NIN's NIW norm, phase (its index in
PHASES), confidence and tau_niw in the Trainer's log history (`state.log_history`, saved in
trainer_state.json with its checkpoints; the Trainer gives a callback no logger of its own), and
detaches when the training ends. The run directory (default: `<args.output_dir>/nin_probe`) is a
nin run: `nin summarize` reads it.

The Trainer's learning-rate scheduler, made with its optimizer before the NIWs join it, takes their
group in (live.join_scheduler): the NIWs follow the first group's schedule. What differs from the
Lightning callback: a Trainer tells its callbacks of no exception, so a training that fails leaves
the run `running` (its records up to the last epoch's end stand).

Needs the `huggingface` extra: pip install -e '.[huggingface]' (in nin's checkout).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from torch import nn

try:
    from transformers import TrainerCallback
except ImportError as exc:  # the extra is optional: one line that says which
    raise ImportError("nin_cli.probe.huggingface needs transformers: pip install -e '.[huggingface]' (in nin's checkout)") from exc

from nin_cli.probe.live import Probe

log = logging.getLogger(__name__)


def _logits(out) -> torch.Tensor:
    """The logits of what a Trainer's model returns: a ModelOutput or mapping's `logits`, or a tensor."""
    if isinstance(out, Mapping) and "logits" in out:
        return out["logits"]
    if isinstance(out, torch.Tensor):
        return out
    raise TypeError(f"the probe measures the model's logits: its outputs have no 'logits' ({type(out).__name__})")


def _loss(out) -> torch.Tensor | None:
    """The loss a Trainer reads from the model's outputs (a mapping's `loss`, or a tuple's first), if any."""
    if isinstance(out, Mapping):
        return out.get("loss")
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor) and out[0].dim() == 0:
        return out[0]
    return None


class Logits(nn.Module):
    """A Trainer's model as a function of its inputs: `model(**{key: x})`'s logits. Its submodules
    are the model's own under the model's names (a NIN's layer is named as in
    `model.named_modules()`); the model itself is kept outside the module tree, so that no module
    appears twice."""

    def __init__(self, model: nn.Module, key: str):
        super().__init__()
        for name, child in model.named_children():
            self.add_module(name, child)
        self.__dict__["model"] = model  # not a submodule: its children are this module's
        self.key = key

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _logits(self.model(**{self.key: x}))


class NINProbeCallback(TrainerCallback):
    """NINs as a probe of a `transformers.Trainer`'s training (see the module's docstring).
    Keywords are `nin_cli.probe.attach`'s, but for the optimizer (the Trainer's) and run_dir
    (optional here)."""

    def __init__(
        self,
        nins: str | list[str] = "input",
        *,
        sigma: float,
        run_dir: str | Path | None = None,
        input_key: str = "pixel_values",
        label_key: str = "labels",
        **settings,
    ):
        self.nins, self.sigma, self.run_dir, self.settings = nins, sigma, run_dir, settings
        self.input_key, self.label_key = input_key, label_key
        self.probe: Probe | None = None
        self.losses: list[torch.Tensor] = []  # the step's noisy losses, one a forward pass
        self.hooks: list = []
        self.busy = False  # the probe itself calls the model (its dry pass, its measurements): not a training step

    @contextlib.contextmanager
    def probing(self) -> Iterator[None]:
        """The probe calls the model inside (its dry pass, its measurements): no forward pass
        there attaches the probe or counts as a training step's."""
        self.busy = True
        try:
            yield
        finally:
            self.busy = False

    def on_train_begin(self, args, state, control, model=None, optimizer=None, lr_scheduler=None, train_dataloader=None, **kwargs) -> None:
        if self.probe is not None or model is None:
            return
        samples = len(train_dataloader.dataset) if hasattr(getattr(train_dataloader, "dataset", None), "__len__") else None
        epochs = None if args.max_steps and args.max_steps > 0 else math.ceil(args.num_train_epochs)
        run_dir = Path(self.run_dir) if self.run_dir is not None else Path(args.output_dir) / "nin_probe"

        def attach(module: nn.Module, _args: tuple, batch: dict) -> None:
            """At the first training forward pass: the probe attached before the pass runs on."""
            if self.probe is not None or self.busy or not module.training:
                return
            if self.input_key not in batch or (self.label_key not in batch and "measure_on" not in self.settings):
                raise ValueError(
                    f"NINProbeCallback reads a batch's inputs under {self.input_key!r} and labels under {self.label_key!r}; "
                    f"the batch holds {sorted(batch)}: set input_key= and label_key=, or pass measure_on=(x, y)"
                )
            settings = {"samples_per_epoch": samples, "epochs": epochs, **self.settings}
            if "measure_on" not in settings:
                settings["measure_on"] = (batch[self.input_key].detach(), batch[self.label_key].detach())
            with self.probing():
                self.probe = Probe(
                    Logits(module, self.input_key),
                    self.nins,
                    sigma=self.sigma,
                    optimizer=optimizer,
                    scheduler=lr_scheduler,
                    run_dir=run_dir,
                    **settings,
                )
            log.info(f"nin: probe attached at {', '.join(self.probe.layers)}; records in {run_dir}")

        def record(module: nn.Module, _args: tuple, _kwargs: dict, out) -> None:
            loss = _loss(out) if module.training and torch.is_grad_enabled() and not self.busy else None
            if self.probe is not None and loss is not None:
                self.losses.append(loss.detach())

        self.hooks = [
            model.register_forward_pre_hook(attach, with_kwargs=True),
            model.register_forward_hook(record, with_kwargs=True),
        ]

    def on_step_end(self, args, state, control, **kwargs) -> None:
        if self.probe is None:
            return
        loss = torch.stack(self.losses).mean() if self.losses else None
        self.losses = []
        with self.probing():  # a scheduled or event measurement may run inside
            self.probe.step(loss)

    def on_epoch_end(self, args, state, control, **kwargs) -> None:
        if self.probe is None:
            return
        with self.probing():
            logged, statuses = self.probe.labels(self.probe.epoch_end())
        for status in statuses:
            log.info(f"nin: epoch {self.probe.epoch}: {status}")
        state.log_history.append({"epoch": float(state.epoch or self.probe.epoch), "step": state.global_step, **logged})

    def on_train_end(self, args, state, control, **kwargs) -> None:
        for hook in self.hooks:
            hook.remove()
        self.hooks = []
        if self.probe is not None:
            self.probe.detach()
