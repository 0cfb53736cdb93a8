"""The validation resize and centre crop of a dataset config: one rule for every reader of them.

Four places need the same two sides: the torch transforms and the DALI pipeline (data), the model card that
export and predict apply (models), and the benchmark command. They sit in different wings, so the rule lives
in the lowest one.

`dataset.val_resize: null` (the imagenet and folder default) derives the resize from the crop with ImageNet's
256/224, rounded down: 224 -> 256 exactly, 176 -> 201, 32 -> 36. A fixed 256 would make a 32 px folder
validate on the centre eighth of each image. torchvision's presets take both sides as given (its reference
scripts pass --val-resize-size 256); the derived rule is timm's `floor(crop / crop_pct)` with its default
crop_pct 0.875, which is 224 / 256.
"""
from __future__ import annotations

IMAGENET_RESIZE, IMAGENET_CROP = 256, 224


def val_crop(dcfg) -> int:
    """The validation centre-crop side: dataset.val_crop, or the training side when unset."""
    return dcfg.val_crop or dcfg.image_size


def val_resize(dcfg) -> int:
    """The shorter side validation resizes to before the crop: dataset.val_resize, or derived from the crop."""
    if dcfg.get("val_resize") is not None:
        return dcfg.val_resize
    return val_crop(dcfg) * IMAGENET_RESIZE // IMAGENET_CROP
