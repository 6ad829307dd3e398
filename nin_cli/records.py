"""A run's directory: metrics.csv, steps.csv, config.yaml, status.json and checkpoint.pt.

Nothing is half-written: rows are appended and fsync'd as epochs end, every other file is written
to a temporary name and renamed over the old one. On resume the CSV is cut back to the checkpoint's
epoch, so rows written after the last checkpoint are recomputed once, never duplicated.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import torch

METRICS = "metrics.csv"
STEPS = "steps.csv"
STATUS = "status.json"
CONFIG = "config.yaml"
CHECKPOINT = "checkpoint.pt"
STATES = ("running", "completed", "diverged", "failed", "interrupted")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def format_value(value: Any) -> str:
    """Floats at full precision (repr round-trips), so a resumed run's CSV matches byte for byte."""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else repr(value)
    return str(value)


class CsvTable:
    """An append-only CSV keyed by an integer first column (epoch or step)."""

    def __init__(self, path: Path):
        self.path = path
        self.columns: list[str] = []

    def start(self, columns: list[str], keep_through: int | None) -> None:
        """Create the file with `columns`, or keep its rows keyed <= `keep_through` (resume)."""
        self.columns = columns
        rows: list[list[str]] = []
        if keep_through is not None and self.path.exists():
            with open(self.path, newline="") as f:
                reader = csv.reader(f)
                if next(reader, None) != columns:
                    raise RuntimeError(f"{self.path} has other columns than this run writes")
                rows = [r for r in reader if len(r) == len(columns) and r[0].isdigit() and int(r[0]) <= keep_through]
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)
        atomic_write_text(self.path, buf.getvalue())

    def append(self, rows: list[dict[str, Any]]) -> None:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        for row in rows:
            writer.writerow([format_value(row.get(c, float("nan"))) for c in self.columns])
        with open(self.path, "a") as f:
            f.write(buf.getvalue())
            f.flush()
            os.fsync(f.fileno())


class RunRecords:
    def __init__(self, run_dir: Path | str):
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.dir / METRICS
        self.metrics = CsvTable(self.metrics_path)
        self.steps = CsvTable(self.dir / STEPS)
        self.status_path = self.dir / STATUS
        self.config_path = self.dir / CONFIG
        self.checkpoint_path = self.dir / CHECKPOINT

    # status -----------------------------------------------------------------------------------
    def read_status(self) -> dict | None:
        try:
            return json.loads(self.status_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def write_status(self, status: str, epoch: int, epochs: int, reason: str | None = None) -> None:
        assert status in STATES, status
        record = {"status": status, "epoch": epoch, "epochs": epochs, "reason": reason, "updated": time.strftime("%Y-%m-%dT%H:%M:%S")}
        atomic_write_text(self.status_path, json.dumps(record, indent=1) + "\n")

    # checkpoint -------------------------------------------------------------------------------
    def save_checkpoint(self, state: dict) -> None:
        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write_bytes(self.checkpoint_path, buf.getvalue())

    def load_checkpoint(self) -> dict | None:
        if not self.checkpoint_path.exists():
            return None
        return torch.load(self.checkpoint_path, map_location="cpu", weights_only=False)
