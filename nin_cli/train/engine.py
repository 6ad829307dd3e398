"""Every engine choice that changes a run's arithmetic, in the run's records: env.json's `engine`
(one entry per start or resume) holds whether the CNN's fused first block ran and why, the step
strategy the ensemble took (choose_step), precision and TF32, threads, the device and the CPU.

A resume whose fused block would run where it did not (or the reverse: a node without `cc`, or
fused_block changed) changes the arithmetic from there on: it is refused in one line unless the
config says engine_change=allow. Threads and the CPU are the machine's, not a choice (a requeued
job lands on another node): a change there is said in one line and the run goes on."""

from __future__ import annotations

import platform

import torch

from nin_cli import conv_block
from nin_cli.errors import ConfigError, console
from nin_cli.records import RunRecords
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
        "tf32": bool(cuda and torch.backends.cuda.matmul.allow_tf32),
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
        line = f"{records.dir}: trained {change} ({now['fused_block']['why']}): the arithmetic changes from here"
        if not allow:
            raise ConfigError(f"{line}; add engine_change=allow to go on, or set fused_block to what it ran with")
        console.print(f"[yellow]nin: note: {line} (engine_change=allow)")
        records.log(f"{line} (engine_change=allow)")
    moved = [f"{k} {before.get(k)} -> {now[k]}" for k in ("threads", "cpu") if before.get(k) is not None and before.get(k) != now[k]]
    if moved:
        console.print(f"[dim]{records.dir}: resumes with {', '.join(moved)} (float rounding may differ from here)")
