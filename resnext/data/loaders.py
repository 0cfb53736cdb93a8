"""DataLoaders for one rank: a shuffled shard for training, an exact shard for validation."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from ..config import ConfigError
from .synthetic import SyntheticDataset


@dataclass
class Loaders:
    train: DataLoader
    val: DataLoader
    train_sampler: DistributedSampler
    num_classes: int


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


def check_dataset(dcfg) -> int:
    """Refuse a missing root or a wrong layout before any work starts; return the class count."""
    if dcfg.name == "synthetic":
        return dcfg.num_classes
    raise ConfigError(f"dataset.name={dcfg.name!r} is not available yet")


def _datasets(dcfg, seed: int):
    if dcfg.name == "synthetic":
        train = SyntheticDataset(dcfg.train_size, dcfg.image_size, seed, dcfg.num_classes, dcfg.mean, dcfg.std)
        # A different seed stream for validation: no image is shared with the training set.
        val = SyntheticDataset(dcfg.val_size, dcfg.image_size, seed + 1_000_003, dcfg.num_classes, dcfg.mean,
                               dcfg.std)
        return train, val
    raise ConfigError(f"dataset.name={dcfg.name!r} is not available yet")


def build_loaders(dcfg, *, seed: int, rank: int, world_size: int, device_type: str) -> Loaders:
    if dcfg.batch_size % world_size:
        raise ConfigError(f"dataset.batch_size={dcfg.batch_size} is the global batch and must divide by the "
                          f"world size {world_size}")
    num_classes = check_dataset(dcfg)
    train_set, val_set = _datasets(dcfg, seed)
    pin = dcfg.pin_memory and device_type != "cpu"
    sampler = DistributedSampler(train_set, num_replicas=world_size, rank=rank, shuffle=True, seed=seed,
                                 drop_last=True)
    train = DataLoader(train_set, batch_size=dcfg.batch_size // world_size, sampler=sampler,
                       num_workers=dcfg.workers, pin_memory=pin, drop_last=True)
    val_batch = (dcfg.val_batch_size or dcfg.batch_size) // world_size
    val = DataLoader(val_set, batch_size=max(val_batch, 1), sampler=ShardSampler(len(val_set), rank, world_size),
                     num_workers=dcfg.workers, pin_memory=pin)
    return Loaders(train, val, sampler, num_classes)
