"""A command's overrides as Hydra reads them: parsed by Hydra's own parser (a malformed one in one
line of nin's), a sweep's jobs expanded as Hydra's basic sweeper expands them, and Hydra's errors
put on one line. Without torch: `nin progress` and `nin predict` expand a sweep's jobs too."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Glob
from hydra.errors import HydraException

from nin_cli.config.sources import current
from nin_cli.errors import ConfigError


def parse(overrides: list[str]) -> list:
    """Hydra's own parse of command-line overrides; a malformed one is one ConfigError line."""
    given = [o for o in overrides if not o.startswith("-")]
    for item in given:
        if "=" not in item and not item.startswith("~"):
            raise ConfigError(
                f"{item!r} is not an override: give KEY=VALUE (a list of values after an option is one word, comma-separated)"
            )
    parser = OverridesParser.create()
    try:
        return parser.parse_overrides(given)
    except HydraException as exc:
        for item in given:  # which one, in nin's words where the fix is quoting
            key, _, value = item.partition("=")
            try:
                parser.parse_overrides([item])
            except HydraException:
                if any(c in value for c in "= "):
                    raise ConfigError(f"{item!r}: a value holding '=' or a space is quoted: {key}='{value}'") from None
                raise ConfigError(f"{item!r} does not parse: {hydra_message(exc)}") from None
        raise ConfigError(hydra_message(exc)) from None


def sweep_jobs(grid: Mapping[str, Any], overrides: list[str]) -> list[list[str]]:
    """Each job's overrides, as Hydra's basic sweeper makes them of an experiment's grid
    (hydra.sweeper.params) and the command's overrides: the cartesian product of every swept
    key's values, in key order, through Hydra's public override parser. A key given twice keeps
    its last values (check_command refuses that before a sweep runs)."""
    parsed = parse([f"{k}={v}" for k, v in grid.items()] + list(overrides))
    axes: dict[str, list[str]] = {}
    for override in parsed:
        key = override.get_key_element()
        if override.is_sweep_override():
            if not override.is_discrete_sweep():  # interval(): for optimizing sweepers, not a grid
                raise ConfigError(f"{override.input_line}: only lists, range() and glob() of a group can be swept on a grid")
            if isinstance(override.value(), Glob):  # a group's options matched as Hydra's config loader does
                values = override.value().filter(current().options(override.key_or_group))
            else:
                values = list(override.sweep_string_iterator())
            axes[key] = [f"{key}={value}" for value in values]
        else:
            axes[key] = [f"{key}={override.get_value_element_as_str()}"]
    return [list(job) for job in itertools.product(*axes.values())]


def hydra_message(exc: Exception) -> str:
    """Hydra's error on one line, its hint kept (e.g. 'To append to your config use +experiment=fig3'),
    and its cause's first line where Hydra's own says only where (Error merging override ...)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    keep = [line for line in lines if not line.startswith(("See https://", "full_key:", "object_type="))]
    message = " ".join(keep[:3]) or type(exc).__name__
    cause = exc.__cause__
    if cause is not None and str(cause).strip() and message.startswith("Error merging override"):
        message += f": {str(cause).strip().splitlines()[0]}"
    return message
