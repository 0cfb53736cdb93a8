"""Preemption and mid-epoch checkpoints: what runs after every training step, and the exit codes.

Why here and not in the loop: engine.py calls one hook after each step; this room decides whether
that step ends the run (a SIGTERM/SIGUSR1/SIGINT arrived on any rank) or is due for a periodic
checkpoint (checkpoint.every_steps / every_minutes).

Agreement: every step, each rank all-reduces (MAX) one int, "a signal arrived here", over a gloo
group on the CPU, so the check never waits on the accelerator's stream; its cost is one small TCP
round-trip per step. A signal on any rank therefore stops every rank after the same step; rank 0
writes the checkpoint with the position inside the epoch, all ranks meet at a barrier (so no rank
exits while rank 0 is still writing) and leave with EXIT_PREEMPTED.
"""
from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Optional

import torch
import torch.distributed as dist

log = logging.getLogger("resnext")

# Exit codes, documented in README "Long runs and clusters".
EXIT_PREEMPTED = 75  # a signal stopped the run after a checkpoint: resume it in its directory (EX_TEMPFAIL)
EXIT_HANG = 124  # the hang watchdog ended the job: a rank made no progress for distributed.timeout_min
SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)

SaveFn = Callable[[int, int], None]  # (epoch, next step of that epoch) -> writes checkpoint.pth.tar


class Preempted(Exception):
    """A signal stopped the run after a step; the checkpoint to resume from is written."""

    exit_code = EXIT_PREEMPTED


class SignalFlag:
    """Remembers the first stop signal; a second SIGINT (Ctrl-C twice) interrupts at once as usual."""

    def __init__(self) -> None:
        self.received: Optional[int] = None
        self.at = 0.0
        self._previous: Dict[int, object] = {}

    def _handle(self, signum: int, frame: object) -> None:
        # A terminal's Ctrl-C reaches the spawn parent and its ranks, and the parent forwards it as well:
        # a second SIGINT within a second is that echo, not the user asking twice.
        if signum == signal.SIGINT and self.received == signal.SIGINT and time.monotonic() - self.at > 1.0:
            raise KeyboardInterrupt
        if self.received is None:
            self.received, self.at = signum, time.monotonic()

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # Python delivers signals to the main thread only; a launcher's thread cannot take them
        for signum in SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()


class StepGuard:
    """The after-step hook: agree on a stop, write mid-epoch checkpoints, keep the watchdog fed."""

    def __init__(self, ckpt_cfg, is_main: bool, distributed: bool, save: SaveFn, beat: Callable[[], None]):
        self.every_steps, self.every_minutes = ckpt_cfg.every_steps, ckpt_cfg.every_minutes
        self.is_main, self.save, self.beat = is_main, save, beat
        self.flag = SignalFlag()
        self.group = dist.new_group(backend="gloo") if distributed else None  # collective on every rank
        self.last_save = time.monotonic()

    def __enter__(self) -> "StepGuard":
        self.flag.install()
        return self

    def __exit__(self, *exc: object) -> None:
        self.flag.restore()

    def _any_rank_signalled(self) -> bool:
        local = int(self.flag.received is not None)
        if self.group is None:
            return bool(local)
        agreed = torch.tensor([local], dtype=torch.int32)
        dist.all_reduce(agreed, op=dist.ReduceOp.MAX, group=self.group)
        return bool(agreed.item())

    def _periodic_due(self, step: int, steps: int) -> bool:
        if step >= steps:  # the epoch checkpoint follows right away
            return False
        by_steps = self.every_steps is not None and step % self.every_steps == 0
        by_time = self.every_minutes is not None and time.monotonic() - self.last_save >= 60 * self.every_minutes
        return by_steps or by_time

    def for_epoch(self, epoch: int) -> Callable[[int, int], None]:
        """The hook train_one_epoch calls with the steps done in `epoch` and the steps the epoch has."""

        def after_step(step: int, steps: int) -> None:
            self.beat()
            if self._any_rank_signalled():
                self._stop(epoch, step)
            if self.is_main and self._periodic_due(step, steps):
                self.save(epoch, step)
                self.last_save = time.monotonic()

        return after_step

    def watch(self, loader) -> "_BeatingLoader":
        """The loader, reporting each delivered batch to the watchdog (who waits for data, who computes)."""
        return _BeatingLoader(loader, self.beat)

    def _stop(self, epoch: int, step: int) -> None:
        name = signal.Signals(self.flag.received).name if self.flag.received else "a signal on another rank"
        if self.is_main:
            log.warning("%s: stopping after epoch %d step %d; writing the checkpoint", name, epoch, step)
            self.save(epoch, step)
        if self.group is not None:
            dist.barrier(group=self.group)  # nobody leaves before rank 0 has written
        # train.py adds the command that continues this run: resume=auto alone would start a new directory.
        raise Preempted(f"{name}: stopped at epoch {epoch} step {step} with a checkpoint (exit code {EXIT_PREEMPTED})")


class _BeatingLoader:
    def __init__(self, loader, beat: Callable[[], None]) -> None:
        self.loader, self.beat = loader, beat

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator:
        for batch in self.loader:
            self.beat()  # has its batch; after_step beats again when the step is done
            yield batch


def forward_signals(processes: List[Any]) -> Callable[[], None]:
    """In the spawn parent: pass SIGTERM/SIGUSR1/SIGINT on to the ranks, which checkpoint and exit.

    A scheduler signals the process it started (this one), not its children. Returns `restore`.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def forward(signum: int, frame: object) -> None:
        log.warning("%s: passing it on to %d rank(s)", signal.Signals(signum).name, len(processes))
        for process in processes:
            if process.is_alive():
                os.kill(process.pid, signum)

    previous = {signum: signal.signal(signum, forward) for signum in SIGNALS}
    return lambda: [signal.signal(signum, handler) for signum, handler in previous.items()]
