"""The train and validation datasets for dataset.name, with their transform presets and subsets."""
from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

from torch.utils.data import Dataset, Subset
from torchvision.datasets import CIFAR10, ImageFolder

from ..config.eval_size import val_crop
from . import transforms
from .checks import dataset_root
from .synthetic import SyntheticDataset

# Validation draws from its own seed stream so that no synthetic image is shared with training.
SYNTHETIC_VAL_SEED_OFFSET = 1_000_003

Pair = Tuple[Dataset, Dataset]


def _synthetic(dcfg, seed: int) -> Pair:
    def make(size: int, split_seed: int, transform) -> SyntheticDataset:
        return SyntheticDataset(size, dcfg.image_size, split_seed, dcfg.num_classes, dcfg.mean, dcfg.std, transform)

    # Stored ready-made at image_size: a pipeline only when augmenting or validating at another side.
    side = dcfg.image_size
    train_tf = transforms.train_transform(dcfg, side) if transforms.needs_transform(dcfg) else None
    val_tf = transforms.eval_transform(dcfg, side) if val_crop(dcfg) != side else None
    return make(dcfg.train_size, seed, train_tf), make(dcfg.val_size, seed + SYNTHETIC_VAL_SEED_OFFSET, val_tf)


def _cifar10(dcfg, seed: int) -> Pair:
    # check_dataset already downloaded when dataset.download=true; ranks never fetch concurrently.
    root = str(dataset_root(dcfg))
    side = transforms.CIFAR_SIDE
    train = CIFAR10(root, train=True, transform=transforms.train_transform(dcfg, side))
    val = CIFAR10(root, train=False, transform=transforms.eval_transform(dcfg, side))
    return train, val


def _image_folders(dcfg, seed: int) -> Pair:
    root = dataset_root(dcfg)
    train = ImageFolder(str(root / "train"), transform=transforms.train_transform(dcfg))
    val = ImageFolder(str(root / "val"), transform=transforms.eval_transform(dcfg))
    return train, val


_BUILDERS: Dict[str, Callable[..., Pair]] = {
    "synthetic": _synthetic, "cifar10": _cifar10, "imagenet": _image_folders, "folder": _image_folders,
}


def first_samples(dataset: Dataset, count: Optional[int]) -> Dataset:
    """The first `count` samples (all of them when count is None or not smaller than the dataset).

    ImageFolder orders samples by class, so the first N of ImageNet are a few classes only: good for
    checking that the pipeline runs, not for measuring accuracy.
    """
    if count is None or count >= len(dataset):
        return dataset
    return Subset(dataset, range(count))


def build_datasets(dcfg, seed: int) -> Pair:
    """(train, val) for dataset.name, cut to dataset.train_subset / val_subset. Run check_dataset first."""
    train, val = _BUILDERS[dcfg.name](dcfg, seed)
    return first_samples(train, dcfg.train_subset), first_samples(val, dcfg.val_subset)
