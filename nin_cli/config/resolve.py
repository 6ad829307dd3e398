"""A run's config, resolved once: the one home of what a run *is*.

`resolve` turns a composed config (Hydra's, for a job) or a saved config.yaml (`load`) into a
`RunConfig`: interpolations resolved, the keys an older nin did not write filled with what that
run trained with (legacy.py), noise.sigma derived from noise.sigma2_paper, every value checked, and the flat
key -> value record that identity, resume, summaries and reports compare. Training, resume,
summarize, the notebook API, report, evaluate, predict and theory all take a run's config from
here, so no two of them can read it differently.

The pre-flight of a whole command (every job of a sweep checked before anything trains) is
nin_cli/config/preflight.py's; it resolves each job here.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from nin_cli.config.legacy import fill_config
from nin_cli.config.schema import conf_dir, factory_groups, flatten, train_schema
from nin_cli.config.sources import current
from nin_cli.config.yaml_io import read_yaml
from nin_cli.errors import ConfigError, RecordError
from nin_cli.units import sigma2_per_paper_unit

# Imported where used: config is read by the analysis, completion and the launchers' bookkeeping
# without torch; the data, network and logger checks load their stages when a run is resolved.

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
    (dotted key -> value, lists as tuples), the record every comparison of runs reads. A record read
    back (`load`) makes its `cfg` only when asked: reading a sweep of runs needs `flat` alone."""

    _cfg: DictConfig | None = field(compare=False)
    flat: dict[str, Any]
    _plain: dict | None = field(default=None, compare=False)

    @property
    def cfg(self) -> DictConfig:
        if self._cfg is None:
            made = OmegaConf.create(self._plain)
            OmegaConf.set_struct(made, True)
            object.__setattr__(self, "_cfg", made)  # made once, on first use
        return self._cfg


# --- resolving ------------------------------------------------------------------------------------
def flat(cfg: DictConfig) -> dict[str, Any]:
    """dotted key -> value of a config (resolved; Hydra's node left out), lists as tuples."""
    if "hydra" in cfg:
        cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    return flatten(OmegaConf.to_container(cfg, resolve=True))


def resolve(cfg: DictConfig, validate: bool = True) -> RunConfig:
    """The run a composed `cfg` describes, resolved (see the module's docstring). With `validate`,
    every key is known, typed and in range, the robustness plan is valid and the dataset has the
    sizes asked. A job is resolved once (`checked`); a saved record is read with `load`."""
    return _settle(cfg, validate)


def _settle(cfg: DictConfig, validate: bool) -> RunConfig:
    choices = group_choices(cfg)
    try:
        plain = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    except Exception as exc:  # an interpolation that does not resolve
        raise ConfigError(f"config does not resolve: {str(exc).splitlines()[0]}") from None
    plain.pop("hydra", None)
    return _settle_plain(plain, choices, validate)


def _settle_plain(plain: dict, choices: Mapping[str, str], validate: bool) -> RunConfig:
    named_by_choice(plain, choices)
    _fill_shipped_model(plain)
    fill_config(plain)  # what an older nin's saved config meant (legacy.py)
    _fill_model_init(plain)
    noise = plain.get("noise")
    derived = isinstance(noise, dict) and noise.get("sigma2_paper") is not None
    record = flatten(plain)  # the values the config holds, read without walking a DictConfig's nodes
    interpolated = any(isinstance(v, str) and "${" in v for v in record.values())
    if not derived and not interpolated:
        # the record is the plain values; the nested DictConfig (6-7 ms a job of a sweep's
        # pre-flight) is made when asked for
        if validate:
            _check(plain, record)
        return RunConfig(None, record, plain)
    run = OmegaConf.create(plain)
    if _derive_sigma(run) or interpolated:
        record = flat(run)  # sigma derived, or a literal "${" that the config reads as an interpolation
    if validate:
        _check(run, record)
    OmegaConf.set_struct(run, True)
    return RunConfig(run, record)


def load(path: Path, validate: bool = False) -> RunConfig:
    """A saved config.yaml, resolved as `resolve` does (a trained run is not re-validated: its
    config is what it was trained with). A damaged file is a RecordError naming it."""
    try:
        saved = read_yaml(path)
    except FileNotFoundError:
        raise
    except Exception as exc:  # YAML errors, or bytes that are not text: the file is damaged
        raise RecordError(f"{path} is damaged ({type(exc).__name__}); cannot tell which run this directory holds") from None
    if not isinstance(saved, dict) or not all(isinstance(k, str) for k in saved):
        raise RecordError(f"{path} is damaged (not a mapping); cannot tell which run this directory holds")
    try:
        run = _settle_plain(saved, group_choices(OmegaConf.create({})), validate)
    except ConfigError as exc:
        raise RecordError(f"{path} is damaged ({exc}); cannot tell which run this directory holds") from None
    missing = [key for key in RUN_KEYS if key not in run.flat]
    if missing:
        raise RecordError(f"{path} is damaged (no {', '.join(missing)}); cannot tell which run this directory holds")
    return run


def check_model_name(model: DictConfig) -> None:
    """A model names its factory (model.target / _target_): nin's own networks' come from conf/model."""
    from nin_cli.factories import factory_target

    if factory_target(model) is None:
        shipped = sorted(p.stem for p in (conf_dir() / "model").glob("*.yaml"))
        raise ConfigError(
            f"unknown model {model.get('name')!r}; choose from {', '.join(shipped)}, or name a factory (model.target=pkg.module:function)"
        )


@functools.cache
def shipped_model_keys(name: str) -> tuple[str, ...]:
    """The keys of conf/model/<name>.yaml (none where there is no such file), read once a process:
    a sweep's every job asks whether its model config leaves one out."""
    shipped = conf_dir() / "model" / f"{name}.yaml"
    return tuple(str(k) for k in OmegaConf.load(shipped) if k != "defaults") if shipped.exists() else ()


def _fill_shipped_model(run: dict) -> None:
    """A model config of one's own for a shipped architecture (`name: mlp` with `width: 32`, from
    --config-dir) that leaves out some of its keys gets the shipped config's values for them, as if
    it began with `defaults: [mlp]` (in place)."""
    from nin_cli.factories import factory_target

    model = run.get("model")
    if not isinstance(model, dict) or factory_target(model) is not None or not shipped_model_keys(str(model.get("name"))):
        return
    missing = [key for key in shipped_model_keys(str(model["name"])) if key not in model]
    if missing:
        defaults = read_yaml(conf_dir() / "model" / f"{model['name']}.yaml")
        for key, value in defaults.items():
            if key not in model and key != "defaults":
                model[key] = value


def _fill_model_init(run: dict) -> None:
    """model.init where a config leaves it out: the papers' N(0, 1/fan_in) for a shipped model (all
    nin ever drew for them), the factory's own initialisation for a researcher's network."""
    from nin_cli.factories import factory_target

    model = run.get("model")
    if isinstance(model, dict) and "init" not in model:
        model["init"] = "factory" if factory_target(model) is not None else "fan_in"


def _derive_sigma(run: DictConfig) -> bool:
    """`noise.sigma2_paper=u` writes the noise scale in the papers' units: noise.sigma = sqrt(u x unit).
    Whether it did."""
    noise = run.get("noise")
    u = noise.get("sigma2_paper") if isinstance(noise, DictConfig) else None
    if u is None:
        return False
    try:
        u = float(u)
    except (TypeError, ValueError):
        raise ConfigError(f"noise.sigma2_paper must be a number, got {u!r}") from None
    unit = paper_unit(run)
    if not (math.isfinite(u) and u >= 0 and math.isfinite(unit)):
        raise ConfigError(f"noise.sigma2_paper={u!r} cannot be converted for this run (needs a finite u >= 0, a known dataset and width)")
    run.noise.sigma = math.sqrt(u * unit)
    return True


def paper_unit(cfg: DictConfig) -> float:
    """sigma^2 of one paper unit for a run's config: the papers' rule for nin's own networks on
    nin's data, else the fan-in (and, for MSE, the width) of the layer the run's first NIN joins,
    for a network or data of one's own (units.sigma2_per_paper_unit; network.json says which)."""
    from nin_cli.nets.network import unit_layer

    unit = sigma2_per_paper_unit(cfg)
    if math.isfinite(unit) or not all(isinstance(cfg.get(g), DictConfig) for g in ("model", "nin", "dataset")):
        return unit
    layer = unit_layer(cfg.model, cfg.nin, cfg.dataset, int(cfg.get("seed", 0)))
    return sigma2_per_paper_unit(cfg, layer) if layer else unit


def _check(run: DictConfig | dict, record: dict[str, Any]) -> None:
    """Every key known, typed and in range (on the flat record), then what the groups' own
    checks read, each given its group as a DictConfig of its own."""
    from nin_cli.data.datasets import check_sizes
    from nin_cli.data.perturbations import plan
    from nin_cli.records.loggers import check_installed

    schema = train_schema(*current().dirs)
    dataclasses.replace(schema, factory_prefixes=factory_groups(record)).check(record)

    def group(name: str) -> DictConfig:
        return OmegaConf.create(run.get(name) or {})

    check_model_name(group("model"))
    check_sizes(group("dataset"))
    check_installed(str((run.get("logger") or {}).get("kind", "none")))
    if run.get("evaluate"):  # names of corruptions and attacks, checked before training too
        plan(group("robustness"))


def without_hydra(cfg: DictConfig) -> DictConfig:
    """A config composed with return_hydra_config=True, as compose() without it returns it (a model
    or dataset config written without `name:` named by the option that chose it)."""
    choices = group_choices(cfg)
    job = cfg.copy()
    with open_dict(job):
        del job["hydra"]
        named_by_choice(job, choices)
    return job


# --- a model or dataset config without `name:` ------------------------------------------------------
NAMED_GROUPS = ("model", "dataset")  # the groups whose configs carry the name results are shown by


def group_choices(cfg: DictConfig) -> dict[str, str]:
    """The options Hydra chose for the config groups: from the config's own Hydra node where it
    has one, else from the running Hydra job's (a launcher's job process), else none."""
    found = OmegaConf.select(cfg, "hydra.runtime.choices", default=None, throw_on_missing=False)
    if found is None:
        from hydra.core.hydra_config import HydraConfig

        found = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    return {str(k): str(v) for k, v in dict(found).items() if v is not None}


def named_by_choice(cfg, choices: Mapping[str, str]) -> None:
    """A model or dataset config that leaves out `name:` is named by its option (model=resmlp ->
    resmlp), as Hydra users write configs (in place; a DictConfig or a plain dict)."""
    for group in NAMED_GROUPS:
        node = cfg.get(group)
        if isinstance(node, (dict, DictConfig)) and node.get("name") is None and choices.get(group):
            node["name"] = choices[group].split("/")[-1]
