"""Live logging (`logger=tensorboard|mlflow|wandb`), read back with each backend's own reader:
every row of the CSVs, once, at its step, also after a crash and a resume; one logged run per
ensemble member; the config as hyperparameters; a missing extra is one line before training."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import pytest
from harness import TINY, make_cfg, nin, read_rows
from omegaconf import OmegaConf

from nin_cli.interface.cli import main

pytestmark = pytest.mark.e2e  # real backends, kills and resumes: `make test`, not `make test-fast`

# a kill in epoch 2 resumes from epoch 0 (checkpoint.every=2): epoch 1's rows are sent, then recomputed
LOGGED = [*(a for a in TINY if not a.startswith("noise.sigma=")), "noise.sigma=3", "checkpoint.every=2"]
KILL_IN_EPOCH_2 = "step:6:SIGKILL"  # 4 steps an epoch


def csv_series(run: Path) -> dict[str, dict[int, float]]:
    """What the CSVs hold, as the loggers name it: tag -> {step: value}."""
    series: dict[str, dict[int, float]] = {}
    for row in read_rows(run):
        for k, v in row.items():
            if k not in ("step", "seconds"):
                series.setdefault(f"metrics/{k}", {})[int(row["step"])] = float(v)
    for row in read_rows(run, "steps.csv"):
        for k, v in row.items():
            if k not in ("step", "epoch", "sigma"):
                series.setdefault(f"steps/{k}", {})[int(row["step"])] = float(v)
    return series


def once(points: list[tuple[int, float]]) -> dict[int, float]:
    steps = [s for s, _ in points]
    assert len(steps) == len(set(steps)), f"steps sent twice: {sorted(s for s in steps if steps.count(s) > 1)}"
    return dict(points)


def killed_then_resumed(run: Path, *logger: str, fault: str = KILL_IN_EPOCH_2) -> None:
    killed = nin("train", *LOGGED, *logger, f"hydra.run.dir={run}", env={"NIN_FAULT": fault})
    assert killed.returncode in (-9, 143), killed.stderr
    assert json.loads((run / "logger.json").read_text())["through"] == int(read_rows(run)[1]["step"])  # epoch 1 was sent
    resumed = nin("train", *LOGGED, *logger, f"hydra.run.dir={run}")
    assert resumed.returncode == 0 and "resuming from the checkpoint of epoch 0" in resumed.stderr, resumed.stderr


def test_tensorboard_event_files_hold_every_row_once_across_a_crash(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    killed_then_resumed(run, "logger=tensorboard")
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    expected = csv_series(run)
    assert set(events.Tags()["scalars"]) == set(expected)
    for tag, values in expected.items():
        logged = once([(e.step, e.value) for e in events.Scalars(tag)])
        assert logged == pytest.approx(values, rel=1e-6), tag
    assert "_hparams_/experiment" in events.summary_metadata  # the config as hyperparameters


def test_mlflow_run_holds_every_row_once_across_a_crash_and_one_run_per_member(tmp_path):
    pytest.importorskip("mlflow", reason="the mlflow extra: pip install -e '.[mlflow]'")
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run = tmp_path / "run"
    killed_then_resumed(run, "logger=mlflow", f"logger.tracking_uri={uri}")
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("nin").experiment_id
    (logged,) = client.search_runs([experiment], f"tags.`nin.run_dir` = '{run.resolve()}'")
    assert logged.info.status == "FINISHED" and logged.info.run_id == json.loads((run / "logger.json").read_text())["id"]
    assert logged.data.params["noise.sigma"] == "3" and logged.data.params["model.width"] == "32"
    for tag, values in csv_series(run).items():
        history = once([(m.step, m.value) for m in client.get_metric_history(logged.info.run_id, tag)])
        assert history == pytest.approx(values, rel=1e-6), tag

    sweep = tmp_path / "sweep"
    args = ["-m", *LOGGED, "epochs=1", "seed=0,1", "hydra/launcher=batched", "logger=mlflow", f"logger.tracking_uri={uri}"]
    assert nin("train", *args, f"hydra.sweep.dir={sweep}").returncode == 0
    members = sorted(p.parent for p in sweep.glob("*/metrics.csv"))
    runs = client.search_runs([experiment], f"tags.`nin.run_dir` LIKE '{sweep.resolve()}/%'")
    assert sorted(r.data.tags["nin.run_dir"] for r in runs) == [str(m.resolve()) for m in members]
    for r in runs:
        seed = r.data.params["seed"]
        member = next(m for m in members if json.loads((m / "logger.json").read_text())["id"] == r.info.run_id)
        assert str(OmegaConf.load(member / "config.yaml").seed) == seed
        accs = [m.value for m in client.get_metric_history(r.info.run_id, "metrics/test_acc")]
        assert accs == pytest.approx([float(row["test_acc"]) for row in read_rows(member)], rel=1e-6)


def wandb_history(run_dir: Path, run_id: str) -> list[dict[str, str]]:
    """The history records of every offline W&B run file with this id, through W&B's own protobuf
    Record (the file is framed as a LevelDB log: 7-byte header, 32 KiB blocks, chunked records)."""
    from wandb.proto import wandb_internal_pb2

    out = []
    for path in sorted(run_dir.glob(f"wandb/offline-run-*-{run_id}/run-{run_id}.wandb")):
        data, pos, buf = path.read_bytes(), 7, b""
        while pos + 7 <= len(data):
            left = 32768 - pos % 32768
            _, length, kind = struct.unpack("<IHB", data[pos : pos + 7]) if left >= 7 else (0, 0, 0)
            if left < 7 or kind == 0:
                pos += left
                continue
            buf, pos = buf + data[pos + 7 : pos + 7 + length], pos + 7 + length
            if kind in (1, 4):  # a whole record, or its last chunk
                record = wandb_internal_pb2.Record()
                record.ParseFromString(buf)
                buf = b""
                if record.WhichOneof("record_type") == "history":
                    out.append({i.key or "/".join(i.nested_key): i.value_json for i in record.history.item})
    return out


def test_wandb_offline_run_continues_the_same_run_with_every_row_once(tmp_path):
    """Stopped by SIGTERM (W&B closes its run; after a SIGKILL its buffered rows are lost and
    nin sends them again, see WandbLogger), then resumed: one W&B run, every row once."""
    pytest.importorskip("wandb", reason="the wandb extra: pip install -e '.[wandb]'")
    run = tmp_path / "run"
    killed_then_resumed(run, "logger=wandb", fault="step:6:SIGTERM")
    run_id = json.loads((run / "logger.json").read_text())["id"]
    history = wandb_history(run, run_id)
    assert len(list(run.glob(f"wandb/offline-run-*-{run_id}"))) == 2  # one W&B run, written by two processes
    for tag, values in csv_series(run).items():
        logged = once([(int(h["_step"]), float(h[tag])) for h in history if tag in h])
        assert logged == pytest.approx(values, rel=1e-6), tag


def test_a_logger_without_its_extra_is_one_line_before_training(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed
    with pytest.raises(SystemExit) as exit_:
        main(["train", *LOGGED, "logger=wandb", f"hydra.run.dir={tmp_path}"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        "nin: error: logger=wandb needs the wandb package: pip install -e '.[wandb]' (in nin's checkout)"
    ]
    assert not list(tmp_path.iterdir())
    assert make_cfg("logger=none").logger.kind == "none"  # the default group composes without any extra
