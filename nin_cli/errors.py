"""Errors that the CLI turns into one clear line instead of a traceback, and the stderr console
that warnings and progress go to (stdout stays for tables)."""

from rich.console import Console

console = Console(stderr=True, soft_wrap=True)


class ConfigError(ValueError):
    """Bad input found before training starts (config, placement, missing data)."""


class RecordError(RuntimeError):
    """A run directory that cannot be trained or read as asked: damaged files, records that do not
    match the checkpoint, a lock held by another process."""
