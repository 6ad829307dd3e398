"""Datasets as tensors on the training device: no per-item DataLoader, batches are index gathers."""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from nin_cli.data import user_data
from nin_cli.errors import ConfigError
from nin_cli.seeding import generator

IDX_DATASETS = {
    "fashion_mnist": ("fashion-mnist", "FashionMNIST"),
    "mnist": ("mnist", "MNIST"),
}
INSTALL_HINT = {
    "fashion_mnist": "sudo apt-get install -y dataset-fashion-mnist  (or: nin download fashion_mnist)",
    "mnist": "nin download mnist",
    "cifar10": "nin download cifar10",
}
KNOWN = (*IDX_DATASETS, "cifar10", "fashion_mnist_mini", "linear_regression")
IMAGE_SHAPES = {"fashion_mnist": (1, 28, 28), "mnist": (1, 28, 28), "fashion_mnist_mini": (1, 28, 28), "cifar10": (3, 32, 32)}
# (training, test) images of each image dataset's standard split
SPLIT_SIZES = {"fashion_mnist": (60000, 10000), "mnist": (60000, 10000), "fashion_mnist_mini": (6000, 1000), "cifar10": (50000, 10000)}


def split_sizes(cfg, standard: tuple[int, int] | None = None) -> tuple[int, int] | None:
    """(training, test) images the dataset config's split has before train_size/test_size cut it,
    from the standard split's sizes (`standard`, else the table above); None for synthetic data."""
    standard = standard or SPLIT_SIZES.get(cfg.name)
    if standard is None:
        return None
    if cfg.get("split") == "fraction":
        total = sum(standard)
        n_train = int(round(float(cfg.train_fraction) * total))
        return n_train, total - n_train
    return standard


def check_sizes(cfg, standard: tuple[int, int] | None = None) -> None:
    """dataset.train_size / test_size may cut a split, never ask for more than it has."""
    sizes = split_sizes(cfg, standard)
    for key, n, what in zip(("train_size", "test_size"), sizes or (), ("training", "test")):
        wanted = cfg.get(key)
        if wanted is not None and int(wanted) > n:
            split = f" with split={cfg.split} train_fraction={cfg.train_fraction}" if cfg.get("split") == "fraction" else ""
            raise ConfigError(f"dataset.{key}={wanted} but {cfg.name}{split} has {n} {what} images: use at most {n}, or null for all")


def input_output_shape(cfg, probe: bool = True) -> tuple[tuple[int, ...], int] | None:
    """(input shape without batch, number of outputs) of a dataset config, without loading it (a
    dataset factory is called only with `probe`: None otherwise)."""
    if user_data.is_user_data(cfg):
        return user_data.input_output_shape(cfg, probe)
    if cfg.name == "linear_regression":
        return (int(cfg.dim),), 1
    if cfg.name not in IMAGE_SHAPES:
        raise ConfigError(f"unknown dataset {cfg.name!r}; choose from {', '.join(KNOWN)}")
    return IMAGE_SHAPES[cfg.name], 10


@dataclass
class Split:
    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class Dataset:
    name: str
    train: Split
    test: Split
    in_shape: tuple[int, ...]
    n_out: int
    task: str  # "classification" | "regression"
    mean: torch.Tensor | None = None  # standardization statistics of the [0, 1] pixels, (1, C, 1, 1)
    std: torch.Tensor | None = None
    population: int | None = None  # the training set `train` is drawn from, where it is a sample of it (a probe's measurement set)

    @property
    def pixel_std(self) -> float:
        """Converts a noise std in pixel units to standardized input units."""
        return float(self.std.mean()) if self.std is not None else 1.0


def cache_dir() -> Path:
    """Where `nin download` puts files (NIN_DATA_DIR overrides)."""
    return Path(os.environ.get("NIN_DATA_DIR", Path.home() / ".cache" / "nin"))


def _search_dirs(name: str, root: str | None) -> list[Path]:
    if root:
        return [Path(root).expanduser()]
    debian, torchvision_name = IDX_DATASETS[name]
    return [
        cache_dir() / debian,
        Path("/usr/share/datasets") / debian,
        cache_dir() / torchvision_name / "raw",
    ]


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape).copy()  # writable for torch


def _find_idx(directory: Path, stem: str) -> Path | None:
    for suffix in (".gz", ""):
        path = directory / f"{stem}{suffix}"
        if path.exists():
            return path
    return None


def _load_idx(name: str, root: str | None) -> tuple[np.ndarray, ...]:
    stems = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    searched = _search_dirs(name, root)
    for directory in searched:
        paths = [_find_idx(directory, s) for s in stems]
        if all(paths):
            return tuple(_read_idx(p) for p in paths)
    where = ", ".join(str(d) for d in searched)
    raise ConfigError(f"dataset {name} not found in {where}; install it with: {INSTALL_HINT[name]}")


def _load_cifar10(root: str | None) -> tuple[np.ndarray, ...]:
    from torchvision.datasets import CIFAR10

    base = Path(root).expanduser() if root else cache_dir()
    try:
        train = CIFAR10(str(base), train=True, download=False)
        test = CIFAR10(str(base), train=False, download=False)
    except RuntimeError as exc:
        raise ConfigError(f"dataset cifar10 not found in {base}; install it with: {INSTALL_HINT['cifar10']}") from exc
    to_chw = lambda a: np.ascontiguousarray(a.transpose(0, 3, 1, 2))  # noqa: E731
    return to_chw(train.data), np.array(train.targets), to_chw(test.data), np.array(test.targets)


def _load_mini() -> tuple[np.ndarray, ...]:
    with resources.files("nin_cli.assets").joinpath("fashion_mnist_mini.npz").open("rb") as f:
        arrays = np.load(f)
        return tuple(arrays[k] for k in ("train_x", "train_y", "test_x", "test_y"))


def download(name: str, root: str | None = None) -> Path:
    """Fetch a dataset with torchvision into the cache (the only code path that uses the network)."""
    from torchvision import datasets

    base = Path(root).expanduser() if root else cache_dir()
    cls = {"fashion_mnist": datasets.FashionMNIST, "mnist": datasets.MNIST, "cifar10": datasets.CIFAR10}.get(name)
    if cls is None:
        raise ConfigError(f"nothing to download for dataset {name!r}; choose from fashion_mnist, mnist, cifar10")
    for train in (True, False):
        cls(str(base), train=train, download=True)
    return base


def _images(cfg, device: torch.device) -> Dataset:
    if cfg.name == "fashion_mnist_mini":
        arrays = _load_mini()
    elif cfg.name == "cifar10":
        arrays = _load_cifar10(cfg.root)
    else:
        arrays = _load_idx(cfg.name, cfg.root)
    train_x, train_y, test_x, test_y = (torch.from_numpy(np.asarray(a)) for a in arrays)
    check_sizes(cfg, (len(train_y), len(test_y)))  # the files found, which may differ from the standard sizes
    if train_x.ndim == 3:
        train_x, test_x = train_x[:, None], test_x[:, None]
    if cfg.split == "fraction":
        train_x, train_y, test_x, test_y = _resplit(train_x, train_y, test_x, test_y, cfg)
    elif cfg.split != "standard":
        raise ConfigError(f"dataset.split must be 'standard' or 'fraction', got {cfg.split!r}")
    if cfg.train_size:
        train_x, train_y = train_x[: cfg.train_size], train_y[: cfg.train_size]
    if cfg.test_size:
        test_x, test_y = test_x[: cfg.test_size], test_y[: cfg.test_size]
    train_x, test_x = train_x.float() / 255.0, test_x.float() / 255.0
    # Scalar statistics for grey images, per-channel for colour ones, always from the training set.
    dims = (0, 2, 3) if train_x.shape[1] > 1 else (0, 1, 2, 3)
    mean = train_x.mean(dim=dims, keepdim=True)
    std = train_x.std(dim=dims, keepdim=True)
    standardize = lambda x: ((x - mean) / std).to(device)  # noqa: E731
    return Dataset(
        name=cfg.name,
        train=Split(standardize(train_x), train_y.long().to(device)),
        test=Split(standardize(test_x), test_y.long().to(device)),
        in_shape=tuple(train_x.shape[1:]),
        n_out=10,
        task="classification",
        mean=mean.to(device),
        std=std.to(device),
    )


def _resplit(train_x, train_y, test_x, test_y, cfg):
    x, y = torch.cat([train_x, test_x]), torch.cat([train_y, test_y])
    if not 0.0 < cfg.train_fraction < 1.0:
        raise ConfigError(f"dataset.train_fraction must lie in (0, 1), got {cfg.train_fraction}")
    perm = torch.randperm(len(y), generator=generator(cfg.split_seed, "split"))
    n_train = int(round(cfg.train_fraction * len(y)))
    return x[perm[:n_train]], y[perm[:n_train]], x[perm[n_train:]], y[perm[n_train:]]


def _linear_regression(cfg, device: torch.device) -> Dataset:
    """x ~ N(0, sigma_x^2 I), y = M x with M the scalar M times a fixed all-ones row (dim -> 1)."""
    if cfg.sigma_x <= 0:
        raise ConfigError(f"dataset.sigma_x must be > 0, got {cfg.sigma_x}")
    gen = generator(cfg.data_seed, "linear_regression")
    n = cfg.n_train + cfg.n_test
    x = cfg.sigma_x * torch.randn(n, cfg.dim, generator=gen)
    y = cfg.M * x.sum(dim=1, keepdim=True)
    split = lambda a, b: Split(x[a:b].to(device), y[a:b].to(device))  # noqa: E731
    return Dataset(
        name=cfg.name,
        train=split(0, cfg.n_train),
        test=split(cfg.n_train, n),
        in_shape=(cfg.dim,),
        n_out=1,
        task="regression",
    )


def load_dataset(cfg, device: torch.device | str = "cpu") -> Dataset:
    """Load the configured dataset onto `device`, raising ConfigError with an install hint if absent."""
    device = torch.device(device)
    if user_data.is_user_data(cfg):
        parts = user_data.load(cfg)
        (train_x, train_y), (test_x, test_y) = parts["train"], parts["test"]
        on = lambda t: None if t is None else t.to(device)  # noqa: E731
        return Dataset(
            str(cfg.name),
            Split(on(train_x), on(train_y)),
            Split(on(test_x), on(test_y)),
            tuple(train_x.shape[1:]),
            parts["n_out"],
            parts["task"],
            on(parts["mean"]),
            on(parts["std"]),
        )
    if cfg.name not in KNOWN:
        raise ConfigError(f"unknown dataset {cfg.name!r}; choose from {', '.join(KNOWN)}")
    if cfg.name == "linear_regression":
        return _linear_regression(cfg, device)
    return _images(cfg, device)
