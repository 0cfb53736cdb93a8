"""Transform presets, one place for every dataset's train and eval pipeline (torchvision.transforms.v2).

Each preset takes a PIL image and returns a normalised float32 CHW tensor. Geometric steps run on the
PIL image before conversion: Pillow's resize is the fastest CPU path and the references do the same.
`ToPureTensor` drops the tv_tensors.Image subclass so collate and pin_memory see plain tensors.
"""
from __future__ import annotations

from typing import List, Sequence

import torch
from torchvision.transforms import v2

# CIFAR images are stored at this side; the standard recipe pads by 4 and crops back to it.
CIFAR_SIDE = 32
CIFAR_PADDING = 4


def _to_normalised_tensor(mean: Sequence[float], std: Sequence[float]) -> List[v2.Transform]:
    return [
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(mean), std=list(std)),
        v2.ToPureTensor(),
    ]


def _cifar_resize(image_size: int) -> List[v2.Transform]:
    # image_size other than 32 upsamples (e.g. CIFAR on the ImageNet stem); 32 leaves the images alone.
    return [] if image_size == CIFAR_SIDE else [v2.Resize(image_size)]


def cifar_train(image_size: int, mean: Sequence[float], std: Sequence[float]) -> v2.Compose:
    return v2.Compose([
        v2.RandomCrop(CIFAR_SIDE, padding=CIFAR_PADDING),
        v2.RandomHorizontalFlip(),
        *_cifar_resize(image_size),
        *_to_normalised_tensor(mean, std),
    ])


def cifar_eval(image_size: int, mean: Sequence[float], std: Sequence[float]) -> v2.Compose:
    return v2.Compose([*_cifar_resize(image_size), *_to_normalised_tensor(mean, std)])


def imagenet_train(image_size: int, mean: Sequence[float], std: Sequence[float]) -> v2.Compose:
    return v2.Compose([
        v2.RandomResizedCrop(image_size, antialias=True),
        v2.RandomHorizontalFlip(),
        *_to_normalised_tensor(mean, std),
    ])


def imagenet_eval(image_size: int, resize: int, mean: Sequence[float], std: Sequence[float]) -> v2.Compose:
    return v2.Compose([
        v2.Resize(resize, antialias=True),  # shorter side to `resize`, aspect kept
        v2.CenterCrop(image_size),
        *_to_normalised_tensor(mean, std),
    ])
