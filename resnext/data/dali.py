"""NVIDIA DALI input pipelines for JPEG folders (dataset=imagenet|folder, dataset.loader=auto|dali).

Why: on a GPU the PIL DataLoader, not the model, sets the speed (see DESIGN.md "Speed, measured").
DALI decodes only the random crop, on the GPU (`mixed`: nvJPEG and the hardware decoder) when training
on CUDA and on CPU threads otherwise (device_id=None), so the same code runs on this CPU machine.

The sample order is ours, not DALI's shuffle buffer: each epoch takes the order of torch's
DistributedSampler(seed, epoch, rank, drop_last=True), the very order the torch loader uses, and hands
this rank's files in that order to DALI's file reader. Validation takes ShardSampler's shard (every
image once across ranks). Every pass builds a fresh pipeline seeded from (seed, epoch, rank, split), so an epoch's
crops, flips and regulariser draws are the same with or without a resume before it: resume is exact at
epoch boundaries. The recipe regularisers run here too: auto-augment and random erasing as graph pieces
(data/dali_augment.py), MixUp/CutMix on each delivered batch with the torch loader's own mixer seeded per
batch (data/mixing.py), repeated augmentation through the RASampler's order.
`DaliLoader` has __len__ and set_epoch like a DataLoader + sampler, so trainer and engine need no branch.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from ..config.errors import ConfigError
from ..config.eval_size import val_crop, val_resize
from ..runtime.devices import node_cores_per_rank
from . import dali_augment
from .checks import dataset_root
from .mixing import SeededMixing
from .robust import BadImageError  # one error for both loaders: train.main reports it in one line
from .transforms import light_padding, resize_for_crop

log = logging.getLogger("resnext")

DALI_DATASETS = ("imagenet", "folder")
PIP_LINE = ('pip install "resnext[dali]" (the nvidia-dali-cuda130 wheel, for a CUDA-13 torch; with a CUDA-12 '
            'torch: pip install nvidia-dali-cuda120)')
PREFETCH = 2  # batches DALI prepares ahead of the one being used
READER = "files"  # the file reader's name, by which the iterator knows the epoch's size

Samples = List[Tuple[str, int]]


def import_dali() -> Any:
    """nvidia.dali, or a ConfigError with the pip line."""
    try:
        import nvidia.dali as dali
        import nvidia.dali.plugin.pytorch  # noqa: F401  (the iterator; absent in a broken install)
    except ImportError as err:
        raise ConfigError(f"dataset.loader=dali needs NVIDIA DALI, which does not import here ({err}): "
                          f"{PIP_LINE}; or set dataset.loader=torch") from None
    return dali


def _dali_version() -> Optional[str]:
    try:
        return import_dali().__version__
    except ConfigError:
        return None


def _check_dali_options(dcfg) -> None:
    for key, upper in (("crop_scale", 1.0), ("crop_ratio", None)):
        low_high = list(getattr(dcfg, key))
        if len(low_high) != 2 or not 0 < low_high[0] <= low_high[1] or (upper and low_high[1] > upper):
            raise ConfigError(f"dataset.{key}={low_high} must be [low, high] with 0 < low <= high"
                              f"{' <= 1' if upper else ''}")
    if dcfg.get("bad_images", "error") != "error":
        raise ConfigError(f"dataset.bad_images={dcfg.bad_images} needs dataset.loader=torch: a DALI pipeline "
                          "stops at an undecodable file and cannot drop it (loader=dali names the file instead)")
    crop = val_crop(dcfg)
    if val_resize(dcfg) < crop:
        raise ConfigError(f"dataset.val_resize={dcfg.val_resize} must be at least the validation crop {crop} "
                          "(dataset.val_crop, or image_size when null)")


def resolve_loader(dcfg) -> Tuple[str, str]:
    """("torch" | "dali", why): refuses dataset.loader=dali where it cannot run, before any work starts."""
    if dcfg.loader == "torch":
        return "torch", "dataset.loader=torch"
    if dcfg.name not in DALI_DATASETS:
        if dcfg.loader == "dali":
            raise ConfigError(f"dataset.loader=dali reads JPEG folders (dataset=imagenet or dataset=folder); "
                              f"dataset={dcfg.name} has the torch loader only: set dataset.loader=torch or auto")
        return "torch", f"dataset.loader=auto: dataset={dcfg.name} has the torch loader only"
    if dcfg.loader == "dali":
        import_dali()
        _check_dali_options(dcfg)
        return "dali", "dataset.loader=dali"
    version = _dali_version()
    if version is None:
        return "torch", f"dataset.loader=auto: NVIDIA DALI does not import (for the fast path: {PIP_LINE})"
    if dcfg.get("bad_images", "error") != "error":
        return "torch", f"dataset.loader=auto: dataset.bad_images={dcfg.bad_images} needs the torch loader"
    _check_dali_options(dcfg)
    return "dali", f"dataset.loader=auto: NVIDIA DALI {version} imports"


@dataclass(frozen=True)
class PipelineSettings:
    """What every pipeline of one rank shares."""

    batch: int
    threads: int
    device_id: Optional[int]  # None: CPU-only DALI; else mixed decoding on this CUDA device
    channels_last: bool


def _interp(types: Any, name: str) -> Any:
    return {"bilinear": types.INTERP_LINEAR, "bicubic": types.INTERP_CUBIC, "nearest": types.INTERP_NN}[name]


def _train_images(fn: Any, types: Any, jpegs: Any, dcfg, decoder: str) -> Tuple[Any, bool]:
    """(images of image_size x image_size, whether to flip): the graph for dataset.augment."""
    side, interp = dcfg.image_size, _interp(types, dcfg.interpolation)
    if dcfg.augment == "imagenet":
        # RandomResizedCrop: only the crop is decoded.
        images = fn.decoders.image_random_crop(jpegs, device=decoder, output_type=types.RGB, num_attempts=10,
                                               random_area=list(dcfg.crop_scale),
                                               random_aspect_ratio=list(dcfg.crop_ratio))
        return fn.resize(images, resize_x=side, resize_y=side, interp_type=interp), dcfg.hflip
    images = fn.decoders.image(jpegs, device=decoder, output_type=types.RGB)
    # none and light start as the torch loader's: validation's resize-to-crop ratio, a centre crop of side.
    images = _resize_centre_crop(fn, types, jpegs, images, resize_for_crop(dcfg, side), side, interp)
    if dcfg.augment == "none":  # as validation, at the training side: no randomness at all
        return images, False
    # light: padded by 1/8 of the side with zeros, randomly cropped back (CIFAR style), as the torch loader.
    pad = light_padding(side)
    shift = fn.random.uniform(values=[float(v) for v in range(-pad, pad + 1)], shape=[2])
    images = fn.slice(images, shift, [float(side)] * 2, axis_names="HW", normalized_anchor=False,
                      normalized_shape=False, out_of_bounds_policy="pad", fill_values=0)
    return images, dcfg.hflip


def _half_even(value: Any) -> Any:
    """round(value / 2) with Python's (and so torchvision CenterCrop's) half-to-even rule, in DALI arithmetic."""
    half = value // 2
    return half + (value - 2 * half) * (half - 2 * (half // 2))


def _resize_centre_crop(fn: Any, types: Any, jpegs: Any, images: Any, resize: int, crop: int, interp: Any) -> Any:
    """torchvision's Resize(resize) + CenterCrop(crop) to the pixel: the sizes come from the JPEG headers.

    DALI's resize_shorter rounds the longer side and its centred crop rounds half up; torchvision
    truncates the longer side and rounds the crop offset half to even. One pixel of shift would add
    most of the difference between the two loaders' validation tensors, so the sizes are computed here.
    """
    import nvidia.dali.math as dmath

    shape = fn.peek_image_shape(jpegs, dtype=types.INT64)  # H, W, C of the encoded image, on the CPU
    height, width = shape[0], shape[1]
    shorter = dmath.min(height, width)
    new_h, new_w = resize * height // shorter, resize * width // shorter
    images = fn.resize(images, resize_x=fn.cast(new_w, dtype=types.FLOAT), resize_y=fn.cast(new_h, dtype=types.FLOAT),
                       interp_type=interp)
    anchor = fn.cast(fn.stack(_half_even(new_h - crop), _half_even(new_w - crop)), dtype=types.FLOAT)
    return fn.slice(images, anchor, [float(crop)] * 2, axis_names="HW", normalized_anchor=False,
                    normalized_shape=False)


def _val_images(fn: Any, types: Any, jpegs: Any, dcfg, decoder: str) -> Tuple[Any, bool]:
    images = fn.decoders.image(jpegs, device=decoder, output_type=types.RGB)
    interp = _interp(types, dcfg.interpolation)
    return _resize_centre_crop(fn, types, jpegs, images, val_resize(dcfg), val_crop(dcfg), interp), False


def _build_pipeline(files: Samples, dcfg, settings: PipelineSettings, train: bool, seed: int) -> Any:
    """files: this pass's (path, label) list in the order to read it; DALI's reader reads it ahead in threads."""
    dali = import_dali()
    from nvidia.dali import fn, types

    decoder = "cpu" if settings.device_id is None else "mixed"
    augmenter = dali_augment.auto_augmenter(dcfg) if train else None  # its operation choice needs conditionals

    @dali.pipeline_def(batch_size=settings.batch, num_threads=settings.threads, device_id=settings.device_id,
                       seed=seed, prefetch_queue_depth=PREFETCH, enable_conditionals=augmenter is not None)
    def pipeline() -> Tuple[Any, Any]:
        # No shuffling, no sharding here: the list is already this rank's shard in this epoch's order.
        # pad_last_batch: a partial last (validation) batch is padded, and the iterator drops the padding.
        jpegs, labels = fn.readers.file(files=[path for path, _ in files], labels=[label for _, label in files],
                                        random_shuffle=False, pad_last_batch=True, name=READER)
        images, flip = (_train_images if train else _val_images)(fn, types, jpegs, dcfg, decoder)
        mirror = fn.random.coin_flip(probability=0.5) if flip else 0
        if augmenter is not None:
            # torchvision's order: flip, then auto-augment on uint8 HWC (its shears are anchored at a corner,
            # so flipping afterwards would change their law); otherwise crop_mirror_normalize flips for free.
            images = augmenter(fn.flip(images, horizontal=mirror) if flip else images)
            mirror = 0
        # HWC output read as NCHW is already channels_last in memory: no extra copy for NHWC models.
        images = fn.crop_mirror_normalize(
            images, dtype=types.FLOAT, output_layout="HWC" if settings.channels_last else "CHW",
            mean=[255.0 * m for m in dcfg.mean], std=[255.0 * s for s in dcfg.std], mirror=mirror)
        if train:
            images = dali_augment.random_erase(images, dcfg.random_erase, dcfg.image_size)
        return images, labels

    return pipeline()


def undecodable(paths: Sequence[str]) -> List[str]:
    """The files among paths that PIL cannot decode either (checked only after DALI failed)."""
    bad = []
    for path in paths:
        try:
            with Image.open(path) as image:
                image.load()
        except Exception:  # PIL raises OSError, SyntaxError, ValueError ... for broken files
            bad.append(path)
    return bad


class DaliLoader:
    """One rank's batches from DALI: len(), set_epoch() and iteration yielding (images NCHW, int64 labels)."""

    def __init__(self, samples: Samples, sampler: Any, dcfg, settings: PipelineSettings, *, train: bool,
                 seed: int, rank: int, mixing: Optional[SeededMixing] = None) -> None:
        # sampler: DistributedSampler (train: torch's order and drop_last arithmetic) or ShardSampler (val).
        self.samples, self.sampler, self.dcfg, self.settings, self.train = samples, sampler, dcfg, settings, train
        self.seed, self.rank, self.epoch, self.mixing = seed, rank, 0, mixing

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if self.train:
            self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        shard, batch = len(self.sampler), self.settings.batch
        return shard // batch if self.train else -(-shard // batch)  # train drops the last partial batch

    def order(self) -> List[int]:
        """This rank's sample indices for the current epoch, in the order they are fed."""
        return list(self.sampler)

    def _pipeline_seed(self) -> int:
        words = [self.seed, self.epoch, self.rank, int(self.train)]
        return int(np.random.SeedSequence(words).generate_state(1)[0] % (2 ** 31))

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        steps, batch = len(self), self.settings.batch
        if steps == 0:
            return
        from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

        files = [self.samples[i] for i in self.order()[:steps * batch]]  # train: whole batches only
        pipeline = _build_pipeline(files, self.dcfg, self.settings, self.train, self._pipeline_seed())
        batches = DALIGenericIterator(pipeline, ["images", "target"], reader_name=READER, auto_reset=False,
                                      last_batch_policy=LastBatchPolicy.PARTIAL, prepare_first_batch=False)
        first = getattr(self.sampler, "skip", 0) // batch  # a mid-epoch resume starts at this batch of the epoch
        done = 0
        try:
            for out in batches:
                images, target = out[0]["images"], out[0]["target"].reshape(-1).long()
                images = images.permute(0, 3, 1, 2) if self.settings.channels_last else images
                if self.mixing is not None:
                    images, target = self.mixing(images, target, self.epoch, first + done)
                done += 1
                yield images, target
        except RuntimeError as err:
            # The failing batch is the next one or one DALI was preparing ahead of it.
            ahead = files[done * batch:(done + PREFETCH + 2) * batch]
            bad = undecodable([path for path, _ in ahead])
            if not bad:
                raise
            raise BadImageError(f"cannot decode {', '.join(bad)} ({len(bad)} file(s) under dataset.root="
                                f"{self.dcfg.root}): replace or delete them, list them all with python -m "
                                "resnext.verify_data dataset=..., or skip them with dataset.loader=torch "
                                "dataset.bad_images=skip. DALI said: "
                                f"{str(err).strip().splitlines()[-1]}") from None
        finally:
            del batches, pipeline


def list_samples(dcfg) -> Tuple[Samples, Samples, List[str]]:
    """(train, val, class names): ImageFolder's own samples and class numbering, cut to the subsets."""
    root = dataset_root(dcfg)
    classes, class_to_idx = find_classes(str(root / "train"))

    def split(name: str, limit: Optional[int]) -> Samples:
        samples = make_dataset(str(root / name), class_to_idx, extensions=IMG_EXTENSIONS)
        return samples[:limit] if limit is not None else samples

    return split("train", dcfg.train_subset), split("val", dcfg.val_subset), list(classes)


def default_threads(world_size: int) -> int:
    """The cores of this node divided by the ranks on it (LOCAL_WORLD_SIZE under torchrun)."""
    return node_cores_per_rank(world_size)


def pipeline_settings(dcfg, batch: int, world_size: int, device_type: str, channels_last: bool) -> PipelineSettings:
    device_id = torch.cuda.current_device() if device_type == "cuda" else None  # the rank's activated card
    threads = dcfg.dali_threads or default_threads(world_size)
    return PipelineSettings(batch=batch, threads=threads, device_id=device_id, channels_last=channels_last)


def describe(settings: PipelineSettings) -> str:
    where = "CPU" if settings.device_id is None else f"mixed (GPU {settings.device_id})"
    return f"DALI {where} decoding, {settings.threads} thread(s) per rank"
