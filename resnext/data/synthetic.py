"""The embedded dataset: ten classes of procedurally drawn structure, made in memory from a seed.

Each class is a different kind of structure (stripes in four orientations, a checkerboard, a disc,
concentric rings, a pinwheel, a cross, a dot grid), drawn with random colours, sizes, positions,
periods and phases, plus pixel noise. So the labels are learnable from shape alone, never from colour or from noise, and
a ResNeXt trained on it is a real check that the whole pipeline learns.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence, Tuple

import torch
from torch.utils.data import Dataset

CLASSES = ("horizontal_stripes", "vertical_stripes", "diagonal_stripes", "antidiagonal_stripes",
           "checkerboard", "disc", "concentric_rings", "pinwheel", "cross", "dot_grid")


def _uniform(gen: torch.Generator, n: int, low: float, high: float) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, 1, 1, generator=gen)


def _masks(labels: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
    """A [N, H, W] foreground mask in {0, 1} for each label."""
    n = labels.shape[0]
    axis = torch.arange(size, dtype=torch.float32)
    y, x = axis.view(1, size, 1), axis.view(1, 1, size)
    period = _uniform(gen, n, size / 8, size / 3.5)
    phase = _uniform(gen, n, 0, 2 * math.pi)
    # Shapes: centre within the middle third, radius 28-42% of the side. Large on purpose: the ImageNet
    # stem divides a 32 px image by 4 before the first block, and small blobs would all look alike.
    cy, cx = _uniform(gen, n, 0.35 * size, 0.65 * size), _uniform(gen, n, 0.35 * size, 0.65 * size)
    radius = _uniform(gen, n, 0.28 * size, 0.42 * size)
    spokes = torch.randint(3, 7, (n, 1, 1), generator=gen).float()

    def wave(coord: torch.Tensor) -> torch.Tensor:
        return (torch.sin(2 * math.pi * coord / period + phase) > 0).float()

    dy, dx = y - cy, x - cx
    dist = torch.sqrt(dy ** 2 + dx ** 2)
    arm = radius * 0.3
    shapes = [
        wave(y).expand(n, size, size),
        wave(x).expand(n, size, size),
        wave((x + y) / math.sqrt(2)),
        wave((x - y) / math.sqrt(2)),
        wave(x) * wave(y) + (1 - wave(x)) * (1 - wave(y)),
        (dist < radius).float(),
        wave(dist),
        (torch.sin(spokes * torch.atan2(dy, dx) + phase) > 0).float(),
        ((dy.abs() < arm) | (dx.abs() < arm)).float(),
        (wave(x) * wave(y) * (torch.sin(2 * math.pi * x / period + phase).abs() > 0.7).float()
         * (torch.sin(2 * math.pi * y / period + phase).abs() > 0.7).float()),
    ]
    out = torch.empty(n, size, size)
    for label, shape in enumerate(shapes):
        chosen = labels == label
        out[chosen] = shape.expand(n, size, size)[chosen]
    return out


def make_synthetic(n: int, size: int, seed: int, num_classes: int = 10) -> Tuple[torch.Tensor, torch.Tensor]:
    """n images (uint8, [n, 3, size, size]) and their labels, the same for the same (n, size, seed)."""
    if not 2 <= num_classes <= len(CLASSES):
        raise ValueError(f"the synthetic set has 2 to {len(CLASSES)} classes, not {num_classes}")
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % num_classes
    labels = labels[torch.randperm(n, generator=gen)]
    mask = _masks(labels, size, gen).unsqueeze(1)
    # Foreground and background colours drawn independently: colour carries no label information.
    fg = torch.rand(n, 3, 1, 1, generator=gen)
    bg = torch.rand(n, 3, 1, 1, generator=gen)
    # Keep the two apart so the structure is visible: a too-similar pair gets a shifted foreground.
    too_close = (fg - bg).abs().mean(1, keepdim=True) < 0.3
    fg = torch.where(too_close, (bg + 0.5) % 1.0, fg)
    image = mask * fg + (1 - mask) * bg
    image = image + 0.08 * torch.randn(image.shape, generator=gen)
    return (image.clamp(0, 1) * 255).round().to(torch.uint8), labels


class SyntheticDataset(Dataset):
    """Images generated once, in memory, at construction; normalised on the way out.

    `transform`, when given, receives the uint8 image and does the normalising itself (augmentation).
    """

    def __init__(self, n: int, size: int, seed: int, num_classes: int, mean: Sequence[float],
                 std: Sequence[float], transform: Optional[Callable] = None) -> None:
        self.images, self.targets = make_synthetic(n, size, seed, num_classes)
        self.transform = transform
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
        self.classes = list(CLASSES[:num_classes])

    def __len__(self) -> int:
        return self.targets.shape[0]

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, int]:
        if self.transform is not None:
            return self.transform(self.images[index]), int(self.targets[index])
        image = self.images[index].float().div_(255)
        return (image - self.mean) / self.std, int(self.targets[index])
