"""Stand-ins at the torch_npu boundary: a fake `torch_npu` module and `torch.npu` namespace.

No Ascend card exists here; these record what resnext.devices asks of torch_npu, so the wiring
(set_device('npu:N'), compile mode, fused SGD, the NPU GradScaler, the refusals) is tested anyway.
"""
from __future__ import annotations

import sys
import types
from typing import Any, List, Tuple

import pytest
import torch


class FakeNpuScaler(torch.amp.GradScaler):
    """torch_npu.npu.amp.GradScaler's interface; the arithmetic runs on CPU tensors."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("cpu", **kwargs)


class FakeFusedSGD(torch.optim.SGD):
    pass


class FakeNpu(types.SimpleNamespace):
    """torch.npu as torch_npu registers it, with `cards` visible cards; records the calls it gets."""

    def __init__(self, cards: int = 8, available: bool = True) -> None:
        super().__init__(cards=cards, available=available, calls=[])

    def is_available(self) -> bool:
        return self.available

    def device_count(self) -> int:
        return self.cards if self.available else 0

    def _record(self, *call: Any) -> None:
        self.calls.append(call)

    def set_device(self, device: str) -> None:
        self._record("set_device", device)

    def set_compile_mode(self, jit_compile: bool) -> None:
        self._record("set_compile_mode", jit_compile)

    def synchronize(self, index: Any = None) -> None:
        self._record("synchronize", index)

    def manual_seed(self, seed: int) -> None:
        self._record("manual_seed", seed)

    def get_rng_state(self, index: Any = None) -> torch.Tensor:
        return torch.zeros(4, dtype=torch.uint8)

    def set_rng_state(self, state: Any, index: Any = None) -> None:
        self._record("set_rng_state", index)


def install(monkeypatch: pytest.MonkeyPatch, cards: int = 8, available: bool = True,
            fused_sgd: bool = True) -> Tuple[types.ModuleType, FakeNpu]:
    npu = FakeNpu(cards, available)
    module = types.ModuleType("torch_npu")
    module.npu = types.SimpleNamespace(amp=types.SimpleNamespace(GradScaler=FakeNpuScaler))
    module.optim = types.SimpleNamespace(**({"NpuFusedSGD": FakeFusedSGD} if fused_sgd else {}))
    monkeypatch.setitem(sys.modules, "torch_npu", module)
    monkeypatch.setattr(torch, "npu", npu, raising=False)
    return module, npu


def uninstall(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch_npu absent: `import torch_npu` raises ImportError."""
    monkeypatch.setitem(sys.modules, "torch_npu", None)


def calls(npu: FakeNpu, name: str) -> List[Tuple[Any, ...]]:
    return [c[1:] for c in npu.calls if c[0] == name]
