"""ResNeXt training composed with Hydra: CPU, CUDA and Ascend NPU, one device to many nodes."""
import os

# torch_npu asks torch to import it on `import torch` (entry point group torch.backends). resnext imports
# it itself, where an npu device is asked for and only after checking that it was built for this torch
# (resnext/runtime/npu_pairing.py): autoloaded, a mismatched pair or a CUDA torch fails inside `import torch`,
# before anything can say what to do. Set TORCH_DEVICE_BACKEND_AUTOLOAD=1 to autoload anyway.
os.environ.setdefault("TORCH_DEVICE_BACKEND_AUTOLOAD", "0")

__version__ = "0.1.0"
