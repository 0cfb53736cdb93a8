"""Refusals for the recipe keys (augmentation, mixing, EMA, optimisers, pretrained weights by name).

`check_recipe` runs in train.main right after config.check_config, before any process starts: a bad
value costs one clear line naming the key, not a job that dies in its first batch.
"""
from __future__ import annotations

from typing import Any

from ..config.errors import ConfigError
from .optim import lamb_class
from ..models.pretrained import is_torchvision, resolve

AUTO_AUGMENT = ("ta_wide", "randaugment", "autoaugment")
# torchvision's RandAugment draws magnitudes from 31 bins: 0..30.
RANDAUGMENT_MAX_MAGNITUDE = 30


def _pair(key: str, values: Any, low_open: float, high: float) -> None:
    """A [min, max] range with low_open < min <= max <= high."""
    if len(values) != 2 or not low_open < values[0] <= values[1] <= high:
        raise ConfigError(f"{key}={list(values)} must be [min, max] with {low_open} < min <= max <= {high}")


def _check_augmentation(d: Any) -> None:
    if d.auto_augment is not None and d.auto_augment not in AUTO_AUGMENT:
        raise ConfigError(f"dataset.auto_augment={d.auto_augment!r} is not one of null, {', '.join(AUTO_AUGMENT)}")
    if not 0 <= d.auto_augment_magnitude <= RANDAUGMENT_MAX_MAGNITUDE:
        raise ConfigError(f"dataset.auto_augment_magnitude={d.auto_augment_magnitude} must be 0 to "
                          f"{RANDAUGMENT_MAX_MAGNITUDE} (torchvision's RandAugment bins)")
    if d.auto_augment_num_ops < 1:
        raise ConfigError(f"dataset.auto_augment_num_ops={d.auto_augment_num_ops} must be at least 1")
    if not 0 <= d.random_erase <= 1:
        raise ConfigError(f"dataset.random_erase={d.random_erase} is a probability: 0 to 1")
    for key in ("mixup_alpha", "cutmix_alpha"):
        if d[key] < 0:
            raise ConfigError(f"dataset.{key}={d[key]} must be 0 (off) or positive")
    if d.ra_reps < 1:
        raise ConfigError(f"dataset.ra_reps={d.ra_reps} must be at least 1 (1: no repeated augmentation)")
    _pair("dataset.crop_scale", d.crop_scale, 0.0, 1.0)
    _pair("dataset.crop_ratio", d.crop_ratio, 0.0, float("inf"))
    if d.val_crop is not None and d.val_crop < 1:
        raise ConfigError(f"dataset.val_crop={d.val_crop} must be at least 1 (null: dataset.image_size)")


def _check_model_and_optim(cfg: Any) -> None:
    m, o = cfg.model, cfg.optim
    if m.ema and not 0 < m.ema_decay < 1:
        raise ConfigError(f"model.ema_decay={m.ema_decay} must be between 0 and 1 (torchvision: 0.99998)")
    if m.ema and m.ema_steps < 1:
        raise ConfigError(f"model.ema_steps={m.ema_steps} must be at least 1")
    if not 0 <= o.label_smoothing < 1:
        raise ConfigError(f"optim.label_smoothing={o.label_smoothing} must be at least 0 and below 1")
    if o.name in ("adamw", "lamb") and (len(o.betas) != 2 or not all(0 <= b < 1 for b in o.betas)):
        raise ConfigError(f"optim.betas={list(o.betas)} must be two values in [0, 1)")
    if o.name == "lamb":
        lamb_class()  # refuses with the extra to install when timm is absent
    if is_torchvision(m.weights):
        resolve(m.arch, m.weights)  # the name only; train.main fetches the file before launching


def check_recipe(cfg: Any) -> None:
    """Raises ConfigError naming the key and the fix for a recipe value that cannot work."""
    _check_augmentation(cfg.dataset)
    _check_model_and_optim(cfg)
