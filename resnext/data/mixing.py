"""Batch mixing (MixUp / CutMix) after collation, with torchvision's v2 transforms.

It runs as the DataLoader's collate function, as in torchvision's classification references: the
draws come from the worker's (or, without workers, the main process's) torch RNG, which the
DataLoader seeds from the restored global RNG each epoch, so a resumed run mixes exactly as the
interrupted one. Targets leave as soft [batch, classes] float rows; the loss takes them as they
are (cross-entropy and BCE both accept probabilities) and training top-1 counts a hit when the
prediction matches the target's largest share (the argmax of the mixed row; metrics.correct_topk).
Validation never mixes.
"""
from __future__ import annotations

from typing import Any, List, Optional

from torch.utils.data import default_collate
from torchvision.transforms import v2


class MixingCollate:
    """default_collate, then one of the configured mixers on the whole batch (picklable for workers)."""

    def __init__(self, mixer: v2.Transform) -> None:
        self.mixer = mixer

    def __call__(self, samples: List[Any]) -> Any:
        return self.mixer(*default_collate(samples))


def build_mixing(dcfg, num_classes: int) -> Optional[MixingCollate]:
    """The collate function for dataset.mixup_alpha / cutmix_alpha; None when both are 0 (no mixing)."""
    mixers: List[v2.Transform] = []
    if dcfg.mixup_alpha > 0:
        mixers.append(v2.MixUp(alpha=dcfg.mixup_alpha, num_classes=num_classes))
    if dcfg.cutmix_alpha > 0:
        mixers.append(v2.CutMix(alpha=dcfg.cutmix_alpha, num_classes=num_classes))
    if not mixers:
        return None
    # Both set: one of the two per batch with equal chance (torchvision's --mixup-alpha + --cutmix-alpha).
    return MixingCollate(mixers[0] if len(mixers) == 1 else v2.RandomChoice(mixers))
