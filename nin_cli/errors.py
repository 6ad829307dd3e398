"""Errors that the CLI turns into one clear line instead of a traceback, the stderr console that
warnings and progress bars go to (stdout stays for tables), and the context that does the turning."""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True, soft_wrap=True)


def progress_bar(enabled: bool) -> Progress:
    """The progress bars of training, evaluation and `nin progress`, on the stderr console."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
        disable=not enabled,
        transient=False,
    )


class ConfigError(ValueError):
    """Bad input found before training starts (config, placement, missing data)."""


class RecordError(RuntimeError):
    """A run directory that cannot be trained or read as asked: damaged files, records that do not
    match the checkpoint, a lock held by another process."""


class RunInUse(RecordError):
    """A run directory whose lock another live process holds (it trains or evaluates there)."""

    def __init__(self, message: str, holder: str = "unknown"):  # a default: exceptions unpickle from args alone
        super().__init__(message)
        self.holder = holder  # "1234", or "1234 on node17" where the lock is a file


class Interrupted(Exception):
    """Raised from a signal handler (SIGTERM, SIGINT) so the loop can record the interruption and stop cleanly."""

    @property
    def exit_code(self) -> int:
        """The shell's convention: 128 + the signal number (130 for Ctrl-C, 143 for SIGTERM)."""
        return 128 + int(getattr(signal, str(self), signal.SIGTERM))


def counted(n: int, noun: str) -> str:
    """A count and its noun as a line says it: 1 run, 2 runs."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def fail(message: str, code: int = 2) -> None:
    """One `nin: error:` line on stderr, then exit (2: bad input; 1: records or the system)."""
    print(f"nin: error: {message}", file=sys.stderr)
    raise SystemExit(code)


@contextmanager
def one_line_errors() -> Iterator[None]:
    """What a user can cause or fix (bad input, damaged or locked records, a full or read-only
    disk, a signal) ends in one line and an exit code, never a traceback. A reader that closed the
    pipe (`nin summarize DIR | head`) is not an error: it propagates, for the caller to leave quietly."""
    try:
        yield
    except ConfigError as exc:
        fail(str(exc))
    except RecordError as exc:
        fail(str(exc), 1)
    except Interrupted as exc:
        print(f"nin: interrupted by {exc}; rerun the same command (same directory) to resume", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None
    except BrokenPipeError:
        raise
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        fail(f"cannot write or read the run's files: {where}{exc.strerror or exc} (status.json says where the run stopped)", 1)


def install_hint(extra: str) -> str:
    """How to add an optional extra: nin is installed from its checkout, not from a package index."""
    return f"pip install -e '.[{extra}]' (in nin's checkout)"
