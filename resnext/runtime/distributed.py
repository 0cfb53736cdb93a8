"""Process-group plumbing: ranks that torchrun or SLURM started, a free port, init and teardown,
and the one run directory every rank of a job shares.
"""
from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Mapping, Optional

import torch.distributed as dist
from omegaconf import OmegaConf

from ..config.errors import ConfigError

log = logging.getLogger("resnext")

RUN_DIR_RESOLVER = "resnext.launcher_run_dir"


@dataclass(frozen=True)
class EnvRanks:
    """This process's place in a job that an outside launcher started."""

    source: str  # torchrun | slurm
    rank: int
    world_size: int
    local_rank: int
    local_world_size: Optional[int]  # None when the launcher does not say
    addr: str
    port: int


def _int(environ: Mapping[str, str], name: str) -> int:
    try:
        return int(environ[name])
    except ValueError as err:
        raise ConfigError(f"distributed=env: {name}={environ[name]!r} is not an integer") from err


def _leading_int(value: Optional[str]) -> Optional[int]:
    # SLURM writes per-node task counts as "4" or "4(x2)" (or "4,2(x3)" for uneven nodes).
    digits = "".join(c for c in (value or "").split(",")[0].split("(")[0] if c.isdigit())
    return int(digits) if digits else None


def ranks_from_env(environ: Mapping[str, str] = os.environ) -> EnvRanks:
    """torchrun's RANK/WORLD_SIZE/LOCAL_RANK/MASTER_*, else srun's SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID."""
    if "RANK" in environ:
        missing = [k for k in ("WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if k not in environ]
        if missing:
            raise ConfigError(f"distributed=env: RANK is set but {', '.join(missing)} is not: start the job with "
                              "torchrun, which sets them all")
        local_world = environ.get("LOCAL_WORLD_SIZE")
        return EnvRanks("torchrun", _int(environ, "RANK"), _int(environ, "WORLD_SIZE"), _int(environ, "LOCAL_RANK"),
                        int(local_world) if local_world else None, environ["MASTER_ADDR"],
                        _int(environ, "MASTER_PORT"))
    if "SLURM_PROCID" in environ:
        return EnvRanks("slurm", _int(environ, "SLURM_PROCID"), _int(environ, "SLURM_NTASKS"),
                        _int(environ, "SLURM_LOCALID"), _leading_int(environ.get("SLURM_NTASKS_PER_NODE")),
                        environ.get("MASTER_ADDR") or _slurm_first_host(environ),
                        _int(environ, "MASTER_PORT") if "MASTER_PORT" in environ else _slurm_port(environ))
    raise ConfigError("distributed=env joins ranks that a launcher started, but neither torchrun's RANK/WORLD_SIZE/"
                      "LOCAL_RANK/MASTER_ADDR/MASTER_PORT nor srun's SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID are "
                      "set: run `torchrun --nproc_per_node=N -m resnext.train ... distributed=env` or "
                      "`srun python -m resnext.train ... distributed=env`, or use distributed=spawn on one node")


def _slurm_first_host(environ: Mapping[str, str]) -> str:
    """The job's first node, as `scontrol show hostnames` expands SLURM_JOB_NODELIST."""
    nodelist = environ.get("SLURM_JOB_NODELIST") or environ.get("SLURM_NODELIST")
    scontrol = shutil.which("scontrol")
    if not nodelist or scontrol is None:
        raise ConfigError("distributed=env under SLURM: MASTER_ADDR is not set and cannot be derived "
                          f"(SLURM_JOB_NODELIST={nodelist!r}, scontrol {'missing' if scontrol is None else 'found'}): "
                          "export MASTER_ADDR=$(scontrol show hostnames $SLURM_JOB_NODELIST | head -n1)")
    hosts = subprocess.run([scontrol, "show", "hostnames", nodelist], capture_output=True, text=True,
                           check=True, timeout=30).stdout.split()
    return hosts[0]


def _slurm_port(environ: Mapping[str, str]) -> int:
    # Same on every node without talking to each other, and differs between concurrent jobs.
    return 15000 + _int(environ, "SLURM_JOB_ID") % 20000 if "SLURM_JOB_ID" in environ else 29500


def free_port(addr: str) -> int:
    """A port the OS says is free now on addr (a tiny race until rank 0 binds it is accepted)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((addr, 0))
        return sock.getsockname()[1]


# The process group's own timeout never goes below this: ranks that start slowly (imports on a busy node)
# must still meet at the rendezvous. Shorter limits are the hang watchdog's job (resnext/runtime/watchdog.py).
MIN_GROUP_TIMEOUT_MIN = 1.0


def init_process_group(backend: str, init_method: str, rank: int, world_size: int, timeout_min: float) -> None:
    # The timeout bounds every collective as well as the rendezvous: a rank that waits for a dead peer
    # fails after it instead of hanging (the launcher usually ends it much sooner).
    dist.init_process_group(backend=backend, init_method=init_method, rank=rank, world_size=world_size,
                            timeout=timedelta(minutes=max(timeout_min, MIN_GROUP_TIMEOUT_MIN)))


def destroy_process_group() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def export_rendezvous(ranks: EnvRanks) -> None:
    """env:// reads MASTER_ADDR/PORT; under SLURM they may have been derived rather than exported."""
    os.environ.setdefault("MASTER_ADDR", ranks.addr)
    os.environ.setdefault("MASTER_PORT", str(ranks.port))


def agree_run_dir(run_dir: Path, rank: int) -> Path:
    """Rank 0's run directory, on every rank: each torchrun/srun rank ran Hydra and may have made its own."""
    shared = [str(run_dir)]
    dist.broadcast_object_list(shared, src=0)
    agreed = Path(shared[0])
    if agreed != Path(run_dir):
        log.warning("rank %d: Hydra made %s but rank 0 uses %s; every rank writes there. Give the job one id "
                    "(torchrun --rdzv-id, or SLURM's job id) or set hydra.run.dir to avoid the stray directory",
                    rank, run_dir, agreed)
        agreed.mkdir(parents=True, exist_ok=True)
    return agreed


def launcher_run_dir(mode: str, default: str, resume: Optional[str] = None) -> str:
    """hydra.run.dir for a job: one directory per launcher job id under distributed=env, else `default`.

    Under torchrun/srun every rank composes its own config, and the timestamp in `default` can differ
    between ranks (and nodes); the job id that the launcher gives every rank cannot. With resume=auto
    inside a SLURM job the directory is named after the job id in every mode, because a requeued job
    keeps its id and must find its checkpoint again (a timestamp would start it over).
    """
    slurm_job = os.environ.get("SLURM_JOB_ID")
    if mode != "env":
        return f"slurm-{slurm_job}" if resume == "auto" and slurm_job else default
    if slurm_job and "SLURM_PROCID" in os.environ and "RANK" not in os.environ:
        step = os.environ.get("SLURM_STEP_ID")
        return f"slurm-{slurm_job}" + (f".{step}" if step else "")
    run_id = os.environ.get("TORCHELASTIC_RUN_ID")
    if run_id and run_id != "none":  # torchrun's --rdzv-id; "none" is its default for multi-node jobs
        return f"torchrun-{run_id}"
    return default


def register_resolvers() -> None:
    if not OmegaConf.has_resolver(RUN_DIR_RESOLVER):
        OmegaConf.register_new_resolver(RUN_DIR_RESOLVER, launcher_run_dir)
