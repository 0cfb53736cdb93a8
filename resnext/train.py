"""python -m resnext.train [group=option ...] [key=value ...]: compose -> validate -> launch.

Everything that can be checked without hardware or data loading is checked here, in the process Hydra
started, before any rank exists: so a typo, a missing dataset or an absent device costs seconds, not a
job that dies on eight cards after the first epoch.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Optional

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from . import checkpoint, launch, sweep_resume
from .config import ConfigError, check_config, register_configs
from .data import check_dataset
from .data.robust import BadImageError, bad_image_message
from .preempt import Preempted
from .sweep import place_job_on_devices
from .trainer import fit

log = logging.getLogger("resnext")

register_configs()


def _check_dataset(cfg: DictConfig) -> Optional[str]:
    """A dry run checks a launch plan, perhaps on a machine without the data: report, don't stop."""
    try:
        check_dataset(cfg.dataset)
    except ConfigError as err:
        if not cfg.launch.dry_run:
            raise
        return str(err)
    return None


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        check_config(cfg)
        done = sweep_resume.prepare_job(cfg, run_dir)  # sweep.resume=true: skip, resume or rerun this job
        if done is not None:
            return done
        checkpoint.check_auto_resume(cfg, run_dir)
        dataset_problem = _check_dataset(cfg)
        place_job_on_devices(cfg)  # before the plan: a sweep's parallel jobs each get their own devices
        plan = launch.plan(cfg)
    except ConfigError as err:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # the sweep records this job as failed and goes on with the others
        log.error("%s", err)
        sys.exit(2)
    if cfg.launch.dry_run:
        print(plan.describe())
        if dataset_problem:
            print(f"  dataset: a real launch would refuse it: {dataset_problem}")
        return 0.0
    try:
        return launch.run(cfg, plan, run_dir, fit)
    except (Preempted, launch.HangDetected) as stop:  # documented exit codes: a job script can requeue
        log.warning("%s", stop)
        sys.exit(stop.exit_code)
    except BadImageError as err:  # dataset.bad_images=error: the file and the option, not a worker traceback
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise
        log.error("%s", bad_image_message(err))
        sys.exit(2)


if __name__ == "__main__":
    main()
