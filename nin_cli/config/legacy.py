"""Old records: what a run directory an older nin wrote means, in one place, each entry dated.

nin reads every run directory it ever wrote (resume, extend, evaluate, summarize). Where a key,
a default, a file entry or a name changed, what the older record meant is written here, and the
main path reads as today's code: resolve.py fills a saved config's missing keys (fill_config),
resume names the values to type back (resume_hints), the engine reads an old engine record's
arithmetic (engine_precision), a member reads an old checkpoint's device (checkpoint_device) and
its model's parameter names (model_state), the pre-flight names a renamed key (RENAMED). A config
written before 2026-12-05 names nin's network by model.name alone, without the factory
(model.target) conf/model now gives: resolve.py fills it from conf/model/<name>.yaml, as for any
model config of one's own that leaves out a shipped network's keys. One older meaning lives below this stage, where the
records are read: a checkpoint written before 2026-12-05 carries no SHA-256 seal and is loaded
unchecked (records/store.py, `unsealed`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nin_cli.config.schema import flatten

# nin's networks with convolutions when nin.conv was added (2026-11-29)
CONV_MODELS_THEN = ("cnn", "resnet18")


def model_state(state: dict) -> dict:
    """A checkpoint's model state under today's parameter names. 2026-12-05: nin's networks held
    their layers under `layers.` (the ResNet's bn1 at the top); every network now sits under `net.`
    beside its NINs (`nins.`)."""
    if not any(k.startswith("layers.") for k in state):
        return state
    return {k if k.startswith(("nins.", "net.")) else "net." + k.removeprefix("layers."): v for k, v in state.items()}


def defaults_before_keys(flat: Mapping) -> dict[str, Any]:
    """What a config written before these keys existed trained with:
    - 2026-11-23: nin.init (NIWs were N(0, 1): `unit`), loss.reduction (MSE was a half sum),
      hessian.niw_curvature (not measured);
    - 2026-11-29: nin.conv (a convolution's NIN joined its output; in a network without
      convolutions it changes nothing, so there the old config reads as the new default and an MLP
      run resumes as it always did), eval.standard_errors (not recorded)."""
    mse = flat.get("loss.name") == "mse"
    return {
        "nin.init": "unit",
        "nin.conv": "output" if flat.get("model.name") in CONV_MODELS_THEN else "input",
        "loss.reduction": "half_sum" if mse else "mean",
        **({"loss.outputs": "logits"} if mse else {}),
        "hessian.niw_curvature": False,
        "eval.standard_errors": False,
    }


# 2026-11-29: the measurement's defaults moved so that measuring an epoch costs a fraction of
# training it (docs/speed.md); a run trained before is resumed by typing these back.
FORMER_DEFAULTS: dict[str, Any] = {"eval.train_samples": None, "hessian.samples": 1000, "hessian.probes": 4}

# 2026-12-03: keys nin renamed; typing the old one names the new one (where the chosen option has it).
RENAMED = {"hydra.launcher.batch_size": ("hydra.launcher.ensemble_size", "runs trained together; batch_size is the minibatch's")}

# 2026-12-03: a config written before fused_block existed ran the CNN's fused first block where it applied.
FUSED_BLOCK_BEFORE = "auto"


def fill_config(plain: dict) -> None:
    """A saved config's missing keys set to the behaviour it was trained with (in place, on the
    plain container config.resolve settles). 2026-11-22: `precision` replaced the boolean `tf32`."""
    if "tf32" in plain and "precision" not in plain:
        plain["precision"] = "tf32" if plain["tf32"] else "fp32"
        del plain["tf32"]
    keys = flatten(plain)
    for key, value in defaults_before_keys(keys).items():
        group = key.split(".")[0] + "."
        if key not in keys and any(k.startswith(group) for k in keys):
            *path, leaf = key.split(".")
            node = plain
            for part in path:
                node = node.setdefault(part, {})
            node[leaf] = value


def resume_hints(saved: Mapping, differing: list[str]) -> list[str]:
    """For a resume refused because the config differs: the keys among `differing` that an older
    nin wrote with what is now not the default, as `key=value` to type to resume it as it was."""
    then = defaults_before_keys(saved).keys() | {k for k, v in FORMER_DEFAULTS.items() if saved.get(k) == v}
    return [f"{k}={'null' if saved[k] is None else str(saved[k]).lower()}" for k in differing if k in then and k in saved]


def named_with_epochs(directory_name: str, epochs: int) -> bool:
    """2026-11-29: a sweep directory an older nin named with its `epochs=` (an extended run's name would lie)."""
    return f"epochs={epochs}" in directory_name.split(",")


def checkpoint_device(state: dict) -> str:
    """The kind of device a checkpoint's generator states are from. 2026-12-04: the entry
    `device`; a checkpoint written before held a CUDA RNG state exactly when it trained on CUDA."""
    return str(state.get("device") or ("cuda" if state.get("cuda_rng") is not None else "cpu"))


def engine_precision(engine: dict) -> tuple[str, str] | None:
    """(device kind, precision) of an engine record written before 2026-12-04's `arithmetic`
    entry, which the engine turns into its arithmetic (None: the record says neither)."""
    if "precision" not in engine:
        return None
    return str(engine.get("device", "cpu")).split(":")[0], str(engine["precision"])
