"""Transform presets, one place for every dataset's train and eval pipeline (torchvision.transforms.v2).

The training pipeline is built from the dataset config: a base augmentation (`augment`: imagenet |
light, each with a flip per `hflip` | none, no augmentation at all), then the optional regularisers
(auto_augment, random_erase), in the order of torchvision's classification references. Validation
resizes and centre-crops to `val_crop`.

Each pipeline takes a PIL image or a uint8 CHW tensor and returns a normalised float32 CHW tensor.
Geometric steps run before conversion: Pillow's resize is the fastest CPU path and the references do
the same. Every random draw comes from torch's global RNG, so a per-sample seeding wrapper and the
DataLoader's worker seeding both control it. `ToPureTensor` drops the tv_tensors.Image subclass so
collate and pin_memory see plain tensors.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch
from torchvision.transforms import v2

from ..config.eval_size import val_crop, val_resize

# CIFAR images are stored at this side; the standard recipe pads by 4 and crops back to it.
CIFAR_SIDE = 32
# `light` pads by 1/8 of the side before the random crop: 4 px at CIFAR's 32. The DALI loader uses the same rule.
LIGHT_PADDING_FRACTION = 8

_INTERPOLATION = {
    "bilinear": v2.InterpolationMode.BILINEAR,
    "bicubic": v2.InterpolationMode.BICUBIC,
    "nearest": v2.InterpolationMode.NEAREST,
}


def _to_normalised_tensor(mean: Sequence[float], std: Sequence[float]) -> List[v2.Transform]:
    return [
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(mean), std=list(std)),
    ]


def _resize(side: int, native_side: Optional[int], interpolation: v2.InterpolationMode) -> List[v2.Transform]:
    # A dataset stored at one side (CIFAR, synthetic) is left alone at that side and resized otherwise.
    if side == native_side:
        return []
    return [v2.Resize(side, interpolation=interpolation, antialias=True)]


def light_padding(side: int) -> int:
    """The zero padding of `augment=light` around an image of `side` px (both loaders)."""
    return side // LIGHT_PADDING_FRACTION


def resize_for_crop(dcfg, crop: int) -> int:
    """The shorter side to resize a folder image to before a centre crop of `crop`: the validation
    resize-to-crop ratio (resnext/config/eval_size.py) kept for any crop side (both loaders)."""
    return round(crop * val_resize(dcfg) / val_crop(dcfg))


def _eval_geometry(dcfg, crop: int, native_side: Optional[int]) -> List[v2.Transform]:
    """Resize and centre-crop to `crop`: folders resize by val_resize/val_crop first, fixed-size sets only resize."""
    interpolation = _INTERPOLATION[dcfg.interpolation]
    if native_side is not None:
        return _resize(crop, native_side, interpolation)
    return [v2.Resize(resize_for_crop(dcfg, crop), interpolation=interpolation, antialias=True), v2.CenterCrop(crop)]


def _base_augment(dcfg, native_side: Optional[int]) -> List[v2.Transform]:
    side = dcfg.image_size
    interpolation = _INTERPOLATION[dcfg.interpolation]
    flip = [v2.RandomHorizontalFlip()] if dcfg.hflip else []
    if dcfg.augment == "imagenet":
        return [v2.RandomResizedCrop(side, scale=tuple(dcfg.crop_scale), ratio=tuple(dcfg.crop_ratio),
                                     interpolation=interpolation, antialias=True), *flip]
    if dcfg.augment == "light":
        if native_side:
            # CIFAR's recipe at the stored side, then the resize: today's cifar10 pipeline exactly.
            return [v2.RandomCrop(native_side, padding=light_padding(native_side)), *flip,
                    *_resize(side, native_side, interpolation)]
        # Folders: brought to the training side first, then padded and cropped there.
        return [*_eval_geometry(dcfg, side, None), v2.RandomCrop(side, padding=light_padding(side)),
                *flip]
    # none: the validation pipeline at the training side, no flip either (no augmentation at all).
    return _eval_geometry(dcfg, side, native_side)


def _auto_augment(dcfg) -> List[v2.Transform]:
    interpolation = _INTERPOLATION[dcfg.interpolation]
    if dcfg.auto_augment is None:
        return []
    if dcfg.auto_augment == "ta_wide":
        return [v2.TrivialAugmentWide(interpolation=interpolation)]
    if dcfg.auto_augment == "randaugment":
        return [v2.RandAugment(num_ops=dcfg.auto_augment_num_ops, magnitude=dcfg.auto_augment_magnitude,
                               interpolation=interpolation)]
    return [v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET, interpolation=interpolation)]


def train_transform(dcfg, native_side: Optional[int] = None) -> v2.Compose:
    """Base augmentation, flip, auto-augment, tensor + normalise, random erasing (torchvision's order).

    native_side: the side every image of the dataset is stored at (CIFAR, synthetic), None for folders.
    """
    erase = [v2.RandomErasing(p=dcfg.random_erase)] if dcfg.random_erase > 0 else []
    return v2.Compose([*_base_augment(dcfg, native_side), *_auto_augment(dcfg),
                       *_to_normalised_tensor(dcfg.mean, dcfg.std), *erase, v2.ToPureTensor()])


def eval_transform(dcfg, native_side: Optional[int] = None) -> v2.Compose:
    return v2.Compose([*_eval_geometry(dcfg, val_crop(dcfg), native_side),
                       *_to_normalised_tensor(dcfg.mean, dcfg.std), v2.ToPureTensor()])


def needs_transform(dcfg) -> bool:
    """Whether a set stored ready-made at image_size (synthetic) needs a training pipeline at all."""
    return dcfg.augment != "none" or dcfg.auto_augment is not None or dcfg.random_erase > 0
