"""`hydra/sweeper=map` (what `nin map` runs): a phase map located adaptively, on any launcher.

Round by round it hands the launcher (basic, batched, batched_local, batched_slurm, ...) the runs
of the points it still needs, classifies them once the round's runs have ended, and refines the
brackets where the majority phase over seeds changes, until every bracket is within
`tolerance` or `budget` runs are spent (analysis/phase_map.py). Nothing is kept in memory between
rounds that is not in the sweep directory: the runs there whose config matches are the map's
points, so a map killed at any moment continues when the same command is run again, and one
given a tighter tolerance, more seeds or a wider range only adds runs. Runs a `nin train -m` put
in the directory count too.

(No `from __future__ import annotations`: Hydra imports plugin modules outside sys.modules.)
"""

import logging
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from nin_cli.config.map_settings import MapSweeperConf

log = logging.getLogger(__name__)


ConfigStore.instance().store(group="hydra/sweeper", name="map", node=MapSweeperConf, provider="nin")


class MapSweeper(Sweeper):
    def __init__(self, **settings: Any) -> None:
        self.settings = settings
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.launcher = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list) -> Any:
        from nin_cli.analysis.phase_map import MapRun
        from nin_cli.errors import ConfigError, one_line_errors

        assert self.config is not None and self.launcher is not None and self.hydra_context is not None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        parsed = OverridesParser.create(config_loader=self.hydra_context.config_loader).parse_overrides(list(arguments))
        with one_line_errors():
            if not self.config.hydra.launcher.get("wait", True):
                raise ConfigError("hydra.launcher.wait=false: a map reads each round's runs before it chooses the next; let it wait")
            mapping = MapRun(self.settings, parsed, sweep_dir, self.compose)
            returns, index = [], 0
            while (batch := mapping.next_round()) is not None:
                results = self.launcher.launch(batch, initial_job_idx=index)
                index += len(batch)
                returns.append(results)
            mapping.finish()
        return returns

    def compose(self, overrides: list) -> DictConfig:
        """A job's config, as the launcher will compose it (to check it, and to know which runs match)."""
        assert self.hydra_context is not None and self.config is not None
        from nin_cli.config.resolve import without_hydra

        # the job's own config, as its run writes it (hydra.runtime is only set when it runs)
        return without_hydra(self.hydra_context.config_loader.load_sweep_config(master_config=self.config, sweep_overrides=list(overrides)))
