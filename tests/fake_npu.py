"""Installs the torch_npu stand-in (tests/fake_npu_pkg) in this process, or describes it for a subprocess.

No Ascend card exists here. The stand-in keeps torch_npu 2.14.0's contracts (see
tests/fake_npu_pkg/torch_npu_standin.py and docs/npu.md), so resnext's NPU path runs its real code
against them: in-process through monkeypatch, or in spawned ranks through PYTHONPATH.
"""
from __future__ import annotations

import os
import sys
import types
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pytest
import torch
import torch.nn.functional as F

from tests.fake_npu_pkg import torch_npu_standin as standin
from tests.fake_npu_pkg.torch_npu_standin import FakeNpu, GradScaler as FakeNpuScaler, NpuFusedSGD as FakeFusedSGD

PKG_DIR = Path(__file__).resolve().parent / "fake_npu_pkg"
__all__ = ["FakeNpu", "FakeNpuScaler", "FakeFusedSGD", "install", "uninstall", "calls", "subprocess_env",
           "write_dist_info"]


def install(monkeypatch: pytest.MonkeyPatch, cards: int = 8, available: bool = True, fused_sgd: bool = True,
            bf16: bool = True, version: Optional[str] = None) -> Tuple[types.ModuleType, FakeNpu]:
    """`import torch_npu` gives the stand-in; torch.npu is its FakeNpu; int32 targets reach the loss."""
    npu = FakeNpu(cards, available, bf16)
    module = types.ModuleType("torch_npu")
    for name, value in standin.module_parts(npu, fused_sgd).items():
        setattr(module, name, value)
    module.__version__ = version or standin.torch_release_of_this_torch()
    monkeypatch.setitem(sys.modules, "torch_npu", module)
    monkeypatch.setattr(torch, "npu", npu, raising=False)
    monkeypatch.setattr(F, "cross_entropy", standin.int32_cross_entropy)
    return module, npu


def uninstall(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch_npu absent: `import torch_npu` raises ImportError."""
    monkeypatch.setitem(sys.modules, "torch_npu", None)


def calls(npu: FakeNpu, name: str) -> List[Tuple[Any, ...]]:
    return [c[1:] for c in npu.calls if c[0] == name]


def write_dist_info(site: Path, version: str, torch_pin: str) -> Path:
    """A torch_npu-<version>.dist-info under `site`, declaring `torch_pin` as the real wheel does."""
    info = site / f"torch_npu-{version}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.4\nName: torch_npu\nVersion: {version}\n"
                                   f"Requires-Dist: {torch_pin}\nRequires-Dist: numpy\nRequires-Dist: pyyaml\n")
    return info


def subprocess_env(tmp_path: Path, torch_pin: Optional[str] = None, cards: int = 8) -> Dict[str, str]:
    """Environment for a subprocess whose `import torch_npu` gives the stand-in, with package metadata
    that pins this torch (or `torch_pin`)."""
    site = tmp_path / "npu_site"
    release = standin.torch_release_of_this_torch()
    write_dist_info(site, release, torch_pin or f"torch=={release}.*")
    path = os.pathsep.join([str(site), str(PKG_DIR), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return {**os.environ, "PYTHONPATH": path, "RESNEXT_FAKE_NPU_CARDS": str(cards), "PYTHONUNBUFFERED": "1"}
