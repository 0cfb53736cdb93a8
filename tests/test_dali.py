"""dataset.loader=dali on CPU-only DALI: shapes, labels, shards, per-epoch order, exact resume, refusals.

A tree of ~30 small JPEGs made on the fly; every DALI test skips when nvidia-dali is not installed
(the README's test line installs it), the fallback tests run either way.
"""
from __future__ import annotations

import shutil
import sys

import pytest
import torch
from omegaconf import open_dict
from torch.utils.data import DataLoader

from resnext.models import checkpoint
from resnext.config.errors import ConfigError
from resnext.data import build_loaders, resolve_loader
from resnext.data.dali import BadImageError, DaliLoader
from resnext.data.jpeg_tree import make_jpeg_tree
from tests.conftest import compose_config, train_in_process
from tests.test_data import CLASS_COLOURS, IMAGENET_MEAN, IMAGENET_STD, normalised, write_image_tree
from tests.test_train import Interrupted, assert_same_weights, final_weights, interrupt_at_epoch

try:
    import nvidia.dali  # noqa: F401
    HAVE_DALI = True
except ImportError:
    HAVE_DALI = False

needs_dali = pytest.mark.skipif(not HAVE_DALI, reason='NVIDIA DALI not installed (pip install -e ".[dali]")')
SIZES = ((40, 30), (30, 40), (48, 36))


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """3 classes x (7 train + 3 val) JPEGs of 30-48 px: 21 train, 9 val (odd counts on purpose)."""
    return make_jpeg_tree(tmp_path_factory.mktemp("jpegs"), classes=3, train_per_class=7, val_per_class=3,
                          sizes=SIZES)


def folder_cfg(root, *overrides: str, loader: str = "dali"):
    return compose_config(["dataset=folder", f"dataset.root={root}", f"dataset.loader={loader}",
                           "dataset.image_size=32", "dataset.val_resize=36", "dataset.batch_size=4",
                           "dataset.val_batch_size=4", "dataset.workers=0", "dataset.dali_threads=1", *overrides])


def loaders_of(cfg, rank: int = 0, world_size: int = 1, channels_last: bool = False):
    return build_loaders(cfg.dataset, seed=cfg.seed, rank=rank, world_size=world_size, device_type="cpu",
                         channels_last=channels_last)


def epoch_batches(loader, epoch: int):
    loader.set_epoch(epoch)
    return list(loader)


# ---- what a batch holds -----------------------------------------------------------------------------------

@needs_dali
@pytest.mark.parametrize("channels_last", [False, True])
def test_batches_are_normalised_crops_of_their_class_images(tmp_path, channels_last):
    root = write_image_tree(tmp_path, per_class=5)  # solid colour per class: content shows the label
    loaders = loaders_of(folder_cfg(root), channels_last=channels_last)
    assert isinstance(loaders.train, DaliLoader) and loaders.num_classes == 3
    classes = sorted(CLASS_COLOURS)
    for loader, count in ((loaders.train, 12), (loaders.val, 15)):  # train: 15 // 4 full batches
        seen = 0
        for images, labels in loader:
            assert images.shape[1:] == (3, 32, 32) and images.dtype == torch.float32
            assert labels.dtype == torch.int64 and labels.shape == images.shape[:1]
            assert images.is_contiguous(memory_format=torch.channels_last if channels_last else
                                        torch.contiguous_format)
            for image, label in zip(images, labels):
                expected = normalised(CLASS_COLOURS[classes[label]], IMAGENET_MEAN, IMAGENET_STD)
                assert torch.allclose(image.mean(dim=(1, 2)), expected, atol=0.1), (label, image.mean(dim=(1, 2)))
            seen += len(labels)
        assert seen == count


@needs_dali
def test_the_train_order_and_step_count_are_those_of_the_torch_loader(tree):
    dali_train = loaders_of(folder_cfg(tree)).train
    torch_train = loaders_of(folder_cfg(tree, loader="torch")).train
    assert isinstance(torch_train, DataLoader)
    assert len(dali_train) == len(torch_train) == 21 // 4
    for epoch in (0, 3):
        torch_train.sampler.set_epoch(epoch)
        torch_labels = torch.cat([labels for _, labels in torch_train])
        dali_labels = torch.cat([labels for _, labels in epoch_batches(dali_train, epoch)])
        assert torch.equal(dali_labels, torch_labels)


@needs_dali
@pytest.mark.parametrize("world_size", [2, 3])
def test_rank_shards_are_disjoint_train_covers_the_set_and_val_sees_every_image_once(tree, world_size):
    ranks = [loaders_of(folder_cfg(tree, "dataset.batch_size=6", "dataset.val_batch_size=6"), rank, world_size)
             for rank in range(world_size)]
    train = [set(r.train.order()) for r in ranks]
    assert sum(len(s) for s in train) == len(set().union(*train)) == 21 // world_size * world_size
    val = [r.val.order() for r in ranks]
    assert sorted(i for shard in val for i in shard) == list(range(9))
    assert sum(len(labels) for r in ranks for _, labels in r.val) == 9


@needs_dali
def test_each_epoch_is_a_permutation_reproducible_from_seed_and_epoch(tree):
    first, second = (loaders_of(folder_cfg(tree)).train for _ in range(2))
    a, b = epoch_batches(first, 2), epoch_batches(second, 2)
    assert all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(a, b))
    first.set_epoch(0)
    order0 = first.order()
    first.set_epoch(1)
    assert sorted(order0) == sorted(first.order()) == list(range(21)) and order0 != first.order()
    other_seed = loaders_of(folder_cfg(tree, "seed=7")).train
    other_seed.set_epoch(0)
    assert other_seed.order() != order0


@needs_dali
def test_an_epoch_after_a_resume_repeats_the_crops_of_an_uninterrupted_run(tree):
    through = loaders_of(folder_cfg(tree)).train
    epoch_batches(through, 0)
    uninterrupted = epoch_batches(through, 1)
    resumed = epoch_batches(loaders_of(folder_cfg(tree)).train, 1)  # a fresh process starting at epoch 1
    assert len(resumed) == len(uninterrupted) == 5
    assert all(torch.equal(x[0], y[0]) for x, y in zip(uninterrupted, resumed))


def images_by_sample(loader, epoch: int):
    images = torch.cat([images for images, _ in epoch_batches(loader, epoch)])
    return dict(zip(loader.order(), images))


@needs_dali
@pytest.mark.parametrize("augment", ["light", "none"])
def test_light_augmentation_varies_per_epoch_and_none_is_fixed(tree, augment):
    train = loaders_of(folder_cfg(tree, f"dataset.augment={augment}", "dataset.interpolation=bicubic")).train
    first, second = images_by_sample(train, 0), images_by_sample(train, 1)
    assert all(image.shape == (3, 32, 32) for image in first.values())
    same = [torch.equal(first[i], second[i]) for i in first.keys() & second.keys()]
    assert len(same) >= 10
    assert all(same) if augment == "none" else not all(same)


@needs_dali
def test_validation_agrees_with_the_torch_loader_on_the_same_files(tree):
    dali_val = torch.cat([images for images, _ in loaders_of(folder_cfg(tree)).val])
    torch_val = torch.cat([images for images, _ in loaders_of(folder_cfg(tree, loader="torch")).val])
    assert dali_val.shape == torch_val.shape == (9, 3, 32, 32)
    # Same sizes and crop offsets to the pixel; decoders (libjpeg-turbo vs nvImageCodec) and the antialiased
    # resize filters differ slightly (0.003 on average at 224 px; a one-pixel shift alone would give ~0.06).
    assert (dali_val - torch_val).abs().mean() < 0.01


@needs_dali
def test_dali_derives_the_validation_resize_as_the_torch_loader_does(tree):
    """dataset.val_resize=null: DALI resizes to 36 before its 32 px crop, as torch does (config/eval_size.py)."""
    dali_val = torch.cat([images for images, _ in loaders_of(folder_cfg(tree, "dataset.val_resize=null")).val])
    torch_val = torch.cat([images for images, _ in loaders_of(folder_cfg(tree, loader="torch")).val])  # 36, set
    assert dali_val.shape == torch_val.shape == (9, 3, 32, 32)
    assert (dali_val - torch_val).abs().mean() < 0.01


# ---- training through the trainer ---------------------------------------------------------------------

@needs_dali
@pytest.mark.slow
def test_training_with_dali_resumes_to_the_weights_of_an_uninterrupted_run(tree, tmp_path, monkeypatch):
    overrides = ["dataset.image_size=16", "dataset.val_resize=18", "dataset.batch_size=7",
                 "dataset.val_batch_size=9", "deterministic=true", "epochs=2", "model.norm=group"]
    cfg = lambda *extra: folder_cfg(tree, *overrides, *extra)  # noqa: E731
    train_in_process(cfg(), tmp_path / "whole")
    with monkeypatch.context() as patch:
        interrupt_at_epoch(patch, 1)
        with pytest.raises(Interrupted):
            train_in_process(cfg(), tmp_path / "stopped")
    train_in_process(cfg(f"resume={tmp_path / 'stopped' / checkpoint.LAST}"), tmp_path / "resumed")
    assert_same_weights(final_weights(tmp_path / "whole"), final_weights(tmp_path / "resumed"))


# ---- refusals and fallbacks -----------------------------------------------------------------------------

def hide_dali(monkeypatch):
    for name in ("nvidia.dali", "nvidia.dali.plugin.pytorch"):
        monkeypatch.setitem(sys.modules, name, None)  # `import nvidia.dali` now raises ImportError


def test_auto_falls_back_to_the_torch_loader_without_dali_and_says_how_to_get_it(tree, monkeypatch, caplog):
    hide_dali(monkeypatch)
    cfg = folder_cfg(tree, loader="auto")
    kind, why = resolve_loader(cfg.dataset)
    assert kind == "torch" and 'pip install "resnext[dali]"' in why
    with caplog.at_level("INFO", logger="resnext"):
        assert isinstance(loaders_of(cfg).train, DataLoader)
    assert "input pipeline: torch DataLoader" in caplog.text and "does not import" in caplog.text


def test_loader_dali_without_dali_is_refused_with_the_pip_line(tree, monkeypatch):
    hide_dali(monkeypatch)
    with pytest.raises(ConfigError, match=r'dataset.loader=dali needs NVIDIA DALI.*pip install "resnext\[dali\]"'):
        resolve_loader(folder_cfg(tree).dataset)


@pytest.mark.parametrize("name", ["synthetic", "cifar10"])
def test_datasets_without_a_jpeg_folder_refuse_dali_and_keep_torch_on_auto(name):
    cfg = compose_config([f"dataset={name}", "dataset.loader=dali"])
    with pytest.raises(ConfigError, match=f"dataset.loader=dali .*dataset={name} has the torch loader only"):
        resolve_loader(cfg.dataset)
    cfg.dataset.loader = "auto"
    assert resolve_loader(cfg.dataset)[0] == "torch"


@needs_dali
def test_skipping_bad_images_is_refused_for_dali_and_auto_picks_torch_for_it(tree):
    cfg = folder_cfg(tree)
    with open_dict(cfg.dataset):
        cfg.dataset.bad_images = "skip"  # issue #10's key
    with pytest.raises(ConfigError, match="dataset.bad_images=skip needs dataset.loader=torch"):
        resolve_loader(cfg.dataset)
    cfg.dataset.loader = "auto"
    assert resolve_loader(cfg.dataset)[0] == "torch"


@needs_dali
def test_a_corrupt_jpeg_is_reported_with_its_path(tree, tmp_path):
    root = shutil.copytree(tree, tmp_path / "copy")
    broken = root / "train" / "class_001" / "00003.jpg"
    broken.write_bytes(broken.read_bytes()[:200])
    loaders = loaders_of(folder_cfg(root, "dataset.batch_size=21"))  # one batch: it holds every file
    with pytest.raises(BadImageError, match=str(broken)):
        epoch_batches(loaders.train, 0)


@needs_dali
def test_a_bad_crop_range_is_refused_naming_the_key(tree):
    with pytest.raises(ConfigError, match=r"dataset.crop_scale=\[0.5, 0.2\]"):
        resolve_loader(folder_cfg(tree, "dataset.crop_scale=[0.5,0.2]").dataset)


# ---- GPU ------------------------------------------------------------------------------------------------

@needs_dali
@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_mixed_decoding_delivers_batches_on_the_gpu(tree):
    torch.cuda.set_device(0)
    cfg = folder_cfg(tree)
    loaders = build_loaders(cfg.dataset, seed=0, rank=0, world_size=1, device_type="cuda", channels_last=True)
    images, labels = next(iter(epoch_batches(loaders.train, 0)))
    assert images.is_cuda and images.shape == (4, 3, 32, 32)
    assert images.is_contiguous(memory_format=torch.channels_last) and labels.dtype == torch.int64
