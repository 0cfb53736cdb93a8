"""The one small interface every tracking sink implements, and the guard that keeps a sink from killing a run.

The trainer (through MetricsWriter) only ever calls log_params / log_epoch / log_step / close. A sink that
talks to a server (MLflow, W&B) can fail at any of them; `Guarded` turns the first failure into one warning
and switches that sink off, so training and the local files (metrics.jsonl, TensorBoard, CSV) go on.

close() says how the run ended (FINISHED, FAILED, or KILLED for a preemption or an interrupt), so a crashed
run is not left RUNNING on the tracking server; identity() is what lets a resumed run continue the same
tracked run instead of opening a new one (resnext/loggers/__init__.py keeps it in tracking.json).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Dict, Optional

from ..runtime.preempt import Preempted

log = logging.getLogger("resnext")

# How a run ended, in MLflow's RunStatus words (W&B maps them to exit codes).
FINISHED, FAILED, KILLED = "FINISHED", "FAILED", "KILLED"


def run_status(error: Optional[BaseException]) -> str:
    """FINISHED without an error; KILLED when stopped to be resumed (preemption, Ctrl-C); else FAILED."""
    if error is None:
        return FINISHED
    return KILLED if isinstance(error, (Preempted, KeyboardInterrupt)) else FAILED


class Sink:
    """A destination for the run's parameters and scalars. Subclasses override what they support."""

    name = "sink"

    def log_params(self, params: Dict[str, str], tags: Dict[str, str]) -> None:
        """The flattened config (params) and what identifies the run (tags: run_dir, sweep_dir, job_num ...)."""

    def log_epoch(self, epoch: int, values: Dict[str, float]) -> None:
        """One epoch's record (train/val loss, Acc@1, lr, FPS ...)."""

    def log_step(self, step: int, values: Dict[str, float]) -> None:
        """Scalars every print_freq steps; `step` counts optimizer steps from the start of training."""

    def identity(self) -> Optional[Dict[str, str]]:
        """What a resumed run needs to continue this sink's run (a remote run id); None: nothing to continue."""
        return None

    def close(self, run_dir: Path, status: str = FINISHED) -> None:
        """Flush, upload what a finished run produced if asked, and end the run with `status`."""


class Guarded(Sink):
    """Calls through to `inner`; the first exception is logged once as a warning and the sink is dropped."""

    def __init__(self, inner: Sink) -> None:
        self.inner = inner
        self.name = inner.name
        self.failed = False

    def _call(self, method: Callable[..., Any], *args: Any) -> None:
        if self.failed:
            return
        try:
            method(*args)
        except Exception as err:  # noqa: BLE001 - a tracking outage must never stop training
            self.failed = True
            log.warning("logger %s failed (%s: %s); it is switched off for the rest of the run, training and the "
                        "local files (metrics.jsonl, curves.png) go on", self.name, type(err).__name__, err)

    def log_params(self, params: Dict[str, str], tags: Dict[str, str]) -> None:
        self._call(self.inner.log_params, params, tags)

    def log_epoch(self, epoch: int, values: Dict[str, float]) -> None:
        self._call(self.inner.log_epoch, epoch, values)

    def log_step(self, step: int, values: Dict[str, float]) -> None:
        self._call(self.inner.log_step, step, values)

    def identity(self) -> Optional[Dict[str, str]]:
        return None if self.failed else self.inner.identity()

    def close(self, run_dir: Path, status: str = FINISHED) -> None:
        self._call(self.inner.close, run_dir, status)


def scalars(values: Dict[str, Any]) -> Dict[str, float]:
    """The numeric entries of a record (booleans and strings left out), as floats."""
    return {k: float(v) for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
