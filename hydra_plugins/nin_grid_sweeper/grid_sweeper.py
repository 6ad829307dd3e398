"""`hydra/sweeper=grid`, nin's default sweeper: Hydra's basic sweeper (the same grid, in the same
order, the same batches and launch), except that it does not compose each job a second time to
check it can be composed where nin's pre-flight (nin_cli/config/preflight.py) composed it already. A job
the pre-flight did not see (a command run through Hydra without it) is checked as Hydra does.

Its config is conf/hydra/sweeper/grid.yaml (a file of the primary config directory, so that every
composition finds it, the pre-flight's and the tests' included).
"""

from collections.abc import Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper


class GridSweeper(BasicSweeper):
    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        from nin_cli.config.plan import received

        plan = received()  # the pre-flight's plan of this command (nin_cli/config/plan.py)
        unchecked = [job for job in batch if plan is None or not plan.was_composed(list(job))]
        if unchecked:
            super().validate_batch_is_legal(unchecked)
