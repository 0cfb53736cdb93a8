"""DataLoaders for one rank: a shuffled shard for training, an exact shard for validation."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, Subset

from ..config import ConfigError
from .datasets import build_datasets
from .robust import SKIP_LOG, GuardedSamples

# Batches each worker keeps ready. An ImageNet batch of 256 is ~150 MB of float32 in shared memory, so
# 8 workers x 2 is already ~2.4 GB per rank; more would fill /dev/shm on 8-device nodes for no gain.
PREFETCH_PER_WORKER = 2


@dataclass
class Loaders:
    train: DataLoader
    val: DataLoader
    train_sampler: "ResumableSampler"
    num_classes: int
    train_samples: Optional[GuardedSamples] = None
    loader_generator: Optional[torch.Generator] = None
    seed: int = 0

    def set_epoch(self, epoch: int, first_step: int = 0) -> None:
        """Epoch `epoch`'s order, starting at batch `first_step` (a mid-epoch resume), its augmentation seeds,
        and the workers' base seed drawn from (seed, epoch) rather than from the global torch RNG."""
        self.train_sampler.set_epoch(epoch)
        self.train_sampler.skip = first_step * self.train.batch_size
        for guarded in (self.train_samples, self.val.dataset):
            if isinstance(guarded, GuardedSamples):
                guarded.set_epoch(epoch)
        if self.loader_generator is not None:
            self.loader_generator.manual_seed(self.seed * 1_000_003 + epoch)


class ResumableSampler(DistributedSampler):
    """DistributedSampler that can start `skip` samples into its epoch order: a mid-epoch resume."""

    skip = 0

    def __iter__(self) -> Iterator[int]:
        order = list(super().__iter__())
        return iter(order[self.skip:])

    def __len__(self) -> int:
        return max(super().__len__() - self.skip, 0)


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


def _class_count(dataset: Dataset) -> int:
    # check_dataset already ran in the launcher, before any rank: the dataset knows its classes, so no
    # rank repeats the directory listing or the CIFAR md5 check.
    base = dataset.dataset if isinstance(dataset, Subset) else dataset
    return len(base.classes)


def build_loaders(dcfg, *, seed: int, rank: int, world_size: int, device_type: str,
                  run_dir: Optional[Path] = None) -> Loaders:
    """This rank's loaders. dataset.batch_size and val_batch_size are global: each rank gets 1/world_size.

    Expects a dataset that check_dataset accepted (train.main runs it before launching any rank).
    """
    if dcfg.batch_size % world_size:
        raise ConfigError(f"dataset.batch_size={dcfg.batch_size} is the global batch and must divide by the "
                          f"world size {world_size}")
    train_set, val_set = build_datasets(dcfg, seed)
    rank_batch = dcfg.batch_size // world_size
    # Always a DistributedSampler, also for one process: set_epoch(e) then gives the same order for
    # epoch e in every run, which is what makes a resumed run exact.
    sampler = ResumableSampler(train_set, num_replicas=world_size, rank=rank, shuffle=True, seed=seed,
                               drop_last=True)
    if len(sampler) < rank_batch:
        raise ConfigError(f"the training set has {len(train_set)} samples, {len(sampler)} per rank: not one full "
                          f"batch of {rank_batch} per rank (dataset.batch_size={dcfg.batch_size} over "
                          f"{world_size} ranks). Lower dataset.batch_size or raise dataset.train_subset")
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
    train = DataLoader(guarded_train, batch_size=rank_batch, sampler=sampler, drop_last=True, generator=generator,
                       **options)
    val_batch = (dcfg.val_batch_size or dcfg.batch_size) // world_size
    val = DataLoader(guarded_val, batch_size=max(val_batch, 1),
                     sampler=ShardSampler(len(val_set), rank, world_size), **options)
    return Loaders(train, val, sampler, _class_count(train_set), guarded_train, generator, seed)
