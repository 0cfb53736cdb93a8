"""python -m resnext.train [group=option ...] [key=value ...]: compose -> validate -> launch.

Everything that can be checked without hardware or data loading is checked here, in the process Hydra
started, before any rank exists: so a typo, a missing dataset or an absent device costs seconds, not a
job that dies on eight cards after the first epoch.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from . import launch
from .config import ConfigError, check_config, register_configs
from .data import check_dataset
from .trainer import fit

log = logging.getLogger("resnext")

register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        check_config(cfg)
        check_dataset(cfg.dataset)
        plan = launch.plan(cfg)
    except ConfigError as err:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # the sweep records this job as failed and goes on with the others
        log.error("%s", err)
        sys.exit(2)
    if cfg.launch.dry_run:
        print(plan.describe())
        return 0.0
    return launch.run(cfg, plan, run_dir, fit)


if __name__ == "__main__":
    main()
