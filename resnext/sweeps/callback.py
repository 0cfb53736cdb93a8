"""Multirun support: the Hydra callback that keeps the sweep summary current, and per-job device placement.

Why the summary is rewritten after every job and not only at the end: Hydra's BasicSweeper re-raises
the first failed job's exception before `on_multirun_end` runs, and a sweep may be killed halfway.
Each rewrite reads the whole sweep directory (resnext.report), so it is right also when parallel
launchers finish jobs in any order or on other machines.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Iterator, List, Optional, Sequence

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from ..config.errors import ConfigError
from .results import read_json
from .probe_summary import write_probe_summary
from .summary import write_summary

log = logging.getLogger("resnext")


def _in_multirun(config: DictConfig) -> bool:
    return config.hydra.mode == RunMode.MULTIRUN


def _is_rank_zero() -> bool:
    # Under SLURM (submitit, tasks_per_node = devices) every task of a job runs the callbacks.
    return all(os.environ.get(var, "0") == "0" for var in ("RANK", "SLURM_PROCID"))


def record_outcome(job_dir: Path, error: Optional[BaseException]) -> None:
    """Put the job's end into result.json, which is what resnext.report reads.

    A failure: status failed and the error, keeping whatever the job wrote. A job that ended without
    writing one (launch.dry_run, evaluate): status completed, no numbers, instead of looking unfinished.
    """
    path = job_dir / "result.json"
    result = read_json(path) or {}
    if error is None:
        if result:
            return
        result["status"] = "completed"
    else:
        message = " ".join(str(error).split())  # one line, so it fits a table cell
        result.update(status="failed", error=f"{type(error).__name__}: {message}" if message else type(error).__name__)
        # the fields every result.json has (resnext/training/trial.py), as far as a failed job can tell
        metrics = job_dir / "metrics.jsonl"
        result.setdefault("epochs_run", len(metrics.read_text().splitlines()) if metrics.is_file() else 0)
        result.setdefault("ended_at", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    job_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")


@contextlib.contextmanager
def _logged_not_raised(sweep_dir: Path) -> Iterator[None]:
    # Bookkeeping that fails must not turn finished jobs into a failed sweep.
    try:
        yield
    except Exception:  # noqa: BLE001
        log.exception("could not update the sweep summary in %s (python -m resnext.report %s retries)",
                      sweep_dir, sweep_dir)


class SweepSummary(Callback):
    """Registered in conf/config.yaml (hydra.callbacks); does nothing in single-run mode."""

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if not _in_multirun(config) or not _is_rank_zero():
            return
        error = None
        if job_return.status == JobStatus.FAILED:
            try:
                job_return.return_value  # the public way to get the exception: it re-raises it
            except Exception as raised:  # noqa: BLE001 - any failure of the job is recorded
                error = raised
        sweep_dir = Path(config.hydra.sweep.dir)
        with _logged_not_raised(sweep_dir):
            record_outcome(Path(config.hydra.runtime.output_dir), error)
            write_summary(sweep_dir)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        with _logged_not_raised(sweep_dir):
            write_summary(sweep_dir)
            log.info("sweep summary: %s", sweep_dir / "summary.md")
            write_probe_summary(sweep_dir, config.hydra.get("launcher"))  # launch.probe=true: the sweep's cost


def job_devices(pool: Sequence[int], groups: int, job_num: int, group_size: Optional[int] = None) -> List[int]:
    """The devices of job `job_num`: the (job_num mod groups)-th of `groups` disjoint, consecutive groups
    of `group_size` devices from `pool` (default: as large as the pool allows; what is left over stays idle).
    """
    if groups < 1:
        raise ConfigError(f"device.spread_jobs={groups} must be 0 (off) or at least 1")
    if groups > len(pool):
        raise ConfigError(f"device.spread_jobs={groups} but only {len(pool)} devices to share ({list(pool)}): "
                          f"run at most {len(pool)} jobs at once or list more devices in device.device_list")
    size = group_size or len(pool) // groups
    slot = job_num % groups
    return list(pool[slot * size:(slot + 1) * size])


def visible_device_count(kind: str) -> int:
    import torch

    if kind == "npu":
        from ..runtime.devices import import_torch_npu

        import_torch_npu()  # registers torch.npu; a ConfigError that says what to install if it cannot
        return torch.npu.device_count()
    return torch.cuda.device_count()


def place_job_on_devices(cfg: DictConfig) -> None:
    """With device.spread_jobs = N, job k of a multirun trains on the (k mod N)-th of N device groups.

    The pool is device.device_list when it lists several devices, else every visible device. With
    distributed=none a job trains on one device: job k uses pool[k mod N]. With distributed=spawn the
    pool is cut into N equal groups and each job's ranks use its group; a fixed device.port moves up by
    the group index so parallel jobs do not share a rendezvous. cpu and distributed=env: no effect.
    """
    groups = cfg.device.spread_jobs
    if not groups or not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return
    from ..runtime.devices import resolve_type

    kind = resolve_type(cfg.device.type)
    if kind == "cpu" or cfg.distributed.mode == "env":  # env: the ranks' launcher already chose the devices
        return
    listed = list(cfg.device.device_list or [])
    pool = listed if len(listed) > 1 else list(range(visible_device_count(kind)))
    # hydra/sweeper=resnext numbers jobs by trial, but its slot owns the devices (resnext/sweeps/slots.py)
    slot = OmegaConf.select(cfg, "sweep.trial.slot")
    job_num = slot if slot is not None else HydraConfig.get().job.num
    cfg.device.device_list = job_devices(pool, groups, job_num, 1 if cfg.distributed.mode == "none" else None)
    if cfg.device.port is not None:
        cfg.device.port = cfg.device.port + job_num % groups
    log.info("%s %d of the sweep trains on %s %s", "job" if slot is None else "slot", job_num, kind,
             list(cfg.device.device_list))
