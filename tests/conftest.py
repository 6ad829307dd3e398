"""The suite's fixtures; what tests share besides them is in tests/harness.py."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from harness import QUICK

from nin_cli.train.precision import NEW_API


@pytest.fixture
def quick():
    return list(QUICK)


@pytest.fixture
def restored_precision():
    """The process's TF32 settings as they were before the test (the new API's `none` included)."""
    if NEW_API:
        saved = (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision)
    else:
        saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    yield
    if NEW_API:
        torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision = saved
    else:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


class Gate:
    """The fault point `NIN_FAULT=point:n:HOLD` (nin_cli/records/faults.py): runs wait there until the test opens it."""

    def __init__(self, directory: Path):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)

    def env(self, point: str, hit: int) -> dict[str, str]:
        return {"NIN_FAULT": f"{point}:{hit}:HOLD", "NIN_FAULT_GATE": str(self.dir)}

    def held(self, count: int = 1, timeout: float = 300, alive: Callable[[], bool] = lambda: True) -> list[int]:
        """The pids of the `count` processes held at the point, once they all are."""
        deadline = time.monotonic() + timeout
        while len(pids := sorted(int(p.name.split(".")[1]) for p in self.dir.glob("held.*"))) < count:
            assert alive(), "the command ended before reaching its fault point"
            assert time.monotonic() < deadline, f"{count - len(pids)} process(es) never reached the fault point"
            time.sleep(0.02)
        return pids

    def open(self) -> None:
        (self.dir / "go").touch()


@pytest.fixture
def gate(tmp_path):
    held = Gate(tmp_path / "gate")
    yield held
    held.open()  # a test that failed before opening it leaves no process waiting forever
