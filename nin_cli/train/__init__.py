"""Training, in stages: setup (validate, device, data, model) -> member (one run's state and
records) -> steps (how K stacked members take a step) -> loop (the epoch loop) -> resume (when a
directory may be resumed) -> ensembles (open, group, train, record how runs ended). A single run
is an ensemble of one. What runs after training (evaluation) is the runner's (nin_cli/interface/runner.py)."""

from nin_cli.errors import Interrupted
from nin_cli.train.ensembles import train, train_many
from nin_cli.train.member import Member, RunResult

__all__ = ["Interrupted", "Member", "RunResult", "train", "train_many"]
