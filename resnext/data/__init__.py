"""Datasets, transform presets and loaders. `check_dataset` runs before any process starts."""
from .loaders import Loaders, build_loaders, check_dataset

__all__ = ["Loaders", "build_loaders", "check_dataset"]
