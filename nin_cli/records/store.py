"""A run's directory: metrics.csv, steps.csv, config.yaml, status.json, checkpoint.pt, env.json, train.log.

Nothing is half-written: rows are appended and fsync'd as epochs end, every other file is written
to a temporary name and renamed over the old one (the temporary is removed if the write fails,
and stale ones from a killed process are removed when the directory is next locked). On resume
the CSVs are cut back to the checkpoint's epoch, so rows written after the last checkpoint are
recomputed once, never duplicated; rows missing before it make resume refuse. A directory is
locked (flock, released by the kernel when its process dies) while a process trains in it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import pickle
import time
import warnings
from pathlib import Path
from typing import Any

from nin_cli.errors import RecordError
from nin_cli.records.faults import fault_point
from nin_cli.records.locks import RunLock

# Imported where used: torch, for checkpoints alone (the analysis reads a run's records without it).

METRICS = "metrics.csv"
STEPS = "steps.csv"
STATUS = "status.json"
CONFIG = "config.yaml"
CHECKPOINT = "checkpoint.pt"
ENV = "env.json"
NETWORK = "network.json"  # each NIN's layer, the layer it feeds, fan-in and width (network.nin_record)
LOG = "train.log"
ROBUSTNESS = "robustness.csv"  # written by `nin evaluate`, with the settings it used
ROBUSTNESS_SETTINGS = "robustness.yaml"
ROBUSTNESS_PARTIAL = "robustness.partial.json"  # the perturbations an unfinished evaluation finished
STATES = ("running", "completed", "diverged", "failed", "interrupted")
ENDED = ("completed", "diverged", "failed")  # nothing more will happen to a run in these states
FINISHED = ("completed", "diverged")  # ... and of those, the runs that trained to their end (results, not failures)
# What a fresh run replaces (overwrite=true); Hydra's .hydra/ and the log are kept.
RUN_FILES = (METRICS, STEPS, STATUS, CHECKPOINT, ENV, NETWORK, ROBUSTNESS, ROBUSTNESS_SETTINGS, ROBUSTNESS_PARTIAL)


# A checkpoint's SHA-256 follows its bytes: torch.load checks no checksum, and a flipped byte in a
# tensor's data would load as a different weight. Zip readers find their directory from the file's
# end past a short trailer; nin checks and strips it before loading. A checkpoint written before
# 2026-12-05 has none and is read unchecked.
SEAL = b"\nnin-sha256:"


def sealed(payload: bytes) -> bytes:
    return payload + SEAL + hashlib.sha256(payload).hexdigest().encode()


def unsealed(data: bytes, path: Path) -> bytes:
    """A checkpoint's bytes without their seal, checked against it (RecordError naming the file)."""
    cut = len(data) - len(SEAL) - 64
    if cut < 0 or data[cut : cut + len(SEAL)] != SEAL:
        return data  # unsealed: written before checkpoints carried their digest, or cut short (torch.load says)
    payload = data[:cut]
    if hashlib.sha256(payload).hexdigest().encode() != data[cut + len(SEAL) :]:
        raise RecordError(f"{path} is damaged: its bytes do not match the checksum written with them")
    return payload


def atomic_write_bytes(path: Path, data: bytes, fault: str = "write") -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        fault_point(fault)  # the moment between a complete temporary and the rename
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str, fault: str = "write") -> None:
    atomic_write_bytes(path, text.encode(), fault)


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

    def read(self) -> tuple[list[str] | None, list[list[str]]]:
        """Header and complete rows (the right number of fields, an integer key); (None, []) if absent."""
        if not self.path.exists():
            return None, []
        try:
            with open(self.path, newline="", errors="replace") as f:
                reader = csv.reader(f)
                header = next(reader, None)
                rows = [r for r in reader if header and len(r) == len(header) and r[0].isdigit()]
        except csv.Error as exc:
            raise RecordError(f"{self.path} is damaged ({exc})") from None
        return header, rows

    def rows_through(self, columns: list[str], through: int) -> list[list[str]]:
        """The complete rows keyed <= `through`, checking the file holds this run's columns."""
        header, rows = self.read()
        if header is not None and header != columns:
            raise RecordError(f"{self.path} has other columns than this run writes (damaged, or written by another run)")
        return [r for r in rows if int(r[0]) <= through]

    def keys(self, columns: list[str], through: int) -> list[int]:
        return [int(r[0]) for r in self.rows_through(columns, through)]

    def start(self, columns: list[str], keep_through: int | None) -> None:
        """Create the file with `columns`, or keep its rows keyed <= `keep_through` (resume)."""
        self.columns = columns
        rows = self.rows_through(columns, keep_through) if keep_through is not None else []
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
        self.lock = RunLock(self.dir)

    def has_run(self) -> bool:
        return any((self.dir / name).exists() for name in (METRICS, CHECKPOINT, STATUS))

    def clear(self) -> None:
        """overwrite=true: remove a previous run's records (a fresh run writes them anew)."""
        for name in RUN_FILES:
            (self.dir / name).unlink(missing_ok=True)

    def remove_stale_temporaries(self) -> None:
        """Temporaries left by a killed writer; only called with the lock held, so none is live."""
        for tmp in self.dir.glob(".*.tmp*"):
            tmp.unlink(missing_ok=True)

    def last_recorded_epoch(self) -> int | None:
        """The last epoch with a complete metrics row (None: none yet, or the file is unreadable)."""
        try:
            rows = self.metrics.read()[1]
        except RecordError:
            return None
        return int(rows[-1][0]) if rows else None

    # status -----------------------------------------------------------------------------------
    def read_status(self) -> dict | None:
        try:
            status = json.loads(self.status_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            return None
        return status if isinstance(status, dict) and status.get("status") in STATES else None

    def write_status(self, status: str, epoch: int | None, epochs: int, reason: str | None = None) -> None:
        assert status in STATES, status
        record = {"status": status, "epoch": epoch, "epochs": epochs, "reason": reason, "updated": time.strftime("%Y-%m-%dT%H:%M:%S")}
        atomic_write_text(self.status_path, json.dumps(record, indent=1) + "\n", fault="status")
        self.lock.refresh()

    def try_write_status(self, status: str, epoch: int | None, epochs: int, reason: str | None = None) -> None:
        """write_status on the way out of a failure: a disk that is full or read-only must not hide the first error."""
        try:
            self.write_status(status, epoch, epochs, reason)
        except OSError:
            pass

    # log and provenance ----------------------------------------------------------------------
    def log(self, message: str) -> None:
        """A line in train.log; a log that cannot be written (full disk) never stops the run by itself."""
        try:
            with open(self.dir / LOG, "a") as f:
                f.write(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] nin: {message}\n")
        except OSError:
            pass

    def read_env(self) -> dict:
        """env.json's latest session ({} where there is none, or it is damaged: provenance only)."""
        try:
            env = json.loads((self.dir / ENV).read_text())
        except (OSError, ValueError):
            return {}
        return env if isinstance(env, dict) else {}

    def write_network(self, network: dict) -> None:
        """network.json: what the run's NINs join (written at its start; the same on every resume)."""
        atomic_write_text(self.dir / NETWORK, json.dumps(network, indent=1) + "\n")

    def write_env(self, env: dict) -> None:
        """env.json: this session's provenance, earlier sessions (a resumed run's) under `previous`."""
        old = self.read_env()
        if old:
            env["previous"] = [*old.pop("previous", []), old]
        self._write_env_file(env)

    def record_step(self, step: str) -> None:
        """The step strategy this session's ensemble took, into env.json's engine record."""
        env = self.read_env()
        if env:
            env.setdefault("engine", {})["step"] = step
            self._write_env_file(env)

    def _write_env_file(self, env: dict) -> None:
        atomic_write_text(self.dir / ENV, json.dumps(env, indent=1) + "\n")

    # checkpoint -------------------------------------------------------------------------------
    def save_checkpoint(self, state: dict) -> None:
        import torch

        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write_bytes(self.checkpoint_path, sealed(buf.getvalue()), fault="checkpoint")

    def load_checkpoint(self) -> dict | None:
        """Tensors and plain containers only (weights_only=True): a checkpoint cannot run code."""
        if not self.checkpoint_path.exists():
            return None
        import torch

        payload = unsealed(self.checkpoint_path.read_bytes(), self.checkpoint_path)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch's notes on pickle protocols: the error below says it
                state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, KeyError, AttributeError, IndexError) as exc:
            why = "it holds objects other than tensors, refused" if "Weights only load failed" in str(exc) else type(exc).__name__
            raise RecordError(f"{self.checkpoint_path} is damaged or not a nin checkpoint ({why})") from None
        if not isinstance(state, dict) or "model" not in state or "epoch" not in state:
            raise RecordError(f"{self.checkpoint_path} is not a nin checkpoint")
        return state
