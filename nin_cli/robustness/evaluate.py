"""Robustness of a trained run: clean test accuracy, additive Gaussian noise, the 15 MNIST-C
corruptions (nin_cli/data/corruptions.py) and L-inf attacks: hand-written FGSM and PGD, and as the
reference torchattacks' APGD-CE or the standard AutoAttack ensemble (the robustness extra).

Perturbations act on pixels in [0, 1] (the standardization is undone first and redone after) and
are seeded, so every run evaluated with one seed sees the same corrupted images. An evaluation
records each finished perturbation (robustness.partial.json) and resumes from there; robustness.csv
and the settings it was made with (robustness.yaml) are written when all are done.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from nin_cli.config.resolve import load
from nin_cli.data.corruptions import corrupt
from nin_cli.data.datasets import Dataset, Split
from nin_cli.data.perturbations import available, missing_extra, plan, settings_hash
from nin_cli.errors import ConfigError, RunInUse, console, install_hint
from nin_cli.nets.objectives import LossFn, correct_samples
from nin_cli.records.faults import fault_point
from nin_cli.records.store import ROBUSTNESS, ROBUSTNESS_PARTIAL, ROBUSTNESS_SETTINGS, RunRecords, atomic_write_text
from nin_cli.seeding import generator
from nin_cli.train.setup import build, load_weights


class PixelSpace:
    """Moves between the model's standardized inputs and [0, 1] pixels (features, which have no
    pixel range, stay as the model takes them: noise on them is in standardized units)."""

    def __init__(self, data: Dataset):
        self.mean, self.std = data.mean, data.std

    def to_pixels(self, x):
        return x if self.mean is None else x * self.std + self.mean

    def to_model(self, p):
        return p if self.mean is None else (p.clamp(0, 1) - self.mean) / self.std


class PixelModel(torch.nn.Module):
    """The model seen from [0, 1] pixels, the input space torchattacks works in."""

    def __init__(self, model: torch.nn.Module, space: PixelSpace):
        super().__init__()
        self.model, self.space = model, space

    def forward(self, p: torch.Tensor) -> torch.Tensor:
        return self.model((p - self.space.mean) / self.space.std)


@torch.no_grad()
def _accuracy(model, x, y, loss_fn) -> tuple[float, float]:
    """The number right and the summed loss on one batch (summed over batches, divided once)."""
    out = model(x)
    return float(correct_samples(out, y).sum()), float(loss_fn(out, y)) * len(y)


def gaussian_noise(x, std, gen):
    return x + std * torch.randn(x.shape, generator=gen, device=x.device)


def pgd(model, x, y, loss_fn: LossFn, space: PixelSpace, eps: float, steps: int, gen, random_start: bool = True) -> torch.Tensor:
    """FGSM (steps=0) or PGD with step size 2.5 eps / steps, from a uniform random point of the
    L-inf ball (random_start) or from the image, in the ball of radius eps around the pixels."""
    pix = space.to_pixels(x).clamp(0, 1)
    net = PixelModel(model, space)  # no clamp inside: a clamp's zero gradient would freeze black pixels
    adv = pix
    if steps and random_start:
        adv = (pix + eps * (2 * torch.rand(pix.shape, generator=gen, device=pix.device) - 1)).clamp(0, 1)
    alpha = eps if steps == 0 else 2.5 * eps / steps
    for _ in range(max(steps, 1)):
        adv = adv.detach().requires_grad_(True)
        with torch.enable_grad():
            loss = loss_fn(net(adv), y)
            (grad,) = torch.autograd.grad(loss, adv)
        adv = torch.min(torch.max(adv + alpha * grad.sign(), pix - eps), pix + eps).clamp(0, 1)
    return space.to_model(adv.detach())


def _torchattacks():
    try:
        import torchattacks
    except ImportError as exc:
        raise ConfigError(f"the reference attacks (apgd, autoattack) need torchattacks: {install_hint('robustness')}") from exc
    return torchattacks


def reference_attack(name: str, model, space: PixelSpace, eps: float, rcfg: DictConfig, seed: int):
    """torchattacks' APGD-CE, or AutoAttack's standard ensemble as its paper runs it (APGD-CE, then
    APGD-T, FAB-T and Square on the points still robust; 100 iterations, 9 target classes, 5000
    queries; torchattacks' own AutoAttack class runs 10 iterations)."""
    ta = _torchattacks()
    net = PixelModel(model, space).eval()
    steps, classes = int(rcfg.apgd_steps), int(rcfg.get("n_classes", 10))
    apgd = ta.APGD(net, norm="Linf", eps=eps, steps=steps, n_restarts=1, seed=seed, loss="ce")
    if name == "apgd":
        return apgd
    return ta.MultiAttack(
        [
            apgd,
            ta.APGDT(net, norm="Linf", eps=eps, steps=steps, n_restarts=1, seed=seed, n_classes=classes),
            ta.FAB(net, norm="Linf", eps=eps, steps=steps, n_restarts=1, seed=seed, multi_targeted=True, n_classes=classes),
            ta.Square(net, norm="Linf", eps=eps, n_queries=5000, n_restarts=1, seed=seed),
        ]
    )


class CorruptedImages:
    """Corrupted test images, made once per process for every run evaluated on the same images."""

    _cache: dict[tuple, torch.Tensor] = {}

    @staticmethod
    def fingerprint(pixels: torch.Tensor) -> str:
        return hashlib.sha1(pixels.cpu().numpy().tobytes()).hexdigest()

    @classmethod
    def get(cls, pixels: torch.Tensor, fingerprint: str, name: str, level: int, seed: int) -> torch.Tensor:
        key = (fingerprint, name, level, seed)
        if key not in cls._cache:
            if len(cls._cache) > 64:
                cls._cache.clear()
            cls._cache[key] = corrupt(pixels, name, level, seed)
        return cls._cache[key]


def evaluate_robustness(
    model,
    data: Dataset,
    loss_fn: LossFn,
    rcfg: DictConfig,
    seed: int,
    done: dict[tuple[str, float], dict] | None = None,
    on_row: Callable[[dict], None] | None = None,
) -> pd.DataFrame:
    """Accuracy and loss under every planned perturbation this install can run. Rows in `done`
    (perturbation, severity) are kept as they are; `on_row` sees each new row as it is made."""
    model.eval()
    test = data.test if not rcfg.test_size else Split(data.test.x[: rcfg.test_size], data.test.y[: rcfg.test_size])
    n_attack = min(len(test), int(rcfg.attack_test_size or len(test)))
    space = PixelSpace(data)
    batch_size = int(rcfg.batch_size)
    pixels = space.to_pixels(test.x)
    fingerprint = CorruptedImages.fingerprint(pixels)  # the test images, whichever run evaluates them
    rows, done = [], dict(done or {})
    for task in plan(rcfg):
        key = (task.name, task.severity)
        if key in done:
            rows.append(done[key])
            continue
        if not available(task.name):
            continue
        gen = generator(seed, f"robustness/{task.name}/{task.severity}", test.x.device)
        n = n_attack if task.is_attack else len(test)
        if task.name not in ("clean", "gaussian") and not task.is_attack:
            inputs = space.to_model(CorruptedImages.get(pixels, fingerprint, task.name, int(task.severity), seed))
        correct = loss_sum = 0.0
        for start in range(0, n, batch_size):
            x, y = test.x[start : min(start + batch_size, n)], test.y[start : min(start + batch_size, n)]
            if task.name == "clean":
                perturbed = x
            elif task.name == "gaussian":
                perturbed = space.to_model(gaussian_noise(space.to_pixels(x), task.severity, gen))
            elif task.name in ("fgsm", "pgd"):
                steps = 0 if task.name == "fgsm" else int(rcfg.pgd_steps)
                perturbed = pgd(model, x, y, loss_fn, space, task.severity, steps, gen, bool(rcfg.pgd_random_start))
            elif task.is_attack:
                attack = reference_attack(task.name, model, space, task.severity, rcfg, seed)
                perturbed = space.to_model(attack(space.to_pixels(x), y).detach())
            else:
                perturbed = inputs[start : start + len(x)]
            c, lo = _accuracy(model, perturbed, y, loss_fn)
            correct, loss_sum = correct + c, loss_sum + lo
        row = {"perturbation": task.name, "severity": task.severity, "accuracy": correct / n, "loss": loss_sum / n, "images": n}
        rows.append(row)
        if on_row:
            on_row(row)
    return pd.DataFrame(rows)


def evaluate_run(
    run_dir: Path, rcfg: DictConfig, device: str | None = None, on_row: Callable[[dict], None] | None = None, keep: bool = False
) -> pd.DataFrame | None:
    """Rebuild a finished run's model from config.yaml + checkpoint.pt and write robustness.csv.

    The run directory is locked meanwhile. Each finished perturbation is recorded at once
    (robustness.partial.json, with a hash of the settings), so an interrupted evaluation with the
    same settings resumes after the last one; other settings start over. `keep`: None, with
    nothing done, where robustness.csv exists once the lock is held (another process wrote it
    since this one looked)."""
    records = RunRecords(run_dir)
    if not records.config_path.exists():
        raise ConfigError(f"{run_dir} has no config.yaml: not a run directory")
    cfg = load(records.config_path).cfg
    if device:
        cfg.device = device
    records.lock.acquire()
    try:
        if keep and (records.dir / ROBUSTNESS).exists():
            return None
        records.remove_stale_temporaries()  # left by a killed writer; none is live while we hold the lock
        state = records.load_checkpoint()
        if state is None:
            raise ConfigError(f"{run_dir} has no checkpoint.pt to evaluate")
        setup = build(cfg, records=records.dir)  # a trained run, rebuilt as it was trained: no training-time validation
        if setup.data.task != "classification":
            raise ConfigError(f"{run_dir}: robustness needs a classification run (this one is a regression)")
        if len(setup.data.in_shape) != 3:
            rcfg = without_image_perturbations(rcfg, run_dir)
        load_weights(setup.model, state)
        partial = records.dir / ROBUSTNESS_PARTIAL
        digest = settings_hash(rcfg)
        done = read_partial(partial, digest)
        rows = list(done.values())

        def record(row: dict) -> None:
            rows.append(row)
            atomic_write_text(partial, json.dumps({"settings": digest, "rows": rows}) + "\n")
            fault_point("evaluated")  # a crash right after a perturbation was recorded
            if on_row:
                on_row(row)

        table = evaluate_robustness(setup.model, setup.data, setup.loss_fn, rcfg, int(rcfg.seed), done, record)
        atomic_write_text(records.dir / ROBUSTNESS_SETTINGS, OmegaConf.to_yaml(rcfg))
        atomic_write_text(records.dir / ROBUSTNESS, table.to_csv(index=False))
        partial.unlink(missing_ok=True)
        return table
    finally:
        records.lock.release()


def without_image_perturbations(rcfg: DictConfig, run_dir: Path) -> DictConfig:
    """A classifier of features (not images) gets the clean and the Gaussian-noise accuracy (the
    noise in standardized feature units); MNIST-C's corruptions and the attacks, which are defined
    on images in [0, 1], are left out, as one line says."""
    left = [*(rcfg.corruptions or {}), *rcfg.attacks]
    if left:
        console.print(f"[dim]{run_dir}: not images: clean and Gaussian-noise accuracy only ({', '.join(map(str, left))} need images)")
    out = rcfg.copy()
    with open_dict(out):
        out.corruptions, out.attacks = {}, []
    return out


def read_partial(path: Path, digest: str) -> dict[tuple[str, float], dict]:
    """The rows an interrupted evaluation with the same settings finished (none if damaged: said)."""
    if not path.exists():
        return {}
    try:
        record = json.loads(path.read_text())
        settings, rows = record["settings"], record["rows"]
        if not (isinstance(settings, str) and re.fullmatch(r"[0-9a-f]+", settings) and isinstance(rows, list)):
            raise ValueError("not an evaluation's record")
        if settings != digest:
            return {}  # another evaluation's: these settings start anew
        return {(r["perturbation"], float(r["severity"])): r for r in rows}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        console.print(f"[yellow]{path} is damaged: the perturbations it held are evaluated again[/]")
        return {}


def left_to_holder(run_dir: Path, exc: RunInUse) -> str:
    """The line for a run another process trains or evaluates: it is left to that process."""
    return f"{run_dir}: in use by process {exc.holder}; left to it"


def evaluate_after_training(cfg: DictConfig, run_dir: Path, status: str) -> None:
    """`evaluate=true`: a run that finished training gets its robustness.csv straight away. A run
    that a `nin evaluate` of the same sweep holds is left to it, as that command leaves the sweep's
    runs to this one: the sweep goes on with its other runs."""
    if cfg.get("evaluate") and status == "completed" and not (Path(run_dir) / ROBUSTNESS).exists():
        missing_extra(plan(cfg.robustness), warn=True, where=f"{run_dir}: ")
        try:
            evaluate_run(Path(run_dir), cfg.robustness, keep=True)
        except RunInUse as exc:
            console.print(left_to_holder(run_dir, exc), style="dim")


def clean_accuracy(table: pd.DataFrame) -> float:
    return float(table.loc[table.perturbation == "clean", "accuracy"].iloc[0])


def strongest_attack(table: pd.DataFrame) -> str:
    """', apgd eps=0.1: 0.6120': the strongest attack evaluated, at its largest epsilon."""
    for attack in ("autoattack", "apgd", "pgd"):
        rows = table[table.perturbation == attack]
        if len(rows):
            return f", {attack} eps={rows.severity.iloc[-1]:g}: {rows.accuracy.iloc[-1]:.4f}"
    return ""
