"""Training, in stages: setup (validate, device, data, model) -> member (one run's state and
records) -> steps (how K stacked members take a step) -> loop (the epoch loop) -> jobs (open,
resume, group, signals, evaluate). A single run is an ensemble of one."""

from nin_cli.errors import Interrupted
from nin_cli.train.jobs import run_jobs, train, train_many
from nin_cli.train.member import Member, RunResult

__all__ = ["Interrupted", "Member", "RunResult", "run_jobs", "train", "train_many"]
