"""The `nin` command: parses arguments and dispatches to the stage that does the work, nothing more.

`nin train ...` is a Hydra app (all of Hydra's flags work: -m, --cfg job, --help); the other
subcommands are argparse programs over run directories. Every failure a user can cause ends in
one `nin: error:` line (nin_cli/errors.py).
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings

from nin_cli.errors import fail, one_line_errors
from nin_cli.interface.commands import COMMANDS, HANDLERS, parser

# Imported where used: `nin --help`, tab completion and every command start in 0.15 s, each loading
# only what it runs (torch, Hydra, pandas, matplotlib take seconds).

HYDRA_FLAGS = ("-m", "--multirun", "--cfg", "-c", "--info", "-i", "--help", "-h", "--hydra-help", "--resolve", "-p", "--package")
HYDRA_FLAGS += ("--shell-completion", "-sc", "--run", "-r", "--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd")
HYDRA_FLAGS += ("--version", "--experimental-rerun")


def register_resolvers() -> None:
    from omegaconf import OmegaConf

    from nin_cli.identity import run_dirname

    if not OmegaConf.has_resolver("nin_dirname"):
        OmegaConf.register_new_resolver("nin_dirname", run_dirname)


register_resolvers()


# --- nin train ------------------------------------------------------------------------------------
def train_command(args: list[str]) -> None:
    import hydra

    from nin_cli.config.plan import handed
    from nin_cli.config.preflight import check_command
    from nin_cli.config.schema import conf_dir
    from nin_cli.interface.runner import hydra_task

    for arg in args:
        if arg.startswith("-") and arg.split("=", 1)[0] not in HYDRA_FLAGS:
            hint = f" (a config value is key=value: {arg.lstrip('-')}=...)" if arg.startswith("--") else ""
            fail(f"nin train: unknown option {arg}{hint}; options are Hydra's (nin train --hydra-help)")
    modes = [a for a in args if a in ("-m", "--multirun", "--cfg", "-c", "--info", "-i", "--shell-completion", "-sc")]
    if len({m.lstrip("-")[:1] for m in modes}) > 1:  # Hydra raises a ValueError for these
        fail(f"{' and '.join(modes)} cannot be combined: use one of -m, --cfg, --info")
    if any(a in args for a in ("--shell-completion", "-sc")):
        from nin_cli.interface.completion import shell_completion

        return shell_completion(args)
    args = [_recorded_key(a) for a in args]
    config_dirs = _flag_values(args, ("--config-dir", "-cd"))
    plan = None
    if not any(a in args for a in ("--help", "-h", "--hydra-help")):
        multirun = any(a in args for a in ("-m", "--multirun"))
        inspect = any(a in args for a in ("--cfg", "-c", "--info", "-i"))
        plan = check_command(_values(args), multirun=multirun, config_dirs=config_dirs, inspect=inspect)
    sys.argv = ["nin train", *_flags_first(args)]
    app = hydra.main(config_path=str(conf_dir()), config_name="train", version_base="1.3")(hydra_task)
    with handed(plan) if plan is not None else contextlib.nullcontext():  # the sweeper, launcher and task receive it
        app()


# Hydra's flags that take a value, as the next argument or after '=' (--config-dir DIR, --cfg job)
FLAGS_WITH_VALUE = ("--cfg", "-c", "--package", "-p", "--config-dir", "-cd", "--config-path", "-cp", "--config-name", "-cn")
FLAGS_WITH_VALUE += ("--experimental-rerun",)
INFO_VALUES = ("all", "config", "defaults", "defaults-tree", "plugins", "searchpath")  # --info's optional value


def _split(args: list[str]) -> tuple[list[str], list[str]]:
    """(Hydra's flags with their values, the overrides) of a Hydra command line."""
    flags, overrides = [], []
    for i, arg in enumerate(args):
        if flags and flags[-1] is None:  # the value of the flag before
            flags[-1] = arg
        elif arg.startswith("-"):
            flags.append(arg)
            nxt = args[i + 1] if i + 1 < len(args) else None
            if arg in FLAGS_WITH_VALUE or (arg in ("--info", "-i") and nxt in INFO_VALUES):
                flags.append(None)
        else:
            overrides.append(arg)
    return [f for f in flags if f is not None], overrides


def _values(args: list[str]) -> list[str]:
    """The overrides of a Hydra command line: no flags, and not the value of a flag that takes one (--cfg job)."""
    return _split(args)[1]


def _flags_first(args: list[str]) -> list[str]:
    """Hydra's flags (with their values) before the overrides: its parser takes the overrides as one
    run of positional arguments (`nin map` puts hydra/sweeper=map first, a user may type a flag last)."""
    flags, overrides = _split(args)
    return [*flags, *overrides]


def _flag_values(args: list[str], flags: tuple[str, ...]) -> list[str]:
    """The values given to `flags` (`--config-dir DIR` or `--config-dir=DIR`), in order."""
    out = []
    for i, arg in enumerate(args):
        name, eq, value = arg.partition("=")
        if name in flags:
            if eq:
                out.append(value)
            elif i + 1 < len(args):
                out.append(args[i + 1])
            else:
                fail(f"nin train: {arg} needs a directory")
    return out


def _recorded_key(arg: str) -> str:
    """`+tags=[...]` / `+notes=...` as `tags=...`: both keys are always in the config (conf/train.yaml),
    so adding them is setting them (Hydra would refuse the '+' of a key that exists)."""
    for key in ("tags", "notes"):
        if arg.startswith(f"+{key}="):
            return arg[1:]
    return arg


def usage() -> str:
    lines = ["usage: nin COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<10} {text}" for name, text in COMMANDS.items()]
    lines += [
        "",
        "`nin COMMAND --help` describes each command.",
        'Shell completion: eval "$(nin --shell-completion install=bash)" (or =zsh).',
    ]
    return "\n".join(lines)


def dispatch(argv: list[str]) -> None:
    if not argv:
        print(usage(), file=sys.stderr)
        raise SystemExit(2)
    if argv[0] in ("-h", "--help"):
        print(usage())
        return
    if argv[0] in ("-V", "--version"):
        from nin_cli.version import __version__

        print(f"nin {__version__}")
        return
    if argv[0] in ("-sc", "--shell-completion"):
        from nin_cli.interface.completion import shell_completion

        return shell_completion(argv)
    command, rest = argv[0], argv[1:]
    if command == "train":
        return train_command(rest)
    if command == "map":  # a multirun whose sweeper is the map (hydra_plugins/nin_map_sweeper)
        if any(a in ("-h", "--help") for a in rest):
            from nin_cli.config.map_settings import help_text

            print(help_text())
            return
        return train_command(["-m", "hydra/sweeper=map", *[a for a in rest if a not in ("-m", "--multirun")]])
    if command not in HANDLERS:
        fail(f"unknown command {command!r}; choose from: {', '.join(COMMANDS)}")
    HANDLERS[command](parser(command).parse_intermixed_args(rest))


def one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning as one `nin: warning:` line, without Python's source line."""
    print(f"nin: warning: {message}", file=file or sys.stderr)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    warnings.showwarning = one_line_warning
    try:
        with one_line_errors():
            dispatch(argv)
        sys.stdout.flush()
    except BrokenPipeError:  # `nin summarize DIR | head`: the reader left; so do we, quietly, as rich does
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise SystemExit(1) from None
