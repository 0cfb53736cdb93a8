"""train_one_epoch / evaluate: the hot loop and nothing else.

Metrics are accumulated as device tensors and read back only every `print_freq` steps and at the end
of an epoch, so the loop does not wait on the device after every step.
"""
from __future__ import annotations

import logging
import math
import sys
from dataclasses import dataclass
from typing import Any, Dict, Optional

import torch
import torch.distributed as dist
from torch import nn

from .amp import MixedPrecision
from .launch import RankContext
from .metrics import Throughput, correct_topk

log = logging.getLogger("resnext")


class NonFiniteLossError(RuntimeError):
    """The loss became NaN/inf without a loss scaler to absorb it: training cannot continue."""


@dataclass
class LoopSettings:
    print_freq: int
    fps_warmup_steps: int
    max_steps: Optional[int]
    progress_bar: bool
    channels_last: bool


def _progress(loader: Any, total: int, enabled: bool, desc: str) -> Any:
    if not enabled:
        return loader
    from tqdm import tqdm

    return tqdm(loader, total=total, desc=desc, leave=False, dynamic_ncols=True, file=sys.stdout)


def _to_device(images: torch.Tensor, target: torch.Tensor, ctx: RankContext, channels_last: bool):
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    images = images.to(ctx.device.torch_device, non_blocking=True, memory_format=memory_format)
    return images, ctx.device.prepare_target(target)


def _all_reduce_sum(values: torch.Tensor, ctx: RankContext) -> torch.Tensor:
    if ctx.distributed:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def train_one_epoch(model: nn.Module, loader: Any, criterion: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any, amp: MixedPrecision, ctx: RankContext, epoch: int,
                    settings: LoopSettings) -> Dict[str, float]:
    model.train()
    steps = len(loader) if settings.max_steps is None else min(len(loader), settings.max_steps)
    throughput = Throughput(settings.fps_warmup_steps)
    # [loss sum, samples, top1 hits, top5 hits] on the device: no host sync per step.
    totals = torch.zeros(4, device=ctx.device.torch_device, dtype=torch.float32)
    show_bar = settings.progress_bar and ctx.is_main
    for step, (images, target) in enumerate(_progress(loader, steps, show_bar, f"epoch {epoch}")):
        if step >= steps:
            break
        images, target = _to_device(images, target, ctx, settings.channels_last)
        with amp.autocast():
            output = model(images)
            loss = criterion(output, target)
        optimizer.zero_grad(set_to_none=True)
        amp.backward_and_step(loss, optimizer)
        scheduler.step()

        n = target.shape[0]
        totals[0] += loss.detach().float() * n
        totals[1] += n
        totals[2:] += correct_topk(output.detach(), target)
        # Throughput counts the global batch: every rank runs the same number of steps.
        throughput.step(n * ctx.world_size)
        if (step + 1) % settings.print_freq == 0 or step + 1 == steps:
            loss_value = loss.item()
            if not math.isfinite(loss_value) and not amp.absorbs_overflow:
                raise NonFiniteLossError(
                    f"loss is {loss_value} at epoch {epoch} step {step + 1}: lower optim.lr, add warm-up "
                    "(schedule.warmup_epochs) or use amp=fp16 with loss scaling; the last checkpoint is intact")
            if ctx.is_main and not show_bar:
                log.info("Epoch: [%d][%d/%d] lr %.5f loss %.4f (%.4f) FPS %.1f", epoch, step + 1, steps,
                         optimizer.param_groups[0]["lr"], loss_value, (totals[0] / totals[1]).item(),
                         throughput.fps)
    ctx.device.synchronize()
    fps = throughput.fps
    totals = _all_reduce_sum(totals, ctx)
    seen = max(totals[1].item(), 1.0)
    result = {
        "train_loss": totals[0].item() / seen,
        "train_acc1": 100.0 * totals[2].item() / seen,
        "train_acc5": 100.0 * totals[3].item() / seen,
        "fps": fps,
        "skipped_steps": amp.skipped_steps(),
    }
    if not math.isfinite(result["train_loss"]) and not amp.absorbs_overflow:
        raise NonFiniteLossError(f"the mean training loss of epoch {epoch} is {result['train_loss']}: "
                                 "lower optim.lr or use loss scaling; the last checkpoint is intact")
    if ctx.is_main:
        # The ModelZoo scripts read this line: it must end with "FPS@all <n>".
        log.info("[gpu id: %s] Epoch: [%d] loss %.4f Acc@1 %.3f skipped %d FPS@all %.3f", ctx.device.index,
                 epoch, result["train_loss"], result["train_acc1"], result["skipped_steps"], fps)
    return result


@torch.no_grad()
def evaluate(model: nn.Module, loader: Any, criterion: nn.Module, amp: MixedPrecision, ctx: RankContext,
             settings: LoopSettings) -> Dict[str, float]:
    """Validation over this rank's shard; sums are all-reduced, so every sample counts exactly once."""
    model.eval()
    totals = torch.zeros(4, device=ctx.device.torch_device, dtype=torch.float32)
    show_bar = settings.progress_bar and ctx.is_main
    for images, target in _progress(loader, len(loader), show_bar, "val"):
        images, target = _to_device(images, target, ctx, settings.channels_last)
        with amp.autocast():
            output = model(images)
            loss = criterion(output, target)
        n = target.shape[0]
        totals[0] += loss.float() * n
        totals[1] += n
        totals[2:] += correct_topk(output, target)
    totals = _all_reduce_sum(totals, ctx)
    seen = max(totals[1].item(), 1.0)
    result = {
        "val_loss": totals[0].item() / seen,
        "acc1": 100.0 * totals[2].item() / seen,
        "acc5": 100.0 * totals[3].item() / seen,
        "val_samples": int(totals[1].item()),
    }
    if ctx.is_main:
        log.info(" * Acc@1 %.3f Acc@5 %.3f", result["acc1"], result["acc5"])
    return result
