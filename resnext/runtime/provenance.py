"""The facts of this process that decide what a run computes, besides its config: package versions, the
accelerator stack (CUDA/cuDNN/NCCL or CANN/HCCL), the devices, the host and the environment variables that
steer them.

It lives in runtime because these are facts of the process a rank runs in, like the devices themselves; it
reads them and changes nothing. Each probe is guarded: a library that cannot say its version leaves the
key out, it never stops the run. Versions come from package metadata where they can, so that nothing heavy
(mlflow, wandb, DALI) is imported only to be asked its version, and torch_npu is asked only when the run
already imported it.
"""
from __future__ import annotations

import importlib.metadata
import os
import platform
import socket
import sys
from typing import Callable, Dict, Optional, Sequence

import torch

# record key -> the distributions that may provide it (the first one installed wins)
DISTRIBUTIONS = {
    "torchvision": ("torchvision",),
    "torch_npu": ("torch-npu",),
    "dali": ("nvidia-dali-cuda130", "nvidia-dali-cuda120", "nvidia-dali-cuda110", "nvidia-dali"),
    "hydra-core": ("hydra-core",),
    "omegaconf": ("omegaconf",),
    "mlflow": ("mlflow", "mlflow-skinny"),
    "wandb": ("wandb",),
}

# Environment variables that choose devices, shape the collectives or the threads, or place the job.
ENV_NAMES = (
    "CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "CUDA_LAUNCH_BLOCKING", "CUBLAS_WORKSPACE_CONFIG",
    "PYTORCH_CUDA_ALLOC_CONF", "ASCEND_RT_VISIBLE_DEVICES", "ASCEND_VISIBLE_DEVICES", "ASCEND_TOOLKIT_HOME",
    "ASCEND_HOME_PATH", "TASK_QUEUE_ENABLE", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "TORCH_DEVICE_BACKEND_AUTOLOAD",
    "MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "SLURM_JOB_ID",
    "SLURM_JOB_NAME", "SLURM_JOB_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_ARRAY_JOB_ID",
    "SLURM_ARRAY_TASK_ID", "SLURM_RESTART_COUNT", "PYTHONPATH", "PYTHONHASHSEED", "VIRTUAL_ENV", "CONDA_PREFIX",
    "WANDB_MODE",
)
ENV_PREFIXES = ("NCCL_", "HCCL_", "TORCH_NCCL_", "TORCH_DISTRIBUTED_", "TORCHELASTIC_")
# Never copy a credential into a file that is shared with the results (NCCL_/HCCL_ hold none, but be sure).
SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL")


def _guarded(probe: Callable[[], object]) -> Optional[str]:
    """The probe's answer as a string; None when it has none or fails (a missing library is not an error)."""
    try:
        value = probe()
    except Exception:  # noqa: BLE001 - a version probe must never stop a run
        return None
    return None if value is None or value == "" else str(value)


def _installed(names: Sequence[str]) -> Optional[str]:
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _nccl() -> str:
    version = torch.cuda.nccl.version()
    return ".".join(map(str, version)) if isinstance(version, tuple) else str(version)


def _npu_version(module: str) -> Callable[[], object]:
    """torch_npu.npu.utils.get_cann_version(module) (CANN >= 8.1.RC1 answers; older ones give '')."""
    return lambda: sys.modules["torch_npu"].npu.utils.get_cann_version(module=module)


def versions() -> Dict[str, str]:
    """python, torch and the installed packages of DISTRIBUTIONS; the accelerator stack torch was built with."""
    found = {"python": platform.python_version(), "torch": torch.__version__}
    found.update({key: _installed(names) for key, names in DISTRIBUTIONS.items()})
    probes = {"cuda": lambda: torch.version.cuda, "cudnn": torch.backends.cudnn.version, "nccl": _nccl}
    if "torch_npu" in sys.modules:  # imported by this run for device=npu; importing it here could fail the run
        probes.update(cann=_npu_version("CANN"), hccl=_npu_version("HCCL"))
    found.update({key: _guarded(probe) for key, probe in probes.items()})
    return {key: value for key, value in found.items() if value}


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def devices(device_type: str, used: Sequence[str]) -> Dict[str, object]:
    """The device type, this node's devices the run uses, and what the machine has of that type."""
    found: Dict[str, object] = {"type": device_type, "used": list(used)}
    accelerator = getattr(torch, device_type, None) if device_type in ("cuda", "npu") else None
    if accelerator is None:
        found.update(count=os.cpu_count(), names=[_cpu_model()])  # cores, and the model they are
        return found
    count = _guarded(lambda: accelerator.device_count())
    if count is not None:
        names = [_guarded(lambda i=i: accelerator.get_device_name(i)) for i in range(int(count))]
        found.update(count=int(count), names=names)
    return found


def host() -> Dict[str, str]:
    return {"hostname": socket.gethostname(), "platform": platform.platform(), "cpu": _cpu_model()}


def environment(environ: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The variables of ENV_NAMES and ENV_PREFIXES that are set, credentials left out, sorted by name."""
    environ = os.environ if environ is None else environ
    chosen = {name: value for name, value in environ.items()
              if (name in ENV_NAMES or name.startswith(ENV_PREFIXES))
              and not any(word in name.upper() for word in SECRET_WORDS)}
    return dict(sorted(chosen.items()))


def command(argv: Sequence[str], overrides: Sequence[str], hydra_overrides: Sequence[str]) -> Dict[str, object]:
    """What was typed (argv as this process received it) and what Hydra made of it."""
    return {"argv": list(argv), "executable": sys.executable, "cwd": os.getcwd(),
            "overrides": list(overrides), "hydra_overrides": list(hydra_overrides)}


def gather(argv: Sequence[str], overrides: Sequence[str], hydra_overrides: Sequence[str], device_type: str,
           used_devices: Sequence[str]) -> Dict[str, object]:
    """Everything above but git, as plain JSON values."""
    return {"command": command(argv, overrides, hydra_overrides), "versions": versions(),
            "devices": devices(device_type, used_devices), "host": host(), "env": environment()}

