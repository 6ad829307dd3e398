"""The typed schema of every config nin reads: each key, its type, its range or choices.

The key set and the types come from `conf/` itself (every option of every group, with its
package), plus the few declarations below for keys whose default is null; the rules say what a
value must be. `nin train` checks every job of a sweep against it before the first one trains,
and the analysis commands check their overrides the same way, so a typo or a bad value is one
`nin: error:` line, never a traceback half-way through a sweep.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from nin_cli.config.yaml_io import read_yaml
from nin_cli.errors import ConfigError

# Imported where used: the analysis and completion read settings without torch; the choices the
# networks define are read from nets/ when a config is checked.

MISSING = "???"

# Keys whose default is null: the type a set value must have.
NULLABLE: dict[str, type] = {
    "target_train_acc": float,
    "eval.train_samples": int,
    "dataset.root": str,
    "dataset.train_size": int,
    "dataset.n_classes": int,
    "dataset.test_size": int,
    "noise.sigma2_paper": float,
    "robustness.test_size": int,
    "robustness.attack_test_size": int,
    "robustness.corruptions": dict,  # a table, or null: no corruptions
    "model.target": str,  # the network's factory, pkg.module:function (nin_cli/nets/network.py; nin's own: conf/model)
    "model._target_": str,  # ... or Hydra's way, pkg.module.function
    "dataset.path": str,  # dataset=arrays: the .npz file
    "dataset.target": str,  # a researcher's data: a factory of four arrays (nin_cli/data/user_data.py)
    "dataset._target_": str,
    "logger.dir": str,
    "logger.tracking_uri": str,
}

# Keys whose values may also be of another type than their default's.
# A NIW's scale is a name (layer | input | unit) or a std, whichever the shipped default is.
NIW_SCALE = {str, float}
ALSO: dict[str, set[type]] = {"nin.init": NIW_SCALE, "model.ninr_init": NIW_SCALE, "eval.batch_size": {str, int}}

FACTORY_GROUPS = ("model.", "dataset.")  # groups whose config may name a factory: keys nin does not know are its arguments


def factory_groups(flat: Mapping[str, Any]) -> tuple[str, ...]:
    """The groups of FACTORY_GROUPS whose keys in `flat` name a factory (`model._target_`, `dataset.target`)."""
    return tuple(g for g in FACTORY_GROUPS if f"{g}_target_" in flat or f"{g}target" in flat)


Rule = tuple[Callable[[Any], bool], str]
POSITIVE: Rule = (lambda v: v > 0, "> 0")
NON_NEGATIVE: Rule = (lambda v: v >= 0, ">= 0")
AT_LEAST_ONE: Rule = (lambda v: v >= 1, ">= 1")
FRACTION: Rule = (lambda v: 0 < v <= 1, "in (0, 1]")

TRAIN_RULES: dict[str, Rule] = {
    "epochs": AT_LEAST_ONE,
    "batch_size": AT_LEAST_ONE,
    "seed": NON_NEGATIVE,
    "target_train_acc": FRACTION,
    "eval.batch_size": AT_LEAST_ONE,
    "eval.train_samples": AT_LEAST_ONE,
    "log.every_steps": NON_NEGATIVE,
    "hessian.probes": NON_NEGATIVE,
    "hessian.samples": AT_LEAST_ONE,
    "divergence.max_loss": POSITIVE,
    "divergence.factor": POSITIVE,
    "checkpoint.every": AT_LEAST_ONE,
    "noise.sigma": NON_NEGATIVE,
    "nin.init": POSITIVE,  # where it is a number
    "model.ninr_init": POSITIVE,
    "noise.sigma2_paper": NON_NEGATIVE,
    "noise.schedule.end": NON_NEGATIVE,
    "noise.schedule.gamma": POSITIVE,
    "noise.schedule.step_size": AT_LEAST_ONE,
    "optimizer.lr": POSITIVE,
    "optimizer.momentum": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "regularization.weight_decay": NON_NEGATIVE,
    "regularization.input_noise": NON_NEGATIVE,
    "model.depth": AT_LEAST_ONE,
    "model.width": AT_LEAST_ONE,
    "model.hidden": AT_LEAST_ONE,
    "model.dropout": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "dataset.train_size": AT_LEAST_ONE,
    "dataset.test_size": AT_LEAST_ONE,
    "dataset.train_fraction": (lambda v: 0 < v < 1, "in (0, 1)"),
    "dataset.n_train": AT_LEAST_ONE,
    "dataset.n_test": AT_LEAST_ONE,
    "dataset.n_classes": (lambda v: v >= 2, ">= 2"),
    "dataset.dim": AT_LEAST_ONE,
    "dataset.sigma_x": POSITIVE,
}
# conf/robustness/default.yaml: checked by `nin evaluate` (these keys) and by `nin train` (robustness.KEY)
ROBUSTNESS_RULES: dict[str, Rule] = {
    "test_size": AT_LEAST_ONE,
    "attack_test_size": AT_LEAST_ONE,
    "batch_size": AT_LEAST_ONE,
    "pgd_steps": NON_NEGATIVE,
    "apgd_steps": AT_LEAST_ONE,
    "n_classes": (lambda v: v >= 2, ">= 2"),
}
TRAIN_RULES.update({f"robustness.{k}": rule for k, rule in ROBUSTNESS_RULES.items()})


def train_choices() -> dict[str, tuple[str, ...]]:
    """Keys with a fixed set of values, read from the modules that implement them."""
    from nin_cli.nets.conv_block import FUSED_BLOCK
    from nin_cli.nets.nin import CONV_PLACEMENTS, MODEL_INITS, NIW_INITS
    from nin_cli.nets.noise import DISTRIBUTIONS, MODES, SCHEDULES
    from nin_cli.nets.objectives import LOSSES, OUTPUTS, REDUCTIONS
    from nin_cli.nets.optimizers import OPTIMIZERS, PRECISIONS

    return {
        "device": ("auto", "cpu", "cuda"),
        "precision": PRECISIONS,
        "eval.batch_size": ("auto",),  # or a number
        "fused_block": FUSED_BLOCK,
        "engine_change": ("refuse", "allow"),
        "model.init": MODEL_INITS,  # model.name: a shipped model's, or any with a factory (network.build_model checks)
        "noise.distribution": tuple(DISTRIBUTIONS),
        "noise.mode": MODES,
        "noise.schedule.kind": tuple(SCHEDULES),
        "nin.preset": ("none", "input", "all", "layers"),
        "nin.init": NIW_INITS,
        "model.ninr_init": NIW_INITS,  # the NINR methods' nin.init
        "nin.conv": CONV_PLACEMENTS,
        "loss.name": tuple(LOSSES),
        "loss.reduction": REDUCTIONS,
        "loss.outputs": OUTPUTS,
        "optimizer.name": tuple(OPTIMIZERS),
        "dataset.split": ("standard", "fraction"),
    }


@dataclass
class Schema:
    """Key -> the types its values may have (NoneType where null is allowed), and the rules."""

    types: dict[str, set[type]]
    rules: dict[str, Rule] = field(default_factory=dict)
    choices: dict[str, tuple[str, ...]] = field(default_factory=dict)
    open_prefixes: tuple[str, ...] = ()  # tables whose entries are free (e.g. corruption name -> severities)
    factory_prefixes: tuple[str, ...] = ()  # groups that name a factory: keys nin does not know are its arguments

    def known(self, key: str) -> bool:
        """A leaf, a whole table (robustness.corruptions={...}), or an entry of an open table."""
        return (
            key in self.types
            or key.startswith(self.open_prefixes + self.factory_prefixes)
            or any(k.startswith(key + ".") for k in self.types)
        )

    def suggest(self, key: str) -> str:
        close = difflib.get_close_matches(key, list(self.types), n=1, cutoff=0.6)
        return f"; did you mean {close[0]}?" if close else ""

    def check_key(self, key: str) -> None:
        if not self.known(key):
            raise ConfigError(f"unknown config key {key!r}{self.suggest(key)}")

    def check(self, flat: Mapping[str, Any]) -> None:
        """Every leaf of a resolved, flattened config: known key, right type, finite, in range."""
        for key, value in flat.items():
            self.check_key(key)
            if key.startswith(self.open_prefixes) or (key not in self.types and key.startswith(self.factory_prefixes)):
                continue
            self.check_value(key, value)

    def check_finite(self, key: str, value: Any) -> None:
        """nan and inf refused for a number setting: none takes them (the pre-flight asks this of
        the command's own values before it composes anything)."""
        if isinstance(value, float) and not math.isfinite(value) and self.types.get(key, set()) & {int, float}:
            raise ConfigError(f"{key} must be a finite number, got {value!r}")

    def check_value(self, key: str, value: Any) -> None:
        if value == MISSING:
            raise ConfigError(f"{key} must be set (e.g. {key}=...)")
        allowed = self.types.get(key, set())
        if value is None:
            if type(None) in allowed:
                return
            raise ConfigError(f"{key} must be set, got null")
        if not any(_is(value, kind) for kind in allowed):
            wanted = " or ".join(sorted(TYPE_NAMES[k] for k in allowed if k in TYPE_NAMES))
            raise ConfigError(f"{key} must be {wanted}, got {value!r}")
        self.check_finite(key, value)
        if isinstance(value, (tuple, list)) and any(isinstance(v, (tuple, list, Mapping)) for v in value):
            raise ConfigError(f"{key} must be a list of values (names or numbers), got {value!r}")
        if key in self.choices and isinstance(value, str) and value not in self.choices[key]:
            number = f" or a number {self.rules[key][1]}" if allowed & {float, int} and key in self.rules else ""
            raise ConfigError(f"{key} must be one of {', '.join(self.choices[key])}{number}, got {value!r}")
        if key in self.rules and isinstance(value, (int, float)) and not isinstance(value, bool):
            ok, text = self.rules[key]
            if not ok(value):
                raise ConfigError(f"{key} must be {text}, got {value!r}")


TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string", tuple: "a list"}


def _is(value: Any, kind: type) -> bool:
    if kind is bool or isinstance(value, bool):
        return kind is bool and isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float))
    if kind is tuple:
        return isinstance(value, (tuple, list))
    return isinstance(value, kind)


def flatten(d: Mapping, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists become tuples (hashable, comparable)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, f"{key}."))
        else:
            out[key] = tuple(v) if isinstance(v, list) else v
    return out


def _package(path: Path, default: str) -> str:
    match = re.search(r"^#\s*@package\s+(\S+)", path.read_text(), re.MULTILINE)
    return match.group(1) if match else default


def _value_type(value: Any) -> type:
    if isinstance(value, str) and value.startswith("${"):
        return float  # an interpolation (e.g. a method's sigma preset) resolves to a number
    if isinstance(value, bool):
        return bool
    if isinstance(value, int):
        return int
    if isinstance(value, tuple):
        return tuple
    return type(value)


def _collect(types: dict[str, set[type]], flat: Mapping[str, Any]) -> None:
    for key, value in flat.items():
        kinds = types.setdefault(key, set())
        if value != MISSING:  # "???" (must be set) says nothing of the type
            kinds.add(_value_type(value))


def conf_dir() -> Path:
    """conf/ ships inside the wheel as nin_cli/conf; in a source tree it is the repo's conf/."""
    here = Path(__file__).resolve().parents[1]  # nin_cli/
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "train.yaml").exists():
            return candidate
    raise RuntimeError(f"nin's config directory is missing (looked in {here / 'conf'} and {here.parent / 'conf'})")


def train_schema(*dirs: Path) -> Schema:
    """The schema of `nin train`'s config: train.yaml plus every option of every group, from
    conf/ and then from each config directory a user adds on the search path (nin_cli/config/sources.py).
    A user's option may set only keys nin knows, with values of their types (one line naming the
    file and the key otherwise), except the arguments of a factory it names (`_target_`)."""
    return Schema(_train_types(tuple(dirs) or (conf_dir(),)), TRAIN_RULES, train_choices(), open_prefixes=("robustness.corruptions.",))


@lru_cache(maxsize=8)
def _train_types(dirs: tuple[Path, ...]) -> dict[str, set[type]]:
    types: dict[str, set[type]] = {}
    top = read_yaml(dirs[0] / "train.yaml")
    _collect(types, flatten({k: v for k, v in top.items() if k not in ("defaults", "hydra")}))
    for group, option in _options(dirs[0]):
        _collect(types, _option_keys(option, group))
    for key, kind in NULLABLE.items():
        types.setdefault(key, set()).update({kind, type(None)})
    for key, kinds in ALSO.items():
        types.setdefault(key, set()).update(kinds)
    user = [(option, _option_keys(option, group)) for conf in dirs[1:] for group, option in _options(conf)]
    for _, keys in user:  # a factory's arguments first: an experiment may set them too
        free = factory_groups(keys)
        for key, value in keys.items():
            if free and key.startswith(free):
                types.setdefault(key, set()).add(_value_type(value))
    known = Schema({k: set(v) for k, v in types.items()}, TRAIN_RULES, train_choices(), open_prefixes=("robustness.corruptions.",))
    for option, keys in user:
        for key, value in keys.items():
            if not known.known(key):
                raise ConfigError(f"{option}: unknown config key {key!r}{known.suggest(key)}")
            if value == MISSING or (isinstance(value, str) and value.startswith("${")) or key.startswith(known.open_prefixes):
                continue
            try:
                known.check_value(key, value)
            except ConfigError as exc:
                raise ConfigError(f"{option}: {exc}") from None
    return types


def _options(conf: Path) -> list[tuple[str, Path]]:
    """(group, option file) of a config directory, Hydra's own group (hydra/) aside."""
    groups = sorted(p for p in conf.iterdir() if p.is_dir() and p.name != "hydra")
    return [(group.name, option) for group in groups for option in sorted(group.glob("*.yaml"))]


def _option_keys(option: Path, group: str) -> dict[str, Any]:
    """An option file's keys (dotted, under its package) and values; one line naming a file that does not parse."""
    try:
        package = _package(option, group)
        body = read_yaml(option) or {}
    except Exception as exc:
        raise ConfigError(f"{option} does not parse: {str(exc).splitlines()[0]}") from None
    if not isinstance(body, dict):
        raise ConfigError(f"{option} is not a mapping of config keys")
    body = {k: v for k, v in body.items() if k not in ("defaults", "hydra")}
    return flatten(body, "" if package == "_global_" else f"{package}.")


def file_schema(path: Path, open_prefixes: tuple[str, ...] = (), rules: dict[str, Rule] | None = None) -> Schema:
    """The schema of a flat settings file (analysis.yaml, robustness/default.yaml): its own keys and types."""
    types: dict[str, set[type]] = {}
    _collect(types, flatten(read_yaml(path)))
    for key, kind in NULLABLE.items():
        short = key.removeprefix("robustness.")
        if short != key and (short in types or any(k.startswith(f"{short}.") for k in types)):  # a leaf, or a table
            types.setdefault(short, set()).update({kind, type(None)})
    return Schema(types, rules or {}, {}, open_prefixes)


# The settings files of the commands that read runs (nin summarize, report, plot, theory, predict,
# map: analysis.yaml; nin evaluate: robustness/default.yaml), each with what its schema leaves open.
SETTINGS = {
    "analysis": ("analysis.yaml", (), {}),
    "robustness": (str(Path("robustness", "default.yaml")), ("corruptions.",), ROBUSTNESS_RULES),
}


def load_settings(name: str, overrides: Sequence[str] | None = ()) -> DictConfig:
    """A command's settings file (SETTINGS) with `key=value` overrides, each checked against the
    file's own keys and types: the one loader of analysis and evaluation settings. As Hydra does for
    `nin train robustness.KEY=...`, a table merges into the file's (corruptions={rotate: [1, 5]}
    changes rotate's levels) and a list replaces a list."""
    file, open_prefixes, rules = SETTINGS[name]
    path = conf_dir() / file
    cfg = OmegaConf.load(path)
    for key, value in check_overrides(file_schema(path, open_prefixes, rules), list(overrides or ())).items():
        OmegaConf.update(cfg, key, list(value) if isinstance(value, tuple) else value)
    return cfg


def _leaves(value: Any) -> list[Any]:
    """Every scalar inside a parsed value (lists and tables walked)."""
    if isinstance(value, Mapping):
        return [leaf for v in value.values() for leaf in _leaves(v)]
    if isinstance(value, (list, tuple)):
        return [leaf for v in value for leaf in _leaves(v)]
    return [value]


def check_overrides(schema: Schema, overrides: list[str]) -> dict[str, Any]:
    """key=value overrides of a settings file, parsed as YAML values and checked; the flat result."""
    parsed: dict[str, Any] = {}
    for item in overrides:
        key, _, text = item.partition("=")
        schema.check_key(key)
        value = OmegaConf.to_container(OmegaConf.from_dotlist([f"v={text}"]))["v"]
        if any(isinstance(v, str) and ("${" in v or v == "???") for v in _leaves(value)):
            raise ConfigError(f"{key}={text}: a setting here is a value (a number, a name, a list), not an interpolation or ???")
        value = tuple(value) if isinstance(value, list) else value
        if isinstance(value, dict) and key.startswith(schema.open_prefixes):
            raise ConfigError(f"{key}={text}: a table where one entry's value belongs")
        if isinstance(value, dict) and key not in schema.types:  # a whole table: each of its entries
            schema.check(flatten(value, f"{key}."))
        elif not key.startswith(schema.open_prefixes):
            schema.check_value(key, value)
        parsed[key] = value
    return parsed
