"""The recipe regularisers inside a DALI training graph: auto-augment policies and random erasing.

Why here: the torch loader has them as torchvision transforms (data/transforms.py); a DALI pipeline
needs graph pieces with the same semantics, so `dataset.auto_augment` and `dataset.random_erase` work
with either loader. data/dali.py applies `auto_augmenter`'s function to the uint8 HWC images after the
base augmentation's resize and flip (before crop_mirror_normalize) and `random_erase` to the normalised
output: torchvision's order. Every draw comes from DALI random operators seeded by the pipeline seed,
which dali.py derives from (seed, epoch, rank): an epoch-boundary resume repeats them.

Auto-augment runs DALI's own `nvidia.dali.auto_aug` (apply_trivial_augment, apply_rand_augment,
apply_auto_augment; they need `pipeline_def(enable_conditionals=True)`) with torchvision's parameters
rather than DALI's defaults: the operation lists and per-bin magnitudes are read from torchvision's own
tables (`_AUGMENTATION_SPACE` of v2.TrivialAugmentWide / RandAugment, 31 bins; AutoAugment, 10), so
TA-wide translates by up to 32 px and RandAugment by up to 150/331 of the side, enhance ranges start at
0 (DALI's TA-wide suite: 0.01), translations are whole pixels (torchvision's int()), solarize thresholds
are 255 * magnitude (DALI's reach 256), warps fill with 0 (DALI's default 128) and interpolate as
dataset.interpolation, and AutoAugment runs torchvision's ImageNet policy (DALI's `image_net` policy is
a different table, the AutoAugment paper's as TensorFlow ships it, with 11 bins). equalize and sharpness
call fn.equalize / fn.filter, as DALI's own suite does through deprecated aliases.

Remaining differences from torchvision (which runs these operations on PIL images in the torch loader),
measured per operation with scripts/compare_auto_augment.py (64 px and 224 px generated images):
- translate, posterize, solarize, autocontrast, invert, identity: identical.
- brightness, color, contrast: rounding, at most 1-2 grey levels.
- shear, rotate: the same warp up to resampling at the borders of the uncovered area (0.4-2.5% of the
  pixels differ by more than 2 levels); DALI's shear direction is torchvision's negated, and the sign is a
  fair coin in both. dataset.interpolation=bicubic: these warps interpolate bilinearly (DALI's warps have
  nearest and linear only; the resizes stay bicubic, and the log says so).
- sharpness: the 1-px image border is filtered too (PIL copies it): up to 4% of the pixels at 64 px.
- equalize: OpenCV's histogram formula, not PIL's: 1.4 grey levels on average at 224 px, 5.7 at 64 px
  (more on small images with narrow histograms).
Random erasing draws its box as torchvision's RandomErasing (area fraction U(0.02, 0.33), aspect ratio
log-uniform in (0.3, 3.3), the first of 10 attempts that fits, none if none fits, value 0 on the
normalised image); the 10 attempts are drawn up front, which changes the draws, not their law.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Optional

import numpy as np

# torchvision's AutoAugment looks its magnitudes up in 10 bins (AutoAugment.forward hard-codes it);
# TrivialAugmentWide and RandAugment default to 31.
AUTOAUGMENT_BINS = 10
MAGNITUDE_BINS = 31
FILL = 0  # what a warp uncovers: torchvision's fill=None is black
ERASE_SCALE = (0.02, 0.33)  # torchvision RandomErasing's defaults
ERASE_RATIO = (0.3, 3.3)
ERASE_ATTEMPTS = 10


def _whole_pixels_x(magnitude: float) -> np.ndarray:
    # torchvision translates by int(magnitude) pixels: truncated towards zero.
    return np.array([np.trunc(magnitude), 0.0], dtype=np.float32)


def _whole_pixels_y(magnitude: float) -> np.ndarray:
    return np.array([0.0, np.trunc(magnitude)], dtype=np.float32)


def _solarize_threshold(magnitude: float) -> np.ndarray:
    # torchvision's magnitudes are fractions of the uint8 maximum; DALI's solarize takes the threshold.
    # Pixels are integers, so `pixel < t` is `pixel < ceil(t)`: computed here in float64 as torchvision's
    # Python float does (255 * float32(1/3) is 85.0000025 there, but 85.0 in DALI's float32 arithmetic).
    return np.array(math.ceil(255.0 * float(magnitude)), dtype=np.float32)


def _current_filters() -> Dict[str, Any]:
    """equalize and sharpness on fn.equalize / fn.filter: DALI's own suite still calls their deprecated
    fn.experimental aliases, which print a DeprecationWarning per pipeline that no filter silences."""
    from nvidia.dali import fn
    from nvidia.dali.auto_aug import augmentations as a
    from nvidia.dali.auto_aug.core import augmentation

    def equalize(data: Any, _: Any) -> Any:
        return fn.equalize(data)

    def sharpness(data: Any, kernel: Any) -> Any:
        return fn.filter(data, kernel)

    return {"Equalize": augmentation(equalize),
            "Sharpness": augmentation(sharpness, mag_range=(0, 0.9), randomly_negate=True,
                                      mag_to_param=a.sharpness_kernel, param_device="auto")}


def _dali_operations() -> Dict[str, Any]:
    """torchvision's operation names -> DALI's augmentations with torchvision's magnitude-to-parameter rules."""
    from nvidia.dali.auto_aug import augmentations as a

    return {
        "Identity": a.identity, "ShearX": a.shear_x, "ShearY": a.shear_y,
        "TranslateX": a.translate_x_no_shape.augmentation(mag_to_param=_whole_pixels_x),
        "TranslateY": a.translate_y_no_shape.augmentation(mag_to_param=_whole_pixels_y),
        "Rotate": a.rotate, "Brightness": a.brightness, "Color": a.color, "Contrast": a.contrast,
        "Posterize": a.posterize, "Invert": a.invert, "AutoContrast": a.auto_contrast,
        "Solarize": a.solarize.augmentation(mag_to_param=_solarize_threshold),
        **_current_filters(),
    }


def torchvision_suite(space: Dict[str, Any], bins: int, side: int) -> Dict[str, Any]:
    """DALI augmentations for a torchvision augmentation space, magnitudes for images of side x side."""
    operations = _dali_operations()
    suite = {}
    for name, (magnitudes_for, signed) in space.items():
        magnitudes = magnitudes_for(bins, side, side)
        suite[name] = operations[name].augmentation(
            mag_range=None if magnitudes is None else magnitudes.numpy(), randomly_negate=signed)
    return suite


def _imagenet_policy(side: int) -> Any:
    """torchvision's AutoAugment ImageNet policy as a DALI Policy."""
    from nvidia.dali.auto_aug.core import Policy
    from torchvision.transforms import v2

    operations = torchvision_suite(v2.AutoAugment._AUGMENTATION_SPACE, AUTOAUGMENT_BINS, side)
    sub_policies = v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET)._policies
    # A step of probability 0 never runs (torchvision's policy has one); DALI warns about it, so it goes.
    return Policy("torchvision ImageNet", AUTOAUGMENT_BINS,
                  [[(operations[name], p, magnitude) for name, p, magnitude in sub if p > 0] for sub in sub_policies])


def warp_interpolation(types: Any, name: str) -> Any:
    """DALI's interpolation for the auto-augment warps: nearest or linear (its warps have no cubic)."""
    return types.INTERP_NN if name == "nearest" else types.INTERP_LINEAR


def auto_augmenter(dcfg) -> Optional[Callable[[Any], Any]]:
    """dataset.auto_augment as a function of a batch of uint8 HWC images of image_size x image_size, or None.

    Built before the pipeline is defined (torchvision's tables, DALI's augmentation objects), so that
    AutoGraph, which rewrites what the pipeline calls, sees only the application; the pipeline needs
    enable_conditionals=True for it (DALI's operation choice is an `if` on data). Defining such a
    pipeline costs ~1-2 s of CPU (DALI's AutoGraph rewriting its auto_aug code), once per epoch here.
    """
    if dcfg.auto_augment is None:
        return None
    from nvidia.dali import types
    from nvidia.dali.auto_aug.auto_augment import apply_auto_augment
    from nvidia.dali.auto_aug.rand_augment import apply_rand_augment
    from nvidia.dali.auto_aug.trivial_augment import apply_trivial_augment
    from torchvision.transforms import v2

    side = dcfg.image_size
    options = {"fill_value": FILL, "interp_type": warp_interpolation(types, dcfg.interpolation)}
    if dcfg.auto_augment == "ta_wide":
        suite = list(torchvision_suite(v2.TrivialAugmentWide._AUGMENTATION_SPACE, MAGNITUDE_BINS, side).values())
        return lambda images: apply_trivial_augment(suite, images, num_magnitude_bins=MAGNITUDE_BINS, **options)
    if dcfg.auto_augment == "randaugment":
        suite = list(torchvision_suite(v2.RandAugment._AUGMENTATION_SPACE, MAGNITUDE_BINS, side).values())
        ops, magnitude = dcfg.auto_augment_num_ops, dcfg.auto_augment_magnitude
        return lambda images: apply_rand_augment(suite, images, ops, magnitude, num_magnitude_bins=MAGNITUDE_BINS,
                                                 **options)
    policy = _imagenet_policy(side)
    return lambda images: apply_auto_augment(policy, images, **options)


def _first_fitting(values: Any, fits: Any) -> Any:
    """values[k] for the first attempt k that fits, 0 when none does (per sample, in DALI arithmetic)."""
    chosen = values[ERASE_ATTEMPTS - 1] * fits[ERASE_ATTEMPTS - 1]
    for k in reversed(range(ERASE_ATTEMPTS - 1)):
        chosen = fits[k] * values[k] + (1.0 - fits[k]) * chosen
    return chosen


def random_erase(images: Any, probability: float, side: int) -> Any:
    """torchvision's RandomErasing(p=probability, value=0) on normalised side x side images (CHW or HWC)."""
    if probability <= 0:
        return images
    import nvidia.dali.math as dmath
    from nvidia.dali import fn, types

    area = float(side * side)
    scale = fn.random.uniform(range=list(ERASE_SCALE), shape=[ERASE_ATTEMPTS])
    ratio = dmath.exp(fn.random.uniform(range=[math.log(r) for r in ERASE_RATIO], shape=[ERASE_ATTEMPTS]))
    heights = dmath.floor(dmath.sqrt(area * scale * ratio) + 0.5)  # round(), as torchvision's int(round())
    widths = dmath.floor(dmath.sqrt(area * scale / ratio) + 0.5)
    fits = fn.cast((heights < side) & (widths < side), dtype=types.FLOAT)
    # No erase: an empty box, which fn.erase leaves alone (no conditionals needed).
    erase = fn.cast(fn.random.coin_flip(probability=probability), dtype=types.FLOAT)
    height, width = _first_fitting(heights, fits) * erase, _first_fitting(widths, fits) * erase
    # torch.randint(0, side - h + 1): a uniform in [0, 1) scaled; min() guards against a draw of exactly 1.
    top = dmath.min(dmath.floor(fn.random.uniform(range=[0.0, 1.0]) * (side - height + 1)), side - height)
    left = dmath.min(dmath.floor(fn.random.uniform(range=[0.0, 1.0]) * (side - width + 1)), side - width)
    return fn.erase(images, anchor=fn.stack(top, left), shape=fn.stack(height, width), axis_names="HW",
                    fill_value=0.0)


def describe(dcfg) -> List[str]:
    """The regularisers a DALI training pipeline runs, for the log (with the one interpolation difference)."""
    notes = []
    if dcfg.auto_augment is not None:
        warp = "bilinear warps: DALI has no bicubic warp" if dcfg.interpolation == "bicubic" else dcfg.interpolation
        notes.append(f"auto_augment={dcfg.auto_augment} ({warp})")
    notes += [f"{key}={dcfg[key]}" for key in ("random_erase", "mixup_alpha", "cutmix_alpha") if dcfg[key] > 0]
    if dcfg.ra_reps > 1:
        notes.append(f"ra_reps={dcfg.ra_reps}")
    return notes
