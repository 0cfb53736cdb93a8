"""The time left for the whole run, from the measured time of its steps and epoch ends so far.

The hot loop only counts steps (one clock read each, through the per-step hook); the estimate is made when a
log line asks for it: steps left x mean step time + epoch ends left x mean epoch-end time (validation,
checkpoint, logging: everything between an epoch's last step and the next epoch's start). Warm-up steps
(compile, autotune, cold caches) are left out of the step time once later steps have been timed.
"""
from __future__ import annotations

import datetime
import time
from typing import Callable, Optional


def clock(seconds: float) -> str:
    """1:23:45 (hours may exceed 24: 27:03:10)."""
    return str(datetime.timedelta(seconds=round(max(seconds, 0.0))))


class Eta:
    def __init__(self, steps_left: int, epochs_left: int, warmup_steps: int) -> None:
        self.steps_left = steps_left
        self.epochs_left = epochs_left
        self.warmup_steps = warmup_steps
        self.steps_seen = 0
        self.step_seconds = [0.0, 0.0]  # [warm-up, timed] sums
        self.end_seconds = 0.0
        self.ends_seen = 0
        self.last = time.perf_counter()

    def begin_epoch(self) -> None:
        self.last = time.perf_counter()  # the first step's time holds the loader's start, not the last validation

    def step(self) -> None:
        now = time.perf_counter()
        self.step_seconds[self.steps_seen >= self.warmup_steps] += now - self.last
        self.last = now
        self.steps_seen += 1
        self.steps_left -= 1

    def end_epoch(self) -> None:
        """After the epoch's validation and checkpoint: their time is what every later epoch end costs."""
        self.end_seconds += time.perf_counter() - self.last
        self.ends_seen += 1
        self.epochs_left -= 1

    def counting(self, hook: Optional[Callable[[int, int], None]]) -> Callable[[int, int], None]:
        """The engine's per-step hook, counting the step first."""
        def counted(done: int, steps: int) -> None:
            self.step()
            if hook is not None:
                hook(done, steps)

        return counted

    def seconds_left(self) -> Optional[float]:
        """None until a step has been timed."""
        timed = self.steps_seen - self.warmup_steps
        if timed > 0:
            per_step = self.step_seconds[1] / timed
        elif self.steps_seen > 0:
            per_step = self.step_seconds[0] / self.steps_seen  # warm-up only so far: an overestimate, but a figure
        else:
            return None
        per_end = self.end_seconds / self.ends_seen if self.ends_seen else 0.0  # unknown before the first epoch end
        return max(self.steps_left, 0) * per_step + max(self.epochs_left, 0) * per_end

    def text(self) -> str:
        left = self.seconds_left()
        return "ETA ?" if left is None else f"ETA {clock(left)}"
