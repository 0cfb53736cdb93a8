"""Process launcher: one process per device (distributed=spawn), or the ranks torchrun/SLURM started
(distributed=env), or just this process (distributed=none).

`plan` runs in the process Hydra started and refuses, before anything starts, whatever cannot run:
absent hardware, an unusable amp mode, a batch that does not split over the ranks. `run` starts the
ranks; each gets the resolved config (never Hydra again), its device and the one run directory.
"""
from __future__ import annotations

import logging
import os
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
import torch.multiprocessing as mp
from omegaconf import DictConfig, OmegaConf

from ..runtime import distributed, preempt
from ..runtime.amp import amp_advice, amp_problem, describe_amp
from ..runtime.compat import join_processes
from ..config.batch import AUTO, static_plan
from ..config.errors import ConfigError
from ..config.schema import typed_config
from ..data.robust import BadImageError, bad_image_message
from ..runtime.devices import (ALLOWED_BACKENDS, BACKENDS, Device, RankContext, cores_per_rank, hardware_problem,
                               layout_problem, local_devices, resolve_type)
from ..loggers.metrics import setup_process_logging
from .optim import effective_lr

log = logging.getLogger("resnext")

# hydra.run.dir in conf/config.yaml calls this resolver; train.py imports this module before composing.
distributed.register_resolvers()

Worker = Callable[[DictConfig, RankContext], float]


@dataclass(frozen=True)
class LaunchPlan:
    """Who runs where: this node's processes, the world they join, what each trains with."""

    mode: str  # none | spawn | env
    device_type: str  # resolved: cpu | cuda | npu
    devices: Tuple[Device, ...]  # one per process this node starts (env: this process only)
    world_size: int
    first_rank: int  # global rank of devices[0] (env: RANK; else 0)
    first_local_rank: int  # its rank on this node (env: LOCAL_RANK; else 0)
    backend: str
    addr: str
    port: Optional[int]  # None: not distributed, or picked at launch (dry run)
    global_batch: Any  # int, or "auto" (searched by each rank before training: resnext/training/batch_fit.py)
    per_rank_batch: Any  # per rank and optimizer step (micro-batch x accum_steps), or "auto"
    lr: Any  # float, or a note when the batch is searched
    workers: int
    amp: str
    source: str = ""  # env: torchrun | slurm
    hardware_checked: bool = True
    problems: Tuple[str, ...] = ()  # dry run: what a real launch would refuse
    notes: Tuple[str, ...] = ()  # what runs, but not as configured or not well: logged once before the ranks start
    accum_steps: Any = 1  # micro-steps per optimizer step, or "auto"

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def describe(self) -> str:
        head = "launch plan (dry run: nothing started)" if not self.hardware_checked else "launch plan"
        where = {"none": "one process", "spawn": f"{len(self.devices)} process(es) on this node",
                 "env": f"joins a job started by {self.source}"}[self.mode]
        rendezvous = "none (single process)"
        if self.distributed:
            rendezvous = f"{self.backend} at {self.addr}:{self.port if self.port is not None else '<free port>'}"
        lines = [head,
                 f"  distributed: {self.mode}, {where}; world size {self.world_size}",
                 f"  device type: {self.device_type}; process group: {rendezvous}",
                 f"  batch: global {self.global_batch} = {self.per_rank_batch} per rank x {self.world_size} "
                 f"rank(s){_micro_steps(self.accum_steps, self.per_rank_batch)}; lr {_lr_text(self.lr)}; "
                 f"{self.workers} loader worker(s) per rank",
                 f"  amp: {self.amp}"]
        for index, device in enumerate(self.devices):
            rank, local_rank = self.first_rank + index, self.first_local_rank + index
            lines.append(f"  rank {rank} (local {local_rank}): {device}" + (" -- prints, writes checkpoints and "
                                                                            "metrics" if rank == 0 else ""))
        lines += [f"  note: {note}" for note in self.notes]
        if not self.hardware_checked:
            lines.append("  hardware and optional packages: NOT checked (launch.dry_run=true)")
            lines += [f"  would refuse: {problem}" for problem in self.problems]
        return "\n".join(lines)


def plan(cfg: DictConfig) -> LaunchPlan:
    """Validate the launch and say who runs where. Raises ConfigError; a dry run lists availability problems."""
    dry_run = cfg.launch.dry_run
    mode = cfg.distributed.mode
    kind = resolve_type(cfg.device.type)
    env = distributed.ranks_from_env() if mode == "env" else None
    if env is not None:
        devices = [_env_device(cfg.device, kind, env)]
        world_size, first_rank, first_local = env.world_size, env.rank, env.local_rank
        addr, port = env.addr, env.port
    else:
        devices = local_devices(cfg.device, kind)
        world_size, first_rank, first_local = len(devices), 0, 0
        addr, port = cfg.device.addr, cfg.device.port
        if mode == "none" and world_size > 1:
            what = "device.nprocs" if kind == "cpu" else "device.device_list"
            raise ConfigError(f"{what} asks for {world_size} processes but distributed=none runs one: add "
                              "distributed=spawn (or list one device)")
    backend = _backend(cfg.distributed.backend, kind)
    _check_ranks(cfg, kind, world_size)

    problems = [p for p in (hardware_problem(kind, [d.index for d in devices]), amp_problem(cfg.amp, kind),
                            layout_problem(kind, cfg.model.channels_last)) if p]
    if problems and not dry_run:
        raise ConfigError("\n".join(problems))
    if mode == "spawn" and world_size > 1 and port is None and not dry_run:
        port = distributed.free_port(addr)
    local_ranks = env.local_world_size if env is not None else len(devices)  # None: the launcher does not say
    workers, workers_note = _capped_workers(cfg.dataset.workers, local_ranks)
    notes = tuple(note for note in (workers_note, amp_advice(cfg.amp, kind)) if note)
    return LaunchPlan(mode=mode, device_type=kind, devices=tuple(devices), world_size=world_size,
                      first_rank=first_rank, first_local_rank=first_local, backend=backend, addr=addr, port=port,
                      **_batch_fields(cfg, world_size), workers=workers,
                      amp=describe_amp(cfg.amp), source=env.source if env else "",
                      hardware_checked=not dry_run, problems=tuple(problems), notes=notes)


def _capped_workers(requested: int, local_ranks: Optional[int]) -> Tuple[int, Optional[str]]:
    """dataset.workers per rank, at most this node's cores per rank: more worker processes than cores only
    compete for them (dataset=folder's 8 on a 2-core machine made torch warn twice and ran no faster)."""
    if local_ranks is None:
        return requested, None
    cap = cores_per_rank(local_ranks)
    if requested <= cap:
        return requested, None
    return cap, (f"dataset.workers={requested} capped at {cap} loader worker(s) per rank: this node gives "
                 f"{cap} CPU core(s) to each of its {local_ranks} rank(s)")


def _env_device(dcfg, kind: str, env: distributed.EnvRanks) -> Device:
    """This rank's device under torchrun/SLURM: device_list[LOCAL_RANK], or card LOCAL_RANK without a list."""
    if kind == "cpu":
        return Device("cpu")
    if dcfg.device_list is None:
        index = env.local_rank
    elif env.local_rank < len(dcfg.device_list):
        index = dcfg.device_list[env.local_rank]
    else:
        raise ConfigError(f"distributed=env: device.device_list={list(dcfg.device_list)} has no card for local "
                          f"rank {env.local_rank}: list one card per process of this node, or set "
                          "device.device_list=null to use card <local rank>")
    return Device(kind, index, dcfg.jit_compile if kind == "npu" else None)


def _backend(requested: Optional[str], kind: str) -> str:
    if requested is None:
        return BACKENDS[kind]
    if requested not in ALLOWED_BACKENDS[kind]:
        raise ConfigError(f"distributed.backend={requested} does not run on {kind}: use "
                          f"{' or '.join(ALLOWED_BACKENDS[kind])} (or null for {BACKENDS[kind]})")
    return requested


def _micro_steps(accum_steps: Any, per_rank: Any) -> str:
    if accum_steps == 1:
        return ""
    of = f" of {per_rank // accum_steps}" if isinstance(per_rank, int) and isinstance(accum_steps, int) else ""
    return f" in {accum_steps} micro-steps{of}"


def _lr_text(lr: Any) -> str:
    return f"{lr:g}" if isinstance(lr, float) else str(lr)


def _batch_fields(cfg: DictConfig, world_size: int) -> Dict[str, Any]:
    """The plan's batch and lr; with an auto key the ranks decide the batch, and so its scaled lr."""
    fixed = static_plan(cfg, world_size)
    if fixed is None:
        auto = {"global_batch": cfg.dataset.batch_size, "per_rank_batch": "auto", "accum_steps": cfg.optim.accum_steps}
        batch = cfg.dataset.batch_size
        return {**auto, "lr": effective_lr(cfg.optim, batch) if batch != AUTO else "auto (follows the batch)"}
    return {"global_batch": fixed.global_batch, "per_rank_batch": fixed.global_batch // world_size,
            "accum_steps": fixed.accum_steps, "lr": effective_lr(cfg.optim, fixed.global_batch)}


def _check_ranks(cfg: DictConfig, kind: str, world_size: int) -> None:
    static_plan(cfg, world_size)  # refuses a global batch that does not split into ranks x micro-steps
    if cfg.distributed.sync_bn and world_size > 1 and kind == "cpu":
        raise ConfigError("distributed.sync_bn=true: PyTorch's SyncBatchNorm runs on CUDA/NPU only, not on CPU: "
                          "set distributed.sync_bn=false (or model.norm=group for batch-independent statistics)")


# ---- running the ranks ---------------------------------------------------------------------------

def run(cfg: DictConfig, launch_plan: LaunchPlan, run_dir: Path, worker: Worker) -> float:
    """Run `worker` on every rank of the plan; rank 0's return value (the best Acc@1) comes back."""
    run_dir = Path(run_dir)
    for note in launch_plan.notes:
        log.warning("%s", note)
    if launch_plan.workers != cfg.dataset.workers:  # the plan capped them: the ranks (and checkpoints) use its count
        cfg = OmegaConf.merge(cfg, {"dataset": {"workers": launch_plan.workers}})
    if not launch_plan.distributed:
        return worker(cfg, RankContext(0, 0, 1, launch_plan.devices[0], run_dir))
    if launch_plan.mode == "spawn":
        return _spawn(cfg, launch_plan, run_dir, worker)
    return _join(cfg, launch_plan, run_dir, worker)


# The checkpoint is written before the ranks' barrier, so the others need only to leave: a short grace.
PREEMPT_GRACE_S = 1.0


class RankFailed(RuntimeError):
    """A spawned rank raised: the message carries the traceback of the rank that failed first."""


class HangDetected(RankFailed):
    """A rank's hang watchdog ended the job (resnext/runtime/watchdog.py); the exit code says so to a job script."""

    exit_code = preempt.EXIT_HANG


def _spawn(cfg: DictConfig, launch_plan: LaunchPlan, run_dir: Path, worker: Worker) -> float:
    container = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)  # re-typed by each rank
    reports = mp.get_context("spawn").SimpleQueue()
    # start_processes notices the first rank that exits with an error and we then terminate the others,
    # so no rank is left waiting in a collective for a peer that is gone.
    context = mp.start_processes(_spawned_rank, args=(container, launch_plan, str(run_dir), worker, reports),
                                 nprocs=len(launch_plan.devices), join=False, start_method="spawn")
    restore_signals = preempt.forward_signals(context.processes)  # the ranks checkpoint, then exit
    try:
        # The grace period lets the other ranks of a preempted job leave by themselves after the barrier.
        while not join_processes(context, PREEMPT_GRACE_S):
            pass
    except (mp.ProcessRaisedException, mp.ProcessExitedException) as err:
        _stop(context.processes)
        codes = [process.exitcode for process in context.processes]
        if preempt.EXIT_PREEMPTED in codes:
            raise preempt.Preempted(f"rank {codes.index(preempt.EXIT_PREEMPTED)} stopped after a checkpoint "
                                    f"(exit code {preempt.EXIT_PREEMPTED})") from err
        if preempt.EXIT_HANG in codes:  # the peers' "connection closed" tracebacks that follow are noise
            raise HangDetected(f"the hang watchdog ended the job (exit {preempt.EXIT_HANG}): see its message "
                               "above, which names the rank that stopped making progress") from err
        first = _first_failure(reports)
        if first is None:  # killed without a Python traceback (OOM killer, signal)
            raise
        if f"{BadImageError.__name__}: " in first:  # the data, not the code: one line (train.main prints it)
            raise BadImageError(bad_image_message(first)) from err
        raise RankFailed(first) from err
    except BaseException:  # anything else in this process: make sure every rank ends
        _stop(context.processes)
        raise
    finally:
        restore_signals()
    results = [value for kind, _, _, value in _drain(reports) if kind == "result"]
    if not results:
        raise RuntimeError("rank 0 finished without reporting its result")
    return results[0]


def _drain(reports: Any) -> List[Tuple[str, int, float, Any]]:
    items = []
    while not reports.empty():
        items.append(reports.get())
    return items


def _first_failure(reports: Any) -> Optional[str]:
    """The traceback of the rank that failed first: the others usually fail because it went away."""
    failures = sorted((when, rank, text) for kind, rank, when, text in _drain(reports) if kind == "error")
    if not failures:
        return None
    _, rank, text = failures[0]
    later = "".join(f"\n  then rank {r}: {t.strip().splitlines()[-1]}" for _, r, t in failures[1:])
    return f"rank {rank} failed first:\n{text}" + (f"\nthe other ranks stopped after it:{later}" if later else "")


def _stop(processes: List[Any], grace_s: float = 10.0) -> None:
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(grace_s)
        if process.is_alive():
            process.kill()
            process.join()


def _spawned_rank(local_rank: int, container: Dict[str, Any], launch_plan: LaunchPlan, run_dir: str,
                  worker: Worker, reports: Any) -> None:
    rank = launch_plan.first_rank + local_rank
    try:
        setup_process_logging(Path(run_dir), rank)
        # The same typed config the parent validated (Hydra is not entered again).
        cfg = typed_config(container)
        url = f"tcp://{launch_plan.addr}:{launch_plan.port}"
        result = _run_rank(cfg, launch_plan, rank, local_rank, Path(run_dir), worker, url)
    except preempt.Preempted:
        sys.exit(preempt.EXIT_PREEMPTED)  # not an error: the parent sees the code and stops the job cleanly
    except BaseException:
        reports.put(("error", rank, time.time(), traceback.format_exc()))
        raise
    if rank == 0:
        reports.put(("result", rank, time.time(), result))


def _join(cfg: DictConfig, launch_plan: LaunchPlan, run_dir: Path, worker: Worker) -> float:
    """distributed=env: this process is one rank of a job torchrun or srun started."""
    distributed.export_rendezvous(distributed.ranks_from_env())
    # env:// rather than tcp://: under torchrun it reuses the agent's store on MASTER_PORT.
    return _run_rank(cfg, launch_plan, launch_plan.first_rank, 0, run_dir, worker, "env://", agree_dir=True)


def _run_rank(cfg: DictConfig, launch_plan: LaunchPlan, rank: int, local_index: int, run_dir: Path,
              worker: Worker, init_method: str, agree_dir: bool = False) -> float:
    device = launch_plan.devices[local_index]
    _share_cpu_threads(len(launch_plan.devices) if launch_plan.mode == "spawn" else None)
    device.activate()  # before the process group: NCCL/HCCL bind to the current device
    distributed.init_process_group(launch_plan.backend, init_method, rank, launch_plan.world_size,
                                   cfg.distributed.timeout_min)
    if agree_dir:
        run_dir = distributed.agree_run_dir(run_dir, rank)
        if rank > 0:  # Hydra set this process up to print: only rank 0 does
            setup_process_logging(run_dir, rank)
    local_rank = launch_plan.first_local_rank + local_index
    result = worker(cfg, RankContext(rank, local_rank, launch_plan.world_size, device, run_dir))
    # Torn down on success only. After an error this process exits, and its peers learn of it from the
    # closed connections after it has reported its traceback; tearing down first would let them fail first.
    distributed.destroy_process_group()
    return result


def _share_cpu_threads(local_processes: Optional[int]) -> None:
    """Split this node's cores between its ranks, as torchrun's OMP_NUM_THREADS does, unless the user chose."""
    if local_processes and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_processes))
