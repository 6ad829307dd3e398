"""A run's directory: metrics.csv, config.yaml, status.json and checkpoint.pt.

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


class RunRecords:
    def __init__(self, run_dir: Path | str):
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.dir / METRICS
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

    # metrics ----------------------------------------------------------------------------------
    def start_metrics(self, columns: list[str], keep_through_epoch: int | None) -> None:
        """Create metrics.csv with `columns`, or keep its rows up to `keep_through_epoch` (resume)."""
        self.columns = columns
        rows: list[list[str]] = []
        if keep_through_epoch is not None and self.metrics_path.exists():
            with open(self.metrics_path, newline="") as f:
                reader = csv.reader(f)
                header = next(reader, None)
                if header != columns:
                    raise RuntimeError(f"{self.metrics_path} has other columns than this run writes")
                for row in reader:
                    if len(row) == len(columns) and row[0].isdigit() and int(row[0]) <= keep_through_epoch:
                        rows.append(row)
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)
        atomic_write_text(self.metrics_path, buf.getvalue())

    def append_row(self, row: dict[str, Any]) -> None:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow([format_value(row.get(c, float("nan"))) for c in self.columns])
        with open(self.metrics_path, "a") as f:
            f.write(buf.getvalue())
            f.flush()
            os.fsync(f.fileno())

    # checkpoint -------------------------------------------------------------------------------
    def save_checkpoint(self, state: dict) -> None:
        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write_bytes(self.checkpoint_path, buf.getvalue())

    def load_checkpoint(self) -> dict | None:
        if not self.checkpoint_path.exists():
            return None
        return torch.load(self.checkpoint_path, map_location="cpu", weights_only=False)
