#!/usr/bin/env python3
"""Compare each auto-augment operation of the DALI loader with torchvision's on the same image.

usage: python scripts/compare_auto_augment.py [ta_wide|randaugment|autoaugment] [--side 64] [--interpolation bilinear]
For every operation of the policy's torchvision augmentation space and a few magnitude bins, applies the
DALI augmentation that resnext/data/dali_augment.py builds (CPU-only DALI) and torchvision's own operation
(on a PIL image, as the torch loader does) to one generated image, and prints the mean and largest absolute
difference in grey levels (0-255) and the share of pixels that differ by more than 2. A signed operation
is compared with the closer of +magnitude and -magnitude (the sign is a fair coin in both libraries, and
the shear directions of DALI and torchvision are opposite).
"""
from __future__ import annotations

import argparse
import inspect
from typing import List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image
from torchvision.transforms import v2

from resnext.data import dali_augment
from resnext.data.jpeg_tree import _image

SPACES = {"ta_wide": (v2.TrivialAugmentWide, dali_augment.MAGNITUDE_BINS),
          "randaugment": (v2.RandAugment, dali_augment.MAGNITUDE_BINS),
          "autoaugment": (v2.AutoAugment, dali_augment.AUTOAUGMENT_BINS)}


def dali_output(augmentation, image: np.ndarray, magnitude_bin: int, bins: int, interpolation: str) -> np.ndarray:
    """One sample through one DALI augmentation at a fixed bin and a positive sign."""
    from nvidia.dali import fn, pipeline_def, types
    from nvidia.dali.auto_aug.core import signed_bin

    @pipeline_def(batch_size=1, num_threads=1, device_id=None, seed=0)
    def pipeline():
        data = fn.external_source(source=lambda: [image], batch=True, layout="HWC")
        options = {"fill_value": dali_augment.FILL,
                   "interp_type": dali_augment.warp_interpolation(types, interpolation)}
        accepted = inspect.signature(augmentation.op).parameters
        options = {key: value for key, value in options.items() if key in accepted}
        positive = fn.random.uniform(values=[0], dtype=types.INT32)
        bin_ = signed_bin(magnitude_bin, random_sign=positive) if augmentation.randomly_negate else magnitude_bin
        return augmentation(data, magnitude_bin=bin_, num_magnitude_bins=bins, **options)

    pipe = pipeline()
    pipe.build()
    return np.asarray(pipe.run()[0][0]).astype(int)


def compare(policy: str, side: int = 64, interpolation: str = "bilinear",
            names: Optional[Sequence[str]] = None) -> List[Tuple[str, int, float, np.ndarray]]:
    """[(operation, bin, magnitude, |DALI - torchvision| per pixel)] for the policy's operations (or `names`)."""
    cls, bins = SPACES[policy]
    space = cls._AUGMENTATION_SPACE
    reference = cls(interpolation=v2.InterpolationMode(interpolation))
    image = np.asarray(_image(np.random.default_rng(0), (side, side)))
    rows = []
    for name, augmentation in dali_augment.torchvision_suite(space, bins, side).items():
        if names is not None and name not in names:
            continue
        magnitudes, signed = space[name]
        for magnitude_bin in sorted({bins // 3, bins - 1}):
            table = magnitudes(bins, side, side)
            magnitude = 0.0 if table is None else float(table[magnitude_bin])
            ours = dali_output(augmentation, image, magnitude_bin, bins, interpolation)
            theirs = [np.asarray(reference._apply_image_or_video_transform(
                Image.fromarray(image), name, sign * magnitude, interpolation=reference.interpolation,
                fill=reference._fill)).astype(int) for sign in ((1, -1) if signed else (1,))]
            rows.append((name, magnitude_bin, magnitude, min((np.abs(ours - t) for t in theirs), key=np.mean)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("policy", nargs="?", default="ta_wide", choices=sorted(SPACES))
    parser.add_argument("--side", type=int, default=64)
    parser.add_argument("--interpolation", default="bilinear", choices=["bilinear", "nearest"])
    args = parser.parse_args()
    print(f"{args.policy}, {args.side} px, {args.interpolation}: operation, bin, magnitude, "
          "mean |difference|, max, share > 2 levels")
    for name, magnitude_bin, magnitude, diff in compare(args.policy, args.side, args.interpolation):
        print(f"{name:12s} {magnitude_bin:3d} {magnitude:8.3f} {diff.mean():6.2f} {diff.max():4d} "
              f"{100 * (diff > 2).mean():5.1f}%")


if __name__ == "__main__":
    main()
