"""sweep.resume=true: a multirun re-run with the same hydra.sweep.dir continues where the last one stopped.

Why it works with Hydra's own sweepers and launchers without a plugin of ours: the basic sweeper
numbers its jobs in a fixed order (the same grid gives the same job numbers), and the joblib and
submitit launchers keep those numbers, so job k finds its earlier directory <sweep dir>/k. Each job
decides there, before any work, from its result.json and checkpoint:

  completed (result.json says so)        -> skipped; its recorded best Acc@1 goes back to Hydra
  failed (the sweep callback said so)    -> run again from the start
  interrupted (no status: killed, preempted) -> resume=auto: from its own checkpoint.pth.tar, or
                                            from the start when it never wrote one

Optuna samples new parameters on every run, so a job number names a different trial each time:
sweep.resume is refused there (see README "Long runs and clusters" for what Optuna offers instead); the
package's own sweeper (hydra/sweeper=resnext) refuses it too and continues its study by storage + study name.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from ..models.checkpoint import AUTO
from ..config.errors import ConfigError
from .results import read_json

log = logging.getLogger("resnext")


def job_status(job_dir: Path) -> str:
    """completed | failed | interrupted (started before, never finished) | new."""
    result = read_json(job_dir / "result.json") or {}
    if result.get("status") in ("completed", "failed"):
        return result["status"]
    started = (job_dir / "checkpoint.pth.tar").exists() or (job_dir / "metrics.jsonl").exists()
    return "interrupted" if started else "new"


def _check_sweep(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        raise ConfigError("sweep.resume=true continues a multirun (-m) in the same hydra.sweep.dir; for a single "
                          "run use resume=auto (with a fixed hydra.run.dir)")
    if "optuna" in str(hydra_cfg.sweeper.get("_target_", "")).lower():
        raise ConfigError("sweep.resume=true cannot resume an Optuna search: Optuna samples new parameters on every "
                          "run, so job numbers do not name the same trial. Drop sweep.resume; to continue a study, "
                          "give it persistent storage (hydra.sweeper.storage=sqlite:///optuna.db "
                          "hydra.sweeper.study_name=<name>) and a new hydra.sweep.dir")


def prepare_job(cfg: DictConfig, job_dir: Path) -> Optional[float]:
    """None: train (cfg.resume set as the job's state asks); a number: the job is done, this is its result."""
    if not cfg.sweep.resume:
        return None
    _check_sweep(cfg)
    status = job_status(job_dir)
    if status == "completed":
        best = (read_json(job_dir / "result.json") or {}).get("best_acc1")
        log.info("sweep.resume: job %s completed before (best Acc@1 %s): skipped", job_dir.name, best)
        return float(best or 0.0)
    if status == "failed":
        log.info("sweep.resume: job %s failed before: running it again from the start", job_dir.name)
        for name in ("result.json", "metrics.jsonl", "checkpoint.pth.tar"):  # a fresh start, not a mix
            (job_dir / name).unlink(missing_ok=True)
        cfg.resume = None
    elif status == "interrupted":
        log.info("sweep.resume: job %s was interrupted: resuming from its checkpoint", job_dir.name)
        cfg.resume = AUTO
    return None
