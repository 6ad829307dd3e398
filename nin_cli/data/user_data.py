"""A researcher's own data: four arrays from an .npz file (`dataset=arrays dataset.path=FILE.npz`)
or from a factory (`dataset.target=pkg.module:function`, Hydra's `_target_` too), checked and
standardized with the training set's statistics as Fashion-MNIST is.

The arrays are x_train, y_train, x_test, y_test:
- x: images N x C x H x W or N x H x W (uint8 pixels, or floats in [0, 1]; standardized per
  channel, one mean and std for grey images, as nin's own image datasets), or flat features
  N x D (standardized per feature);
- y: integer class labels 0..K-1 (classification: cross-entropy, or MSE on one-hot targets), or
  float targets N or N x D_out (regression: MSE).
Shapes, dtypes, NaNs and label ranges are checked, one line naming the array.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from nin_cli.errors import ConfigError
from nin_cli.factories import factory_arguments, locate
from nin_cli.factories import factory_target as named_factory

ARRAYS = ("x_train", "y_train", "x_test", "y_test")
OWN_KEYS = ("name", "_target_", "target", "path", "train_size", "test_size", "n_classes", "root")


def is_user_data(cfg) -> bool:
    return bool(cfg.get("path")) or cfg.get("name") == "arrays" or factory_target(cfg) is not None


def factory_target(cfg) -> str | None:
    return named_factory(cfg, "dataset")


def _npz(cfg) -> Path:
    path = cfg.get("path")
    if path in (None, "", "???"):
        raise ConfigError("dataset=arrays needs dataset.path=FILE.npz (with x_train, y_train, x_test, y_test)")
    where = Path(str(path)).expanduser()
    if not where.is_file():
        raise ConfigError(f"dataset.path={path}: no such file")
    return where


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as arrays:
            missing = [k for k in ARRAYS if k not in arrays.files]
            if missing:
                raise ConfigError(f"{path} lacks {', '.join(missing)} (it holds {', '.join(arrays.files) or 'nothing'})")
            return {k: arrays[k] for k in ARRAYS}
    except ConfigError:
        raise
    except Exception as exc:  # not a zip, a truncated file, object arrays
        raise ConfigError(
            f"{path} is not a readable .npz of arrays: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from None


def _from_factory(cfg) -> dict[str, np.ndarray]:
    target = factory_target(cfg)
    fn = locate(target)
    kwargs = factory_arguments(cfg, OWN_KEYS, "dataset")
    try:
        out = fn(**kwargs)
    except Exception as exc:
        raise ConfigError(
            f"dataset factory {target} failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from None
    if isinstance(out, dict):
        missing = [k for k in ARRAYS if k not in out]
        if missing:
            raise ConfigError(f"dataset factory {target} returned a dict without {', '.join(missing)}")
        out = [out[k] for k in ARRAYS]
    if not isinstance(out, (tuple, list)) or len(out) != 4:
        raise ConfigError(f"dataset factory {target} must return (x_train, y_train, x_test, y_test), got {type(out).__name__}")
    arrays = {}
    for key, value in zip(ARRAYS, out):
        try:
            arrays[key] = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
        except Exception:
            raise ConfigError(f"dataset factory {target}: {key} is not an array ({type(value).__name__})") from None
    return arrays


def raw_arrays(cfg) -> dict[str, np.ndarray]:
    return _from_factory(cfg) if factory_target(cfg) is not None else _read_npz(_npz(cfg))


def check(arrays: dict[str, np.ndarray], n_classes: int | None = None) -> tuple[str, int]:
    """(task, number of outputs) of the four arrays, or one line naming the array that is wrong."""
    for key in ARRAYS:
        a = arrays[key]
        if a.dtype.kind not in "biuf":
            raise ConfigError(f"{key} must hold numbers, not {a.dtype}")
        if a.size == 0 or a.ndim == 0:
            raise ConfigError(f"{key} is empty")
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise ConfigError(f"{key} holds {int((~np.isfinite(a)).sum())} NaN or infinite values")
    x_train, y_train, x_test, y_test = (arrays[k] for k in ARRAYS)
    if x_train.ndim not in (2, 3, 4):
        raise ConfigError(f"x_train must be N x D features or N x (C x) H x W images, got shape {x_train.shape}")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise ConfigError(f"x_test's samples have shape {x_test.shape[1:]}, x_train's {x_train.shape[1:]}")
    for x, y, xk, yk in ((x_train, y_train, "x_train", "y_train"), (x_test, y_test, "x_test", "y_test")):
        if len(x) != len(y):
            raise ConfigError(f"{yk} has {len(y)} entries for the {len(x)} samples of {xk}")
    if x_train.ndim >= 3 and x_train.dtype.kind == "f":
        lo, hi = float(min(x_train.min(), x_test.min())), float(max(x_train.max(), x_test.max()))
        if lo < 0 or hi > 1:
            raise ConfigError(f"x_train and x_test hold images with values in [{lo:.3g}, {hi:.3g}]: give uint8 pixels or floats in [0, 1]")
    if y_train.dtype.kind != y_test.dtype.kind and "f" in (y_train.dtype.kind, y_test.dtype.kind):
        raise ConfigError(f"y_train is {y_train.dtype} and y_test {y_test.dtype}: both labels (integers) or both targets (floats)")
    if y_train.dtype.kind == "f":
        if y_train.ndim > 2 or y_train.shape[1:] != y_test.shape[1:]:
            raise ConfigError(f"float targets must be N or N x D_out alike in y_train and y_test, got {y_train.shape} and {y_test.shape}")
        return outputs(y_train, y_test, n_classes)
    for key in ("y_train", "y_test"):
        if arrays[key].ndim != 1:
            raise ConfigError(f"{key} must be a vector of integer labels, got shape {arrays[key].shape}")
    _, k = outputs(y_train, y_test, n_classes)
    for key in ("y_train", "y_test"):
        lo, hi = int(arrays[key].min()), int(arrays[key].max())
        if lo < 0 or hi >= k:
            raise ConfigError(f"{key} holds labels from {lo} to {hi}, outside 0..{k - 1}" + (" (dataset.n_classes)" if n_classes else ""))
    if k < 2:
        raise ConfigError(f"y_train and y_test hold one class ({k - 1}): classification needs two at least")
    return "classification", k


def statistics(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The standardization of training inputs (floats, images in [0, 1]): images per channel, one
    mean and std for grey ones (as data._images); features per feature."""
    dims = ((0, 2, 3) if x.shape[1] > 1 else (0, 1, 2, 3)) if x.ndim == 4 else (0,)
    return x.mean(dim=dims, keepdim=True), x.std(dim=dims, keepdim=True).clamp_min(1e-12)  # a constant feature: 0, not NaN


def input_statistics(cfg) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) the dataset's training inputs are standardized with, for inputs given as the
    data holds them (uint8 pixels scaled to [0, 1] first)."""
    x = raw_arrays(cfg)["x_train"]
    if cfg.get("train_size"):
        x = x[: int(cfg.train_size)]
    return statistics(as_inputs(x, 255.0 if x.dtype == np.uint8 else 1.0))


def as_inputs(x: np.ndarray, scale: float) -> torch.Tensor:
    """An input array as the network takes it before standardization: floats divided by `scale`
    (255 for uint8 pixels), N x H x W images given their channel axis."""
    t = torch.from_numpy(np.ascontiguousarray(x)).float() / scale
    return t[:, None] if t.ndim == 3 else t


def label_summary(cfg) -> dict | None:
    """What an .npz's targets are, for the pre-flight's advice: {"kind": "labels" (integers, with
    their lowest and highest), "one_hot" (float rows of 0/1 with one 1: class labels written one-hot)
    or "targets" (floats: a regression)}; None for a dataset factory's (known once it is loaded)."""
    if factory_target(cfg) is not None:
        return None
    with np.load(_npz(cfg), allow_pickle=False) as arrays:
        ys = [arrays[k] for k in ("y_train", "y_test") if k in arrays.files]
    if len(ys) != 2:
        return None
    if ys[0].dtype.kind in "iub":
        return {"kind": "labels", "lo": int(min(y.min() for y in ys)), "hi": int(max(y.max() for y in ys))}
    one_hot = all(y.ndim == 2 and y.shape[1] >= 2 and np.isin(y, (0, 1)).all() and (y.sum(1) == 1).all() for y in ys)
    return {"kind": "one_hot" if one_hot else "targets", "width": int(ys[0].shape[1]) if ys[0].ndim == 2 else 1}


def outputs(y_train: np.ndarray, y_test: np.ndarray, n_classes: int | None) -> tuple[str, int]:
    """(task, outputs) the targets make: float targets a regression as wide as they are, integer
    labels `n_classes` classes, or the largest label + 1."""
    if y_train.dtype.kind == "f":
        return "regression", int(y_train.shape[1]) if y_train.ndim == 2 else 1
    return "classification", int(n_classes) if n_classes else int(max(y_train.max(), y_test.max())) + 1


def _header_shape(path: Path, key: str) -> tuple[int, ...] | None:
    """An array's shape from the .npz's header, without reading its data."""
    try:
        with zipfile.ZipFile(path) as archive, archive.open(f"{key}.npy") as f:
            version = np.lib.format.read_magic(f)
            shape, _, _ = np.lib.format._read_array_header(f, version)
            return tuple(shape)
    except Exception:
        return None


def input_output_shape(cfg, probe: bool = True) -> tuple[tuple[int, ...], int] | None:
    """(input shape, outputs) without loading the inputs: an .npz's header and its labels; a
    factory's only when `probe` (it loads the data)."""
    if factory_target(cfg) is not None and not probe:
        return None
    if factory_target(cfg) is None:
        path = _npz(cfg)
        shape = _header_shape(path, "x_train")
        if shape is not None and len(shape) >= 2:
            with np.load(path, allow_pickle=False) as arrays:
                labels = {k: arrays[k] for k in ("y_train", "y_test") if k in arrays.files}
            if len(labels) == 2:
                return _in_shape(shape), outputs(labels["y_train"], labels["y_test"], cfg.get("n_classes"))[1]
    arrays = raw_arrays(cfg)
    _, n_out = check(arrays, cfg.get("n_classes"))
    return _in_shape(arrays["x_train"].shape), n_out


def _in_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    return (1, *shape[1:]) if len(shape) == 3 else tuple(shape[1:])


def load(cfg) -> dict:
    """The arrays checked, cut to train_size/test_size and standardized, as CPU tensors with their
    task, outputs and (for images) the pixel statistics: the parts of a Dataset (nin_cli/data/datasets.py)."""
    arrays = raw_arrays(cfg)
    task, n_out = check(arrays, cfg.get("n_classes"))
    x_train, y_train, x_test, y_test = (arrays[k] for k in ARRAYS)
    for key, size, n in (("train_size", cfg.get("train_size"), len(x_train)), ("test_size", cfg.get("test_size"), len(x_test))):
        if size is not None and int(size) > n:
            raise ConfigError(f"dataset.{key}={size} but the data has {n} {'training' if key == 'train_size' else 'test'} samples")
    if cfg.get("train_size"):
        x_train, y_train = x_train[: int(cfg.train_size)], y_train[: int(cfg.train_size)]
    if cfg.get("test_size"):
        x_test, y_test = x_test[: int(cfg.test_size)], y_test[: int(cfg.test_size)]
    scale = 255.0 if x_train.dtype == np.uint8 else 1.0
    xs = [as_inputs(x, scale) for x in (x_train, x_test)]
    images = xs[0].ndim == 4
    mean, std = statistics(xs[0])
    to_target = (lambda y: torch.from_numpy(np.asarray(y)).long()) if task == "classification" else _float_targets
    return {
        "train": ((xs[0] - mean) / std, to_target(y_train)),
        "test": ((xs[1] - mean) / std, to_target(y_test)),
        "task": task,
        "n_out": n_out,
        "mean": mean if images else None,
        "std": std if images else None,
    }


def _float_targets(y: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(np.asarray(y, dtype=np.float32))
    return t[:, None] if t.ndim == 1 else t
