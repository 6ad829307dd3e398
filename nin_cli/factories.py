"""Factories named in a config: a network's or a dataset's `_target_` (Hydra's way) or `target`
(`pkg.module:function`, nin's short form), located, called with the config's own arguments, and
seeded from the run. Shared by the networks (nets/network.py) and datasets
(data/user_data.py), which is why it sits below both."""

from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import Iterator
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import OmegaConf

from nin_cli.errors import ConfigError

# Imported where used: torch and the run's seeds, to seed a factory's own initialisation (reading a
# run's config, which names its factory, loads neither).


def factory_target(cfg, group: str = "model") -> str | None:
    """The factory a model (or dataset) config names, as `module.function` (None: a shipped one)."""
    hydra_style, short = cfg.get("_target_"), cfg.get("target")
    if hydra_style and short:
        raise ConfigError(f"{group} names two factories (_target_={hydra_style} and target={short}); give one")
    target = hydra_style or short
    if target is None:
        return None
    if not isinstance(target, str) or not target.strip():
        raise ConfigError(f"{group}.target must be a string like pkg.module:function, got {target!r}")
    return target.replace(":", ".")


def locate(target: str, exclude: Path | None = None):
    """Import `module.function` (the longest importable module prefix), never from `exclude` (a
    run directory: its records are data, not code). One ConfigError line if it does not import."""
    parts = target.split(".")
    hidden = _hidden_paths(exclude)
    saved = list(sys.path)
    sys.path[:] = [p for p in sys.path if p not in hidden]
    missing: ModuleNotFoundError | None = None
    try:
        for cut in range(len(parts) - 1, 0, -1):
            module_name = ".".join(parts[:cut])
            try:
                obj = importlib.import_module(module_name)
            except ModuleNotFoundError as exc:
                if exc.name and module_name.startswith(exc.name) and cut > 1:
                    missing = missing or exc
                    continue  # a shorter prefix may be the module (pkg.module.Class.method)
                raise ConfigError(f"factory {target} does not import: {type(exc).__name__}: {exc}") from None
            except Exception as exc:  # the module itself fails while importing
                raise ConfigError(f"factory {target} does not import: {type(exc).__name__}: {exc}") from None
            for attr in parts[cut:]:
                if not hasattr(obj, attr):
                    if missing is not None and cut < len(parts) - 1:
                        raise ConfigError(f"factory {target} does not import: {type(missing).__name__}: {missing}")
                    raise ConfigError(f"factory {target}: module {module_name} has no {'.'.join(parts[cut:])}")
                obj = getattr(obj, attr)
            if not callable(obj):
                raise ConfigError(f"factory {target} is not callable")
            return obj
        raise ConfigError(f"factory {target} does not import: write it as pkg.module:function")
    finally:
        sys.path[:] = saved


def _hidden_paths(exclude: Path | None) -> set[str]:
    if exclude is None:
        return set()
    root = Path(exclude).resolve()
    hidden = set()
    for entry in sys.path:
        where = Path(entry or ".").resolve()
        if where == root or root in where.parents:
            hidden.add(entry)
    return hidden


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """The global torch generator seeded from the run's seed inside (a builder's own init draws
    from it), and left as it was outside."""
    import torch

    from nin_cli.seeding import stream_seed

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(stream_seed(int(seed), "factory_init"))
        yield


def factory_arguments(cfg, own_keys: tuple[str, ...], group: str = "model") -> dict:
    """A config's keys but nin's own, as the factory's arguments: plain Python values, nested
    `_target_`s instantiated (hydra.utils.instantiate). One line where they do not instantiate."""
    args = {str(k): v for k, v in cfg.items() if k not in own_keys}
    if not args:
        return {}
    try:
        return dict(instantiate(OmegaConf.create(args), _convert_="all"))
    except Exception as exc:
        raise ConfigError(
            f"{group} factory {factory_target(cfg, group)}: its arguments do not instantiate: {str(exc).splitlines()[0]}"
        ) from None
