"""Process launcher: one process per device, or the ranks torchrun/SLURM started."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List

from omegaconf import DictConfig

from .config import ConfigError
from .devices import Device, plan_devices


@dataclass(frozen=True)
class RankContext:
    rank: int
    local_rank: int
    world_size: int
    device: Device
    run_dir: Path

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


@dataclass(frozen=True)
class LaunchPlan:
    mode: str
    devices: List[Device]
    world_size: int

    def describe(self) -> str:
        return f"mode={self.mode} world_size={self.world_size} devices={[str(d.torch_device) for d in self.devices]}"


def plan(cfg: DictConfig) -> LaunchPlan:
    devices = plan_devices(cfg.device)
    if cfg.distributed.mode != "none":
        raise ConfigError(f"distributed.mode={cfg.distributed.mode} is not available yet")
    return LaunchPlan("none", devices[:1], 1)


def run(cfg: DictConfig, launch_plan: LaunchPlan, run_dir: Path,
        worker: Callable[[DictConfig, RankContext], float]) -> float:
    return worker(cfg, RankContext(0, 0, 1, launch_plan.devices[0], run_dir))
