"""make_jpeg_tree: a small ImageFolder tree of generated JPEGs (train/<class>/*.jpg, val/<class>/*.jpg).

Why: the benchmark measures loaders on JPEGs of ImageNet-like sizes and quality without a download,
and the tests need a real folder for both loaders. The images are smooth colour fields with mild
noise, so they compress and decode like photographs rather than like white noise (which would make
files several times larger than ImageNet's ~110 kB and decoding unrealistically slow).
"""
from __future__ import annotations

from pathlib import Path
from typing import Tuple

import numpy as np
from PIL import Image

# ImageNet's typical JPEG: about 500 x 375 px, quality ~90 (the "ImageNet-like sizes").
IMAGENET_LIKE = ((400, 300), (500, 375), (375, 500), (640, 480))


def _image(rng: np.random.Generator, size: Tuple[int, int]) -> Image.Image:
    width, height = size
    coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC), dtype=np.float32)
    noisy = smooth + rng.normal(0.0, 10.0, smooth.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def make_jpeg_tree(root: Path, classes: int, train_per_class: int, val_per_class: int,
                   sizes: Tuple[Tuple[int, int], ...] = IMAGENET_LIKE, quality: int = 90, seed: int = 0) -> Path:
    """Write the tree under root (made if missing) and return root. Sizes cycle through `sizes` (w, h)."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    for split, per_class in (("train", train_per_class), ("val", val_per_class)):
        for label in range(classes):
            folder = root / split / f"class_{label:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                size = sizes[(label * per_class + i) % len(sizes)]
                _image(rng, size).save(folder / f"{i:05d}.jpg", quality=quality)
    return root
