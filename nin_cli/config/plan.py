"""The pre-flight's plan of a command, handed to whatever runs its jobs.

`nin train` checks every job before any trains (preflight.check_command), and the pre-flight
returns what it found as a Plan: the command's config directories, the overrides to compose with,
and each job's RunConfig, resolved once, with its composition (a Composition: its structure's
template and its own values), keyed by the job's own overrides as the sweeper hands them to the
launcher.

Hydra then runs the command and builds its sweeper and launcher from config, so the CLI cannot pass
them the plan as an argument. It hands it over for the command's duration instead (`with
handed(plan):` in interface/cli.py), and the three places that use it take it with `received()`:
the grid sweeper (a job the pre-flight composed is not composed again to check it), the batched
launcher (each job's composition and RunConfig) and the runner's Hydra task (a single run's
RunConfig). A process of its own (a joblib worker, a submitit job) receives no plan: its job is
resolved where it runs, from the config Hydra hands it, whose config sources say the directories.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from hydra._internal.config_loader_impl import ConfigLoaderImpl
from omegaconf import DictConfig

from nin_cli.config.resolve import RunConfig, resolve
from nin_cli.config.sources import Sources, using


@dataclass(frozen=True)
class Composition:
    """A job's composition as the pre-flight keeps it: its structure's template (Hydra's composition of
    the job's config-group choices, shared by every job of that structure, Hydra's node reduced to the
    choices) and the job's own values, Hydra's parsed overrides in the job's order. `make` gives the
    job's config; `apply` sets the job's values in a config of the template's that a previous job of
    the structure set (the same keys, each set over the last's: preflight.JobComposer keys a structure
    by them), which is what the batched launchers do instead of copying the template for each job."""

    template: DictConfig
    values: tuple[Any, ...]

    @property
    def in_place(self) -> bool:
        """Whether the job's values can be set over another job's: a mapping merges instead."""
        return not any(isinstance(o.value(), dict) for o in self.values)

    def apply(self, cfg: DictConfig) -> None:
        ConfigLoaderImpl._apply_overrides_to_config(list(self.values), cfg)

    def make(self) -> DictConfig:
        """The job's config, of the caller's own."""
        cfg = self.template.copy()
        self.apply(cfg)
        return cfg


def job_key(overrides: list[str]) -> tuple[str, ...]:
    """A job's own overrides, Hydra's settings aside: how the sweeper names it to the launcher."""
    return tuple(o for o in overrides if not o.lstrip("+~").startswith("hydra"))


@dataclass
class Plan:
    """What the pre-flight found for one command (see the module's docstring)."""

    sources: Sources
    overrides: list[str]  # the command's overrides to compose with: one hydra.searchpath holds every config directory
    jobs: dict[tuple[str, ...], tuple[RunConfig, Composition | DictConfig | None]] = field(default_factory=dict)

    def add(self, overrides: list[str], run: RunConfig, composed: Composition | DictConfig | None = None) -> None:
        """A job the pre-flight checked: its RunConfig and, in a sweep, its composition (a
        Composition, or for a one-job sweep Hydra's whole composition)."""
        self.jobs[job_key(overrides)] = (run, composed)

    @property
    def single(self) -> RunConfig:
        """The RunConfig of a command that trains one run."""
        (run, _), *more = self.jobs.values()
        assert not more, "a sweep has no single run"
        return run

    def was_composed(self, overrides: list[str]) -> bool:
        """Whether the pre-flight composed this job (the grid sweeper's question: nothing is made)."""
        return self.jobs.get(job_key(overrides), (None, None))[1] is not None

    def composition(self, overrides: list[str]) -> Composition | DictConfig | None:
        """The pre-flight's composition of a job (see `add`), or None where it did not compose it."""
        return self.jobs.get(job_key(overrides), (None, None))[1]

    def checked(self, overrides: list[str], config: Callable[[], DictConfig]) -> RunConfig:
        """The job's RunConfig as the pre-flight resolved it (once), else its config, made now, resolved."""
        found = self.jobs.pop(job_key(overrides), None)
        return found[0] if found else resolve(config())


_HANDED: ContextVar[Plan | None] = ContextVar("nin_plan", default=None)


@contextlib.contextmanager
def handed(plan: Plan) -> Iterator[Plan]:
    """The plan, and its config directories, for what runs the command inside (the module's docstring)."""
    token = _HANDED.set(plan)
    try:
        with using(plan.sources):
            yield plan
    finally:
        _HANDED.reset(token)


def received() -> Plan | None:
    """The plan of the command running in this process, if one was handed over."""
    return _HANDED.get()


def checked(overrides: list[str], config: Callable[[], DictConfig]) -> RunConfig:
    """A job's RunConfig: the handed plan's, else its config (`config()`) resolved now (a job
    process of its own); the config is made only where it is resolved."""
    plan = received()
    return plan.checked(overrides, config) if plan is not None else resolve(config())
