"""Every engine choice that changes a run's arithmetic, in the run's records: env.json's `engine`
(one entry per start or resume) holds whether the CNN's fused first block ran and why, the step
strategy the ensemble took (choose_step), the precision asked for and the arithmetic it gives on
this device (train/precision.py: fp32, tf32 or bf16) with CUDA's TF32 flags as set, threads, the
device and the CPU.

A resume whose arithmetic changes from there on is refused in one line unless the config says
engine_change=allow: the fused block would run where it did not (or the reverse: a node without
`cc`, or fused_block changed), or the matmuls would compute in another format (a run trained in
TF32 on a GPU resumed in float32, say). Threads, the CPU and the device are the machine's, not a
choice (a requeued job lands on another node; a run trained on a GPU is resumed on a laptop): a
change there is said in one line and the run goes on, float32 on either."""

from __future__ import annotations

import platform

import torch

from nin_cli.config.legacy import engine_precision
from nin_cli.errors import ConfigError, console
from nin_cli.nets import conv_block
from nin_cli.records.store import RunRecords
from nin_cli.train.precision import arithmetic, tf32_flags
from nin_cli.train.setup import Setup


def cpu_model() -> str:
    """The CPU's model name (x86's `model name`; ARM's implementer and part), else the platform's."""
    named = conv_block.cpuinfo()
    if "model name" in named:
        return named["model name"]
    if "CPU implementer" in named:
        return f"{platform.machine()} implementer {named['CPU implementer']} part {named.get('CPU part', '?')}"
    return platform.processor() or platform.machine()


def engine_record(s: Setup) -> dict:
    """What this session's engine will do with the run (the step is added once its ensemble is formed)."""
    fused = conv_block.decision(s.model, s.data.in_shape, s.device)
    if fused["mode"] == "on" and not fused["ran"]:
        raise ConfigError(f"fused_block=on, but the fused first block cannot run here ({fused['why']}); use fused_block=auto or off")
    cuda = s.device.type == "cuda"
    return {
        "fused_block": fused,
        "precision": str(s.cfg.precision),
        "arithmetic": arithmetic(s.device.type, str(s.cfg.precision)),
        "tf32": tf32_flags() if cuda else {"matmul": False, "conv": False},
        "threads": torch.get_num_threads(),
        "device": str(s.device),
        "cpu": cpu_model(),
    }


def check_engine_change(records: RunRecords, now: dict, allow: bool) -> None:
    """A resume on another engine: refused where the arithmetic changes by nin's choice (unless
    `allow`), said in one line where the machine differs."""
    before = records.read_env().get("engine")
    if not isinstance(before, dict):
        return  # trained by a nin that did not record its engine
    was, will = bool(before.get("fused_block", {}).get("ran")), bool(now["fused_block"]["ran"])
    if was != will:
        change = "with the fused first block, resumes without it" if was else "without the fused first block, resumes with it"
        refuse_or_note(records, f"trained {change} ({now['fused_block']['why']})", "set fused_block to what it ran with", allow)
    then = recorded_arithmetic(before)
    if then is not None and then != now["arithmetic"]:
        where = f"on {before.get('device', '?')}"
        gpu = " on a GPU" if then == "tf32" and not now["device"].startswith("cuda") else ""
        line = f"trained in {then} {where}, resumes in {now['arithmetic']} on {now['device']}"
        refuse_or_note(records, line, f"resume it as it trained: precision={then}{gpu}", allow)
    keys = ("device", "threads", "cpu")
    moved = [f"{k} {before.get(k)} -> {now[k]}" for k in keys if before.get(k) is not None and before.get(k) != now[k]]
    if moved:
        kind = [str(d).split(":")[0] for d in (before.get("device"), now["device"])]
        reseeded = "; data order and noise go on from re-seeded streams (train.log)" if before.get("device") and kind[0] != kind[1] else ""
        console.print(f"[dim]{records.dir}: resumes with {', '.join(moved)} (float rounding may differ from here{reseeded})")


def refuse_or_note(records: RunRecords, change: str, fix: str, allow: bool) -> None:
    """An engine change that changes the arithmetic from here: refused in one line, or noted in the
    run's log and on the console under engine_change=allow."""
    line = f"{records.dir}: {change}: the arithmetic changes from here"
    if not allow:
        raise ConfigError(f"{line}; add engine_change=allow to go on, or {fix}")
    console.print(f"[yellow]nin: note: {line} (engine_change=allow)")
    records.log(f"{line} (engine_change=allow)")


def recorded_arithmetic(engine: dict) -> str | None:
    """The arithmetic an engine record says a run trained in (an older record's: legacy.engine_precision)."""
    if "arithmetic" in engine:
        return str(engine["arithmetic"])
    before = engine_precision(engine)
    return arithmetic(*before) if before else None
