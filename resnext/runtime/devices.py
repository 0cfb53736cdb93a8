"""cpu / cuda / npu behind one small interface: what a rank needs to know about its accelerator.

Everything device-specific (process-group backend, autocast device type, target dtype, optimizer
implementation, RNG, torch_npu itself) lives here, so the training loop never branches on the device
type. The availability probes return a problem message instead of raising, so that `launch.plan` can
refuse a run before any process starts, or merely report the problem in a dry run.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, ContextManager, Iterable, List, Optional, Sequence, Tuple

import torch

from ..config.errors import ConfigError
from . import memory
from .npu_pairing import imported_pairing_problem, installed_pairing_problem

log = logging.getLogger("resnext")

BACKENDS = {"cpu": "gloo", "cuda": "nccl", "npu": "hccl"}
# What init_process_group may use per device type (gloo also runs collectives on CUDA tensors).
ALLOWED_BACKENDS = {"cpu": ("gloo",), "cuda": ("nccl", "gloo"), "npu": ("hccl",)}

NPU_SETUP_HINT = ("install the torch_npu build that matches torch " + torch.__version__.split("+")[0] +
                  " (pip install torch-npu==<that version>) and set up CANN in this shell "
                  "(source scripts/env_npu.sh, which sources CANN's set_env.sh)")


def import_torch_npu() -> ModuleType:
    """torch_npu, which registers torch.npu and the 'npu' device; ConfigError saying what to do if absent."""
    try:
        import torch_npu  # noqa: F401  (the import registers torch.npu)
    except ImportError as err:
        raise ConfigError(f"device.type=npu but torch_npu does not import ({err}): {NPU_SETUP_HINT}") from err
    except OSError as err:  # torch_npu is there but CANN's shared libraries are not on the loader path
        raise ConfigError(f"device.type=npu: torch_npu is installed but CANN's libraries do not load ({err}): "
                          "source CANN's set_env.sh (scripts/env_npu.sh does) and check the Ascend driver") from err
    except RuntimeError as err:  # torch_npu._check_device_conflict: torch is a CUDA (or other accelerator) build
        raise ConfigError(f"device.type=npu: torch_npu refuses this torch ({str(err).splitlines()[0]}): install "
                          "the CPU build of the torch it pins: " + NPU_SETUP_HINT) from err
    return torch_npu


def standin_tensor_type() -> Optional[str]:
    """The one seam for the CPU stand-in of torch_npu (tests/fake_npu_pkg): it sets STANDIN_TENSOR_DEVICE
    to 'cpu' so that 'npu' tensors, autocast and DDP run on the CPU. The real torch_npu has no such
    attribute, so on a real card this is None and nothing changes."""
    return getattr(sys.modules.get("torch_npu"), "STANDIN_TENSOR_DEVICE", None)


def zero_grad(optimizer: torch.optim.Optimizer) -> None:
    """Clear gradients as the optimizer allows. torch_npu's fused optimizers (`is_fused_optimizer`) keep
    every gradient as a view into one combined buffer, so they raise ValueError on set_to_none=True and
    are zeroed in place; every other optimizer frees the gradients (less memory, no memset)."""
    optimizer.zero_grad(set_to_none=not getattr(optimizer, "is_fused_optimizer", False))


@dataclass(frozen=True)
class RankContext:
    """Where one rank stands: its global and local rank, the world size, its device, the run directory."""

    rank: int
    local_rank: int
    world_size: int
    device: "Device"
    run_dir: Path

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


@dataclass(frozen=True)
class Device:
    """One rank's device: cpu, cuda:N or npu:N. Picklable, so spawned ranks receive it as is."""

    type: str
    index: Optional[int] = None
    # npu: torch.npu.set_compile_mode(jit_compile=...) on activation; None keeps torch_npu's default.
    jit_compile: Optional[bool] = None

    @property
    def torch_device(self) -> torch.device:
        if self.type == "npu" and standin_tensor_type() is not None:
            return torch.device(standin_tensor_type())
        return torch.device(self.type) if self.index is None else torch.device(self.type, self.index)

    @property
    def ddp_device_ids(self) -> Optional[List[int]]:
        """DDP's device_ids: the card for a single-card module, None for CPU modules (DDP's rule)."""
        index = self.torch_device.index
        return None if index is None else [index]

    def __str__(self) -> str:
        return self.type if self.index is None else f"{self.type}:{self.index}"

    @property
    def backend(self) -> str:
        return BACKENDS[self.type]

    def _accelerator(self) -> Optional[ModuleType]:
        """torch.cuda or torch.npu (same API for what we use); None on cpu."""
        if self.type == "cpu":
            return None
        if self.type == "npu":
            import_torch_npu()
        return getattr(torch, self.type)

    def activate(self) -> None:
        """Bind this process to its card; before init_process_group, so NCCL/HCCL pick the right one."""
        if self.type == "cuda":
            torch.cuda.set_device(self.index)
        elif self.type == "npu":
            npu = self._accelerator()
            npu.set_device(f"npu:{self.index}")
            if self.jit_compile is not None:
                # Static-shape CNNs run faster on pre-built binary kernels than with online compilation.
                npu.set_compile_mode(jit_compile=self.jit_compile)

    def synchronize(self) -> None:
        accelerator = self._accelerator()
        if accelerator is not None:
            accelerator.synchronize(self.index)

    def _allocator(self) -> Optional[ModuleType]:
        """torch.cuda / torch.npu when tensors really live on the card (not the CPU stand-in of torch_npu)."""
        return None if self.torch_device.type == "cpu" else self._accelerator()

    def reset_peak_memory(self) -> None:
        allocator = self._allocator()
        if allocator is not None:
            allocator.reset_peak_memory_stats(self.index)

    def peak_memory(self) -> int:
        """Bytes at most in use: the allocator's peak on a card, the process's peak RSS on cpu."""
        allocator = self._allocator()
        return memory.peak_rss_bytes() if allocator is None else int(allocator.max_memory_allocated(self.index))

    def free_memory(self) -> Tuple[Optional[int], Optional[int]]:
        """(free, total) bytes left on the card (mem_get_info), or RAM available on cpu."""
        allocator = self._allocator()
        if allocator is None:
            return memory.available_ram()
        free, total = allocator.mem_get_info(self.index)
        return int(free), int(total)

    def autocast(self, dtype: Optional[torch.dtype]) -> ContextManager:
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.torch_device.type, dtype=dtype)

    def grad_scaler(self, **kwargs: Any) -> torch.amp.GradScaler:
        if self.type == "npu":
            return import_torch_npu().npu.amp.GradScaler(**kwargs)
        return torch.amp.GradScaler(self.type, **kwargs)

    @property
    def target_dtype(self) -> Optional[torch.dtype]:
        # Ascend's loss kernels take int32 class indices; casting before the copy also halves it.
        return torch.int32 if self.type == "npu" else None

    def prepare_target(self, target: torch.Tensor) -> torch.Tensor:
        if target.is_floating_point():  # soft rows from MixUp/CutMix stay float, whatever the index dtype
            return target.to(device=self.torch_device, non_blocking=True)
        return target.to(device=self.torch_device, dtype=self.target_dtype, non_blocking=True)

    def sgd(self, params: Iterable[Any], **kwargs: Any) -> torch.optim.Optimizer:
        if self.type == "npu":
            fused = getattr(getattr(import_torch_npu(), "optim", None), "NpuFusedSGD", None)
            if fused is not None:
                # Same update rule as torch.optim.SGD, one fused kernel over all parameters.
                return fused(params, **kwargs)
            log.info("this torch_npu has no optim.NpuFusedSGD: using torch.optim.SGD")
        return torch.optim.SGD(params, **kwargs)

    def rng_state(self) -> Any:
        accelerator = self._accelerator()
        return None if accelerator is None else accelerator.get_rng_state(self.index)

    def set_rng_state(self, state: Any) -> None:
        accelerator = self._accelerator()
        if accelerator is not None and state is not None:
            accelerator.set_rng_state(state, self.index)

    def manual_seed(self, seed: int) -> None:
        accelerator = self._accelerator()
        if accelerator is not None:
            accelerator.manual_seed(seed)


# ---- what is present on this machine ------------------------------------------------------------

def npu_problem(indices: Sequence[int]) -> Optional[str]:
    """None when torch_npu imports and every listed card is visible; else what is missing and what to do."""
    problem = installed_pairing_problem()  # before the import: a mismatched pair may not even import
    if problem:
        return problem
    try:
        import_torch_npu()
    except ConfigError as err:
        return str(err)
    problem = imported_pairing_problem(sys.modules["torch_npu"])
    if problem:
        return problem
    if not torch.npu.is_available() or torch.npu.device_count() == 0:
        return ("device.type=npu: torch_npu imports but sees no NPU (torch.npu.is_available() is false): check "
                "that CANN is set up in this shell (source scripts/env_npu.sh), that the Ascend driver is "
                "loaded (npu-smi info) and that ASCEND_RT_VISIBLE_DEVICES does not hide the cards")
    return _count_problem("npu", indices, torch.npu.device_count(), "npu-smi info")


def cuda_problem(indices: Sequence[int]) -> Optional[str]:
    if not torch.cuda.is_available():
        return ("device.type=cuda but torch sees no CUDA GPU (torch " + torch.__version__ + "; "
                f"torch.version.cuda={torch.version.cuda}): install a CUDA build of torch and check the "
                "driver (nvidia-smi) and CUDA_VISIBLE_DEVICES, or use device=cpu")
    return _count_problem("cuda", indices, torch.cuda.device_count(), "nvidia-smi")


def _count_problem(kind: str, indices: Sequence[int], visible: int, tool: str) -> Optional[str]:
    missing = [i for i in indices if i >= visible]
    if missing:
        return (f"device.device_list={list(indices)} asks for {kind} card(s) {missing}, but only {visible} "
                f"{'is' if visible == 1 else 'are'} visible (indices 0..{visible - 1}; see {tool}): list "
                f"fewer cards, e.g. device.device_list=[{','.join(str(i) for i in range(visible))}]")
    return None


def hardware_problem(kind: str, indices: Sequence[int]) -> Optional[str]:
    if kind == "npu":
        return npu_problem(indices)
    if kind == "cuda":
        return cuda_problem(indices)
    return None


def layout_problem(kind: str, channels_last: bool) -> Optional[str]:
    """torch_npu's fused SGD moves every parameter into one combined buffer and raises RuntimeError
    ('Tensors to combine must be contiguous') on channels_last weights, at the first step."""
    if kind == "npu" and channels_last:
        return ("model.channels_last=true on npu: torch_npu's fused SGD only combines contiguous (NCHW) weights, "
                "and Ascend picks its own internal layout anyway: set model.channels_last=false")
    return None


def npu_visible() -> bool:
    """torch_npu imports and at least one card is visible (what device=auto asks)."""
    return npu_problem([0]) is None


def resolve_type(requested: str) -> str:
    """device.type=auto: npu if torch_npu imports and a card is visible, else cuda, else cpu."""
    if requested != "auto":
        return requested
    problem = npu_problem([0])
    if problem is None:
        return "npu"
    if installed_pairing_problem() is not None:  # torch_npu is installed but unusable: say why it is passed over
        log.warning("device=auto does not use the NPU: %s", problem)
    return "cuda" if torch.cuda.is_available() else "cpu"


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, as torch's DataLoader counts them)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def cores_per_rank(local_ranks: int) -> int:
    """This node's cores shared out between the ranks it runs: each rank's budget of threads and workers."""
    return max(1, available_cores() // max(1, local_ranks))


def node_cores_per_rank(world_size: int) -> int:
    """cores_per_rank for the ranks on this node: LOCAL_WORLD_SIZE where the launcher says (torchrun, several
    nodes), else all world_size ranks are taken to share this node."""
    return cores_per_rank(int(os.environ.get("LOCAL_WORLD_SIZE", world_size)))


def local_devices(dcfg, kind: str) -> List[Device]:
    """The device of each process this node starts: nprocs CPUs, or one per card of device_list."""
    if kind == "cpu":
        return [Device("cpu") for _ in range(dcfg.nprocs)]
    indices = list(dcfg.device_list) if dcfg.device_list else [0]
    if len(set(indices)) != len(indices):
        raise ConfigError(f"device.device_list={indices} lists a card twice: one process per card")
    if any(i < 0 for i in indices):
        raise ConfigError(f"device.device_list={indices}: card indices start at 0")
    jit = dcfg.jit_compile if kind == "npu" else None
    return [Device(kind, i, jit) for i in indices]
