"""DataLoaders for one rank: a shuffled shard for training, an exact shard for validation."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sized

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from ..config.errors import ConfigError
from . import dali, dali_augment
from .datasets import build_datasets
from .mixing import build_mixing, build_seeded_mixing
from .ra_sampler import RASampler
from .robust import SKIP_LOG, GuardedSamples
from .samplers import ResumableSampler

log = logging.getLogger("resnext")

# Batches each worker keeps ready. An ImageNet batch of 256 is ~150 MB of float32 in shared memory, so
# 8 workers x 2 is already ~2.4 GB per rank; more would fill /dev/shm on 8-device nodes for no gain.
PREFETCH_PER_WORKER = 2


@dataclass
class Loaders:
    train: DataLoader  # or a dali.DaliLoader: same interface (len, iteration)
    val: DataLoader
    train_sampler: ResumableSampler  # the training order (DALI reads its files in this order too)
    num_classes: int
    class_names: List[str] = field(default_factory=list)  # index -> name; checkpoints store them for predict
    rank_batch: int = 1
    train_samples: Optional[GuardedSamples] = None
    loader_generator: Optional[Any] = None  # torch.Generator of the training DataLoader
    seed: int = 0

    def set_epoch(self, epoch: int, first_step: int = 0) -> None:
        """Epoch `epoch`'s order, starting at batch `first_step` (a mid-epoch resume), its augmentation seeds,
        and the workers' base seed drawn from (seed, epoch) rather than from the global torch RNG."""
        if isinstance(self.train, dali.DaliLoader):
            self.train.set_epoch(epoch)  # also seeds its pipelines for this epoch
        else:
            self.train_sampler.set_epoch(epoch)
        self.train_sampler.skip = first_step * self.rank_batch
        for guarded in (self.train_samples, getattr(self.val, "dataset", None)):
            if isinstance(guarded, GuardedSamples):
                guarded.set_epoch(epoch)
        if self.loader_generator is not None:
            self.loader_generator.manual_seed(self.seed * 1_000_003 + epoch)


class ShardSampler(Sampler[int]):
    """Rank r of w takes indices r, r+w, r+2w, ...: together the ranks see every sample exactly once.

    DistributedSampler pads the dataset to a multiple of the world size, which would count some
    validation images twice; this one leaves shards uneven instead.
    """

    def __init__(self, length: int, rank: int, world_size: int) -> None:
        self.indices = range(rank, length, world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def _worker_options(dcfg, device_type: str) -> Dict[str, Any]:
    options: Dict[str, Any] = {
        "num_workers": dcfg.workers,
        # Page-locked host memory only helps copies to an accelerator.
        "pin_memory": dcfg.pin_memory and device_type != "cpu",
        # Must stay False: the per-sample seeds depend on the epoch, which workers read from their copy
        # of the dataset when each epoch's iterator starts (data/robust.py).
        "persistent_workers": False,
    }
    if dcfg.workers > 0:  # DataLoader refuses prefetch_factor without workers
        options["prefetch_factor"] = PREFETCH_PER_WORKER
    return options


def _class_names(dataset: Dataset) -> List[str]:
    # check_dataset already ran in the launcher, before any rank: the dataset knows its classes, so no
    # rank repeats the directory listing or the CIFAR md5 check.
    base = dataset.dataset if isinstance(dataset, Subset) else dataset
    return [str(name) for name in base.classes]


def _train_sampler(train_set: Sized, dcfg, seed: int, rank: int, world_size: int) -> ResumableSampler:
    # Always a DistributedSampler, also for one process: set_epoch(e) then gives the same order for
    # epoch e in every run, which is what makes a resumed run exact.
    if dcfg.get("ra_reps", 1) > 1:  # repeated augmentation: same epoch length, each index ra_reps times
        return RASampler(train_set, world_size, rank, seed, dcfg.ra_reps)
    return ResumableSampler(train_set, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=True)


def _check_full_batch(train_size: int, sampler: ResumableSampler, rank_batch: int, dcfg, world_size: int) -> None:
    if len(sampler) < rank_batch:
        raise ConfigError(f"the training set has {train_size} samples, {len(sampler)} per rank: not one full "
                          f"batch of {rank_batch} per rank (dataset.batch_size={dcfg.batch_size} over "
                          f"{world_size} ranks). Lower dataset.batch_size or raise dataset.train_subset")


def _batches(dcfg, world_size: int, accum_steps: int) -> "tuple[int, int]":
    """(training micro-batch, validation batch) per rank. With gradient accumulation the training loader yields
    micro-batches of batch_size / (world_size x accum_steps), and validation defaults to the same global size."""
    rank_batch = dcfg.batch_size // (world_size * accum_steps)
    return rank_batch, max((dcfg.val_batch_size or dcfg.batch_size // accum_steps) // world_size, 1)


def _dali_loaders(dcfg, *, seed: int, rank: int, world_size: int, device_type: str, channels_last: bool,
                  accum_steps: int) -> Loaders:
    """The same shards, order, batch arithmetic and regularisers as the torch path, decoded by DALI."""
    train_set, val_set, class_names = dali.list_samples(dcfg)
    rank_batch, val_batch = _batches(dcfg, world_size, accum_steps)
    sampler = _train_sampler(train_set, dcfg, seed, rank, world_size)
    _check_full_batch(len(train_set), sampler, rank_batch * accum_steps, dcfg, world_size)
    settings = dali.pipeline_settings(dcfg, rank_batch, world_size, device_type, channels_last)
    mixing = build_seeded_mixing(dcfg, len(class_names), seed, rank)
    train = dali.DaliLoader(train_set, sampler, dcfg, settings, train=True, seed=seed, rank=rank, mixing=mixing)
    val = dali.DaliLoader(val_set, ShardSampler(len(val_set), rank, world_size), dcfg,
                          dali.PipelineSettings(val_batch, settings.threads, settings.device_id, channels_last),
                          train=False, seed=seed, rank=rank)
    if rank == 0:
        extras = ", ".join(dali_augment.describe(dcfg))
        log.info("input pipeline: %s%s", dali.describe(settings), f"; regularisers: {extras}" if extras else "")
    return Loaders(train, val, sampler, len(class_names), class_names, rank_batch, seed=seed)


def build_loaders(dcfg, *, seed: int, rank: int, world_size: int, device_type: str,
                  channels_last: bool = False, run_dir: Optional[Path] = None, accum_steps: int = 1) -> Loaders:
    """This rank's loaders. dataset.batch_size and val_batch_size are global: each rank gets 1/world_size.

    accum_steps (optim.accum_steps, resolved): the training loader yields micro-batches of 1/accum_steps of that.
    Expects a dataset that check_dataset accepted (train.main runs it before launching any rank).
    """
    if dcfg.batch_size % world_size:
        raise ConfigError(f"dataset.batch_size={dcfg.batch_size} is the global batch and must divide by the "
                          f"world size {world_size}")
    kind, why = dali.resolve_loader(dcfg)
    if rank == 0:
        log.info("input pipeline: %s (%s)", "NVIDIA DALI" if kind == "dali" else "torch DataLoader", why)
    if kind == "dali":
        return _dali_loaders(dcfg, seed=seed, rank=rank, world_size=world_size, device_type=device_type,
                             channels_last=channels_last, accum_steps=accum_steps)
    train_set, val_set = build_datasets(dcfg, seed)
    rank_batch, val_batch = _batches(dcfg, world_size, accum_steps)
    sampler = _train_sampler(train_set, dcfg, seed, rank, world_size)
    _check_full_batch(len(train_set), sampler, rank_batch * accum_steps, dcfg, world_size)
    options = _worker_options(dcfg, device_type)
    # Training augmentations seeded per sample (exact mid-epoch resume, per-rank streams); both splits get
    # the bad_images policy. See data/robust.py.
    skip_log = Path(run_dir) / SKIP_LOG if run_dir is not None else None
    guarded_train = GuardedSamples(train_set, split="train", seed=seed, rank=rank, bad_images=dcfg.bad_images,
                                   skip_log=skip_log, seeded=True)
    guarded_val = GuardedSamples(val_set, split="val", seed=seed, rank=rank, bad_images=dcfg.bad_images,
                                 skip_log=skip_log, seeded=False)
    generator = torch.Generator()
    # drop_last: every step sees a full batch, so BatchNorm statistics and the lr per sample stay constant.
    names = _class_names(train_set)
    train = DataLoader(guarded_train, batch_size=rank_batch, sampler=sampler, drop_last=True, generator=generator,
                       collate_fn=build_mixing(dcfg, len(names)), **options)
    val = DataLoader(guarded_val, batch_size=val_batch,
                     sampler=ShardSampler(len(val_set), rank, world_size), **options)
    return Loaders(train, val, sampler, len(names), names, rank_batch, guarded_train, generator, seed)
