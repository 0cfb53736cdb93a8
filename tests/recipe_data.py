"""Tiny learnable image folders for recipe runs: one colour per class under pixel noise.

The colour survives every crop, flip and mixing the recipes apply, so a few steps learn it; the noise
keeps BatchNorm's per-channel variance away from zero (solid images would make it divide by ~0).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

COLOURS = {"ant": (200, 40, 40), "bee": (40, 200, 40), "cat": (40, 40, 200)}


def write_noisy_colour_tree(root: Path, per_class: int = 8, seed: int = 0) -> Path:
    """root/{train,val}/<class>/<i>.png: 24x24 images of the class colour plus uniform noise of +-60."""
    rng = np.random.default_rng(seed)
    for split in ("train", "val"):
        for name, colour in COLOURS.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                noise = rng.integers(-60, 61, (24, 24, 3))
                pixels = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root
