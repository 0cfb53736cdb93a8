"""`check_dataset`: refuse a dataset that cannot work, in the launcher, before any process starts.

Every refusal is a ConfigError whose message names the path, the layout that was expected and the
override or command that fixes it. The checks are cheap on purpose: they list directories but never
decode an image, and per class folder they read only as many directory entries as it takes to find
one image, so a full ImageNet tree (2 x 1000 folders, 1.33M files) is checked in well under a second
on a local disk.

Class count:
  * folder: inferred from the class folders; a dataset.num_classes that is set must match it.
  * imagenet: the yaml sets dataset.num_classes=1000, so a partly copied tree is refused. A subset of
    the ImageNet classes is allowed by saying so: dataset.num_classes=<number of class folders>.
  * cifar10: 10. synthetic: dataset.num_classes (2 to 10). A folder of one class is refused: nothing to learn.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, List, Optional

from omegaconf.errors import MissingMandatoryValue
from torchvision.datasets import CIFAR10
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, has_file_allowed_extension
from torchvision.datasets.utils import check_integrity

from ..config.errors import ConfigError
from ..config.eval_size import val_crop, val_resize
from .synthetic import CLASSES as SYNTHETIC_CLASSES

CIFAR10_CLASSES = 10
SPLITS = ("train", "val")

# What each dataset expects under dataset.root, quoted in every refusal.
LAYOUTS = {
    "cifar10": "dataset=cifar10 needs dataset.root=/path/to/dir holding cifar-10-batches-py/ (data_batch_1..5, "
               "test_batch, batches.meta: cifar-10-python.tar.gz extracted there), or add dataset.download=true "
               "to fetch it into dataset.root",
    "imagenet": "dataset=imagenet needs dataset.root=/path/to/imagenet with train/<wnid>/*.JPEG and "
                "val/<wnid>/*.JPEG (sort the flat ILSVRC2012 val folder into class folders with "
                "scripts/prepare_imagenet_val.py)",
    "folder": "dataset=folder needs dataset.root=/path/to/data with train/<class>/<images> and "
              "val/<class>/<images> (the same class folders in both)",
}


def _listing(names: Iterable[str], limit: int = 5) -> str:
    names = list(names)
    more = f" (+{len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def dataset_root(dcfg, create: bool = False) -> Path:
    """dataset.root as a Path; refused when unset or not a directory.

    The yaml's `???` composes to the schema's null, but a config built without the schema keeps it
    MISSING, which raises on access: both mean "not set".

    create: make a missing root (a download target) instead of refusing it.
    """
    try:
        root = dcfg.root
    except MissingMandatoryValue:
        root = None
    layout = LAYOUTS[dcfg.name]
    if not root:
        raise ConfigError(f"{layout}; dataset.root is not set")
    path = Path(os.path.expanduser(str(root)))
    if create and not path.exists():
        path.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        raise ConfigError(f"dataset.root={root} does not exist. {layout}")
    if not path.is_dir():
        raise ConfigError(f"dataset.root={root} is not a directory. {layout}")
    return path


def _has_image(folder: Path) -> bool:
    """True once one file with an ImageFolder extension turns up; stops reading the listing there."""
    subfolders = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_dir():
                subfolders.append(entry.path)  # ImageFolder walks into these too
            elif has_file_allowed_extension(entry.name, IMG_EXTENSIONS):
                return True
    return any(_has_image(Path(sub)) for sub in subfolders)


def _split_classes(root: Path, split: str, layout: str) -> List[str]:
    folder = root / split
    if not folder.is_dir():
        raise ConfigError(f"{folder} is missing (dataset.root={root}). {layout}")
    try:
        classes, _ = find_classes(str(folder))  # ImageFolder's own rule for what a class is
    except FileNotFoundError:
        raise ConfigError(f"{folder} has no class folders. {layout}") from None
    return classes


def _check_image_folders(dcfg) -> int:
    root, layout = dataset_root(dcfg), LAYOUTS[dcfg.name]
    train, val = (_split_classes(root, split, layout) for split in SPLITS)
    if train != val:
        # ImageFolder numbers classes by sorted name: different sets would silently mislabel val.
        only_train, only_val = sorted(set(train) - set(val)), sorted(set(val) - set(train))
        raise ConfigError(f"train/ and val/ under {root} must hold the same class folders; only in train/: "
                          f"{_listing(only_train) or '-'}; only in val/: {_listing(only_val) or '-'}. {layout}")
    if len(train) < 2:  # one class: every answer is right, the loss is 0 from the first step, nothing is learned
        raise ConfigError(f"{root} has {len(train)} class folder ({_listing(train)}) in train/ and val/: a classifier "
                          f"needs at least 2 classes; add another class folder with images to both. {layout}")
    empty = [f"{split}/{name}" for split in SPLITS for name in train if not _has_image(root / split / name)]
    if empty:
        raise ConfigError(f"class folders under {root} without image files ({', '.join(IMG_EXTENSIONS)}): "
                          f"{_listing(empty)}; add images or remove the folders from both train/ and val/")
    crop = val_crop(dcfg)
    if val_resize(dcfg) < crop:  # only an explicit dataset.val_resize can be: the derived one never is
        key = "dataset.val_crop" if dcfg.val_crop else "dataset.image_size"
        raise ConfigError(f"dataset.val_resize={dcfg.val_resize} must be at least {key}={crop}: validation "
                          f"resizes, then centre-crops {crop}")
    return len(train)


def _download_cifar10(root: Path) -> None:
    try:
        CIFAR10(str(root), train=False, download=True)  # skips the download when the files check out
    except Exception as err:  # network errors come in many types (URLError, HTTPError, OSError, ...)
        raise ConfigError(f"dataset.download=true could not fetch CIFAR-10 into {root}: {err}. Without network "
                          f"access, extract cifar-10-python.tar.gz into {root} and set dataset.download=false") from err


def _check_cifar10(dcfg) -> int:
    root = dataset_root(dcfg, create=dcfg.download)
    if dcfg.download:
        _download_cifar10(root)
    batches = root / CIFAR10.base_folder
    if not batches.is_dir():
        raise ConfigError(f"{batches} is missing. {LAYOUTS['cifar10']}")
    # torchvision refuses any file whose md5 differs from the published archive; say which one, now.
    expected = [*CIFAR10.train_list, *CIFAR10.test_list, [CIFAR10.meta["filename"], CIFAR10.meta["md5"]]]
    bad = [name for name, md5 in expected if not check_integrity(str(batches / name), md5)]
    if bad:
        raise ConfigError(f"CIFAR-10 files missing or corrupt (md5 differs from the published archive) in "
                          f"{batches}: {_listing(bad)}. Delete {batches} and extract cifar-10-python.tar.gz "
                          f"again, or set dataset.download=true")
    return CIFAR10_CLASSES


def _check_synthetic(dcfg) -> int:
    if dcfg.num_classes is None or not 2 <= dcfg.num_classes <= len(SYNTHETIC_CLASSES):
        raise ConfigError(f"dataset=synthetic has 2 to {len(SYNTHETIC_CLASSES)} classes: set dataset.num_classes "
                          f"in that range, not {dcfg.num_classes}")
    for key in ("train_size", "val_size"):
        if getattr(dcfg, key) < 1:
            raise ConfigError(f"dataset.{key}={getattr(dcfg, key)} must be at least 1")
    return dcfg.num_classes


def _matched_class_count(dcfg, found: int) -> int:
    wanted: Optional[int] = dcfg.num_classes
    if wanted is None or wanted == found:
        return found
    if dcfg.name == "imagenet":
        raise ConfigError(f"dataset=imagenet expects dataset.num_classes={wanted} but {dcfg.root} has {found} "
                          f"class folders in train/ and val/. A partial copy? To train on a subset of the "
                          f"ImageNet classes on purpose, set dataset.num_classes={found}")
    raise ConfigError(f"dataset.num_classes={wanted} but dataset={dcfg.name} at {dcfg.root} has {found} classes; "
                      f"set dataset.num_classes={found}, or null to infer it")


_CHECKS = {"synthetic": _check_synthetic, "cifar10": _check_cifar10, "imagenet": _check_image_folders,
           "folder": _check_image_folders}


def check_dataset(dcfg) -> int:
    """Refuse a dataset that cannot work (ConfigError naming the path and the fix); return the class count."""
    check = _CHECKS.get(dcfg.name)
    if check is None:
        raise ConfigError(f"dataset.name={dcfg.name!r} is not one of {', '.join(_CHECKS)}")
    for key in ("train_subset", "val_subset"):
        subset = getattr(dcfg, key)
        if subset is not None and subset < 1:
            raise ConfigError(f"dataset.{key}={subset} must be at least 1, or null for the whole split")
    return _matched_class_count(dcfg, check(dcfg))
