"""Fast defaults on accelerators: what `model.channels_last: null` and `amp.tf32: null` mean on each device.

Why a room of its own: the trainer and the benchmark must resolve these the same way, and the choice
is per device type (NHWC and TF32 pay off on CUDA Tensor Cores; on the 2-core CPU a channels_last
ResNeXt-50 step ran as fast as NCHW, no faster, see README "Performance"), not per model or per dataset.
"""
from __future__ import annotations

import torch


def use_channels_last(mcfg, device_type: str) -> bool:
    """model.channels_last, where null means: on for CUDA, off elsewhere."""
    if mcfg.channels_last is None:
        return device_type == "cuda"
    return bool(mcfg.channels_last)


def use_tf32(acfg, device_type: str) -> bool:
    """amp.tf32, where null means: on for CUDA (fp32 matmul/conv on TF32 Tensor Cores), off elsewhere."""
    if device_type != "cuda":
        return False  # TF32 is a CUDA setting; nothing to switch elsewhere
    return True if acfg.tf32 is None else bool(acfg.tf32)


def apply_tf32(acfg, device_type: str) -> bool:
    """Set torch's TF32 switches for this process (a process-wide setting, like cudnn.benchmark)."""
    enabled = use_tf32(acfg, device_type)
    if device_type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = enabled
        torch.backends.cudnn.allow_tf32 = enabled
    return enabled
