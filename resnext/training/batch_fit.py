"""dataset.batch_size=auto and optim.accum_steps=auto: the per-device batch that fits, found before training.

The search finds the largest per-device batch b <= dataset.max_batch_size whose training step fits (doubling,
then bisection):
- CUDA / NPU: real forward/backward/optimizer steps of the configured model, image size and autocast; a step
  fits when it raises no out-of-memory error and its peak allocation stays under MARGIN of the memory the
  device had free; cached memory is released after every trial (empty_cache), OOM included.
- CPU: an estimate against a budget (dataset.auto_memory_gib, default half the available RAM, shared by the
  ranks): the activation bytes autograd saves per sample, measured on real forwards of 2 and 4 samples, times
  CPU_TRANSIENT for backward's temporaries, plus the parameters, gradients and optimizer state. Checked
  against the peak RSS growth of real steps (README "Batch size and gradient accumulation").
All ranks agree on the smallest b (all_reduce MIN). batch_size=auto then trains a global batch of
b x world size (x optim.accum_steps when that is a number); accum_steps=auto takes the fewest micro-steps K
whose micro-batch of batch_size / (world size x K) is at most b. The choice goes to AUTO_BATCH_FILE in the run
directory, which a later start of the same run (resume=auto, a sweep job rerun) reads instead of searching.
"""
from __future__ import annotations

import gc
import json
import logging
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import torch
import torch.distributed as dist
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ..config.batch import AUTO, BatchPlan, accum_for, requested, split, static_plan
from ..config.errors import ConfigError
from ..models.build import build_model
from ..runtime.amp import MixedPrecision
from ..runtime.devices import RankContext, zero_grad
from ..runtime.speed import use_channels_last
from .optim import build_optimizer

log = logging.getLogger("resnext")

AUTO_BATCH_FILE = "auto_batch.json"
MARGIN = 0.9  # accelerators: a trial's peak may use this share of the free memory (fragmentation, DDP buckets)
CPU_SHARE = 0.5  # CPU: the default budget is this share of MemAvailable
CPU_TRANSIENT = 1.5  # backward's temporaries over the saved activations (measured 1.3-1.5x: README)
SEARCH_CLASSES = 1000  # the head used while searching when dataset.num_classes is not set: on the safe side
# What the found size depends on: a record made with other values is not reused.
INPUT_KEYS = ("model.arch", "model.norm", "model.stem", "model.channels_last", "dataset.image_size",
              "dataset.max_batch_size", "dataset.auto_memory_gib", "dataset.batch_size", "optim.accum_steps",
              "optim.name", "amp.mode")


def resolve(cfg: DictConfig, ctx: RankContext) -> Tuple[DictConfig, BatchPlan]:
    """The config with dataset.batch_size and optim.accum_steps as numbers, and the plan they make."""
    plan = static_plan(cfg, ctx.world_size)
    if plan is None:
        inputs = _inputs(cfg, ctx)
        record = _read_record(ctx.run_dir, inputs)
        fits = record["fits_per_device"] if record else _search(cfg, ctx)
        fits = _agree(fits, ctx)  # every rank joins, reused or searched: rank 0 writes only after this
        plan = _plan(cfg, ctx.world_size, fits, "reused" if record else "search")
        if ctx.is_main:
            log.info("batch %s (%s): %s", "reused from " + AUTO_BATCH_FILE if record else "searched",
                     f"{fits} per device fit{' in the budget' if ctx.device.type == 'cpu' else ''}", plan.describe())
            _write_record(ctx.run_dir, plan, fits, inputs)
    resolved = OmegaConf.merge(cfg, {"dataset": {"batch_size": plan.global_batch},
                                     "optim": {"accum_steps": plan.accum_steps}})
    return resolved, plan


def result_fields(plan: BatchPlan) -> Dict[str, Any]:
    """What result.json says about the batch (a sweep summary reads it beside the job's config)."""
    return {"batch": {"global": plan.global_batch, "per_device": plan.micro_batch, "accum_steps": plan.accum_steps,
                      "world_size": plan.world_size, "chosen_by": plan.chosen_by}}


def _plan(cfg: DictConfig, world_size: int, fits: int, how: str) -> BatchPlan:
    batch, accum = requested(cfg)
    if fits < 1:
        key = "dataset.batch_size=auto" if batch == AUTO else "optim.accum_steps=auto"
        raise ConfigError(f"{key}: not even one sample per device fits here: lower dataset.image_size or use a smaller "
                          "model.arch (on cpu: raise dataset.auto_memory_gib)")
    if batch == AUTO:
        return BatchPlan(fits * world_size * accum, fits, accum, world_size, how)
    k = accum_for(batch // world_size, fits)
    return BatchPlan(batch, split(batch, world_size, k), k, world_size, how)


def largest_fitting(fits: Callable[[int], bool], cap: int) -> int:
    """The largest b in 1..cap with fits(b), fits assumed monotone: doubling, then bisection; 0 if none."""
    low, high, b = 0, None, 1
    while b <= cap:
        if not fits(b):
            high = b
            break
        low, b = b, b * 2
    if high is None:  # every doubling fitted: the cap, or between the last doubling and the cap
        if low == cap or fits(cap):
            return cap
        high = cap
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if fits(mid) else (low, mid)
    return low


def _search(cfg: DictConfig, ctx: RankContext) -> int:
    batch, _ = requested(cfg)
    cap = cfg.dataset.max_batch_size if batch == AUTO else min(cfg.dataset.max_batch_size, batch // ctx.world_size)
    trial = _Trial(cfg, ctx)
    try:
        fits = trial.cpu_fits if ctx.device.type == "cpu" else trial.accelerator_fits
        return largest_fitting(fits, cap)
    finally:
        trial.release()


class _Trial:
    """The configured model, optimizer and autocast on this rank's device, for trial steps."""

    def __init__(self, cfg: DictConfig, ctx: RankContext) -> None:
        self.device, self.size = ctx.device, cfg.dataset.image_size
        self.classes = cfg.dataset.num_classes or SEARCH_CLASSES
        self.memory_format = torch.channels_last if use_channels_last(cfg.model, ctx.device.type) \
            else torch.contiguous_format
        self.model = build_model(cfg.model, self.classes).to(ctx.device.torch_device, memory_format=self.memory_format)
        self.optimizer = build_optimizer(cfg.optim, self.model, ctx.device, cfg.optim.lr)
        # autocast and the scaler only: apex would rewrite the model (an fp32 trial is on the safe side).
        self.amp = MixedPrecision(cfg.amp, ctx.device)
        self.criterion = nn.CrossEntropyLoss()
        self.accelerator = None if ctx.device.type == "cpu" else getattr(torch, ctx.device.type)
        self.limit: Optional[float] = None
        self.budget = _cpu_budget(cfg, ctx) if ctx.device.type == "cpu" else None
        self.per_sample: Optional[float] = None

    def _batch(self, b: int):
        images = torch.randn(b, 3, self.size, self.size, device=self.device.torch_device)
        target = torch.randint(0, self.classes, (b,), device=self.device.torch_device)
        return images.contiguous(memory_format=self.memory_format), self.device.prepare_target(target)

    def step(self, b: int) -> None:
        images, target = self._batch(b)
        with self.amp.autocast():
            loss = self.criterion(self.model(images), target)
        self.amp.backward(loss, self.optimizer)
        self.amp.step(self.optimizer)
        zero_grad(self.optimizer)

    def accelerator_fits(self, b: int) -> bool:
        acc = self.accelerator
        if self.limit is None:
            acc.empty_cache()
            free, _ = acc.mem_get_info()
            self.limit = MARGIN * (free + acc.memory_allocated())  # what this process holds counts as usable
        acc.reset_peak_memory_stats()
        out_of_memory = False
        try:
            self.step(b)
            acc.synchronize()
        except RuntimeError as err:  # torch.cuda.OutOfMemoryError is one; torch_npu raises RuntimeError
            if not _is_oom(err):
                raise
            out_of_memory = True  # the exception (and its frames' tensors) must be gone before empty_cache
        zero_grad(self.optimizer)
        gc.collect()
        peak = acc.max_memory_allocated()
        acc.empty_cache()
        return not out_of_memory and peak <= self.limit

    def cpu_fits(self, b: int) -> bool:
        if self.per_sample is None:
            self.per_sample = (self._saved_bytes(4) - self._saved_bytes(2)) / 2
            params = sum(p.numel() * p.element_size() for p in self.model.parameters())
            self.fixed = 4 * params  # weights, gradients, up to two optimizer buffers per weight
        return self.fixed + CPU_TRANSIENT * b * self.per_sample <= self.budget

    def _saved_bytes(self, b: int) -> int:
        """Bytes of the tensors autograd keeps for backward in one forward of b samples (storages counted once)."""
        storages: Dict[int, int] = {}

        def pack(tensor: torch.Tensor) -> torch.Tensor:
            storage = tensor.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
            return tensor

        images, target = self._batch(b)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor), self.amp.autocast():
            self.criterion(self.model(images), target)
        return sum(storages.values())

    def release(self) -> None:
        del self.model, self.optimizer
        gc.collect()
        if self.accelerator is not None:
            self.accelerator.empty_cache()


def _is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err).lower()


def _cpu_budget(cfg: DictConfig, ctx: RankContext) -> float:
    """Bytes one rank may fill: dataset.auto_memory_gib (or CPU_SHARE of MemAvailable) over the ranks."""
    gib = cfg.dataset.auto_memory_gib
    total = gib * 2 ** 30 if gib is not None else CPU_SHARE * _mem_available()
    return total / ctx.world_size


def _mem_available() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return float(line.split()[1]) * 1024
    raise ConfigError("dataset.batch_size=auto on cpu: /proc/meminfo has no MemAvailable: set dataset.auto_memory_gib")


def _agree(fits: int, ctx: RankContext) -> int:
    """The smallest of the ranks' sizes: every rank must run the same micro-batch."""
    if not ctx.distributed:
        return fits
    value = torch.tensor([fits], dtype=torch.int64, device=ctx.device.torch_device)
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return int(value.item())


def _inputs(cfg: DictConfig, ctx: RankContext) -> Dict[str, Any]:
    values = {key: OmegaConf.select(cfg, key) for key in INPUT_KEYS}
    values = {key: str(value) if value is not None and not isinstance(value, (int, float)) else value
              for key, value in values.items()}
    return {**values, "device": ctx.device.type, "world_size": ctx.world_size}


def _read_record(run_dir: Path, inputs: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    path = Path(run_dir) / AUTO_BATCH_FILE
    try:
        record = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if record.get("inputs") != inputs:
        changed = sorted(k for k in inputs if record.get("inputs", {}).get(k) != inputs[k])
        log.info("%s was found for other settings (%s): searching again", path, ", ".join(changed))
        return None
    return record


def _write_record(run_dir: Path, plan: BatchPlan, fits: int, inputs: Dict[str, Any]) -> None:
    record = {"dataset.batch_size": plan.global_batch, "optim.accum_steps": plan.accum_steps,
              "per_device_batch": plan.micro_batch, "fits_per_device": fits, "world_size": plan.world_size,
              "chosen_by": plan.chosen_by, "inputs": inputs}
    path = Path(run_dir) / AUTO_BATCH_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(path)
