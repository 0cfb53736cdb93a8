"""The run's logs: stdout/train.log per rank, metrics.jsonl, and the logger sinks it feeds.

Meters and throughput, which the hot loop computes, live in training/meters.py; this module only
writes and reads what they measured.
"""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from .base import FINISHED, run_status

log = logging.getLogger("resnext")


def setup_process_logging(run_dir: Path, rank: int) -> None:
    """Logging for a process Hydra did not start (a spawned or torchrun rank).

    Rank 0 prints to stdout and appends to the run's train.log, as Hydra's own handler does in the
    parent; every other rank writes only its own train_rank<N>.log, so the console stays readable.
    """
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    fmt = logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    handlers: List[logging.Handler] = []
    if rank == 0:
        handlers.append(logging.StreamHandler(sys.stdout))
        handlers.append(logging.FileHandler(run_dir / "train.log"))
    else:
        handlers.append(logging.FileHandler(run_dir / f"train_rank{rank}.log"))
    for handler in root.handlers[:]:
        root.removeHandler(handler)
    for handler in handlers:
        handler.setFormatter(fmt)
        root.addHandler(handler)


class MetricsWriter:
    """Per-epoch records to metrics.jsonl, then to every sink of the logger group (resnext.loggers:
    TensorBoard, CSV, MLflow, W&B, curves.png); per-step scalars to the sinks. Only rank 0 creates one."""

    def __init__(self, run_dir: Path, sinks: Sequence = ()) -> None:
        self.path = run_dir / "metrics.jsonl"
        self.sinks = list(sinks)

    def write(self, record: Dict[str, float]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        for sink in self.sinks:
            sink.log_epoch(int(record["epoch"]), record)

    def write_step(self, step: int, values: Dict[str, float]) -> None:
        """Scalars every print_freq steps (loss, lr, FPS); `step` counts optimizer steps since the start."""
        for sink in self.sinks:
            sink.log_step(step, values)

    def close(self, status: str = FINISHED) -> None:
        for sink in self.sinks:
            sink.close(self.path.parent, status)

    def __enter__(self) -> "MetricsWriter":
        return self

    def __exit__(self, kind: object, error: Optional[BaseException], trace: object) -> None:
        # However the run ends: FINISHED, FAILED, or KILLED (preempted) on the tracking servers, never RUNNING.
        self.close(run_status(error))


def read_metrics(run_dir: Path) -> List[Dict[str, float]]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
