"""What makes two runs the same run: one table of config keys that do not, by role.

A run is named by its config. Some keys do not change what a run computes (where it runs, how
it reports), and some are derived from others; each such key is listed here once, with the
roles it is exempt from:

- `resume`:   may change between a run and its resumption (its records stay valid);
- `dirname`:  never names a sweep job's directory;
- `summary`:  never separates runs in a summary table;
- `member`:   may differ between the members of one batched ensemble.

Patterns are dotted key prefixes: `robustness` covers `robustness.seed`; a Hydra group override
(`hydra/launcher=batched`) matches its group the same way. Every other key plays every role.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

# pattern                role(s) in which the key does NOT make runs different
EXEMPT: dict[str, frozenset[str]] = {
    "hydra": frozenset({"resume", "dirname", "summary"}),
    "resume": frozenset({"resume", "dirname", "summary"}),
    "overwrite": frozenset({"resume", "dirname", "summary"}),
    "extend": frozenset({"resume", "dirname", "summary"}),
    # a run's length: compared on resume (extend=true lets it grow), never in a directory's name,
    # so that a run extended in place keeps a name that still says what trained
    "epochs": frozenset({"dirname"}),
    "progress": frozenset({"resume", "dirname", "summary"}),
    # a researcher's labels: recorded and shown as columns, never what makes a run
    "tags": frozenset({"resume", "dirname", "summary", "member"}),
    "notes": frozenset({"resume", "dirname", "summary", "member"}),
    "logger": frozenset({"resume", "dirname", "summary", "member"}),  # where rows are also sent, live
    "device": frozenset({"resume", "dirname", "summary"}),
    "cuda_graphs": frozenset({"resume", "dirname", "summary"}),
    "fused_block": frozenset({"resume", "dirname", "summary"}),  # what ran is in env.json; a change is engine_change's
    # the matmuls' float format: a run trained under one precision resumes under another where the
    # arithmetic is the same (tf32 and fp32 on a CPU); where it is not, engine_change decides
    "precision": frozenset({"resume"}),
    "engine_change": frozenset({"resume", "dirname", "summary", "member"}),
    "evaluate": frozenset({"resume", "dirname", "summary"}),
    "robustness": frozenset({"resume", "dirname", "summary"}),
    "eval.batch_size": frozenset({"resume", "dirname", "summary"}),
    "experiment": frozenset({"dirname"}),  # the sweep directory already says which experiment
    # the NINR preset table: a run uses (at most) one entry, through noise.sigma (and nin.init), which are compared
    "model.ninr_sigma": frozenset({"resume", "dirname", "summary", "member"}),
    "model.ninr_init": frozenset({"resume", "dirname", "summary", "member"}),  # likewise, through nin.init
    # derived: noise.sigma carries the run's own scale
    "noise.sigma2_paper": frozenset({"summary", "member"}),
    # what an ensemble's members may differ in (their steps read these per member)
    "seed": frozenset({"member"}),
    "noise.sigma": frozenset({"member"}),
    "noise.schedule": frozenset({"member"}),
    "optimizer.lr": frozenset({"member"}),
}
ROLES = ("resume", "dirname", "summary", "member")


def matches(key: str, pattern: str) -> bool:
    return key == pattern or key.startswith((pattern + ".", pattern + "/"))


def exempt(key: str, role: str) -> bool:
    """Whether `key` does not make runs different in `role` (one of ROLES)."""
    assert role in ROLES, role
    key = key.lstrip("+~")
    return any(role in roles and matches(key, pattern) for pattern, roles in EXEMPT.items())


def identity(flat: Mapping[str, object], role: str) -> dict[str, object]:
    """The flattened config without the keys exempt in `role`: equal dicts mean the same run."""
    return {k: v for k, v in flat.items() if not exempt(k, role)}


def exempt_patterns(role: str) -> list[str]:
    """The patterns exempt in `role`, for messages."""
    return [p for p, roles in EXEMPT.items() if role in roles]


def differing(a: Mapping[str, object], b: Mapping[str, object]) -> list[str]:
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def kept_overrides(overrides: Iterable[str]) -> list[str]:
    """A sweep job's overrides that name its directory."""
    return sorted(str(o) for o in overrides if not exempt(str(o).split("=", 1)[0], "dirname"))


def run_dirname(overrides: Iterable[str]) -> str:
    """A sweep job's subdirectory: its sorted overrides (`noise.sigma=3,seed=1`), minus those that
    never name a directory; long names are cut and made unique with a hash. Registered as
    ${nin_dirname:...} (conf/train.yaml's hydra.sweep.subdir)."""
    name = ",".join(kept_overrides(overrides)).replace("/", "_") or "run"
    if len(name) > 120:
        name = f"{name[:100]}..{hashlib.sha1(name.encode()).hexdigest()[:10]}"
    return name
