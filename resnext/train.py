"""python -m resnext.train [group=option ...] [key=value ...]: compose -> validate -> launch.

Everything that can be checked without hardware or data loading is checked here, in the process Hydra
started, before any rank exists: so a typo, a missing dataset or an absent device costs seconds, not a
job that dies on eight cards after the first epoch.
"""
from __future__ import annotations

import logging
import shlex
import shutil
import sys
from pathlib import Path
from typing import Callable, Optional, Sequence

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from .models import checkpoint
from .training import launch, probe, resume
from .sweeps import resume as sweep_resume
from .config.errors import ConfigError
from .config.schema import check_config, register_configs
from .data import check_dataset, resolve_loader
from .data.robust import BadImageError, bad_image_message
from .loggers import check_loggers
from .runtime import run_record
from .runtime.preempt import Preempted
from .models.pretrained import ensure_cached, is_torchvision
from .training.recipe_checks import check_recipe
from .config.hydra_errors import one_line_refusals
from .config.suggest import check_added_keys
from .sweeps.callback import place_job_on_devices, record_outcome
from .training.trainer import fit

log = logging.getLogger("resnext")

register_configs()


def _check_dataset(cfg: DictConfig) -> Optional[str]:
    """A dry run checks a launch plan, perhaps on a machine without the data: report, don't stop."""
    def check() -> None:
        check_dataset(cfg.dataset)
        resolve_loader(cfg.dataset)  # dataset.loader=dali: DALI present, dataset and options it can serve

    return _refused_unless_dry_run(cfg, check)


def _refused_unless_dry_run(cfg: DictConfig, check: Callable[[], object]) -> Optional[str]:
    try:
        check()
    except ConfigError as err:
        if not cfg.launch.dry_run:
            raise
        return str(err)
    return None


# What Hydra puts in a run directory before main runs; a directory holding nothing else is discarded.
_HYDRA_ONLY = {".hydra", "train.log"}


def _discard_run_dir(run_dir: Path) -> None:
    """A refused run or a dry run leaves no outputs/<date>/<time>/ behind (nor empty parents of it)."""
    if HydraConfig.get().mode == RunMode.MULTIRUN or not run_dir.is_dir():
        return  # a sweep's job directory records the job, refused or not
    if {p.name for p in run_dir.iterdir()} <= _HYDRA_ONLY:
        shutil.rmtree(run_dir, ignore_errors=True)
        for parent in (run_dir.parent, run_dir.parent.parent):
            if parent.name and parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()


def resume_command(run_dir: Path, args: Sequence[str]) -> str:
    """How to continue a stopped run: its command line in its own directory with resume=auto. The same command
    alone would not do: without hydra.run.dir it starts a fresh run in a new outputs/<date>/<time>/."""
    if HydraConfig.get().mode == RunMode.MULTIRUN:  # every job of the sweep: skip, resume or rerun
        kept = [a for a in args if not a.startswith(("hydra.sweep.dir=", "sweep.resume="))]
        where = [f"hydra.sweep.dir={run_dir.parent}", "sweep.resume=true"]
    else:
        kept = [a for a in args if not a.startswith(("hydra.run.dir=", "resume="))]
        where = [f"hydra.run.dir={run_dir}", "resume=auto"]
    return " ".join(["python -m resnext.train", *(shlex.quote(arg) for arg in [*kept, *where])])


def _sweep_dir() -> Optional[Path]:
    return Path(HydraConfig.get().sweep.dir) if HydraConfig.get().mode == RunMode.MULTIRUN else None


def _record_start(cfg: DictConfig, plan: launch.LaunchPlan, run_dir: Path) -> None:
    """run_record.json, once per start, by rank 0's process (with spawn: its parent, the one Hydra started)."""
    if plan.first_rank != 0:  # distributed=env: every rank runs main, rank 0 speaks for the run
        return
    overrides = HydraConfig.get().overrides
    run_record.start(run_dir, sys.argv, list(overrides.task), list(overrides.hydra), plan.device_type,
                     [str(device) for device in plan.devices], checkpoint.resolve_resume(cfg.resume, run_dir))


def _run(cfg: DictConfig, plan: launch.LaunchPlan, run_dir: Path) -> float:
    """Launch; a failure is written to train.log (with its traceback) and to result.json as status failed."""
    try:
        with probe.worker_for(cfg, fit, _sweep_dir()) as worker:  # fit, or launch.probe's measurement
            return launch.run(cfg, plan, run_dir, worker)
    except Preempted as stop:  # documented exit code: a job script can requeue
        log.warning("%s; to continue: %s", stop, resume_command(run_dir, sys.argv[1:]))
        sys.exit(stop.exit_code)
    except launch.HangDetected as stop:
        log.warning("%s", stop)
        sys.exit(stop.exit_code)
    except BadImageError as err:  # dataset.bad_images=error: the file and the option, not a worker traceback
        record_outcome(run_dir, err)
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise
        log.error("%s", bad_image_message(err))
        sys.exit(2)
    except Exception as err:
        if isinstance(err, ConfigError):  # found once the data was loaded, e.g. a folder's class count
            log.error("%s", err)
        else:
            log.exception("the run failed")
        record_outcome(run_dir, err)
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise
        sys.exit(2 if isinstance(err, ConfigError) else 1)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        check_added_keys(cfg)
        check_config(cfg)
        check_loggers(cfg)
        check_recipe(cfg)
        probe.check_probe(cfg)
        done = sweep_resume.prepare_job(cfg, run_dir)  # sweep.resume=true: skip, resume or rerun this job
        if done is not None:
            return done
        checkpoint.check_auto_resume(cfg, run_dir)
        dataset_problem = _check_dataset(cfg)
        if is_torchvision(cfg.model.weights) and not cfg.launch.dry_run:
            ensure_cached(cfg.model.arch, cfg.model.weights)  # once, before the ranks: offline is refused here
        place_job_on_devices(cfg)  # before the plan: a sweep's parallel jobs each get their own devices
        plan = launch.plan(cfg)
        files_problem = _refused_unless_dry_run(cfg, lambda: resume.check_input_files(cfg, run_dir))
    except ConfigError as err:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # the sweep records this job as failed and goes on with the others
        log.error("%s", err)
        _discard_run_dir(run_dir)
        sys.exit(2)
    if cfg.launch.dry_run:
        print(plan.describe())
        if dataset_problem:
            print(f"  dataset: a real launch would refuse it: {dataset_problem}")
        if files_problem:
            print(f"  resume/model.weights: a real launch would refuse it: {files_problem}")
        _discard_run_dir(run_dir)
        return 0.0
    _record_start(cfg, plan, run_dir)
    return _run(cfg, plan, run_dir)


def cli() -> None:
    """The console script and `python -m resnext.train`: main, with Hydra's refusals in one line and exit 2."""
    with one_line_refusals(sys.argv[1:], main.__wrapped__):
        main()


if __name__ == "__main__":
    cli()
