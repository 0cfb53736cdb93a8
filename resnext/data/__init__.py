"""Datasets, transform presets and loaders. `check_dataset` runs before any process starts."""
from .checks import check_dataset
from .dali import resolve_loader
from .loaders import Loaders, ShardSampler, build_loaders

__all__ = ["Loaders", "ShardSampler", "build_loaders", "check_dataset", "resolve_loader"]
