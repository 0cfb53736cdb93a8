"""The runtime wing: what a process needs to run anywhere, whatever it trains.

Devices (CPU, CUDA, Ascend NPU), the process group, mixed precision, speed switches, signals, the
hang watchdog, and the run record of what produced a run (its code, versions, devices, host). It imports
only config.
"""
