"""The Hydra plugin class of hydra/sweeper=resnext; the work is resnext.sweeps.sweeper.SweeperImpl's.

Hydra imports every module under hydra_plugins at start-up, for every command: this one imports nothing heavy
until the sweeper is chosen.
"""
from typing import Any, List

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class ResnextSweeper(Sweeper):
    def __init__(self, **settings: Any) -> None:
        from resnext.sweeps.sweeper import SweeperImpl

        self.impl = SweeperImpl(**settings)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.impl.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: List[str]) -> None:
        return self.impl.sweep(arguments)
