"""CPU stand-in for torch_npu, importable in subprocesses (PYTHONPATH=tests/fake_npu_pkg).

Like the real package, importing it registers torch.npu and the hccl backend. Its 'npu' tensors live
on the CPU: it says so with STANDIN_TENSOR_DEVICE, which resnext.runtime.devices.standin_tensor_type() reads,
the one place where resnext knows a stand-in exists. hccl runs gloo underneath, and F.cross_entropy
takes int32 targets as Ascend's kernel does. RESNEXT_FAKE_NPU_CARDS sets the visible cards (default 8),
RESNEXT_FAKE_NPU_BF16=0 plays a chip without bf16. Package metadata (the torch pin) comes from the
dist-info that tests/fake_npu.py writes next to it.
"""
import os

import torch
import torch.nn.functional as F

import torch_npu_standin as _standin

__version__ = _standin.torch_release_of_this_torch()

npu = _standin.FakeNpu(cards=int(os.environ.get("RESNEXT_FAKE_NPU_CARDS", "8")),
                       bf16=os.environ.get("RESNEXT_FAKE_NPU_BF16", "1") == "1")
globals().update(_standin.module_parts(npu))
torch.npu = npu
F.cross_entropy = _standin.int32_cross_entropy
_standin.register_hccl()
