"""env.json: what produced a run's numbers (nin, git commit, Python, torch, device, host, command),
one entry per start or resume."""

from __future__ import annotations

import functools
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

import torch

from nin_cli.version import __version__


@functools.lru_cache(maxsize=1)
def source_commit() -> str | None:
    """The checkout's commit ("-dirty" with uncommitted changes to tracked files), None outside
    one: read once a process, as the code it runs was loaded once (a sweep of thousands of runs ran
    git twice a run)."""
    source = Path(__file__).resolve().parents[2]  # the checkout, where nin runs from one
    if not (source / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(source), "status", "--porcelain", "-uno"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "") if out.returncode == 0 else None


def provenance(device) -> dict:
    """env.json: what produced the run's numbers (one entry per start or resume)."""
    return {
        "nin_version": __version__,
        "git_commit": source_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "command": " ".join(sys.argv),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
