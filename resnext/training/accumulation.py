"""Gradient accumulation: one optimizer step from K micro-batches (optim.accum_steps, issue 18).

A recipe's global batch B that does not fit runs as K micro-batches of B / (world size x K) per device. Each
micro-batch's loss is divided by K, so the summed gradient is the mean over all B samples, the same as one
batch of B (up to float rounding, and except BatchNorm's statistics, which are per micro-batch). Under DDP the
first K-1 micro-batches run inside `model.no_sync()`: their gradients stay local and the last backward
all-reduces the sum once. The optimizer, loss scaler, scheduler, EMA and checkpoints see optimizer steps only.
"""
from __future__ import annotations

import contextlib
import itertools
from typing import Any, Callable, ContextManager, Iterable, Iterator, List, Tuple

import torch
from torch import nn

from ..runtime.amp import MixedPrecision

Batch = Tuple[torch.Tensor, torch.Tensor]
# forward(images, target) -> (loss, output, target on the device)
Forward = Callable[[torch.Tensor, torch.Tensor], Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def groups(batches: Iterable[Batch], accum_steps: int) -> Iterator[List[Batch]]:
    """The loader's micro-batches in lists of `accum_steps`; an incomplete last group is dropped (the epoch's
    optimizer steps are len(loader) // accum_steps, as build_scheduler was told)."""
    batches = iter(batches)
    while True:
        group = list(itertools.islice(batches, accum_steps))
        if len(group) < accum_steps:
            return
        yield group


def _sync_unless(model: nn.Module, final: bool) -> ContextManager:
    """DDP's no_sync for a micro-batch that is not the last: no all-reduce until the gradients are summed."""
    no_sync = getattr(model, "no_sync", None)  # DDP (also through torch.compile's wrapper); absent on one rank
    return contextlib.nullcontext() if final or no_sync is None else no_sync()


def forward_backward(model: nn.Module, group: List[Batch], forward: Forward, amp: MixedPrecision,
                     optimizer: torch.optim.Optimizer, observe: Callable[..., None]) -> Tuple[torch.Tensor, int]:
    """Forward and backward over one group of micro-batches, gradients summed (the caller zeroes them before
    and steps after); observe(loss, output, target) sees each micro-batch's unscaled loss. Returns the last
    micro-batch's loss and the samples this rank saw."""
    k, samples = len(group), 0
    for index, (images, target) in enumerate(group):
        final = index == k - 1
        # The forward belongs inside no_sync too: DDP decides at forward time whether backward all-reduces.
        with _sync_unless(model, final):
            loss, output, target = forward(images, target)
            amp.backward(loss / k if k > 1 else loss, optimizer, final)
        observe(loss, output, target)
        samples += target.shape[0]
    return loss, samples
