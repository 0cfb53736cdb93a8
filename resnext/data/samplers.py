"""Training samplers whose order depends only on (seed, epoch), and that can start inside an epoch.

`ResumableSampler` is torch's DistributedSampler that can begin `skip` samples into its epoch order, for a
mid-epoch resume (resnext/runtime/preempt.py). `RASampler` (repeated augmentation, data/ra_sampler.py) builds on
it, so both samplers resume the same way.
"""
from __future__ import annotations

from typing import Iterator, List

from torch.utils.data import DistributedSampler


class ResumableSampler(DistributedSampler):
    """DistributedSampler that can start `skip` samples into its epoch order: a mid-epoch resume."""

    skip = 0

    def epoch_order(self) -> List[int]:
        """This rank's whole order for the current epoch; subclasses change how it is drawn."""
        return list(super().__iter__())

    def __iter__(self) -> Iterator[int]:
        return iter(self.epoch_order()[self.skip:])

    def __len__(self) -> int:
        return max(super().__len__() - self.skip, 0)
