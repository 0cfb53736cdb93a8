#!/usr/bin/env python3
"""Write a learnable JPEG folder: scikit-learn's bundled 8x8 digits drawn large on ImageNet-size photos.

Why: comparing the two loaders' validation Acc@1 needs weights that have learned something, and there
are no ImageNet weights here and no download. scikit-learn ships 1,797 handwritten digits (10 classes)
inside its wheel; drawn at a few hundred pixels, with varied aspect ratios, colours and mild noise,
and saved as JPEG quality 90, they decode and resize like real photographs while a ResNeXt learns
them in minutes. scikit-learn is not a dependency of resnext: `pip install scikit-learn`.

usage: python scripts/digits_folder.py DIR    (DIR/train/digit_<k>/*.jpg and DIR/val/digit_<k>/*.jpg)
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Tuple

import numpy as np
from PIL import Image

# Canvas sizes (w, h) of ImageNet-like shapes: landscape, portrait and square, cycled over the images.
CANVASES = ((500, 375), (375, 500), (400, 300), (320, 480), (448, 448), (640, 480), (300, 400))
GLYPH_FRACTION = 0.7  # the digit's side as a fraction of the canvas's shorter side
OFFSET_FRACTION = 0.05  # random shift of the digit's centre: it stays inside the validation centre crop
VAL_FRACTION = 0.2  # the last fifth of each class is validation


def load_digits_or_exit():
    """sklearn's bundled digits (no download), or one line saying how to get scikit-learn."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        sys.exit("scikit-learn is needed for its bundled digits (no download): pip install scikit-learn")
    digits = load_digits()
    return digits.images, digits.target


def draw(glyph: np.ndarray, canvas: Tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """One 8x8 digit (values 0-16) as ink on a coloured, noisy canvas of `canvas` (w, h) pixels."""
    width, height = canvas
    side = int(GLYPH_FRACTION * min(width, height))
    ink = Image.fromarray((glyph * (255 / 16)).astype(np.uint8)).resize((side, side), Image.BICUBIC)
    alpha = np.zeros((height, width), np.float32)
    left = (width - side) // 2 + int(rng.uniform(-OFFSET_FRACTION, OFFSET_FRACTION) * width)
    top = (height - side) // 2 + int(rng.uniform(-OFFSET_FRACTION, OFFSET_FRACTION) * height)
    alpha[top:top + side, left:left + side] = np.asarray(ink, np.float32) / 255
    background, colour = rng.uniform(120, 255, 3), rng.uniform(0, 90, 3)
    pixels = background + alpha[..., None] * (colour - background) + rng.normal(0, 6, (height, width, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def make_digits_tree(root: Path, quality: int = 90, seed: int = 0) -> Path:
    """Write root/{train,val}/digit_<k>/*.jpg (about 1,440 train and 360 val images) and return root."""
    images, labels = load_digits_or_exit()
    rng = np.random.default_rng(seed)
    root = Path(root)
    for label in range(10):
        members = np.flatnonzero(labels == label)
        first_val = len(members) - round(VAL_FRACTION * len(members))
        for i, index in enumerate(members):
            folder = root / ("train" if i < first_val else "val") / f"digit_{label}"
            folder.mkdir(parents=True, exist_ok=True)
            canvas = CANVASES[index % len(CANVASES)]
            draw(images[index], canvas, rng).save(folder / f"{index:04d}.jpg", quality=quality)
    return root


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__.splitlines()[-1])
    print(make_digits_tree(Path(sys.argv[1])))
