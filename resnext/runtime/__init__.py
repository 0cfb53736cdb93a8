"""The runtime wing: what a process needs to run anywhere, whatever it trains.

Devices (CPU, CUDA, Ascend NPU), the process group, mixed precision, speed switches, signals, the
hang watchdog, the run record of what produced a run (its code, versions, devices, host), and the shims
for torch's API differences across supported releases (compat). It imports
only config.
"""
