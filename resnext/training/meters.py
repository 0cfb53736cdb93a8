"""What the hot loop measures: running means, top-k hits and images per second.

Kept apart from the logs (loggers/metrics.py) so the engine needs nothing but torch to count.
"""
from __future__ import annotations

import time
from typing import Iterable, Optional

import torch


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
    """Images per second, leaving out the first `warmup_steps` steps (compile, autotune, cold caches).

    An epoch of no more steps than that (a 5-step performance run with the default fps_warmup_steps=5)
    counts all of its steps instead: a measured figure, warm-up included, rather than FPS@all 0.000.
    """

    def __init__(self, warmup_steps: int) -> None:
        self.warmup_steps = warmup_steps
        self.steps = 0
        self.images = 0
        self.all_images = 0
        self.created = time.perf_counter()
        self.start: Optional[float] = self.created if warmup_steps == 0 else None

    def step(self, batch_images: int) -> None:
        """Call once a step has been issued; the clock starts when the last warm-up step ends."""
        self.steps += 1
        self.all_images += batch_images
        if self.steps <= self.warmup_steps:
            self.start = time.perf_counter()
        else:
            self.images += batch_images

    @property
    def fps(self) -> float:
        if self.start is not None and self.images > 0:
            return self.images / (time.perf_counter() - self.start)
        if self.all_images > 0:  # every step so far was a warm-up step
            return self.all_images / (time.perf_counter() - self.created)
        return 0.0
