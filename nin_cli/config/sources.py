"""Where configs come from: nin's own conf/ and the directories a researcher adds on Hydra's
config search path (`--config-dir DIR`, `hydra.searchpath=[file://DIR, pkg://package.path]`).

Hydra composes from all of them; every check of nin (known keys, types, did-you-mean, a group's
options) is built from the same list, so a user's own experiment, model, dataset or launcher
preset is as valid as a shipped one. The list is the command's (the pre-flight's, from what
was typed, and its plan's while the command runs), else the running Hydra job's
(`hydra.runtime.config_sources`: a job process of its own is handed its config with them), else
conf/ alone.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from nin_cli.config.schema import conf_dir
from nin_cli.errors import ConfigError

# Imported where used: Hydra's running config is read only inside a Hydra job; the analysis reads sources without Hydra.


@dataclass(frozen=True)
class Sources:
    """Config directories in search-path order, conf/ first (as Hydra searches them)."""

    dirs: tuple[Path, ...]

    @property
    def extra(self) -> tuple[Path, ...]:
        return self.dirs[1:]

    def options(self, group: str) -> list[str]:
        """The options of a config group (a path like `model` or `hydra/launcher`) in any directory."""
        found = {p.stem for d in self.dirs if (d / group).is_dir() for p in (d / group).glob("*.yaml")}
        return sorted(found)

    def is_group(self, group: str) -> bool:
        return any((d / group).is_dir() for d in self.dirs)

    def searchpath(self) -> list[str]:
        """The directories beyond conf/, as `hydra.searchpath` entries."""
        return [f"file://{d}" for d in self.extra]


def entry_dir(entry: str) -> Path:
    """A search path entry (file://DIR, pkg://package/sub, or a bare path) as a directory."""
    text = str(entry).strip()
    if text.startswith("pkg://"):
        where = _package_dir(text, text.removeprefix("pkg://").strip("/").replace("/", ".").split("."))
    else:
        where = Path(text.removeprefix("file://")).expanduser()
    if not where.is_dir():
        raise ConfigError(f"config directory {text} does not exist (hydra.searchpath / --config-dir)")
    return where.resolve()


def _package_dir(entry: str, parts: list[str]) -> Path:
    """pkg://a.b.conf: the directory `conf` of the package a.b (the longest prefix that imports as
    a regular package; what follows is a folder in it)."""
    for cut in range(len(parts), 0, -1):
        try:
            module = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        if getattr(module, "__file__", None):
            return Path(module.__file__).parent.joinpath(*parts[cut:])
    raise ConfigError(f"hydra.searchpath entry {entry}: no package {parts[0]} is installed here")


def from_entries(entries: list[str]) -> Sources:
    dirs = [conf_dir()]
    for entry in entries:
        where = entry_dir(entry)
        if where not in dirs:
            dirs.append(where)
    return Sources(tuple(dirs))


_current: Sources | None = None


@contextlib.contextmanager
def using(sources: Sources) -> Iterator[None]:
    """Every check inside uses `sources` (the pre-flight of a command, before Hydra runs it)."""
    global _current
    saved, _current = _current, sources
    try:
        yield
    finally:
        _current = saved


def current() -> Sources:
    """The sources of this command: its pre-flight's or plan's (`using`), else those of the Hydra
    job running, else conf/ alone."""
    if _current is not None:
        return _current
    return _cached(tuple(_hydra_job_entries() or ()))


@lru_cache(maxsize=8)
def _cached(entries: tuple[str, ...]) -> Sources:
    return from_entries(list(entries))


def _hydra_job_entries() -> list[str] | None:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    entries = []
    for source in HydraConfig.get().runtime.get("config_sources") or []:
        if source.get("provider") in ("main", "hydra", "schema") or source.get("schema") not in ("file", "pkg"):
            continue
        path = str(source.path)
        if source.schema == "pkg" and path.startswith(("hydra_plugins", "hydra.")):
            continue  # plugins' own Hydra config (launchers, sweepers), not a user's directory
        entries.append(f"{source.schema}://{path}")
    return entries
