"""Shell completion for bash and zsh: the subcommands, their options, and Hydra's own override
completion for `nin train` (groups, options, keys).

    eval "$(nin --shell-completion install=bash)"    # or install=zsh; `nin train -sc install=bash` too

The installed function asks `nin -sc query=bash` with the shell's COMP_LINE: the first word after
`nin` completes to a command name; after `nin train` the rest of the line goes to Hydra's bash
completion (the same code `python app.py -sc query=bash` runs); after any other command, an
option name or an option's choices, else the shell completes file names.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys

from nin_cli.errors import ConfigError

# Imported where used: it runs at every TAB; Hydra is loaded only to complete a `nin train` line.

SCRIPT = """_nin_completion()
{
    local choices
    choices=$(COMP_LINE="${COMP_LINE:0:$COMP_POINT}" nin -sc query=bash 2>/dev/null)
    COMPREPLY=($(compgen -W "$choices" -- "${COMP_WORDS[COMP_CWORD]}"))
}
COMP_WORDBREAKS=${COMP_WORDBREAKS//=}
complete -o nospace -o default -F _nin_completion nin
"""
ZSH_PREFIX = "autoload -Uz bashcompinit && bashcompinit\n"


def shell_completion(args: list[str]) -> None:
    """`-sc install=bash|zsh` prints the script; `-sc query=bash|zsh` prints the candidates."""
    request = next((a for a in args if "=" in a and a.split("=", 1)[0] in ("install", "uninstall", "query")), None)
    if request is None:
        raise ConfigError("--shell-completion needs install=bash, install=zsh or query=bash")
    verb, shell = request.split("=", 1)
    if shell not in ("bash", "zsh"):
        raise ConfigError(f"shell completion is for bash and zsh, not {shell!r}")
    if verb == "install":
        print((ZSH_PREFIX if shell == "zsh" else "") + SCRIPT, end="")
    elif verb == "uninstall":
        print("complete -r nin 2>/dev/null; unset -f _nin_completion")
    else:
        print(" ".join(candidates(os.environ.get("COMP_LINE", ""))))


def candidates(line: str) -> list[str]:
    """What may come next on `line` (the command line up to the cursor, `nin` first)."""
    from nin_cli.interface.commands import COMMANDS, parser

    words = line.split()
    new_word = line.endswith(" ")
    typed = words[1:] if new_word else words[1:-1]  # complete words after `nin`
    current = "" if new_word else (words[-1] if len(words) > 1 else "")
    if not typed:
        return [c for c in [*COMMANDS, "--help", "--version"] if c.startswith(current)]
    command = typed[0]
    if command in ("train", "map"):  # `nin map` takes nin train's overrides
        return hydra_candidates(" ".join(["nin", *typed[1:], current]) + (" " if not current else ""))
    if command not in COMMANDS:
        return []
    actions = parser(command)._actions
    previous = typed[-1]
    for action in actions:
        if previous in action.option_strings and action.choices:
            return [str(c) for c in action.choices if str(c).startswith(current)]
    if current.startswith("-"):
        return sorted(o for a in actions for o in a.option_strings if o.startswith(current))
    positional = [a for a in actions if not a.option_strings and a.choices and a.dest != "help"]
    if positional and len(typed) == 1:  # `nin export <format>`, `nin download <dataset>`
        return [str(c) for c in positional[0].choices if str(c).startswith(current)]
    return []  # paths: the shell completes file names (-o default)


def hydra_candidates(line: str) -> list[str]:
    """Hydra's bash completion of a `nin train` line (`line` starts with the app's name)."""
    import hydra

    from nin_cli.config.schema import conf_dir

    out = io.StringIO()
    argv, environ = sys.argv, dict(os.environ)
    os.environ["COMP_LINE"] = line
    sys.argv = ["nin", "-sc", "query=bash"]
    try:
        with contextlib.redirect_stdout(out):
            # Hydra answers -sc before it would run the task: no task, so no torch and no runner (2 s at every TAB)
            hydra.main(config_path=str(conf_dir()), config_name="train", version_base="1.3")(lambda cfg: None)()
    except SystemExit:
        pass
    finally:
        sys.argv = argv
        os.environ.clear()
        os.environ.update(environ)
    return out.getvalue().split()
