"""The training criterion for `loss`: ce (cross-entropy) or bce (binary cross-entropy, ResNet Strikes Back).

Both take hard class indices or soft [batch, classes] target rows (MixUp/CutMix) and apply
optim.label_smoothing. BCE follows timm's BinaryCrossEntropy (the loss of Wightman et al. 2021, "ResNet
strikes back", arXiv:2110.00476): each class is an independent sigmoid, the target row is smoothed to
(1 - s) * y + s / classes, and the loss is the mean over every element.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BinaryCrossEntropy(nn.Module):
    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        classes = output.shape[-1]
        if target.dim() == 1:  # class indices -> one-hot rows
            target = F.one_hot(target.long(), classes)
        target = target.to(output.dtype)
        if self.label_smoothing > 0:
            target = target * (1.0 - self.label_smoothing) + self.label_smoothing / classes
        return F.binary_cross_entropy_with_logits(output, target)


def build_criterion(loss: str, label_smoothing: float) -> nn.Module:
    if loss == "bce":
        return BinaryCrossEntropy(label_smoothing)
    return nn.CrossEntropyLoss(label_smoothing=label_smoothing)
