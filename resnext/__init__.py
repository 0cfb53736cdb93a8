"""ResNeXt training composed with Hydra: CPU, CUDA and Ascend NPU, one device to many nodes."""

__version__ = "0.1.0"
