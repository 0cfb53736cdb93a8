"""resnext.data: datasets, transform presets, check_dataset refusals, samplers and loaders on tiny data."""
from __future__ import annotations

import copy
import functools
import hashlib
import pickle
from itertools import islice
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
import pytest
import torch
from omegaconf import DictConfig
from PIL import Image
from torch.utils.data import Subset
from torchvision.datasets import CIFAR10

from tests.conftest import compose_config
from resnext.config.errors import ConfigError
from resnext.data import ShardSampler, build_loaders, check_dataset

CLASS_COLOURS = {"ant": (200, 30, 30), "bee": (30, 200, 30), "cat": (30, 30, 200)}
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
CIFAR_MEAN, CIFAR_STD = [0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]
CIFAR_TRAIN_PER_BATCH, CIFAR_TEST = 4, 6


# ---- tiny data ----------------------------------------------------------------------------------------

def write_image_tree(root: Path, classes: Dict[str, tuple] = CLASS_COLOURS, per_class: int = 4) -> Path:
    """root/{train,val}/<class>/<i>.jpg: solid 40x30 JPEGs, one colour per class."""
    for split in ("train", "val"):
        for name, colour in classes.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.new("RGB", (40, 30), colour).save(folder / f"{i}.jpg", quality=95)
    return root


def write_noise_images(root: Path, seed: int = 0) -> None:
    """Overwrite every image under root with noise: crops and flips of a solid colour all look alike."""
    generator = np.random.default_rng(seed)
    for path in root.rglob("*.jpg"):
        Image.fromarray(generator.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(path)


def cifar_pixels(index: int) -> np.ndarray:
    """Sample `index`'s constant (R, G, B): distinct per channel so a channel mix-up shows."""
    return np.array([(7 * index) % 256, 100, 250 - index], dtype=np.uint8)


def _cifar_batch(first: int, count: int) -> dict:
    # The real files are Python 2 pickles that torchvision loads with encoding="latin1", which gives str
    # keys; rows are 1024 R, then 1024 G, then 1024 B values.
    rows = np.stack([np.repeat(cifar_pixels(i), 1024) for i in range(first, first + count)])
    return {"batch_label": "fake", "data": rows, "labels": [i % 10 for i in range(first, first + count)],
            "filenames": [f"{i}.png" for i in range(first, first + count)]}


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def cifar_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A CIFAR-10 tree in the real file format, and torchvision's expected md5s pointed at these files.

    torchvision md5-checks every batch against the published archive; patching its checksum table
    (not the check itself) keeps the whole integrity path, so a corrupted file is still caught.
    """
    batches = tmp_path / "cifar" / CIFAR10.base_folder
    batches.mkdir(parents=True)
    contents = {f"data_batch_{b + 1}": _cifar_batch(b * CIFAR_TRAIN_PER_BATCH, CIFAR_TRAIN_PER_BATCH)
                for b in range(5)}
    contents["test_batch"] = _cifar_batch(0, CIFAR_TEST)
    contents["batches.meta"] = {"label_names": [f"class{i}" for i in range(10)], "num_vis": 3072}
    for name, content in contents.items():
        (batches / name).write_bytes(pickle.dumps(content, protocol=2))
    md5 = {name: _md5(batches / name) for name in contents}
    monkeypatch.setattr(CIFAR10, "train_list", [[f"data_batch_{b}", md5[f"data_batch_{b}"]] for b in range(1, 6)])
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", md5["test_batch"]]])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": md5["batches.meta"]})
    return tmp_path / "cifar"


@functools.lru_cache(maxsize=None)
def _composed(overrides: Tuple[str, ...]) -> DictConfig:
    return compose_config(overrides)


def config(*overrides: str) -> DictConfig:
    """compose_config, cached: composing takes a good part of a second on a busy 2-core machine."""
    return copy.deepcopy(_composed(overrides))


def with_root(cfg: DictConfig, root: Path) -> DictConfig:
    # Set after composing, so the cached composition is shared by every tmp_path.
    cfg.dataset.root = str(root)
    return cfg


def folder_config(root: Path, *overrides: str, name: str = "folder") -> DictConfig:
    # loader=torch: these tests are about the torch path whether or not DALI is installed (see test_dali.py).
    return with_root(config(f"dataset={name}", "dataset.loader=torch", "dataset.workers=0",
                            "dataset.image_size=24", "dataset.val_resize=28",
                            "dataset.batch_size=4", "dataset.val_batch_size=4", *overrides), root)


def cifar_config(root: Path, *overrides: str) -> DictConfig:
    # image_size=32 undoes the 16 px of conftest's TINY overrides: the CIFAR side, no resize.
    return with_root(config("dataset=cifar10", "dataset.workers=0", "dataset.batch_size=4",
                            "dataset.val_batch_size=6", "dataset.image_size=32", *overrides), root)


def loaders_for(cfg, world_size: int = 1, rank: int = 0, device_type: str = "cpu"):
    return build_loaders(cfg.dataset, seed=0, rank=rank, world_size=world_size, device_type=device_type)


def normalised(rgb: Sequence[float], mean: List[float], std: List[float]) -> torch.Tensor:
    return (torch.tensor(rgb, dtype=torch.float32) / 255 - torch.tensor(mean)) / torch.tensor(std)


# ---- datasets and presets -------------------------------------------------------------------------------

@pytest.mark.parametrize("name, extra", [("folder", []), ("imagenet", ["dataset.num_classes=3"])])
def test_image_folder_sets_give_cropped_normalised_tensors_with_class_labels(tmp_path, name, extra):
    loaders = loaders_for(folder_config(write_image_tree(tmp_path), *extra, name=name))
    assert loaders.num_classes == 3
    classes = sorted(CLASS_COLOURS)
    for loader in (loaders.train, loaders.val):
        seen = set()
        for images, labels in loader:
            assert images.shape == (4, 3, 24, 24) and images.dtype == torch.float32
            assert type(images) is torch.Tensor  # no tv_tensors subclass leaks into the batch
            for image, label in zip(images, labels):
                expected = normalised(CLASS_COLOURS[classes[label]], IMAGENET_MEAN, IMAGENET_STD)
                # Solid colours survive JPEG, crops and resizes up to a few levels of 255.
                assert torch.allclose(image.mean(dim=(1, 2)), expected, atol=0.1), (label, image.mean(dim=(1, 2)))
                seen.add(int(label))
        assert seen == {0, 1, 2}


def test_cifar10_gives_normalised_tensors_with_the_stored_labels(cifar_root):
    loaders = loaders_for(cifar_config(cifar_root))
    assert loaders.num_classes == 10
    assert len(loaders.train.dataset) == 5 * CIFAR_TRAIN_PER_BATCH and len(loaders.val.dataset) == CIFAR_TEST
    images, labels = next(iter(loaders.val))  # ShardSampler on one rank: in file order
    assert images.shape == (6, 3, 32, 32) and images.dtype == torch.float32
    assert labels.tolist() == [i % 10 for i in range(CIFAR_TEST)]
    for i, image in enumerate(images):
        expected = normalised(cifar_pixels(i), CIFAR_MEAN, CIFAR_STD).view(3, 1, 1).expand(3, 32, 32)
        assert torch.allclose(image, expected, atol=1e-5)
    train_set = loaders.train.dataset
    for index in range(len(train_set)):
        image, label = train_set[index]
        assert image.shape == (3, 32, 32) and label == index % 10
        # RandomCrop(32, padding=4) shifts by at most 4 px: the centre is always the stored image.
        centre = image[:, 4:28, 4:28]
        expected = normalised(cifar_pixels(index), CIFAR_MEAN, CIFAR_STD).view(3, 1, 1).expand_as(centre)
        assert torch.allclose(centre, expected, atol=1e-5)


def test_cifar10_train_crops_with_zero_padding(cifar_root):
    train_set = loaders_for(cifar_config(cifar_root)).train.dataset.dataset  # unseeded: a new crop per read
    torch.manual_seed(0)
    black = normalised([0, 0, 0], CIFAR_MEAN, CIFAR_STD).view(3, 1, 1)
    padded = sum(bool(torch.isclose(train_set[0][0], black, atol=1e-5).all(dim=0).any()) for _ in range(20))
    assert padded > 10  # most of 20 random crops take some padding in (a shift of 0 in y and x is rare)


def test_cifar10_resizes_when_image_size_is_not_32(cifar_root):
    loaders = loaders_for(cifar_config(cifar_root, "dataset.image_size=48"))
    assert loaders.train.dataset[0][0].shape == (3, 48, 48)
    assert loaders.val.dataset[0][0].shape == (3, 48, 48)


def test_subsets_keep_the_first_samples(tmp_path):
    loaders = loaders_for(folder_config(write_image_tree(tmp_path), "dataset.train_subset=5",
                                        "dataset.val_subset=3", "dataset.val_batch_size=3"))
    subset = loaders.train.dataset.dataset  # inside the per-sample seeding wrapper (data/robust.py)
    assert isinstance(subset, Subset) and list(subset.indices) == [0, 1, 2, 3, 4]
    assert len(loaders.val.dataset) == 3
    _, labels = next(iter(loaders.val))
    assert labels.tolist() == [0, 0, 0]  # ImageFolder orders by class: the first 3 are all of class 0
    assert len(loaders.train) == 1  # 5 samples, batch 4, last partial batch dropped


def test_a_subset_larger_than_the_split_uses_all_of_it(tmp_path):
    loaders = loaders_for(folder_config(write_image_tree(tmp_path), "dataset.train_subset=1000"))
    assert len(loaders.train.dataset) == 12


# ---- check_dataset refusals -------------------------------------------------------------------------------

def refusal(cfg) -> str:
    with pytest.raises(ConfigError) as caught:
        check_dataset(cfg.dataset)
    return str(caught.value)


@pytest.mark.parametrize("name, expected", [
    ("imagenet", "dataset=imagenet needs dataset.root=/path/to/imagenet with train/<wnid>/*.JPEG"),
    ("folder", "dataset=folder needs dataset.root=/path/to/data with train/<class>/<images>"),
    ("cifar10", "dataset=cifar10 needs dataset.root=/path/to/dir holding cifar-10-batches-py/"),
])
def test_an_unset_root_is_refused_with_the_expected_layout(name, expected):
    message = refusal(config(f"dataset={name}"))
    assert expected in message and "dataset.root is not set" in message


def test_the_imagenet_refusal_points_at_the_prepare_script():
    assert "scripts/prepare_imagenet_val.py" in refusal(config("dataset=imagenet"))


def test_a_missing_root_is_refused(tmp_path):
    message = refusal(folder_config(tmp_path / "nowhere"))
    assert f"dataset.root={tmp_path / 'nowhere'} does not exist" in message and "train/<class>" in message


def test_a_root_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "data.tar").write_bytes(b"")
    assert "is not a directory" in refusal(folder_config(tmp_path / "data.tar"))


@pytest.mark.parametrize("split", ["train", "val"])
def test_a_missing_split_folder_is_refused(tmp_path, split):
    root = write_image_tree(tmp_path / "data")
    (root / split).rename(root / f"{split}.old")
    assert f"{root / split} is missing" in refusal(folder_config(root))


def test_a_split_without_class_folders_is_refused(tmp_path):
    root = tmp_path / "data"
    (root / "train").mkdir(parents=True)
    (root / "val" / "ant").mkdir(parents=True)
    (root / "train" / "0.jpg").write_bytes(b"")  # images straight in train/ are no class folder
    assert f"{root / 'train'} has no class folders" in refusal(folder_config(root))


def test_different_class_sets_in_train_and_val_are_refused(tmp_path):
    root = write_image_tree(tmp_path)
    (root / "val" / "cat").rename(root / "val" / "cow")
    message = refusal(folder_config(root))
    assert "must hold the same class folders" in message
    assert "only in train/: cat" in message and "only in val/: cow" in message


def test_a_class_folder_without_images_is_refused(tmp_path):
    root = write_image_tree(tmp_path)
    (root / "val" / "dog").mkdir()
    (root / "train" / "dog").mkdir()
    (root / "train" / "dog" / "notes.txt").write_text("not an image")
    for image in (root / "val" / "bee").iterdir():
        image.unlink()
    message = refusal(folder_config(root))
    assert "without image files" in message and "train/dog" in message and "val/bee" in message
    assert "val/dog" in message and "train/bee" not in message


def test_images_in_class_subfolders_count(tmp_path):
    root = write_image_tree(tmp_path)
    nested = root / "val" / "bee" / "more"
    nested.mkdir()
    for image in list((root / "val" / "bee").glob("*.jpg")):
        image.rename(nested / image.name)
    assert check_dataset(folder_config(root).dataset) == 3  # ImageFolder walks into subfolders too


def test_the_check_never_decodes_images(tmp_path):
    root = write_image_tree(tmp_path)
    (root / "train" / "ant" / "0.jpg").write_bytes(b"not a jpeg")
    assert check_dataset(folder_config(root).dataset) == 3


def test_folder_infers_the_class_count_and_a_wrong_one_is_refused(tmp_path):
    root = write_image_tree(tmp_path)
    assert check_dataset(folder_config(root).dataset) == 3
    assert check_dataset(folder_config(root, "dataset.num_classes=3").dataset) == 3
    message = refusal(folder_config(root, "dataset.num_classes=5"))
    assert "dataset.num_classes=5" in message and "has 3 classes" in message and "dataset.num_classes=3" in message


def test_a_folder_of_one_class_is_refused(tmp_path):
    """Accepted before: the loss is 0 from the first step and Acc@1 100, a run that learns nothing."""
    root = write_image_tree(tmp_path, classes={"ant": CLASS_COLOURS["ant"]})
    message = refusal(folder_config(root))
    assert "has 1 class folder (ant)" in message and "at least 2 classes" in message


def test_imagenet_expects_1000_classes_unless_a_subset_is_declared(tmp_path):
    root = write_image_tree(tmp_path)
    message = refusal(folder_config(root, name="imagenet"))
    assert "expects dataset.num_classes=1000" in message and "has 3 class folders" in message
    assert "set dataset.num_classes=3" in message
    assert check_dataset(folder_config(root, "dataset.num_classes=3", name="imagenet").dataset) == 3


def test_a_validation_resize_below_the_crop_is_refused(tmp_path):
    message = refusal(folder_config(write_image_tree(tmp_path), "dataset.val_resize=20"))
    assert "dataset.val_resize=20 must be at least dataset.image_size=24" in message


@pytest.mark.parametrize("key", ["train_subset", "val_subset"])
def test_an_empty_subset_is_refused(tmp_path, key):
    assert f"dataset.{key}=0 must be at least 1" in refusal(folder_config(write_image_tree(tmp_path), f"dataset.{key}=0"))


def test_cifar10_without_its_batch_folder_is_refused(tmp_path):
    message = refusal(cifar_config(tmp_path))
    assert f"{tmp_path / 'cifar-10-batches-py'} is missing" in message and "dataset.download=true" in message


def test_a_corrupt_cifar10_batch_is_refused_by_name(cifar_root):
    assert check_dataset(cifar_config(cifar_root).dataset) == 10
    (cifar_root / CIFAR10.base_folder / "data_batch_3").write_bytes(b"truncated")
    (cifar_root / CIFAR10.base_folder / "test_batch").unlink()
    message = refusal(cifar_config(cifar_root))
    assert "missing or corrupt" in message and "data_batch_3, test_batch" in message
    assert "data_batch_2" not in message


def test_cifar10_with_another_class_count_is_refused(cifar_root):
    message = refusal(cifar_config(cifar_root, "dataset.num_classes=100"))
    assert "dataset.num_classes=100" in message and "has 10 classes" in message


def test_synthetic_class_count_out_of_range_is_refused():
    assert "2 to 10 classes" in refusal(config("dataset.num_classes=11"))
    assert check_dataset(config().dataset) == 10


# ---- samplers and loaders -------------------------------------------------------------------------------

@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
@pytest.mark.parametrize("length", [0, 1, 3, 7, 10, 13])
def test_shard_sampler_covers_every_index_exactly_once(world_size, length):
    shards = [list(ShardSampler(length, rank, world_size)) for rank in range(world_size)]
    assert sorted(i for shard in shards for i in shard) == list(range(length))
    assert [len(ShardSampler(length, rank, world_size)) for rank in range(world_size)] == [len(s) for s in shards]
    assert max(map(len, shards)) - min(map(len, shards)) <= 1  # no padding, shards differ by one at most


def train_sampler(world_size: int, rank: int):
    return loaders_for(config(), world_size=world_size, rank=rank).train_sampler


def epoch_order(sampler, epoch: int) -> List[int]:
    sampler.set_epoch(epoch)
    return list(sampler)


@pytest.mark.parametrize("world_size", [2, 4])
def test_train_shards_are_disjoint_equal_and_reproducible_per_epoch(world_size):
    train_size = config().dataset.train_size
    samplers = [train_sampler(world_size, rank) for rank in range(world_size)]
    shards = [epoch_order(sampler, 3) for sampler in samplers]
    flat = [i for shard in shards for i in shard]
    assert len(set(flat)) == len(flat) == train_size // world_size * world_size
    assert shards[0] != epoch_order(samplers[0], 4) and sorted(shards[0]) != shards[0]  # reshuffled each epoch
    assert [epoch_order(sampler, 3) for sampler in samplers] == shards
    assert epoch_order(train_sampler(world_size, 1), 3) == shards[1]  # a fresh (resumed) run agrees


def test_the_train_loader_gives_the_per_rank_batch_and_drops_the_rest():
    loaders = loaders_for(config("dataset.train_size=70", "dataset.batch_size=16"), world_size=2, rank=1)
    assert len(loaders.train_sampler) == 35 and len(loaders.train) == 4  # 35 // 8
    assert [images.shape[0] for images, _ in loaders.train] == [8, 8, 8, 8]
    assert loaders.val.batch_size == 10  # val_batch_size 20 over 2 ranks


def test_a_global_batch_that_does_not_divide_by_the_world_size_is_refused():
    with pytest.raises(ConfigError, match="batch_size=16 is the global batch and must divide by the world size 3"):
        loaders_for(config(), world_size=3)


def test_a_training_set_smaller_than_one_batch_is_refused():
    with pytest.raises(ConfigError, match="not one full batch of 16 per rank"):
        loaders_for(config("dataset.train_size=20", "dataset.batch_size=32"), world_size=2)


@pytest.mark.parametrize("device_type, pinned", [("cpu", False), ("cuda", True), ("npu", True)])
def test_memory_is_pinned_only_for_accelerators(device_type, pinned):
    loaders = loaders_for(config(), device_type=device_type)
    assert loaders.train.pin_memory is pinned and loaders.val.pin_memory is pinned
    assert loaders_for(config("dataset.pin_memory=false"), device_type="cuda").train.pin_memory is False


def test_worker_options(tmp_path):
    loaders = loaders_for(folder_config(write_image_tree(tmp_path), "dataset.workers=1"))
    for loader in (loaders.train, loaders.val):
        assert loader.num_workers == 1 and loader.persistent_workers is False and loader.prefetch_factor == 2


def test_an_epoch_replays_exactly_with_workers_whatever_the_global_rng(tmp_path):
    """What resume relies on: the same epoch and batch = the same samples and augmentations (data/robust.py)."""
    write_noise_images(write_image_tree(tmp_path))
    loaders = loaders_for(folder_config(tmp_path, "dataset.workers=1"))

    def batch(rng_seed: int, epoch: int = 2, first_step: int = 0) -> torch.Tensor:
        torch.manual_seed(rng_seed)
        loaders.set_epoch(epoch, first_step)
        return next(iter(loaders.train))[0]

    first = batch(5)
    assert torch.equal(first, batch(6))  # augmentations are seeded per sample, not by the global RNG
    assert not torch.equal(first, batch(5, epoch=3))  # but differ from epoch to epoch
    loaders.set_epoch(2)
    second = next(islice(iter(loaders.train), 1, None))[0]
    assert torch.equal(second, batch(7, first_step=1))  # a mid-epoch resume gets the same next batch
