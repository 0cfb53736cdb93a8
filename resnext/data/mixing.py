"""Batch mixing (MixUp / CutMix): one mixer for both loaders, torchvision's v2 transforms.

`build_mixer` makes the mixer from dataset.mixup_alpha / cutmix_alpha; each loader applies that same
object to whole training batches:

- the torch loader runs it as the DataLoader's collate function, as in torchvision's classification
  references (`build_mixing`): the draws come from the worker's (or, without workers, the main
  process's) torch RNG, which the DataLoader seeds from the restored global RNG each epoch, so a
  resumed run mixes exactly as the interrupted one;
- the DALI loader hands over whole batches (on the CPU or already on the GPU) and mixes them with
  `SeededMixing`: each batch's draws come from a CPU generator seeded from (seed, epoch, rank, batch
  index) inside fork_rng, so the global stream is untouched and a resume, at an epoch boundary or
  mid-epoch, mixes every batch exactly as an uninterrupted run. (MixUp and CutMix draw lambda and the
  box on the CPU whatever the tensors' device.)

Targets leave as soft [batch, classes] float rows; the loss takes them as they are (cross-entropy
and BCE both accept probabilities) and training top-1 counts a hit when the prediction matches the
target's largest share (the argmax of the mixed row; metrics.correct_topk). Validation never mixes.
"""
from __future__ import annotations

from typing import Any, List, Optional, Tuple

import torch
from torch.utils.data import default_collate
from torchvision.transforms import v2

from .robust import sample_seed

MIX_STREAM = "mix"  # keeps the per-batch mixing seeds apart from the per-sample augmentation seeds


def build_mixer(dcfg, num_classes: int) -> Optional[v2.Transform]:
    """MixUp, CutMix or a random choice of the two for dataset.mixup_alpha / cutmix_alpha; None when both are 0."""
    mixers: List[v2.Transform] = []
    if dcfg.mixup_alpha > 0:
        mixers.append(v2.MixUp(alpha=dcfg.mixup_alpha, num_classes=num_classes))
    if dcfg.cutmix_alpha > 0:
        mixers.append(v2.CutMix(alpha=dcfg.cutmix_alpha, num_classes=num_classes))
    if not mixers:
        return None
    # Both set: one of the two per batch with equal chance (torchvision's --mixup-alpha + --cutmix-alpha).
    return mixers[0] if len(mixers) == 1 else v2.RandomChoice(mixers)


class MixingCollate:
    """default_collate, then the mixer on the whole batch (picklable for workers)."""

    def __init__(self, mixer: v2.Transform) -> None:
        self.mixer = mixer

    def __call__(self, samples: List[Any]) -> Any:
        return self.mixer(*default_collate(samples))


def build_mixing(dcfg, num_classes: int) -> Optional[MixingCollate]:
    """The torch loader's collate function for the mixer; None when nothing mixes."""
    mixer = build_mixer(dcfg, num_classes)
    return MixingCollate(mixer) if mixer is not None else None


class SeededMixing:
    """The mixer on batches handed over whole (the DALI loader), each batch seeded from its place in the run."""

    def __init__(self, mixer: v2.Transform, seed: int, rank: int) -> None:
        self.mixer, self.seed, self.rank = mixer, seed, rank

    def __call__(self, images: torch.Tensor, target: torch.Tensor, epoch: int,
                 batch: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """Batch `batch` of epoch `epoch` (counted from the epoch's start, also after a mid-epoch resume)."""
        with torch.random.fork_rng(devices=[]):  # the CPU stream only: the mixers draw nothing elsewhere
            torch.default_generator.manual_seed(sample_seed(self.seed, epoch, self.rank, batch, MIX_STREAM))
            return self.mixer(images, target)


def build_seeded_mixing(dcfg, num_classes: int, seed: int, rank: int) -> Optional[SeededMixing]:
    """The DALI loader's mixing for the same mixer; None when nothing mixes."""
    mixer = build_mixer(dcfg, num_classes)
    return SeededMixing(mixer, seed, rank) if mixer is not None else None
