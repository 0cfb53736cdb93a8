"""The runtime wing: what a process needs to run anywhere, whatever it trains.

Devices (CPU, CUDA, Ascend NPU), the process group, mixed precision, speed switches, signals and the
hang watchdog. It imports only config.
"""
