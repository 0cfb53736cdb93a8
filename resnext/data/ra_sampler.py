"""Repeated augmentation (Hoffer et al. 2020; torchvision's RASampler): each sample several times per epoch.

Each index appears `reps` times in a row of the shuffled list, and rank r takes every world_size-th
entry from position r, so the copies of one image go to different ranks (or, on one rank, sit in the
same batch) and are augmented differently. The epoch length per rank stays that of a plain
DistributedSampler with drop_last: an epoch then covers about 1/reps of the distinct images, as in the
references. The order depends only on (seed, epoch), which keeps resume exact.
"""
from __future__ import annotations

from typing import List

import torch
from torch.utils.data import Dataset

from .samplers import ResumableSampler


class RASampler(ResumableSampler):
    """A DistributedSampler (set_epoch, num_samples, skip) whose shuffled list repeats each index `reps` times."""

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, seed: int, reps: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self.reps = reps

    def epoch_order(self) -> List[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        repeated = torch.randperm(len(self.dataset), generator=generator).repeat_interleave(self.reps)
        return repeated[self.rank::self.num_replicas][:self.num_samples].tolist()
