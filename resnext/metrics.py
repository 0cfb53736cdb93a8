"""Meters, top-k accuracy, throughput, and the run's logs (stdout/train.log, metrics.jsonl, the logger sinks)."""
from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

import torch

from .loggers.base import FINISHED, run_status

log = logging.getLogger("resnext")


class AverageMeter:
    """Running sum and count; `avg` is the mean of everything seen so far."""

    def __init__(self) -> None:
        self.sum = 0.0
        self.count = 0

    def update(self, value: float, n: int = 1) -> None:
        self.sum += value * n
        self.count += n

    @property
    def avg(self) -> float:
        return self.sum / max(self.count, 1)


@torch.no_grad()
def correct_topk(output: torch.Tensor, target: torch.Tensor, topk: Iterable[int] = (1, 5)) -> torch.Tensor:
    """Number of samples whose target is within the top-k predictions, for each k (a tensor, no host sync).

    A soft target row (MixUp/CutMix, [batch, classes]) counts as its largest share: its argmax.
    """
    if target.dim() == 2:
        target = target.argmax(dim=1)
    ks = [min(k, output.shape[1]) for k in topk]
    _, pred = output.topk(max(ks), dim=1)
    hits = pred.eq(target.view(-1, 1))
    return torch.stack([hits[:, :k].any(dim=1).sum() for k in ks]).float()


class Throughput:
    """Images per second, leaving out the first `warmup_steps` steps (compile, autotune, cold caches)."""

    def __init__(self, warmup_steps: int) -> None:
        self.warmup_steps = warmup_steps
        self.steps = 0
        self.images = 0
        self.start: Optional[float] = time.perf_counter() if warmup_steps == 0 else None

    def step(self, batch_images: int) -> None:
        """Call once a step has been issued; the clock starts when the last warm-up step ends."""
        self.steps += 1
        if self.steps <= self.warmup_steps:
            self.start = time.perf_counter()
        else:
            self.images += batch_images

    @property
    def fps(self) -> float:
        if self.start is None or self.images == 0:
            return 0.0
        return self.images / (time.perf_counter() - self.start)


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
