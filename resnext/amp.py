"""Autocast and loss scaling behind one object the training loop calls."""
from __future__ import annotations

from typing import Any, ContextManager, Dict, Optional

import torch

from .devices import Device

DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class MixedPrecision:
    def __init__(self, acfg, device: Device) -> None:
        self.mode = acfg.mode
        self.device = device
        self.dtype: Optional[torch.dtype] = DTYPES[acfg.mode]

    @property
    def absorbs_overflow(self) -> bool:
        """True when a loss scaler skips non-finite steps, so a NaN loss is not fatal."""
        return False

    def prepare(self, model, optimizer):
        return model, optimizer

    def autocast(self) -> ContextManager:
        return self.device.autocast(self.dtype)

    def backward_and_step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        loss.backward()
        optimizer.step()

    def skipped_steps(self) -> int:
        return 0

    def state_dict(self) -> Dict[str, Any]:
        return {}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        pass
