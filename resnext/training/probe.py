"""launch.probe=true: time a few real training steps and validation batches, then say what the whole run will cost.

Every rank runs this instead of `fit`, through the same launch path, with the same components (trainer's
build_components) and the same engine (train_one_epoch, evaluate): so what is timed is what training runs
(DDP all-reduces, amp, the real loader and its workers, the EMA update). Nothing is trained for keeps: no
checkpoint, no metrics.jsonl; rank 0 writes probe.json (probe_report.py says what it holds) and a result.json
with status "probed". In a multirun the measurement is cached per combination (probe_cache.py).
"""
from __future__ import annotations

import contextlib
import functools
import logging
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import torch.distributed as dist
from omegaconf import DictConfig

from ..config.errors import ConfigError
from ..models import checkpoint
from ..runtime.devices import RankContext
from . import batch_fit, ema as ema_room, probe_cache, probe_report
from .engine import evaluate, train_one_epoch
from .trainer import (_after_step, _checkpoint_state, build_components, epoch_steps, loop_settings, run_loaders,
                      training_model)

log = logging.getLogger("resnext")

# At least one warm-up step (first-step costs: allocator, autotune, compile) and three timed ones for a spread.
MIN_TIMED_STEPS = 3
MIN_PROBE_STEPS = 1 + MIN_TIMED_STEPS
VAL_BATCHES = 5  # validation batches timed (fewer if the shard has fewer)
LOADER_BATCHES = 10  # batches the loader delivers alone, with no step to feed


def check_probe(cfg: DictConfig) -> None:
    """Refusals before anything starts: one line naming the key and the fix."""
    if not cfg.launch.probe:
        return
    if cfg.launch.dry_run:
        raise ConfigError("launch.probe=true runs real steps on the devices, launch.dry_run=true touches none: "
                          "choose one (drop launch.dry_run to measure, or launch.probe to see the plan only)")
    if cfg.launch.probe_steps < MIN_PROBE_STEPS:
        raise ConfigError(f"launch.probe_steps={cfg.launch.probe_steps} is too few to measure: use at least "
                          f"{MIN_PROBE_STEPS} (1 warm-up step + {MIN_TIMED_STEPS} timed), e.g. the default 20")
    if cfg.evaluate:
        raise ConfigError("launch.probe=true measures training steps, evaluate=true trains none: drop one of them")


@contextlib.contextmanager
def worker_for(cfg: DictConfig, fit: Callable[[DictConfig, RankContext], float],
               sweep_dir: Optional[Path]) -> Iterator[Callable[[DictConfig, RankContext], float]]:
    """What every rank runs: `fit`, or the probe. In a sweep, a combination already probed is only predicted
    again (every rank learns so here, before launch, so all of them run the same steps); the combination's lock is
    held while its job runs, so parallel jobs with the same combination probe it once."""
    if not cfg.launch.probe:
        yield fit
        return
    if sweep_dir is None:
        yield run_probe
        return
    path = probe_cache.path_for(cfg, sweep_dir)
    with probe_cache.locked(path):
        yield functools.partial(run_probe, cache=str(path), cached=probe_cache.read(path))


def run_probe(cfg: DictConfig, ctx: RankContext, cache: Optional[str] = None,
              cached: Optional[Dict[str, Any]] = None) -> float:
    started = time.perf_counter()
    ctx.device.reset_peak_memory()
    if cached is not None:  # the loaders alone tell how many steps this job's epochs have
        cfg = batch_fit.resolve(cfg, ctx)[0]
        loaders = run_loaders(cfg, ctx, cfg.seed if cfg.seed is not None else 0)
        steps_per_epoch, val_batches, measured = epoch_steps(cfg, loaders), len(loaders.val), cached
    else:
        parts = build_components(cfg, ctx)
        cfg = parts.cfg  # the batch resolved: what the steps below run
        steps_per_epoch, val_batches = parts.steps_per_epoch, len(parts.loaders.val)
        measured = _measure(cfg, ctx, parts, time.perf_counter() - started)
    if ctx.is_main:
        report = probe_report.build(cfg, ctx.world_size, measured, steps_per_epoch, val_batches,
                                    _resume_point(cfg, ctx), from_cache=cached is not None)
        probe_report.write(ctx.run_dir, report)
        if cache is not None and cached is None:
            probe_cache.write(Path(cache), measured, cfg)
    return 0.0


def _measure(cfg: DictConfig, ctx: RankContext, parts: Any, setup_s: float) -> Dict[str, Any]:
    loader = _time_loader(parts.loaders)
    steps = _time_steps(cfg, ctx, parts)
    val = _time_validation(cfg, ctx, parts)
    memory = _gather(ctx, _memory(ctx))
    saved = _time_checkpoint(cfg, ctx, parts) if ctx.is_main else {}
    records = _time_epoch_records(ctx) if ctx.is_main else {}
    return {"setup_s": setup_s, "loader": loader, **steps, "val": val, "memory": memory, "checkpoint": saved,
            "records": records}


class _Counting:
    """The training loader, counting the images each rank draws between two optimizer steps."""

    def __init__(self, loader: Any) -> None:
        self.loader, self.pending = loader, 0

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for images, target in self.loader:
            self.pending += int(target.shape[0])
            yield images, target

    def take(self) -> int:
        taken, self.pending = self.pending, 0
        return taken


def _time_loader(loaders: Any) -> Dict[str, Any]:
    """The loader alone: time to its first batch (worker start-up) and its rate after that, per rank."""
    loaders.set_epoch(0)
    count = min(LOADER_BATCHES, len(loaders.train))
    start = time.perf_counter()
    first, images = None, 0
    for index, (_, target) in enumerate(loaders.train):
        if first is None:
            first = time.perf_counter()
        else:
            images += int(target.shape[0])
        if index + 1 >= count:
            break
    end = time.perf_counter()
    rate = images / (end - first) if first is not None and end > first and images else None
    return {"batches": count, "startup_s": (first or end) - start, "images_per_s_per_rank": rate}


def _time_steps(cfg: DictConfig, ctx: RankContext, parts: Any) -> Dict[str, Any]:
    """launch.probe_steps optimizer steps through train_one_epoch, in as many epochs of the loader as it takes.
    Each step is timed to the end of its device work (a synchronize in the step hook); the first step of each
    pass holds the loader's start, as every epoch's does."""
    total = cfg.launch.probe_steps
    settings = loop_settings(cfg, ctx)
    model = training_model(cfg, parts.model, ctx)
    stamps: List[List[float]] = []  # per pass: its start, then each step's end
    images: List[int] = []
    counting = _Counting(parts.loaders.train)

    def timed(done: int, steps: int) -> None:
        ctx.device.synchronize()
        stamps[-1].append(time.perf_counter())
        images.append(counting.take())

    done, epoch = 0, 0
    while done < total:
        settings.max_steps = min(total - done, parts.steps_per_epoch)
        parts.loaders.set_epoch(epoch)
        counting.take()
        stamps.append([time.perf_counter()])
        train_one_epoch(model, counting, parts.criterion, parts.optimizer, parts.scheduler, parts.amp, ctx, epoch,
                        settings, 0, _after_step(parts.ema, timed, epoch))
        done += len(stamps[-1]) - 1
        epoch += 1
    return {"steps": done, "warmup_steps": max(1, min(cfg.fps_warmup_steps, total - MIN_TIMED_STEPS)),
            "passes": [[b - a for a, b in zip(run, run[1:])] for run in stamps],
            "images_per_step_per_rank": sum(images) / max(len(images), 1)}


def _time_validation(cfg: DictConfig, ctx: RankContext, parts: Any) -> Dict[str, Any]:
    """A few validation batches through evaluate: time to the first batch, then each batch's time."""
    count = min(VAL_BATCHES, len(parts.loaders.val))
    stamps: List[float] = []

    class _First:  # the first `count` batches, stamping each as it is handed over
        def __len__(self) -> int:
            return count

        def __iter__(self):
            for index, batch in enumerate(parts.loaders.val):
                if index >= count:
                    return
                stamps.append(time.perf_counter())
                yield batch

    settings = loop_settings(cfg, ctx)
    start = time.perf_counter()
    evaluate(parts.model, _First(), parts.criterion, parts.amp, ctx, settings, label=f"(probe, {count} batches) ")
    ctx.device.synchronize()
    end = time.perf_counter()
    if not stamps:
        return {"batches": 0, "startup_s": end - start, "batch_s": []}
    return {"batches": len(stamps), "startup_s": stamps[0] - start,
            "batch_s": [b - a for a, b in zip(stamps, stamps[1:] + [end])]}


def _memory(ctx: RankContext) -> Dict[str, Any]:
    free, total = ctx.device.free_memory()
    return {"rank": ctx.rank, "device": str(ctx.device), "peak_bytes": ctx.device.peak_memory(),
            "peak_is": "peak RSS of the rank's process" if ctx.device.torch_device.type == "cpu"
            else "allocator peak (max_memory_allocated)", "free_bytes": free, "total_bytes": total}


def _gather(ctx: RankContext, mine: Dict[str, Any]) -> List[Dict[str, Any]]:
    if not ctx.distributed:
        return [mine]
    every: List[Any] = [None] * ctx.world_size
    dist.all_gather_object(every, mine)
    return every


def _time_checkpoint(cfg: DictConfig, ctx: RankContext, parts: Any) -> Dict[str, Any]:
    """The real checkpoint state, written as the run writes it, to a temporary file that is then removed."""
    names = list(parts.loaders.class_names) or [str(i) for i in range(parts.loaders.num_classes)]
    state = _checkpoint_state(cfg, parts.model, parts.optimizer, parts.scheduler, parts.amp, 1, 0.0, ctx,
                              parts.loaders.num_classes, parts.steps_per_epoch, names,
                              ema_room.checkpoint_entries(parts.ema))
    with tempfile.TemporaryDirectory(dir=ctx.run_dir, prefix=".probe-") as tmp:
        start = time.perf_counter()
        checkpoint.save_atomic(state, Path(tmp) / checkpoint.LAST)
        save_s = time.perf_counter() - start
        checkpoint.save_atomic(checkpoint.best_state(state), Path(tmp) / checkpoint.BEST)
        return {"last_bytes": (Path(tmp) / checkpoint.LAST).stat().st_size,
                "best_bytes": (Path(tmp) / checkpoint.BEST).stat().st_size, "save_s": save_s}


def _time_epoch_records(ctx: RankContext) -> Dict[str, float]:
    """What rank 0 does after each epoch besides the checkpoint: metrics.jsonl and curves.png (redrawn from every
    epoch so far), timed on two epochs' records in a temporary directory. Remote loggers are not timed."""
    from ..loggers.metrics import MetricsWriter
    from ..loggers.plots import CurvesSink

    keys = ("lr", "train_loss", "train_acc1", "train_acc5", "fps", "lr_last", "val_loss", "acc1", "acc5",
            "best_acc1", "seconds")
    seconds = []
    with tempfile.TemporaryDirectory(dir=ctx.run_dir, prefix=".probe-") as tmp:
        writer = MetricsWriter(Path(tmp), [CurvesSink(Path(tmp))])
        for epoch in range(2):
            start = time.perf_counter()
            writer.write({"epoch": epoch, "skipped_steps": 0, **{key: 1.0 + epoch for key in keys}})
            seconds.append(time.perf_counter() - start)
    return {"first_s": seconds[0], "per_epoch_s": seconds[1]}


def _resume_point(cfg: DictConfig, ctx: RankContext) -> Dict[str, int]:
    """Where a resume would start: the epoch and step in the checkpoint (0, 0 for a fresh run)."""
    path = checkpoint.resolve_resume(cfg.resume, ctx.run_dir)
    if not path:
        return {"epoch": 0, "step": 0}
    state = checkpoint.load_checkpoint(path)
    return {"epoch": int(state.get("epoch", 0)), "step": int(state.get("step", 0))}

