"""The pre-flight of `nin train`, `nin map` and `nin predict`: every job of a command composed,
resolved (nin_cli/config/resolve.py) and checked before the first one trains. Inputs that contradict each
other are refused in one line that names both sides; Hydra's own errors are reworded to one line;
the launcher's settings are checked against what it can do here. The overrides are parsed and a
sweep's jobs expanded by config/overrides.py.
"""

from __future__ import annotations

import difflib
import math
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.types import Glob
from omegaconf import DictConfig, OmegaConf, open_dict

from nin_cli.config.cluster import check_request
from nin_cli.config.legacy import RENAMED
from nin_cli.config.overrides import hydra_message, parse, sweep_jobs
from nin_cli.config.plan import Composition, Plan
from nin_cli.config.resolve import SIGMA_KEYS, RunConfig, group_choices, named_by_choice, resolve, without_hydra
from nin_cli.config.schema import FACTORY_GROUPS, train_schema
from nin_cli.config.sources import Sources, current, from_entries, using
from nin_cli.data import user_data
from nin_cli.errors import ConfigError
from nin_cli.nets.network import built_from
from nin_cli.units import sigma2_per_paper_unit


def check_group_choices(parsed: list, searchpath: list[str]) -> None:
    """`group=option` for an option that does not exist (`parsed`: the command's overrides, parsed):
    one line that lists the group's options, as Hydra finds them (every config directory on the
    search path, and the plugins' own)."""
    loader = GlobalHydra.instance().config_loader()
    for override in parsed:
        group = override.key_or_group
        globbed = override.is_sweep_override() and (not override.is_discrete_sweep() or isinstance(override.value(), Glob))
        if "." in group or override.is_delete() or globbed:
            continue  # a key, a deletion, or glob(): Hydra matches a glob against the options itself
        if "/" not in group and not current().is_group(group):
            continue  # a top-level key (epochs=3): no config directory has a folder of that name
        if group.startswith("hydra/"):  # Hydra's groups: their options are its plugins' too
            options = loader.get_group_options(group, config_name="train", overrides=searchpath)
        else:  # nin's: the option files of the command's config directories (Hydra's listing of them, without its search)
            options = current().options(group)
        if not options:
            continue  # not a group
        values = list(override.sweep_string_iterator()) if override.is_sweep_override() else [override.get_value_element_as_str()]
        for value in values:
            if value not in options:
                close = difflib.get_close_matches(value, options, n=1, cutoff=0.6)
                hint = f"did you mean {close[0]}? " if close else ""
                own = f"; or, a {group} of your own: add --config-dir DIR with {group}/{value}.yaml in it" if "/" not in group else ""
                raise ConfigError(f"unknown {group} {value!r}; {hint}choose from: {', '.join(options)}{own}")


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


def check_command(overrides: list[str], multirun: bool, config_dirs: list[str] = (), inspect: bool = False) -> Plan:
    """Every job of the command composed, resolved and validated before the first one trains:
    unknown keys and options, Hydra's own config (hydra.launcher.*), a launcher that cannot start
    here, contradicting inputs, each job's values, and each distinct model built once (a factory
    that does not import, a NIN at a module that is not there). A ConfigError names the job and
    the value, against every config directory on the search path. Returns the command's plan
    (config/plan.py): the overrides to compose with (`hydra.searchpath` holding every config
    directory), those directories, and each job's RunConfig and composition."""
    sources, overrides = command_sources(overrides, list(config_dirs))
    plan = Plan(sources, overrides)
    with using(sources):
        _check_command(plan, multirun, inspect)
    return plan


SWEEP_ONLY = ("hydra/launcher", "hydra.launcher", "hydra/sweeper", "hydra.sweeper")  # what only a multirun (-m) reads


def _check_command(plan: Plan, multirun: bool, inspect: bool = False) -> None:
    overrides, sources = plan.overrides, plan.sources

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
            if not override.is_sweep_override():  # before anything is composed: no setting takes nan or inf
                schema.check_finite(key, override.value())
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    with hydra.initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        check_group_choices(parsed, [o for o in overrides if o.startswith("hydra.searchpath=")])
        try:
            base = hydra.compose("train", overrides=fixed, return_hydra_config=True)
        except Exception as exc:  # Hydra's composition errors
            raise ConfigError(_composition_error(exc, fixed, hydra.compose)) from None
        compose_job = JobComposer(hydra.compose, sources)
        if multirun:  # the jobs that sweep no group choice share the fixed overrides' groups: base is their structure
            compose_job.composed_already([o for o in parsed if not o.is_sweep_override()], base.copy())
        with open_dict(base):
            named_by_choice(base, group_choices(base))
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
                if job == fixed:  # a single run: composed once, above
                    composed, run = base, resolve(without_hydra(base))
                else:
                    job_cfg, composed = compose_job(job)
                    run = resolve(job_cfg)
                check_builds(run, built)
                plan.add(job, run, composed if multirun else None)
            except ConfigError as exc:
                raise ConfigError(f"{exc}{where}") from None
            except Exception as exc:  # Hydra's composition errors: the message says it
                raise ConfigError(f"{hydra_message(exc)}{where}") from None


class JobComposer:
    """Each job's composition, with Hydra's composition once per distinct structure of a sweep.

    Hydra composes a job in two parts: the defaults tree its config-group choices select
    (model=cnn, +experiment=fig3, hydra/launcher=...), then its other overrides applied to that
    tree's config in order (noise.sigma=3, seed=1: `_apply_overrides_to_config`). Jobs of a sweep
    that differ in values only share the first part: it is composed once (with every override that
    is not a plain value: group choices, hydra.*, +/~/++), and each job's values are applied to it
    by Hydra's own function, in the job's order (plan.Composition). The result is Hydra's
    composition of the job, but for Hydra's node, of which it keeps the choices (all the launcher
    reads: batched_launcher.with_sweeps_hydra_node); tests/config/test_orchestration.py compares the two
    job by job."""

    def __init__(self, compose, sources: Sources):
        self.compose, self.sources = compose, sources
        self.templates: dict[tuple[str, ...], DictConfig] = {}
        self.compositions: dict[tuple[str, ...], DictConfig] = {}
        self.parsed: dict[str, Any] = {}  # each distinct override parsed once (a sweep's values repeat across its jobs)
        self.known: tuple[tuple[str, ...], DictConfig] | None = None

    def composed_already(self, parsed: list, composed: DictConfig) -> None:
        """Hydra's composition of the command's fixed overrides (`parsed`), which the caller made
        already: a structure of the same structural overrides is made from it, not composed again.
        Its fixed values are set in it, but every job sets them too (a job is the fixed overrides
        and its swept values), in the job's order, so the job's config is the same."""
        self.known = (tuple(o.input_line for o in parsed if self.structural(o)), composed)

    def composed(self, lines: tuple[str, ...]) -> DictConfig:
        """Hydra's composition of these structural overrides, made once: structures that differ
        in the keys their values set share it (each has a template of its own, a copy)."""
        if lines not in self.compositions:
            known = self.known is not None and self.known[0] == lines
            self.compositions[lines] = self.known[1] if known else self.compose("train", overrides=list(lines), return_hydra_config=True)
        return self.compositions[lines]

    def structural(self, override) -> bool:
        key = override.key_or_group
        plain = not (override.is_delete() or override.is_add() or override.is_force_add() or override.package is not None)
        return not plain or key.startswith("hydra") or self.sources.is_group(key) or "/" in key

    def __call__(self, job: list[str]) -> tuple[DictConfig, Composition]:
        """(the job's config to resolve now, its Composition for the launcher). The first is the
        structure's template with the job's values set in place: the jobs of a structure set the
        same keys (the structure names them), each over the last's; a value that merges, a
        mapping, is set in a copy instead."""
        parsed = [self.parsed[o] if o in self.parsed else self.parsed.setdefault(o, parse([o])[0]) for o in job]
        lines = tuple(o.input_line for o in parsed if self.structural(o))
        values = tuple(o for o in parsed if not self.structural(o))
        structure = (*lines, *(f"{o.key_or_group}=" for o in values))
        if structure not in self.templates:
            composed = self.composed(lines)  # read, not changed: the template below is a copy
            template = composed.copy()
            with open_dict(template):  # in its place (first), as in Hydra's composition
                template.hydra = {"runtime": {"choices": dict(composed.hydra.runtime.choices)}}
            self.templates[structure] = template
        composition = Composition(self.templates[structure], values)
        if not composition.in_place:
            return composition.make(), composition
        composition.apply(composition.template)
        return composition.template, composition


def check_builds(run: RunConfig, built: set[str]) -> None:
    """The run's model built once per distinct model, NIN and input shape (on the CPU, no data):
    a factory that fails, a NIN at a module that is not there, a forward pass that never reaches
    it, outputs that do not fit the data's targets (check_outputs)."""
    key = repr(sorted((k, v) for k, v in run.flat.items() if k.startswith(("model.", "nin.", "dataset."))))
    if key in built:
        return  # a sweep's jobs that differ in seed or sigma only: the data's files are not read again
    built.add(key)
    made = built_from(run.cfg.model, run.cfg.nin, run.cfg.dataset, int(run.cfg.seed))
    if made is not None:  # None: a dataset factory, whose shapes are known once it is loaded (open_run builds the model then)
        check_outputs(run.cfg, *made)


def check_outputs(cfg: DictConfig, model, shape: tuple[tuple[int, ...], int]) -> None:
    """The network's outputs fit the data's targets (one dry forward pass on the CPU): as many as
    the classes its labels name, or as wide as a regression's targets; class labels written one-hot
    are named as such. What would otherwise fail mid-training, or train on the wrong problem."""
    in_shape, n_out = shape
    model.eval()
    with torch.no_grad():
        width = int(model(torch.zeros(2, *in_shape)).shape[-1])
    summary = user_data.label_summary(cfg.dataset) if user_data.is_user_data(cfg.dataset) else None
    if summary is None:  # a shipped dataset: its labels 0..n_out-1, or the linear toy's targets
        summary = {"kind": "targets"} if cfg.dataset.name == "linear_regression" else {"kind": "labels", "lo": 0, "hi": n_out - 1}
    loss, name, data = str(cfg.loss.name), str(cfg.model.name), str(cfg.dataset.get("path") or cfg.dataset.name)
    if summary["kind"] == "one_hot" and loss == "ce":
        raise ConfigError(
            f"dataset {data}: y_train and y_test are class labels written one-hot ({summary['width']} columns of 0/1, "
            "one 1 a row); loss=ce takes the class of each sample: save y.argmax(1) as integers"
        )
    if summary["kind"] == "labels" and (width < n_out or (loss == "mse" and width != n_out)):
        lo, hi = summary["lo"], summary["hi"]
        held = f"labels {lo}..{hi}" + (f", read as classes 0..{n_out - 1}" if lo > 0 else "")
        fix = (
            f"relabel them 0..{hi - lo} (labels count from 0), or give the network {n_out} outputs"
            if lo > 0
            else f"give the network {n_out} outputs"
        )
        raise ConfigError(f"model {name} gives {width} outputs a sample, but dataset {data} has {n_out} classes ({held}): {fix}")
    if summary["kind"] != "labels" and width != n_out:
        what = f"{n_out} target values a sample"
        raise ConfigError(f"model {name} gives {width} outputs a sample, but dataset {data} has {what}: give the network {n_out} outputs")


def _composition_error(exc: Exception, fixed: list[str], compose) -> str:
    """Hydra's message, plus the closest key where a typed key does not exist (hydra.launcher.batchsize)."""
    message = hydra_message(exc)
    for item in fixed:
        key = item.split("=", 1)[0].lstrip("+~")
        if f"'{key}'" not in message or "." not in key:
            continue
        parent, leaf = key.rsplit(".", 1)
        try:
            node = OmegaConf.select(hydra.compose("train", overrides=[f for f in fixed if f != item], return_hydra_config=True), parent)
        except Exception:
            break
        new = RENAMED.get(key)
        if isinstance(node, DictConfig) and new and new[0].rsplit(".", 1)[1] in node:
            return f"{key} is now {new[0]} ({new[1]}): {new[0]}={item.split('=', 1)[1]}"
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


def launcher_setting(base: DictConfig, key: str):
    """A launcher setting's value, or one line where it is an interpolation that does not resolve."""
    try:
        return base.hydra.launcher.get(key)
    except Exception as exc:  # omegaconf's interpolation errors
        raw = OmegaConf.to_container(base.hydra.launcher, resolve=False).get(key)
        why = str(exc).splitlines()[0].replace("Interpolation key", "the key")
        raise ConfigError(f"hydra.launcher.{key}={raw} does not resolve ({why}): give it a value") from None


def check_launcher(base: DictConfig) -> None:
    """The launcher's own settings (an ensemble of at least one run); a SLURM launcher needs
    SLURM's sbatch here, and a request that a node of its partition can satisfy; say so before
    Hydra's submitit fails or a job waits forever."""
    size = launcher_setting(base, "ensemble_size") if "nin_batched_launcher" in str(launcher_setting(base, "_target_") or "") else None
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise ConfigError(f"hydra.launcher.ensemble_size (runs per ensemble) must be an integer >= 1, got {size!r}")
    for key, least in (("array_parallelism", 1), ("timeout_min", 1), ("max_num_timeout", 0)):
        value = launcher_setting(base, key)
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
    unit = sigma2_per_paper_unit(base)
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
