"""The `nin` command: wires the stages together, nothing more.

`nin train ...` is a Hydra app (all of Hydra's flags work: -m, --cfg job, --help); the other
subcommands are plain argparse programs over run directories.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nin_cli.errors import ConfigError

COMMANDS = {
    "train": "train one model, or a sweep with -m (Hydra overrides: nin train model=mlp noise.sigma=3)",
    "download": "fetch a dataset with torchvision into the cache (needs the network)",
}


def conf_dir() -> Path:
    """conf/ ships inside the wheel as nin_cli/conf; in a source tree it is the repo's conf/."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "train.yaml").exists():
            return candidate
    raise RuntimeError(f"nin's config directory is missing (looked in {here / 'conf'} and {here.parent / 'conf'})")


def fail(message: str, code: int = 2) -> None:
    print(f"nin: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def check_group_choices(overrides: list[str], conf: Path) -> None:
    """Reject `group=option` for an option that does not exist, in one line, before Hydra starts."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    candidates = [o for o in overrides if "=" in o and not o.startswith("-")]
    try:
        parsed = OverridesParser.create().parse_overrides(candidates)
    except HydraException as exc:
        fail(str(exc).splitlines()[0])
    for override in parsed:
        group = override.key_or_group
        if "/" in group or "." in group or not (conf / group).is_dir() or override.is_delete():
            continue
        options = sorted(p.stem for p in (conf / group).glob("*.yaml"))
        values = list(override.sweep_string_iterator()) if override.is_sweep_override() else [override.get_value_element_as_str()]
        for value in values:
            if value not in options:
                fail(f"unknown {group} {value!r}; choose from: {', '.join(options)}")


def run_task(cfg) -> str:
    """Hydra's task function: one run in Hydra's output directory."""
    from hydra.core.hydra_config import HydraConfig

    from nin_cli.engine import Interrupted, console, train

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        result = train(cfg, run_dir)
    except ConfigError as exc:
        fail(str(exc))
    except Interrupted as exc:
        console.print(f"[red]{run_dir}: interrupted by {exc}; rerun with the same directory to resume")
        raise SystemExit(143) from None
    colour = {"completed": "green", "diverged": "yellow"}.get(result.status, "red")
    detail = f" ({result.reason})" if result.reason else ""
    console.print(f"[{colour}]{result.status}[/] at epoch {result.epoch}{detail}: {run_dir}")
    return result.status


def train_command(args: list[str]) -> None:
    import hydra

    conf = conf_dir()
    check_group_choices(args, conf)
    sys.argv = ["nin train", *args]
    hydra.main(config_path=str(conf), config_name="train", version_base="1.3")(run_task)()


def download_command(args: list[str]) -> None:
    from nin_cli.data import download

    parser = argparse.ArgumentParser(prog="nin download", description=COMMANDS["download"])
    parser.add_argument("dataset", choices=["fashion_mnist", "mnist", "cifar10"])
    parser.add_argument("--root", help="target directory (default: $NIN_DATA_DIR or ~/.cache/nin)")
    ns = parser.parse_args(args)
    print(f"downloaded {ns.dataset} to {download(ns.dataset, ns.root)}")


def usage() -> str:
    lines = ["usage: nin COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<10} {text}" for name, text in COMMANDS.items()]
    lines += ["", "`nin COMMAND --help` describes each command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return
    command, rest = argv[0], argv[1:]
    handlers = {"train": train_command, "download": download_command}
    if command not in handlers:
        fail(f"unknown command {command!r}; choose from: {', '.join(COMMANDS)}")
    try:
        handlers[command](rest)
    except ConfigError as exc:
        fail(str(exc))
