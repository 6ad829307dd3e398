"""Everything a run builds from its config before the first step: device and precision, data,
model and loss, and the optimizer. The config comes resolved and, for training, validated
(nin_cli/config/resolve.py); rebuilding a trained run to evaluate it takes its saved config as it is."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig

from nin_cli.config.legacy import FUSED_BLOCK_BEFORE, model_state
from nin_cli.config.resolve import resolve
from nin_cli.data.datasets import Dataset, load_dataset
from nin_cli.errors import ConfigError
from nin_cli.nets.network import build_model
from nin_cli.nets.nin import NINModel
from nin_cli.nets.objectives import LossFn, make_loss
from nin_cli.train.precision import configure as configure_precision


@dataclass
class Setup:
    """One run's built parts."""

    cfg: DictConfig
    device: torch.device
    data: Dataset
    model: NINModel
    nin_layers: list[str]
    shapes: dict[str, tuple[int, ...]]
    loss_fn: LossFn
    measurement: Callable | None = field(default=None, repr=False, compare=False)  # its epoch rows' measurement (train/rows.py)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but torch sees no CUDA device; use device=cpu or device=auto")
    if name not in ("cpu", "cuda"):
        raise ConfigError(f"device must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)


def step_dtype(cfg: DictConfig) -> torch.dtype:
    """The dtype of the training step's and the epoch evaluation's matmuls: bfloat16 under
    precision=bf16, else float32. Weights, updates, losses and the Hessian estimate are float32
    either way (TF32 matmuls on CUDA under precision=tf32: train/precision.py)."""
    return torch.bfloat16 if cfg.precision == "bf16" else torch.float32


def matmul_autocast(cfg: DictConfig, device: torch.device):
    """bf16 autocast for autograd steps and evaluation when precision=bf16 (a no-op otherwise)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16", cache_enabled=False)  # graph-safe


def build(cfg: DictConfig, data: Dataset | None = None, records: Path | None = None) -> Setup:
    """Data (unless shared in), model at its seed's initialisation, and loss, on the run's device
    (`records`: the run directory a trained run is rebuilt for, network.build_model)."""
    device = resolve_device(cfg.device)
    configure_precision(device, str(cfg.precision))
    data = data or load_dataset(cfg.dataset, device)
    loss_fn = make_loss(cfg.loss.name, data.task, cfg.loss.reduction, cfg.loss.get("outputs", "logits"))
    model = build_model(cfg.model, cfg.nin, data.in_shape, data.n_out, int(cfg.seed), records)
    model.fused_block = str(cfg.get("fused_block", FUSED_BLOCK_BEFORE))
    model.to(device)
    nin_layers = list(model.nins.keys())
    shapes = {n: tuple(model.nins[n].weight.shape) for n in nin_layers}
    return Setup(cfg, device, data, model, nin_layers, shapes, loss_fn)


def load_weights(model: NINModel, state: dict) -> None:
    """A checkpoint's weights into a network built from its run's config (an older nin's
    parameter names read as today's: config/legacy.py)."""
    model.load_state_dict(model_state(state["model"]))


def prepare(cfg: DictConfig, data: Dataset | None = None) -> Setup:
    """A composed config resolved and validated (nin_cli/config/resolve.py), then built: what training does."""
    return build(resolve(cfg).cfg, data)
