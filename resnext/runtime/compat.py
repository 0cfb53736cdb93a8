"""The one place that knows how torch's API differs across the releases setup.cfg admits (torch 2.4 and up).

The supported range is the tested range (scripts/compat.sh runs the fast tests on the oldest and newest
releases): each difference found there gets one small function here, chosen by what the installed torch
offers rather than by its version number, and the rest of the package calls that function. No other module
checks torch's version or probes its signatures.
"""
from __future__ import annotations

import inspect
import multiprocessing.connection
import time

import torch.multiprocessing as mp

# torch 2.6 gave ProcessContext.join a grace_period; 2.4 and 2.5 refuse the keyword (a TypeError at the first
# join, so every spawned run failed at once there).
JOIN_TAKES_GRACE = "grace_period" in inspect.signature(mp.ProcessContext.join).parameters


def join_processes(context: mp.ProcessContext, grace_period: float) -> bool:
    """`context.join(grace_period=...)` on every torch: True once every process has ended; when one failed, the
    others get `grace_period` seconds to leave by themselves before they are terminated, then join() raises."""
    if JOIN_TAKES_GRACE:
        return context.join(grace_period=grace_period)
    _grace_after_a_failure(context, grace_period)
    return context.join()


def _grace_after_a_failure(context: mp.ProcessContext, grace_period: float) -> None:
    """What torch >= 2.6 does inside join(): older join() terminates the others as soon as one fails, so wait
    here for the first to end and, if it failed, let the others finish within the grace period first."""
    pending = list(context.sentinels)
    if not pending:
        return
    ended = multiprocessing.connection.wait(pending)
    if all(context.processes[context.sentinels[sentinel]].exitcode == 0 for sentinel in ended):
        return  # a clean exit: join() reaps it and returns False while others still run
    deadline = time.monotonic() + grace_period
    for process in context.processes:
        process.join(max(0.0, deadline - time.monotonic()))
