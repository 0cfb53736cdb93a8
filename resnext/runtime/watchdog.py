"""The hang watchdog: a rank that stops making progress ends the job within distributed.timeout_min,
with a message that names it.

Why not only the process-group timeout: a collective that times out fails on the ranks that wait,
with a message that names no one, and a rank stuck outside a collective (a hung data worker, a dead
file system) is not covered at all. Here each rank counts its progress (a batch arrived, a step
ended, an epoch ended: the same beats on every rank) and a thread publishes the count in the
process group's key-value store every few seconds and reads everyone else's. A rank whose count has
not moved for the timeout is stalled; the ranks with the lowest count are the ones the others wait
for, and they are named. The watchdog fires at 90% of the timeout, so its message comes before the
collectives' own timeout errors; the process then exits with EXIT_HANG and the launcher ends the rest.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Dict, List, Optional

import torch.distributed as dist

from .preempt import EXIT_HANG

log = logging.getLogger("resnext")

KEY = "resnext/progress/{rank}"
FIRE_AT = 0.9  # of distributed.timeout_min


def _default_store() -> Optional[object]:
    try:
        return dist.distributed_c10d._get_default_store()  # the rendezvous store every rank already shares
    except (RuntimeError, AttributeError, ValueError):
        return None


def stalled_ranks(counts: Dict[int, int]) -> List[int]:
    """The ranks the others wait for: those furthest behind (all of them when every rank is at one point)."""
    lowest = min(counts.values())
    return sorted(rank for rank, count in counts.items() if count == lowest)


class Watchdog:
    def __init__(self, rank: int, world_size: int, timeout_min: float) -> None:
        self.rank, self.world_size = rank, world_size
        self.limit_s = FIRE_AT * 60 * timeout_min
        self.poll_s = min(5.0, max(self.limit_s / 10, 0.2))
        self.count = 0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._store = _default_store()

    def beat(self) -> None:
        self.count += 1  # main thread only; the watchdog thread just reads it

    def __enter__(self) -> "Watchdog":
        if self._store is not None:
            self._thread = threading.Thread(target=self._watch, name="resnext-watchdog", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.poll_s * 2)

    def _watch(self) -> None:
        seen: Dict[int, int] = {}
        since: Dict[int, float] = {}
        while not self._stop.wait(self.poll_s):
            try:
                counts = self._exchange()
            except Exception:  # noqa: BLE001 - the store went away: a peer died, the launcher reports that
                return
            now = time.monotonic()
            for rank, count in counts.items():
                if seen.get(rank) != count:
                    seen[rank], since[rank] = count, now
            stuck_for = {rank: now - since[rank] for rank in counts}
            if counts and max(stuck_for.values()) >= self.limit_s and not self._stop.is_set():
                self._fire(counts, stuck_for)

    def _exchange(self) -> Dict[int, int]:
        store = self._store
        store.set(KEY.format(rank=self.rank), str(self.count))
        keys = {rank: KEY.format(rank=rank) for rank in range(self.world_size)}
        return {rank: int(store.get(key)) for rank, key in keys.items() if store.check([key])}

    def _fire(self, counts: Dict[int, int], stuck_for: Dict[int, float]) -> None:
        culprits = stalled_ranks(counts)
        if len(culprits) == len(counts) and len(counts) > 1:
            who = "every rank stopped at the same point (a collective, the network or the devices)"
        else:
            names = ", ".join(f"rank {r}" + (" (this process)" if r == self.rank else "") for r in culprits)
            who = f"{names} made no progress for {max(stuck_for[r] for r in culprits):.0f} s while the others waited"
        log.error("hang watchdog on rank %d: %s (progress counts %s); ending the job (exit %d). "
                  "distributed.timeout_min sets the limit", self.rank, who, counts, EXIT_HANG)
        for handler in logging.getLogger().handlers + log.handlers:
            handler.flush()
        sys.stderr.flush()
        os._exit(EXIT_HANG)  # the main thread is blocked (that is the problem): leave without it
