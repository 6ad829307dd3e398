"""Resume policy: a directory is resumed only by the run it holds (or extended to more epochs
where nothing in its first epochs depends on the total), and only onto complete records."""

from __future__ import annotations

from omegaconf import DictConfig

from nin_cli.config.legacy import named_with_epochs, resume_hints
from nin_cli.config.resolve import RunConfig, load
from nin_cli.errors import ConfigError, RecordError
from nin_cli.identity import differing, identity
from nin_cli.records.store import RunRecords
from nin_cli.train.member import Member


def check_same_run(records: RunRecords, run: RunConfig) -> None:
    """Resume only the run this config names (keys that may change on resume aside); a longer
    `epochs` only with extend=true (check_extension)."""
    if not records.config_path.exists():
        return
    saved = identity(load(records.config_path).flat, "resume")
    current = identity(run.flat, "resume")
    if saved != current:
        diff = differing(saved, current)
        if diff == ["epochs"]:
            return check_extension(records, int(saved["epochs"]), run)
        hint = "; use a new output directory"
        older = resume_hints(saved, diff)
        if older:  # a run written by an older nin: what it trained with, as keys to type
            hint += f", or resume it as it was trained: {' '.join(older)}"
        raise ConfigError(f"{records.dir} holds a run with another config (differs in: {', '.join(diff)}){hint}")


def check_extension(records: RunRecords, trained: int, run: RunConfig) -> None:
    """A run asked for other `epochs` than it was started with. Trained on (extend=true) it must
    end as the longer run would have: nothing in its first epochs may depend on the total."""
    cfg, wanted = run.cfg, int(run.cfg.epochs)
    where = f"{records.dir} holds a run of epochs={trained}"
    if wanted < trained:
        raise ConfigError(f"{where}; epochs={wanted} would shorten it: use a new output directory")
    if not cfg.get("extend", False):
        raise ConfigError(f"{where} (differs in: epochs); add extend=true to train it on to epochs={wanted}, or use a new output directory")
    if cfg.noise.schedule.kind == "linear":
        raise ConfigError(
            f"{where} under noise.schedule=linear, which ramps sigma over all of a run's epochs: a {wanted}-epoch run "
            f"differs from it from epoch 2 on, so it cannot be extended; train epochs={wanted} in a new output directory"
        )
    if named_with_epochs(records.dir.name, trained):
        raise ConfigError(f"{records.dir}'s name says epochs={trained}: extended, it would not; train epochs={wanted} in a new sweep dir")


def extends(status: dict | None, cfg: DictConfig) -> bool:
    """Whether a finished run is to be trained on: completed all its epochs, fewer than asked for,
    with extend=true (a diverged run, or one that reached target_train_acc, would have ended there)."""
    return bool(
        cfg.get("extend", False)
        and status
        and status["status"] == "completed"
        and not str(status.get("reason") or "").startswith("reached train accuracy")
        and status["epoch"] < int(cfg.epochs)
    )


def expected_step_keys(last_step: int, every: int) -> list[int]:
    """steps.csv keys through `last_step`: step 0 (the state before training), then every `every`-th step."""
    return [0, *(range(every, last_step + 1, every) if every > 0 else [])]


def describe_keys(keys: list[int]) -> str:
    if not keys:
        return "no rows"
    dups = len(keys) - len(set(keys))
    return f"{len(keys)} rows ({keys[0]}..{keys[-1]}{f', {dups} duplicated' if dups else ''})"


def check_rows_match_checkpoint(m: Member) -> None:
    """Resume only onto complete records: every epoch and logged step up to the checkpoint, once."""
    records = m.records
    redo = "restore the files, or start the run over with resume=false overwrite=true"
    epochs = records.metrics.keys(m.columns, m.epoch)
    if epochs != list(range(m.epoch + 1)):
        raise RecordError(
            f"cannot resume {records.dir}: checkpoint.pt is at epoch {m.epoch} but metrics.csv holds "
            f"{describe_keys(epochs)} for epochs 0..{m.epoch}; {redo}"
        )
    steps = records.steps.keys(m.step_columns, m.step)
    if steps != expected_step_keys(m.step, int(m.s.cfg.log.every_steps)):
        raise RecordError(
            f"cannot resume {records.dir}: checkpoint.pt is at step {m.step} but steps.csv holds "
            f"{describe_keys(steps)} for steps 0..{m.step}; {redo}"
        )


def check_nothing_recorded_past_epoch_zero(m: Member) -> None:
    """A fresh start rewrites the CSVs: refuse if that would drop trained epochs (checkpoint.pt lost)."""
    trained = [e for e in m.records.metrics.keys(m.columns, 2**62) if e > 0]
    if trained:
        raise RecordError(
            f"{m.records.dir}: metrics.csv holds trained epochs (up to {max(trained)}) but checkpoint.pt is missing, "
            "so the run cannot resume; restore checkpoint.pt, or start over with resume=false overwrite=true"
        )
