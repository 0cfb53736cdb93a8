"""cpu / cuda / npu behind one small interface: what a rank needs to know about its accelerator.

Everything device-specific (process-group backend, autocast device type, target dtype, optimizer
implementation, RNG) lives here, so the training loop never branches on the device type.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, ContextManager, Iterable, List, Optional

import torch

from .config import ConfigError

BACKENDS = {"cpu": "gloo", "cuda": "nccl", "npu": "hccl"}


@dataclass(frozen=True)
class Device:
    """One rank's device: cpu, cuda:N or npu:N."""

    type: str
    index: Optional[int] = None

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.type) if self.index is None else torch.device(self.type, self.index)

    @property
    def backend(self) -> str:
        return BACKENDS[self.type]

    def activate(self) -> None:
        if self.type == "cuda":
            torch.cuda.set_device(self.index)

    def synchronize(self) -> None:
        if self.type == "cuda":
            torch.cuda.synchronize(self.index)

    def autocast(self, dtype: Optional[torch.dtype]) -> ContextManager:
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.type, dtype=dtype)

    def grad_scaler(self, **kwargs: Any) -> torch.amp.GradScaler:
        return torch.amp.GradScaler(self.type, **kwargs)

    def prepare_target(self, target: torch.Tensor) -> torch.Tensor:
        return target.to(self.torch_device, non_blocking=True)

    def sgd(self, params: Iterable[Any], **kwargs: Any) -> torch.optim.Optimizer:
        return torch.optim.SGD(params, **kwargs)

    def rng_state(self) -> Any:
        return torch.cuda.get_rng_state(self.index) if self.type == "cuda" else None

    def set_rng_state(self, state: Any) -> None:
        if self.type == "cuda" and state is not None:
            torch.cuda.set_rng_state(state, self.index)

    def manual_seed(self, seed: int) -> None:
        if self.type == "cuda":
            torch.cuda.manual_seed(seed)


def resolve_type(requested: str) -> str:
    if requested != "auto":
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


def plan_devices(dcfg) -> List[Device]:
    """The device of each local rank on this node, checked against what is present."""
    kind = resolve_type(dcfg.type)
    if kind == "cpu":
        return [Device("cpu") for _ in range(dcfg.nprocs)]
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device.type=cuda but torch sees no CUDA device: use device=cpu or check the driver")
    indices = list(dcfg.device_list) if dcfg.device_list else [0]
    return [Device(kind, i) for i in indices]
