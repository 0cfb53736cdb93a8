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
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ..models import checkpoint
from . import batch_fit, ema as ema_room, resume
from .trial import TrialReporter
from ..runtime import preempt
from ..runtime.amp import MixedPrecision
from ..data import build_loaders
from ..data.robust import SkipReport
from ..runtime.devices import RankContext
from .divergence import DivergenceWatch
from .eta import Eta
from .losses import build_criterion
from .engine import LoopSettings, evaluate, train_one_epoch
from ..loggers import open_sinks
from ..loggers.metrics import MetricsWriter
from ..models.card import CARD_KEY, model_card
from ..models.build import build_model
from .optim import build_optimizer, build_scheduler, effective_lr
from ..loggers.perclass import ConfusionMeter, write_class_report
from ..models.pretrained import output_class_names
from ..runtime.speed import apply_tf32, use_channels_last
from ..runtime.watchdog import Watchdog

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
    if use_channels_last(cfg.model, ctx.device.type):
        model = model.to(memory_format=torch.channels_last)
    return model


def _wrap_ddp(model: nn.Module, ctx: RankContext) -> nn.Module:
    if not ctx.distributed:
        return model
    return nn.parallel.DistributedDataParallel(model, device_ids=ctx.device.ddp_device_ids)


def _checkpoint_state(cfg: DictConfig, model: nn.Module, optimizer, scheduler, amp: MixedPrecision,
                      epoch: int, best_acc1: float, ctx: RankContext, num_classes: int,
                      steps_per_epoch: int, class_names, extra: Dict[str, Any], step: int = 0) -> Dict[str, Any]:
    return {
        **extra,  # the EMA and whose Acc@1 is the result (resnext/training/ema.py)
        "class_names": list(class_names),
        CARD_KEY: model_card(cfg, class_names),  # what export/predict need: arch, classes, eval preprocessing
        "epoch": epoch,  # the next epoch to run
        "step": step,  # the next step of that epoch: 0 at an epoch boundary (mid-epoch: resnext/runtime/preempt.py)
        "arch": str(cfg.model.arch),  # plain, as every value here (checkpoint.save_atomic makes sure)
        "num_classes": num_classes,
        "schedule": resume.schedule_length(cfg, steps_per_epoch),  # a resume with other epochs rebuilds it
        "state_dict": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "amp": amp.state_dict(),
        "best_acc1": best_acc1,
        "rng": checkpoint.capture_rng_state(ctx.device.rng_state()),
        "config": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
    }


@dataclass
class Components:
    """What one rank trains with, built from the config: shared by `fit` and the probe (resnext/training/probe.py)."""

    loaders: Any
    model: nn.Module  # on its device, amp-prepared, not DDP-wrapped
    optimizer: torch.optim.Optimizer
    amp: MixedPrecision
    scheduler: Any
    make_scheduler: Callable[[], Any]  # a resume with another schedule length rebuilds it
    criterion: nn.Module
    ema: Any
    result_key: str
    steps_per_epoch: int
    lr: float
    cfg: DictConfig  # the run's config with the batch resolved (batch_fit.resolve): use it from here on
    batch: Any  # batch_fit.BatchPlan: global batch, per-device micro-batch, accum_steps, how they were chosen


# cfg below is batch_fit.resolve's: dataset.batch_size and optim.accum_steps are numbers there, never "auto".

def run_loaders(cfg: DictConfig, ctx: RankContext, seed: int):
    """The loaders yield micro-batches: optim.accum_steps of them make one optimizer step."""
    return build_loaders(cfg.dataset, seed=seed, rank=ctx.rank, world_size=ctx.world_size, device_type=ctx.device.type,
                         channels_last=use_channels_last(cfg.model, ctx.device.type), run_dir=ctx.run_dir,
                         accum_steps=int(cfg.optim.accum_steps))


def epoch_steps(cfg: DictConfig, loaders) -> int:
    """Optimizer steps per epoch: the loader's micro-batches // accum_steps, or fewer with max_steps_per_epoch."""
    steps = len(loaders.train) // int(cfg.optim.accum_steps)
    return steps if cfg.max_steps_per_epoch is None else min(steps, cfg.max_steps_per_epoch)


def build_components(cfg: DictConfig, ctx: RankContext) -> Components:
    """Seed, then loaders, model, optimizer, amp, schedule, loss and EMA exactly as the run uses them."""
    ctx.device.activate()
    apply_tf32(cfg.amp, ctx.device.type)
    cfg, batch = batch_fit.resolve(cfg, ctx)  # batch_size / accum_steps auto: searched (or reused) before seeding
    seed = cfg.seed if cfg.seed is not None else 0
    seed_everything(seed, ctx, cfg.deterministic)

    loaders = run_loaders(cfg, ctx, seed)
    model = _prepare_model(cfg, build_model(cfg.model, loaders.num_classes), ctx)
    lr = effective_lr(cfg.optim, cfg.dataset.batch_size)
    optimizer = build_optimizer(cfg.optim, model, ctx.device, lr)
    amp = MixedPrecision(cfg.amp, ctx.device)
    model, optimizer = amp.prepare(model, optimizer)
    steps_per_epoch = epoch_steps(cfg, loaders)
    def make_scheduler():
        return build_scheduler(cfg.schedule, optimizer, cfg.epochs, steps_per_epoch)

    scheduler = make_scheduler()
    criterion = build_criterion(cfg.loss, cfg.optim.label_smoothing)
    ema = ema_room.build_ema(cfg, model, ctx.is_main)
    result_key = ema_room.result_key(ema)
    if ctx.is_main:
        log.info("%s: %.2fM parameters, %d classes; %s, lr %g%s",
                 cfg.model.arch, sum(p.numel() for p in model.parameters()) / 1e6, loaders.num_classes,
                 batch.describe(), lr,
                 f" (optim.lr {cfg.optim.lr} scaled {cfg.optim.lr_scaling})" if lr != cfg.optim.lr else "")
    return Components(loaders, model, optimizer, amp, scheduler, make_scheduler, criterion, ema, result_key,
                      steps_per_epoch, lr, cfg, batch)


def training_model(cfg: DictConfig, model: nn.Module, ctx: RankContext) -> nn.Module:
    """The module the training steps run: DDP-wrapped across ranks, compiled if model.compile."""
    train_model = _wrap_ddp(model, ctx)
    if cfg.model.compile:
        train_model = torch.compile(train_model)
    return train_model


def loop_settings(cfg: DictConfig, ctx: RankContext) -> LoopSettings:
    return LoopSettings(
        print_freq=cfg.print_freq, fps_warmup_steps=cfg.fps_warmup_steps, max_steps=cfg.max_steps_per_epoch,
        progress_bar=sys.stdout.isatty() if cfg.progress_bar is None else cfg.progress_bar,
        channels_last=use_channels_last(cfg.model, ctx.device.type), accum_steps=int(cfg.optim.accum_steps))


def fit(cfg: DictConfig, ctx: RankContext) -> float:
    started = time.time()
    parts = build_components(cfg, ctx)
    loaders, model, optimizer, amp, scheduler = parts.loaders, parts.model, parts.optimizer, parts.amp, parts.scheduler
    make_scheduler, criterion, ema, result_key = parts.make_scheduler, parts.criterion, parts.ema, parts.result_key
    steps_per_epoch, cfg, batch = parts.steps_per_epoch, parts.cfg, parts.batch

    # -1 until the first validation, so the first validated epoch always writes model_best.
    start_epoch, start_step, best_acc1 = 0, 0, -1.0
    resume_path = _resume_path(cfg, ctx)
    if resume_path and ctx.is_main:
        checkpoint.remove_stale_temp_files(ctx.run_dir)
    if resume_path:
        state = checkpoint.load_checkpoint(resume_path)
        start_epoch, best_acc1, scheduler = resume.restore(state, resume_path, cfg, model, optimizer, scheduler, amp,
                                                           loaders.num_classes, steps_per_epoch, make_scheduler)
        start_step = state.get("step", 0)
        ema_room.restore(ema, state, ctx.is_main)
        if "rng" in state:
            ctx.device.set_rng_state(state["rng"]["device"])
        if ctx.is_main:
            log.info("%s", resume.describe_start(resume_path, state, cfg.evaluate))

    train_model = training_model(cfg, model, ctx)
    settings = loop_settings(cfg, ctx)

    if cfg.evaluate:
        # The unwrapped module: each rank evaluates its own shard, no DDP collectives in the forward.
        confusion = ConfusionMeter(loaders.num_classes, ctx)
        stats = evaluate(model, loaders.val, criterion, amp, ctx, settings, observer=confusion)
        if ema is not None:
            stats.update(ema.validate(loaders.val, criterion, amp, ctx, settings))
        matrix = confusion.summed()
        if ctx.is_main:
            write_class_report(ctx.run_dir, matrix, loaders.class_names)
            _write_json(ctx, "eval.json", {**stats, "result": result_key, "resume": cfg.resume,
                                           "model.weights": cfg.model.weights, "dataset": cfg.dataset.name})
        return stats[result_key]

    names = output_class_names(cfg, loaders.class_names)

    def state_at(epoch: int, step: int = 0) -> Dict[str, Any]:
        return _checkpoint_state(cfg, model, optimizer, scheduler, amp, epoch, best_acc1, ctx, loaders.num_classes,
                                 steps_per_epoch, names, ema_room.checkpoint_entries(ema), step)

    def save_mid_epoch(epoch: int, step: int) -> None:
        # checkpoint.pth.tar whatever checkpoint.save says: a preempted run must be able to continue (periodic
        # saves need save=all|last anyway, check_config says so).
        checkpoint.save_checkpoint(state_at(epoch, step), ctx.run_dir, False, "last")

    writer = MetricsWriter(ctx.run_dir, open_sinks(cfg, ctx.run_dir, resume_path)) if ctx.is_main else None
    settings.on_step = writer.write_step if writer is not None else None
    skips = SkipReport(ctx.run_dir) if ctx.is_main else None
    record: Dict[str, Any] = {}
    fps_per_epoch: List[float] = []
    divergence = DivergenceWatch(cfg, loaders.num_classes)
    watchdog = Watchdog(ctx.rank, ctx.world_size, cfg.distributed.timeout_min)
    guard = preempt.StepGuard(cfg.checkpoint, ctx.is_main, ctx.distributed, save_mid_epoch, watchdog.beat)
    reporter = TrialReporter(cfg.sweep.trial, ctx)  # hydra/sweeper=resnext: Acc@1 to the trial, pruned or not
    epochs_done, pruned_at = start_epoch, None
    eta = Eta((cfg.epochs - start_epoch) * steps_per_epoch - start_step, cfg.epochs - start_epoch, cfg.fps_warmup_steps)
    settings.eta = eta
    # The writer closes the tracked runs however this block ends (finished, failed, preempted).
    with watchdog if ctx.distributed else contextlib.nullcontext(), guard, writer or contextlib.nullcontext():
        for epoch in range(start_epoch, cfg.epochs):
            epoch_start = time.time()
            eta.begin_epoch()
            first_step = start_step if epoch == start_epoch else 0
            loaders.set_epoch(epoch, first_step * batch.accum_steps)  # in micro-batches
            lr_now = optimizer.param_groups[0]["lr"]
            train_stats = train_one_epoch(train_model, guard.watch(loaders.train), criterion, optimizer, scheduler,
                                          amp, ctx, epoch, settings, first_step,
                                          eta.counting(_after_step(ema, guard.for_epoch(epoch), epoch)))
            val_stats = evaluate(model, loaders.val, criterion, amp, ctx, settings) if cfg.validate else {}
            if ema is not None and cfg.validate:
                val_stats.update(ema.validate(loaders.val, criterion, amp, ctx, settings))
            is_best = cfg.validate and val_stats[result_key] > best_acc1
            if is_best:
                best_acc1 = val_stats[result_key]
            if ctx.is_main:
                # lr: the first step's; lr_last (from train_stats): the last step's.
                record = {"epoch": epoch, "lr": lr_now, **train_stats, **val_stats,
                          "best_acc1": max(best_acc1, 0.0), "seconds": time.time() - epoch_start,
                          **skips.for_epoch(epoch)}
                writer.write(record)
                divergence.check(record)
                fps_per_epoch.append(train_stats["fps"])
                checkpoint.save_checkpoint(state_at(epoch + 1), ctx.run_dir, is_best, cfg.checkpoint.save)
                if cfg.checkpoint.save in ("all", "last"):
                    checkpoint.keep_epoch_copy(ctx.run_dir, epoch, cfg.checkpoint.keep_last)
            watchdog.beat()
            eta.end_epoch()
            epochs_done = epoch + 1
            if reporter.should_stop(epochs_done, val_stats.get(result_key), cfg.epochs):  # after the checkpoint: complete run
                pruned_at = epochs_done
                break
            if ctx.is_main:
                log.info("Epoch: [%d] done in %.1f s; %s for the %d epoch(s) left", epoch, time.time() - epoch_start,
                         eta.text(), cfg.epochs - epoch - 1)
    best_acc1 = max(best_acc1, 0.0)  # 0 when no epoch was validated
    if ctx.is_main:
        _write_result(ctx, best_acc1, record, fps_per_epoch, time.time() - started, divergence.warnings,
                      {**batch_fit.result_fields(batch),
                       **reporter.result_fields(started, start_epoch, epochs_done, cfg.epochs, resume_path,
                                                ctx.run_dir, pruned_at)})
        log.info("done: best Acc@1 %.3f in %.1f s", best_acc1, time.time() - started)
    return best_acc1


def _resume_path(cfg: DictConfig, ctx: RankContext) -> Any:
    """The checkpoint to continue from: resume=auto takes this run directory's, and says when there is none."""
    path = checkpoint.resolve_resume(cfg.resume, ctx.run_dir)
    if cfg.resume == checkpoint.AUTO and path is None and ctx.is_main:
        log.info("resume=auto: no %s in %s: a fresh start", checkpoint.LAST, ctx.run_dir)
    return path


def _after_step(ema, guard_hook, epoch: int):
    """The per-step hook: the EMA update first (a preemption checkpoint must hold it), then preempt's guard."""
    if ema is None:
        return guard_hook

    def hook(done: int, steps: int) -> None:
        ema.after_step(epoch, done - 1)
        guard_hook(done, steps)

    return hook


def _write_json(ctx: RankContext, name: str, content: Dict[str, Any]) -> None:
    (ctx.run_dir / name).write_text(json.dumps(content, indent=2) + "\n")


def _write_result(ctx: RankContext, best_acc1: float, last: Dict[str, Any], fps_per_epoch: List[float],
                  seconds: float, warnings: List[str], run_fields: Dict[str, Any]) -> None:
    """result.json: what a sweep summary reads for this job. fps is the median epoch's, not the last's;
    warnings: what the run said while it ran, such as `diverging: ...` (completed is not the same as fine)."""
    result = {"status": "completed", "best_acc1": best_acc1, "final_train_loss": last.get("train_loss"),
              "fps": statistics.median(fps_per_epoch) if fps_per_epoch else None,
              "fps_is": "median over this run's epochs of FPS@all", "fps_per_epoch": fps_per_epoch,
              "wall_time_s": seconds, "warnings": warnings, **run_fields}  # batch_fit.py and trial.py's fields
    _write_json(ctx, "result.json", result)
