"""A run's config, resolved once: the one home of what a run *is*.

`resolve` turns a composed config (Hydra's, for a job) or a saved config.yaml (`load`) into a
`RunConfig`: interpolations resolved, the keys an older nin did not write filled with what that
run trained with, noise.sigma derived from noise.sigma2_paper, every value checked, and the flat
key -> value record that identity, resume, summaries and reports compare. Training, resume,
summarize, the notebook API, report, evaluate, predict and theory all take a run's config from
here, so no two of them can read it differently.

`check_command` is the same rule applied to a whole `nin train` command before anything trains:
every job of a sweep (the experiment's own grid included) is composed and resolved, and inputs
that contradict each other are refused in one line that names both sides.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import math
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from nin_cli.conventions import sigma2_per_paper_unit
from nin_cli.errors import ConfigError, RecordError
from nin_cli.schema import FACTORY_GROUPS, factory_groups, flatten, train_schema
from nin_cli.sources import Sources, current, from_entries, using

# What every config.yaml nin ever wrote holds: without one of them a saved config is damaged.
RUN_KEYS = (
    "seed",
    "device",
    "epochs",
    "batch_size",
    "model.name",
    "dataset.name",
    "nin.preset",
    "noise.sigma",
    "optimizer.name",
    "loss.name",
)
SIGMA_KEYS = ("noise.sigma", "noise.sigma2_paper")  # two names of one noise scale: a run gives one


@dataclass(frozen=True)
class RunConfig:
    """A run's config as it trains: `cfg` (nested, resolved, without Hydra's node) and `flat`
    (dotted key -> value, lists as tuples), the record every comparison of runs reads."""

    cfg: DictConfig
    flat: dict[str, Any]


# --- what a config written by an older nin meant -------------------------------------------------
def legacy_defaults(flat: Mapping) -> dict[str, Any]:
    """Values a config written before nin.init, nin.conv, loss.reduction, hessian.niw_curvature
    and eval.standard_errors existed ran with. nin.conv changes nothing in a network without
    convolutions: there the old config reads as the new default, so that an MLP run resumes as it
    always did."""
    from nin_cli.models import MODELS

    kind = MODELS.get(str(flat.get("model.name")))
    mse = flat.get("loss.name") == "mse"
    return {
        "nin.init": "unit",
        "nin.conv": "output" if kind is not None and kind.conv else "input",
        "loss.reduction": "half_sum" if mse else "mean",
        **({"loss.outputs": "logits"} if mse else {}),
        "hessian.niw_curvature": False,
        "eval.standard_errors": False,
    }


# Defaults an older nin had for keys it wrote: a run it trained is resumed by typing them back
# (check_same_run names them). The measurement defaults moved on 2026-11-29 so that measuring an
# epoch costs a fraction of training it (docs/speed.md).
FORMER_DEFAULTS: dict[str, Any] = {"eval.train_samples": None, "hessian.samples": 1000, "hessian.probes": 4}


def _fill_legacy(cfg: DictConfig) -> None:
    """Set the keys a saved config predates to the behaviour it was trained with (in place)."""
    if "tf32" in cfg and "precision" not in cfg:  # written before precision replaced the tf32 switch
        cfg.precision = "tf32" if cfg.tf32 else "fp32"
        del cfg["tf32"]
    keys = flatten(OmegaConf.to_container(cfg))
    for key, value in legacy_defaults(keys).items():
        group = key.split(".")[0] + "."
        if key not in keys and any(k.startswith(group) for k in keys):
            OmegaConf.update(cfg, key, value, force_add=True)


# --- resolving ------------------------------------------------------------------------------------
def flat(cfg: DictConfig) -> dict[str, Any]:
    """dotted key -> value of a config (resolved; Hydra's node left out), lists as tuples."""
    if "hydra" in cfg:
        cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    return flatten(OmegaConf.to_container(cfg, resolve=True))


def resolve(cfg: DictConfig, validate: bool = True) -> RunConfig:
    """The run `cfg` describes, resolved (see the module's docstring). With `validate`, every key
    is known, typed and in range, the robustness plan is valid and the dataset has the sizes asked."""
    try:
        plain = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    except Exception as exc:  # an interpolation that does not resolve
        raise ConfigError(f"config does not resolve: {str(exc).splitlines()[0]}") from None
    plain.pop("hydra", None)
    run = OmegaConf.create(plain)
    _fill_legacy(run)
    _fill_model_init(run)
    _derive_sigma(run)
    record = flat(run)
    if validate:
        _check(run, record)
    OmegaConf.set_struct(run, True)
    return RunConfig(run, record)


def load(path: Path, validate: bool = False) -> RunConfig:
    """A saved config.yaml, resolved as `resolve` does (a trained run is not re-validated: its
    config is what it was trained with). A damaged file is a RecordError naming it."""
    try:
        saved = OmegaConf.load(path)
    except FileNotFoundError:
        raise
    except Exception as exc:  # YAML or OmegaConf errors: the file is damaged
        raise RecordError(f"{path} is damaged ({type(exc).__name__}); cannot tell which run this directory holds") from None
    if not isinstance(saved, DictConfig):
        raise RecordError(f"{path} is damaged (not a mapping); cannot tell which run this directory holds")
    try:
        run = resolve(saved, validate)
    except ConfigError as exc:
        raise RecordError(f"{path} is damaged ({exc}); cannot tell which run this directory holds") from None
    missing = [key for key in RUN_KEYS if key not in run.flat]
    if missing:
        raise RecordError(f"{path} is damaged (no {', '.join(missing)}); cannot tell which run this directory holds")
    return run


def check_model_name(model: DictConfig) -> None:
    """A model is a shipped one by name, or names its factory (model.target / _target_)."""
    from nin_cli.models import model_kind
    from nin_cli.user_model import factory_target

    if factory_target(model) is None:
        model_kind(str(model.get("name")))


def _fill_model_init(run: DictConfig) -> None:
    """model.init where a config leaves it out: the papers' N(0, 1/fan_in) for a shipped model (all
    nin ever drew for them), the factory's own initialisation for a researcher's network."""
    from nin_cli.user_model import factory_target

    model = run.get("model")
    if isinstance(model, DictConfig) and "init" not in model:
        model.init = "factory" if factory_target(model) is not None else "fan_in"


def _derive_sigma(run: DictConfig) -> None:
    """`noise.sigma2_paper=u` writes the noise scale in the papers' units: noise.sigma = sqrt(u x unit)."""
    noise = run.get("noise")
    u = noise.get("sigma2_paper") if isinstance(noise, DictConfig) else None
    if u is None:
        return
    try:
        u = float(u)
    except (TypeError, ValueError):
        raise ConfigError(f"noise.sigma2_paper must be a number, got {u!r}") from None
    unit = sigma2_per_paper_unit(flat(run))
    if not (math.isfinite(u) and u >= 0 and math.isfinite(unit)):
        raise ConfigError(f"noise.sigma2_paper={u!r} cannot be converted for this run (needs a finite u >= 0, a known dataset and width)")
    run.noise.sigma = math.sqrt(u * unit)


def _check(run: DictConfig, record: dict[str, Any]) -> None:
    from nin_cli.data import check_sizes
    from nin_cli.loggers import check_installed
    from nin_cli.perturbations import plan

    schema = train_schema(*current().dirs)
    dataclasses.replace(schema, factory_prefixes=factory_groups(record)).check(record)
    check_model_name(run.model)
    check_sizes(run.dataset)
    check_installed(str(run.get("logger", {}).get("kind", "none")))
    if run.get("evaluate"):  # names of corruptions and attacks, checked before training too
        plan(run.robustness)


# --- sweeps ---------------------------------------------------------------------------------------
def parse(overrides: list[str]) -> list:
    """Hydra's own parse of command-line overrides; a malformed one is one ConfigError line."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        return OverridesParser.create().parse_overrides([o for o in overrides if not o.startswith("-")])
    except HydraException as exc:
        raise ConfigError(hydra_message(exc)) from None


def sweep_jobs(grid: Mapping[str, Any], overrides: list[str]) -> list[list[str]]:
    """Each job's overrides, as Hydra's basic sweeper makes them of an experiment's grid
    (hydra.sweeper.params) and the command's overrides: the cartesian product of every swept
    key's values, in key order, through Hydra's public override parser. A key given twice keeps
    its last values (check_command refuses that before a sweep runs)."""
    from hydra.core.override_parser.types import Glob

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


def check_group_choices(overrides: list[str], searchpath: list[str]) -> None:
    """`group=option` for an option that does not exist: one line that lists the group's options,
    as Hydra finds them (every config directory on the search path, and the plugins' own)."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.types import Glob

    loader = GlobalHydra.instance().config_loader()
    for override in parse(overrides):
        group = override.key_or_group
        globbed = override.is_sweep_override() and (not override.is_discrete_sweep() or isinstance(override.value(), Glob))
        if "." in group or override.is_delete() or globbed:
            continue  # a key, a deletion, or glob(): Hydra matches a glob against the options itself
        options = loader.get_group_options(group, config_name="train", overrides=searchpath)
        if not options:
            continue  # not a group
        values = list(override.sweep_string_iterator()) if override.is_sweep_override() else [override.get_value_element_as_str()]
        for value in values:
            if value not in options:
                close = difflib.get_close_matches(value, options, n=1, cutoff=0.6)
                hint = f"did you mean {close[0]}? " if close else ""
                raise ConfigError(f"unknown {group} {value!r}; {hint}choose from: {', '.join(options)}")


def command_sources(overrides: list[str], config_dirs: list[str]) -> tuple[Sources, list[str]]:
    """The config directories of a command (conf/, `--config-dir`s, `hydra.searchpath` entries),
    and its overrides with one `hydra.searchpath` that holds them all, for composing as Hydra does."""
    entries: list[str] = []
    rest: list[str] = []
    for item in overrides:
        key, _, value = item.partition("=")
        if key.lstrip("+") == "hydra.searchpath":
            listed = parse([item])[0].value() if value else []
            if not isinstance(listed, list):
                raise ConfigError(f"hydra.searchpath must be a list, e.g. hydra.searchpath=[file:///path/conf], got {value!r}")
            entries += [str(e) for e in listed]
        else:
            rest.append(item)
    entries += [f"file://{Path(d).expanduser().resolve()}" for d in config_dirs]
    sources = from_entries(entries)
    if sources.extra:
        rest.append(f"hydra.searchpath=[{','.join(sources.searchpath())}]")
    return sources, rest


def check_command(overrides: list[str], multirun: bool, config_dirs: list[str] = (), inspect: bool = False) -> tuple[list[str], Sources]:
    """Every job of the command composed, resolved and validated before the first one trains:
    unknown keys and options, Hydra's own config (hydra.launcher.*), a launcher that cannot start
    here, contradicting inputs, each job's values, and each distinct model built once (a factory
    that does not import, a NIN at a module that is not there). A ConfigError names the job and
    the value, against every config directory on the search path. Returns the overrides to
    compose with (`hydra.searchpath` holding every config directory) and those directories."""
    sources, overrides = command_sources(overrides, list(config_dirs))
    with using(sources):
        _check_command(overrides, multirun, sources, inspect)
    return overrides, sources


SWEEP_ONLY = ("hydra/launcher", "hydra.launcher", "hydra/sweeper", "hydra.sweeper")  # what only a multirun (-m) reads


def _check_command(overrides: list[str], multirun: bool, sources: Sources, inspect: bool = False) -> None:
    from hydra import compose, initialize_config_dir

    conf = sources.dirs[0]
    parsed = parse(overrides)
    for override in parsed if not multirun else []:
        key = override.key_or_group
        if override.is_sweep_override():
            raise ConfigError(f"{override.input_line} is a sweep: add -m (nin train -m ...) to train one run per value")
        if key.startswith(SWEEP_ONLY) and not inspect:
            raise ConfigError(
                f"{override.input_line} sets how a sweep runs, and this is one run: add -m (nin train -m ...), or leave it out"
            )
    schema = train_schema(*sources.dirs)
    for override in parsed:  # typos first, with the closest valid key
        key = override.key_or_group
        if key.startswith("hydra.") and override.is_sweep_override():
            raise ConfigError(f"{override.input_line}: Hydra's own settings are not swept; quote a list value: {key}='...'")
        adds_argument = override.input_line.startswith("+") and key.startswith(FACTORY_GROUPS)  # checked once composed
        if not key.startswith("hydra") and not sources.is_group(key) and not adds_argument:
            schema.check_key(key)
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        check_group_choices(overrides, [o for o in overrides if o.startswith("hydra.searchpath=")])
        try:
            base = compose("train", overrides=fixed, return_hydra_config=True)
        except Exception as exc:  # Hydra's composition errors
            raise ConfigError(_composition_error(exc, fixed, compose)) from None
        grid = {str(k): str(v) for k, v in (base.hydra.sweeper.get("params") or {}).items()} if multirun else {}
        check_output_dir(base, multirun)
        if multirun:
            check_launcher(base)
        check_conflicts(parsed, grid, base)
        jobs = sweep_jobs(grid, overrides) if multirun else [[o for o in overrides if not o.startswith("-")]]
        varied = tuple(f"{k.lstrip('+~')}=" for k in {*grid, *(o.key_or_group for o in parsed if o.is_sweep_override())})
        built: set[str] = set()
        for job in jobs:
            where = f" (sweep job {' '.join(o.lstrip('+') for o in job if o.lstrip('+').startswith(varied))})" if varied else ""
            try:
                run = resolve(without_hydra(base) if job == fixed else compose("train", overrides=job))  # a single run: composed once
                check_builds(run, built)
            except ConfigError as exc:
                raise ConfigError(f"{exc}{where}") from None
            except Exception as exc:  # Hydra's composition errors: the message says it
                raise ConfigError(f"{hydra_message(exc)}{where}") from None


def check_builds(run: RunConfig, built: set[str]) -> None:
    """The run's model built once per distinct model, NIN and input shape (on the CPU, no data):
    a factory that fails, a NIN at a module that is not there, a forward pass that never reaches it."""
    from nin_cli.data import input_output_shape
    from nin_cli.network import build_model

    key = repr(sorted((k, v) for k, v in run.flat.items() if k.startswith(("model.", "nin.", "dataset."))))
    if key in built:
        return  # a sweep's jobs that differ in seed or sigma only: the data's files are not read again
    built.add(key)
    shape = input_output_shape(run.cfg.dataset, probe=False)
    if shape is not None:  # None: a dataset factory, whose shapes are known once it is loaded (open_run builds the model then)
        build_model(run.cfg.model, run.cfg.nin, shape[0], shape[1], int(run.cfg.seed))


def without_hydra(cfg: DictConfig) -> DictConfig:
    """A config composed with return_hydra_config=True, as compose() without it returns it."""
    job = cfg.copy()
    with open_dict(job):
        del job["hydra"]
    return job


def _composition_error(exc: Exception, fixed: list[str], compose) -> str:
    """Hydra's message, plus the closest key where a typed key does not exist (hydra.launcher.batchsize)."""
    message = hydra_message(exc)
    for item in fixed:
        key = item.split("=", 1)[0].lstrip("+~")
        if f"'{key}'" not in message or "." not in key:
            continue
        parent, leaf = key.rsplit(".", 1)
        try:
            node = OmegaConf.select(compose("train", overrides=[f for f in fixed if f != item], return_hydra_config=True), parent)
        except Exception:
            break
        if isinstance(node, DictConfig) and leaf not in node:  # a key that does not exist (else Hydra's words say it)
            close = difflib.get_close_matches(leaf, [str(k) for k in node.keys()], n=1, cutoff=0.6)
            return f"unknown config key {key!r}" + (f"; did you mean {parent}.{close[0]}?" if close else f" ({message})")
        break
    return message


def check_output_dir(base: DictConfig, multirun: bool) -> None:
    """hydra.run.dir (a run) or hydra.sweep.dir (a sweep) must be a directory nin can make: not a
    file, nor under one."""
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    try:
        where = Path(str(OmegaConf.select(base, key)))
    except Exception as exc:  # an interpolation that does not resolve
        raise ConfigError(f"{key} does not resolve: {str(exc).splitlines()[0]}") from None
    for path in (where, *where.parents):
        if path.exists():
            if not path.is_dir():
                raise ConfigError(f"{key}={where}: {path} is a file, not a directory")
            return


def check_launcher(base: DictConfig) -> None:
    """The launcher's own settings (an ensemble of at least one run); a SLURM launcher needs
    SLURM's sbatch here, and a request that a node of its partition can satisfy; say so before
    Hydra's submitit fails or a job waits forever."""
    from nin_cli.cluster import check_request

    size = base.hydra.launcher.get("batch_size") if "nin_batched_launcher" in str(base.hydra.launcher.get("_target_", "")) else None
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise ConfigError(f"hydra.launcher.batch_size (runs per ensemble) must be an integer >= 1, got {size!r}")
    for key, least in (("array_parallelism", 1), ("timeout_min", 1), ("max_num_timeout", 0)):
        value = base.hydra.launcher.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value < least:
            raise ConfigError(f"hydra.launcher.{key} must be >= {least}, got {value}")
    target = str(base.hydra.launcher.get("_target_", ""))
    if "Slurm" not in target:
        return
    if shutil.which("sbatch") is None:
        choice = base.hydra.runtime.choices.get("hydra/launcher", "slurm")
        raise ConfigError(
            f"hydra/launcher={choice} submits to SLURM, but sbatch is not on PATH here: run on the cluster's login node, "
            "or train on this machine with hydra/launcher=batched"
        )
    check_request(OmegaConf.to_container(base.hydra.launcher, resolve=False))


def check_conflicts(parsed: list, grid: Mapping[str, str], base: DictConfig) -> None:
    """Refuse what would train something other than what was typed: noise.sigma and
    noise.sigma2_paper both given (typed or swept: sigma2_paper would silently win), and a typed
    key that the experiment's grid sweeps too (one would silently replace the other)."""
    typed = {o.key_or_group: o for o in parsed}
    given = {k: f"{typed[k].input_line.lstrip('+')} (typed)" for k in SIGMA_KEYS if k in typed}
    for key in SIGMA_KEYS:
        if key in grid and key not in typed:
            given[key] = f"{key}={grid[key]} (the experiment's grid, hydra.sweeper.params)"
    if len(given) == 2:
        raise ConfigError(
            f"{given['noise.sigma']} and {given['noise.sigma2_paper']} both set the noise scale; give one of them"
            + _sigma_hint(typed, grid, base)
        )
    for key, override in typed.items():
        if key in grid:
            value = override.input_line.split("=", 1)[1]
            replace = f"\"hydra.sweeper.params={{{key}:'{value}'}}\""
            raise ConfigError(
                f"{key}={value} is typed and the experiment's grid sweeps {key}={grid[key]}: one would silently replace the other; "
                f"to run other values of the grid's key, replace its entry: {replace}"
            )


def _sigma_hint(typed: Mapping, grid: Mapping[str, str], base: DictConfig) -> str:
    """Where the grid sweeps one name and the other was typed: the typed values in the grid's units."""
    unit = sigma2_per_paper_unit(flat(base))
    for grid_key, typed_key in (("noise.sigma2_paper", "noise.sigma"), ("noise.sigma", "noise.sigma2_paper")):
        if grid_key in grid and typed_key in typed and math.isfinite(unit):
            values = [job[0].split("=", 1)[1] for job in sweep_jobs({}, [typed[typed_key].input_line])]
            try:
                numbers = [float(v) for v in values]
            except ValueError:
                return ""
            converted = [v * v / unit for v in numbers] if grid_key == "noise.sigma2_paper" else [math.sqrt(v * unit) for v in numbers]
            text = ",".join(f"{v:.6g}" for v in converted)
            return f"; your values in the grid's terms: \"hydra.sweeper.params={{{grid_key}:'{text}'}}\""
    return ""
