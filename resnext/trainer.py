"""One rank's whole run: build the components from the config, then epochs of train -> validate -> save.

`fit` is what every process runs, whichever way it was started (in-process, spawned, torchrun, SLURM).
It returns the best validation Acc@1, which `train.main` hands back to Hydra's sweepers.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import sys
import time
from typing import Any, Dict

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from . import checkpoint, preempt
from .amp import MixedPrecision
from .data import build_loaders
from .data.robust import SkipReport
from .engine import LoopSettings, evaluate, train_one_epoch
from .launch import RankContext
from .metrics import MetricsWriter
from .models import build_model
from .optim import build_optimizer, build_scheduler, effective_lr
from .watchdog import Watchdog

log = logging.getLogger("resnext")


def seed_everything(seed: int, ctx: RankContext, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    ctx.device.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    elif ctx.device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick the fastest kernels


def _prepare_model(cfg: DictConfig, model: nn.Module, ctx: RankContext) -> nn.Module:
    if cfg.distributed.sync_bn and ctx.distributed:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(ctx.device.torch_device)
    if cfg.model.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def _wrap_ddp(model: nn.Module, ctx: RankContext) -> nn.Module:
    if not ctx.distributed:
        return model
    device_ids = None if ctx.device.index is None else [ctx.device.index]
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def _checkpoint_state(cfg: DictConfig, model: nn.Module, optimizer, scheduler, amp: MixedPrecision,
                      epoch: int, best_acc1: float, ctx: RankContext, step: int = 0) -> Dict[str, Any]:
    return {
        "epoch": epoch,  # the next epoch to run
        "step": step,  # the next step of that epoch: 0 at an epoch boundary (mid-epoch: resnext/preempt.py)
        "arch": cfg.model.arch,
        "state_dict": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "amp": amp.state_dict(),
        "best_acc1": best_acc1,
        "rng": checkpoint.capture_rng_state(ctx.device.rng_state()),
        "config": OmegaConf.to_container(cfg, resolve=True),
    }


def fit(cfg: DictConfig, ctx: RankContext) -> float:
    started = time.time()
    ctx.device.activate()
    seed = cfg.seed if cfg.seed is not None else 0
    seed_everything(seed, ctx, cfg.deterministic)

    loaders = build_loaders(cfg.dataset, seed=seed, rank=ctx.rank, world_size=ctx.world_size,
                            device_type=ctx.device.type, run_dir=ctx.run_dir)
    model = _prepare_model(cfg, build_model(cfg.model, loaders.num_classes), ctx)
    lr = effective_lr(cfg.optim, cfg.dataset.batch_size)
    optimizer = build_optimizer(cfg.optim, model, ctx.device, lr)
    amp = MixedPrecision(cfg.amp, ctx.device)
    model, optimizer = amp.prepare(model, optimizer)
    steps_per_epoch = len(loaders.train)
    if cfg.max_steps_per_epoch is not None:
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch)
    scheduler = build_scheduler(cfg.schedule, optimizer, cfg.epochs, steps_per_epoch)
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.optim.label_smoothing)
    if ctx.is_main:
        log.info("%s: %.2fM parameters, %d classes; global batch %d (%d per rank x %d ranks), lr %g%s",
                 cfg.model.arch, sum(p.numel() for p in model.parameters()) / 1e6, loaders.num_classes,
                 cfg.dataset.batch_size, cfg.dataset.batch_size // ctx.world_size, ctx.world_size, lr,
                 f" (optim.lr {cfg.optim.lr} scaled {cfg.optim.lr_scaling})" if lr != cfg.optim.lr else "")

    # -1 until the first validation, so the first validated epoch always writes model_best.
    start_epoch, start_step, best_acc1 = 0, 0, -1.0
    resume = checkpoint.resolve_resume(cfg.resume, ctx.run_dir)  # resume=auto: this run dir's, if any
    if resume and ctx.is_main:
        checkpoint.remove_stale_temp_files(ctx.run_dir)
    if resume:
        state = checkpoint.load_checkpoint(resume)
        model.load_state_dict(state["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        amp.load_state_dict(state["amp"])
        start_epoch, start_step, best_acc1 = state["epoch"], state.get("step", 0), state["best_acc1"]
        checkpoint.restore_rng_state(state["rng"])
        ctx.device.set_rng_state(state["rng"]["device"])
        if ctx.is_main:
            log.info("resumed from %s at epoch %d step %d (best Acc@1 %.3f)", resume, start_epoch, start_step,
                     best_acc1)

    train_model = _wrap_ddp(model, ctx)
    if cfg.model.compile:
        train_model = torch.compile(train_model)
    settings = LoopSettings(
        print_freq=cfg.print_freq, fps_warmup_steps=cfg.fps_warmup_steps, max_steps=cfg.max_steps_per_epoch,
        progress_bar=sys.stdout.isatty() if cfg.progress_bar is None else cfg.progress_bar,
        channels_last=cfg.model.channels_last)

    if cfg.evaluate:
        # The unwrapped module: each rank evaluates its own shard, no DDP collectives in the forward.
        return evaluate(model, loaders.val, criterion, amp, ctx, settings)["acc1"]

    def save_mid_epoch(epoch: int, step: int) -> None:
        checkpoint.save_checkpoint(_checkpoint_state(cfg, model, optimizer, scheduler, amp, epoch, best_acc1, ctx,
                                                     step), ctx.run_dir, False)

    writer = MetricsWriter(ctx.run_dir, cfg.tensorboard) if ctx.is_main else None
    skips = SkipReport(ctx.run_dir) if ctx.is_main else None
    record: Dict[str, Any] = {}
    watchdog = Watchdog(ctx.rank, ctx.world_size, cfg.distributed.timeout_min)
    guard = preempt.StepGuard(cfg.checkpoint, ctx.is_main, ctx.distributed, save_mid_epoch, watchdog.beat)
    with watchdog if ctx.distributed else contextlib.nullcontext(), guard:
        for epoch in range(start_epoch, cfg.epochs):
            epoch_start = time.time()
            first_step = start_step if epoch == start_epoch else 0
            loaders.set_epoch(epoch, first_step)
            lr_now = optimizer.param_groups[0]["lr"]
            train_stats = train_one_epoch(train_model, guard.watch(loaders.train), criterion, optimizer, scheduler,
                                          amp, ctx, epoch, settings, first_step, guard.for_epoch(epoch))
            val_stats = evaluate(model, loaders.val, criterion, amp, ctx, settings) if cfg.validate else {}
            is_best = cfg.validate and val_stats["acc1"] > best_acc1
            if is_best:
                best_acc1 = val_stats["acc1"]
            if ctx.is_main:
                record = {"epoch": epoch, "lr": lr_now, **train_stats, **val_stats,
                          "best_acc1": max(best_acc1, 0.0), "seconds": time.time() - epoch_start,
                          **skips.for_epoch(epoch)}
                writer.write(record)
                checkpoint.save_checkpoint(
                    _checkpoint_state(cfg, model, optimizer, scheduler, amp, epoch + 1, best_acc1, ctx),
                    ctx.run_dir, is_best)
                checkpoint.keep_epoch_copy(ctx.run_dir, epoch, cfg.checkpoint.keep_last)
            watchdog.beat()
    best_acc1 = max(best_acc1, 0.0)  # 0 when no epoch was validated
    if ctx.is_main:
        writer.close()
        _write_result(ctx, best_acc1, record, time.time() - started)
        log.info("done: best Acc@1 %.3f in %.1f s", best_acc1, time.time() - started)
    return best_acc1


def _write_result(ctx: RankContext, best_acc1: float, last: Dict[str, Any], seconds: float) -> None:
    """result.json: what a sweep summary reads for this job."""
    result = {"status": "completed", "best_acc1": best_acc1, "final_train_loss": last.get("train_loss"),
              "fps": last.get("fps"), "wall_time_s": seconds}
    (ctx.run_dir / "result.json").write_text(json.dumps(result, indent=2) + "\n")
