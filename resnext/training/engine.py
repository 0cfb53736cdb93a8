"""train_one_epoch / evaluate: the hot loop and nothing else.

Metrics are accumulated as device tensors and read back only every `print_freq` steps and at the end
of an epoch, so the loop does not wait on the device after every step.
"""
from __future__ import annotations

import logging
import math
import sys
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple

import torch
import torch.distributed as dist
from torch import nn

from ..runtime.amp import MixedPrecision
from ..runtime.devices import RankContext, zero_grad
from . import accumulation
from .meters import Throughput, correct_topk

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
    accum_steps: int = 1  # micro-batches per optimizer step (optim.accum_steps, resolved)
    # Rank 0's per-step sink (TensorBoard), called every print_freq steps with (global step, scalars).
    on_step: Optional[Callable[[int, Dict[str, float]], None]] = None
    eta: Optional[Any] = None  # training/eta.py's Eta: the time left for the whole run, in the step log line


def _progress(loader: Any, total: int, enabled: bool, desc: str) -> Any:
    if not enabled:
        return loader
    from tqdm import tqdm

    return tqdm(loader, total=total, desc=desc, leave=False, dynamic_ncols=True, file=sys.stdout)


def _to_device(images: torch.Tensor, target: torch.Tensor, ctx: RankContext, channels_last: bool):
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    images = images.to(ctx.device.torch_device, non_blocking=True, memory_format=memory_format)
    return images, ctx.device.prepare_target(target)


class _Totals:
    """Loss sum, samples, top-1 and top-5 hits kept on the device: no host sync per step."""

    def __init__(self, ctx: RankContext) -> None:
        self.ctx = ctx
        self.values = torch.zeros(4, device=ctx.device.torch_device, dtype=torch.float32)

    def add(self, loss: torch.Tensor, output: torch.Tensor, target: torch.Tensor) -> None:
        n = target.shape[0]
        self.values[0] += loss.detach().float() * n
        self.values[1] += n
        self.values[2:] += correct_topk(output.detach(), target)

    def running_loss(self) -> float:
        return (self.values[0] / self.values[1]).item()

    def summed_over_ranks(self) -> Tuple[float, float, float, int]:
        """(mean loss, Acc@1 %, Acc@5 %, samples) over every rank's samples."""
        if self.ctx.distributed:
            dist.all_reduce(self.values, op=dist.ReduceOp.SUM)
        loss_sum, seen, top1, top5 = self.values.tolist()
        seen_or_one = max(seen, 1.0)
        return loss_sum / seen_or_one, 100.0 * top1 / seen_or_one, 100.0 * top5 / seen_or_one, int(seen)


def train_one_epoch(model: nn.Module, loader: Any, criterion: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any, amp: MixedPrecision, ctx: RankContext, epoch: int,
                    settings: LoopSettings, first_step: int = 0,
                    after_step: Optional[Callable[[int, int], None]] = None) -> Dict[str, float]:
    """One epoch from batch `first_step` (a mid-epoch resume; the loader then starts there too).

    after_step(steps done, steps in the epoch) runs after each optimizer step: the EMA update (resnext/training/ema.py),
    preemption and mid-epoch checkpoints (resnext/runtime/preempt.py); it may raise.
    """
    model.train()
    k = settings.accum_steps  # micro-batches per optimizer step (resnext/training/accumulation.py)
    available = first_step + len(loader) // k  # steps count optimizer steps: the loader yields micro-batches
    steps = available if settings.max_steps is None else min(available, settings.max_steps)
    throughput = Throughput(settings.fps_warmup_steps)
    totals = _Totals(ctx)
    show_bar = settings.progress_bar and ctx.is_main
    batches = _progress(loader, (steps - first_step) * k, show_bar, f"epoch {epoch}")

    def forward(images: torch.Tensor, target: torch.Tensor):
        images, target = _to_device(images, target, ctx, settings.channels_last)
        with amp.autocast():
            output = model(images)
            return criterion(output, target), output, target

    for step, group in enumerate(accumulation.groups(batches, k), first_step):
        if step >= steps:
            break
        zero_grad(optimizer)  # as the optimizer allows: torch_npu's fused ones refuse set_to_none
        loss, samples = accumulation.forward_backward(model, group, forward, amp, optimizer, totals.add)
        amp.step(optimizer)
        lr = optimizer.param_groups[0]["lr"]  # this step's, before the schedule moves on
        scheduler.step()
        if after_step is not None:
            after_step(step + 1, steps)

        # Throughput counts the global batch's images: every rank runs the same number of steps.
        throughput.step(samples * ctx.world_size)
        if (step + 1) % settings.print_freq == 0 or step + 1 == steps:
            loss_value = loss.item()
            if not math.isfinite(loss_value) and not amp.absorbs_overflow:
                raise NonFiniteLossError(
                    f"loss is {loss_value} at epoch {epoch} step {step + 1}: lower optim.lr, add warm-up "
                    "(schedule.warmup_epochs) or use amp=fp16 with loss scaling; the last checkpoint is intact")
            eta = f" {settings.eta.text()}" if settings.eta is not None else ""
            if show_bar:
                batches.set_postfix_str(f"loss {loss_value:.4f}{eta}", refresh=False)
            elif ctx.is_main:
                log.info("Epoch: [%d][%d/%d] lr %.5f loss %.4f (%.4f) FPS %.1f%s", epoch, step + 1, steps,
                         lr, loss_value, totals.running_loss(), throughput.fps, eta)
            if ctx.is_main and settings.on_step is not None:
                settings.on_step(epoch * steps + step + 1, {"loss": loss_value, "lr": lr, "fps": throughput.fps})
    ctx.device.synchronize()
    fps = throughput.fps
    loss_mean, acc1, acc5, _ = totals.summed_over_ranks()
    result = {"train_loss": loss_mean, "train_acc1": acc1, "train_acc5": acc5, "fps": fps,
              "skipped_steps": amp.skipped_steps(), "lr_last": lr}
    if not math.isfinite(result["train_loss"]) and not amp.absorbs_overflow:
        raise NonFiniteLossError(f"the mean training loss of epoch {epoch} is {result['train_loss']}: "
                                 "lower optim.lr or use loss scaling; the last checkpoint is intact")
    if ctx.is_main:
        # The ModelZoo scripts read this line: it must end with "FPS@all <n>".
        log.info("[device %s] Epoch: [%d] loss %.4f Acc@1 %.3f skipped %d FPS@all %.3f", ctx.device,
                 epoch, result["train_loss"], result["train_acc1"], result["skipped_steps"], fps)
    return result


@torch.no_grad()
def evaluate(model: nn.Module, loader: Any, criterion: nn.Module, amp: MixedPrecision, ctx: RankContext,
             settings: LoopSettings, observer: Optional[Any] = None, label: str = "") -> Dict[str, float]:
    """Validation over this rank's shard; sums are all-reduced, so every sample counts exactly once.

    `observer.add(output, target)` sees every batch (perclass.ConfusionMeter for evaluate=true). `label`
    ("EMA ") goes before Acc@1 in the log line, so parsers of " * Acc@1" see the raw model's only.
    """
    model.eval()
    totals = _Totals(ctx)
    show_bar = settings.progress_bar and ctx.is_main
    for images, target in _progress(loader, len(loader), show_bar, "val"):
        images, target = _to_device(images, target, ctx, settings.channels_last)
        with amp.autocast():
            output = model(images)
            loss = criterion(output, target)
        totals.add(loss, output, target)
        if observer is not None:
            observer.add(output, target)
    loss_mean, acc1, acc5, seen = totals.summed_over_ranks()
    result = {"val_loss": loss_mean, "acc1": acc1, "acc5": acc5, "val_samples": seen}
    if ctx.is_main:
        log.info(" * %sAcc@1 %.3f Acc@5 %.3f", label, result["acc1"], result["acc5"])
    return result
