"""How much memory this process has used at most, and how much the machine has left: the CPU side.

The accelerators' allocators keep their own peak (torch.cuda / torch.npu, used by devices.Device); a CPU
rank has no allocator statistics, so its figure is the process's peak resident set, which the kernel keeps
(getrusage), and the headroom is the kernel's estimate of memory available without swapping.
"""
from __future__ import annotations

import os
import sys
from typing import Optional, Tuple


def peak_rss_bytes() -> int:
    """This process's peak resident set size since it started (loader worker processes not included)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # Linux reports KiB, macOS bytes


def available_ram() -> Tuple[Optional[int], Optional[int]]:
    """(available, total) bytes of RAM: /proc/meminfo's MemAvailable (counts reclaimable cache), else free pages."""
    fields = {}
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                name, value = line.split(":", 1)
                fields[name] = int(value.split()[0]) * 1024
    except (OSError, ValueError):
        pass
    if "MemAvailable" in fields:
        return fields["MemAvailable"], fields.get("MemTotal")
    try:
        page = os.sysconf("SC_PAGE_SIZE")
        return os.sysconf("SC_AVPHYS_PAGES") * page, os.sysconf("SC_PHYS_PAGES") * page
    except (ValueError, OSError, AttributeError):
        return None, None
