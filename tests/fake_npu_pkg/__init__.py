"""A CPU stand-in for the torch_npu package: put this folder on PYTHONPATH (tests/fake_npu.py does)."""
