"""The pre-flight's plan of a command, handed to whatever runs its jobs.

`nin train` checks every job before any trains (preflight.check_command), and the pre-flight
returns what it found as a Plan: the command's config directories, the overrides to compose with,
and each job's RunConfig, resolved once, with its composition (or a maker of it, made when the
launcher asks), keyed by the job's own overrides as the sweeper hands them to the launcher.

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

from omegaconf import DictConfig

from nin_cli.config.resolve import RunConfig, resolve
from nin_cli.config.sources import Sources, using

Composition = DictConfig | Callable[[], DictConfig] | None


def job_key(overrides: list[str]) -> tuple[str, ...]:
    """A job's own overrides, Hydra's settings aside: how the sweeper names it to the launcher."""
    return tuple(o for o in overrides if not o.lstrip("+~").startswith("hydra"))


@dataclass
class Plan:
    """What the pre-flight found for one command (see the module's docstring)."""

    sources: Sources
    overrides: list[str]  # the command's overrides to compose with: one hydra.searchpath holds every config directory
    jobs: dict[tuple[str, ...], tuple[RunConfig, Composition]] = field(default_factory=dict)

    def add(self, overrides: list[str], run: RunConfig, composed: Composition = None) -> None:
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

    def composed_job(self, overrides: list[str]) -> DictConfig | None:
        """The pre-flight's composition of a job, a config of the caller's own (made now where the
        pre-flight kept a maker), or None."""
        composed = self.jobs.get(job_key(overrides), (None, None))[1]
        if composed is None:
            return None
        return composed() if callable(composed) else composed.copy()  # the caller's own, to change

    def checked(self, overrides: list[str], cfg: DictConfig) -> RunConfig:
        """The job's RunConfig as the pre-flight resolved it (once), else `cfg` resolved now."""
        found = self.jobs.pop(job_key(overrides), None)
        return found[0] if found else resolve(cfg)


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


def checked(overrides: list[str], cfg: DictConfig) -> RunConfig:
    """A job's RunConfig: the handed plan's, else `cfg` resolved now (a job process of its own)."""
    plan = received()
    return plan.checked(overrides, cfg) if plan is not None else resolve(cfg)
