"""The recipe regularisers with dataset.loader=dali (CPU-only DALI): auto-augment, random erasing, MixUp/CutMix,
repeated augmentation, `light` padding, loader=auto, and a tiny training run through the CLI.

One generated JPEG tree for the whole module. Where a test isolates one option it turns the base augmentation
off (augment=none, no flip), so any change in the batch is the option's.
"""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch

from resnext.data import build_loaders, resolve_loader
from resnext.data.dali import DaliLoader
from resnext.data.jpeg_tree import make_jpeg_tree
from resnext.data.transforms import light_padding
from resnext.loggers.metrics import read_metrics
from tests.conftest import compose_config, find_run_dir, run_cli, tiny_for

dali = pytest.importorskip("nvidia.dali", reason='NVIDIA DALI not installed (pip install -e ".[dali]")')

SIZES = ((40, 30), (30, 40), (48, 36))
SIDE, BATCH, CLASSES = 24, 6, 3
ISOLATED = ["dataset.augment=none", "dataset.hflip=false"]
REPO = Path(__file__).resolve().parents[1]
ALL_ON = ["dataset.auto_augment=ta_wide", "dataset.random_erase=0.5", "dataset.mixup_alpha=0.2",
          "dataset.cutmix_alpha=1.0", "dataset.ra_reps=2"]


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """3 classes x (6 train + 2 val) JPEGs of 30-48 px: 3 training batches of 6."""
    return make_jpeg_tree(tmp_path_factory.mktemp("jpegs"), classes=CLASSES, train_per_class=6, val_per_class=2,
                          sizes=SIZES)


def dali_cfg(root, *overrides: str, loader: str = "dali"):
    return compose_config(["dataset=folder", f"dataset.root={root}", f"dataset.loader={loader}",
                           f"dataset.image_size={SIDE}", "dataset.val_resize=28", f"dataset.batch_size={BATCH}",
                           f"dataset.val_batch_size={BATCH}", "dataset.dali_threads=1", *overrides])


def loaders_of(cfg):
    return build_loaders(cfg.dataset, seed=cfg.seed, rank=0, world_size=1, device_type="cpu")


def epoch_batches(loaders, epoch: int, first_step: int = 0):
    loaders.set_epoch(epoch, first_step)
    return list(loaders.train)


def stacked(batches):
    return torch.cat([images for images, _ in batches]), torch.cat([target for _, target in batches])


@pytest.fixture(scope="module")
def plain(tree):
    """Epoch 0 without any regulariser or randomness: the reference the isolated options are compared with."""
    return stacked(epoch_batches(loaders_of(dali_cfg(tree, *ISOLATED)), 0))


# ---- auto-augment's operations against torchvision's ---------------------------------------------------

def test_auto_augment_operations_take_torchvisions_magnitudes_to_the_grey_level():
    """Translations (RandAugment: 150/331 of the side, whole pixels), posterize bits, solarize thresholds are
    torchvision's exactly; the enhance operations round differently by at most a grey level or two.
    (scripts/compare_auto_augment.py prints every operation, warps and equalize included.)"""
    spec = importlib.util.spec_from_file_location("compare_auto_augment", REPO / "scripts/compare_auto_augment.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    exact = {"Identity", "TranslateX", "TranslateY", "Posterize", "Solarize", "AutoContrast"}
    rows = script.compare("randaugment", side=32, names=exact | {"Brightness", "Contrast"})
    assert {name for name, *_ in rows} == exact | {"Brightness", "Contrast"}
    for name, magnitude_bin, _, diff in rows:
        assert diff.max() <= (0 if name in exact else 2), (name, magnitude_bin, diff.max())


# ---- each option on its own -------------------------------------------------------------------------------

@pytest.mark.parametrize("option", ["dataset.auto_augment=ta_wide", "dataset.auto_augment=randaugment",
                                    "dataset.auto_augment=autoaugment", "dataset.random_erase=0.5"])
@pytest.mark.slow
def test_image_regularisers_change_the_batches_and_keep_shapes_and_labels(tree, plain, option):
    loaders = loaders_of(dali_cfg(tree, *ISOLATED, option))
    assert isinstance(loaders.train, DaliLoader)
    images, labels = stacked(epoch_batches(loaders, 0))
    assert images.shape == plain[0].shape == (3 * BATCH, 3, SIDE, SIDE) and images.dtype == torch.float32
    assert torch.equal(labels, plain[1]) and labels.dtype == torch.int64
    changed = [not torch.equal(a, b) for a, b in zip(images, plain[0])]
    assert sum(changed) >= 3, f"{option} changed {sum(changed)} of {len(changed)} images"


def test_random_erase_one_zeroes_a_box_of_plausible_area_on_every_image(tree, plain):
    images, _ = stacked(epoch_batches(loaders_of(dali_cfg(tree, *ISOLATED, "dataset.random_erase=1.0")), 0))
    for erased, original in zip(images, plain[0]):
        changed = (erased != original).any(dim=0)
        rows, cols = changed.any(dim=1).nonzero().flatten(), changed.any(dim=0).nonzero().flatten()
        assert len(rows) and len(cols), "an image was not erased"
        box = (slice(None), slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
        assert (erased[box] == 0).all()  # value 0 on the normalised image, every channel
        assert changed.sum() == len(rows) * len(cols) == (rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1)
        # torchvision's law: 0.02-0.33 of the area, then each side rounded; every side below the image's.
        assert 0.015 <= len(rows) * len(cols) / SIDE ** 2 <= 0.36 and len(rows) < SIDE and len(cols) < SIDE


def test_mixing_gives_soft_rows_on_the_images_and_validation_stays_hard(tree, plain):
    loaders = loaders_of(dali_cfg(tree, *ISOLATED, "dataset.mixup_alpha=0.2", "dataset.cutmix_alpha=1.0"))
    images, target = stacked(epoch_batches(loaders, 0))
    assert images.shape == plain[0].shape and not torch.equal(images, plain[0])
    assert target.shape == (3 * BATCH, CLASSES) and target.dtype == torch.float32
    assert torch.allclose(target.sum(1), torch.ones(len(target)))
    assert (target.max(1).values < 1).any(), "no sample was mixed"
    for start in range(0, len(target), BATCH):  # each row mixes its own label with its batch neighbour's (roll 1)
        labels = plain[1][start:start + BATCH]
        for row, label, neighbour in zip(target[start:start + BATCH], labels, labels.roll(1)):
            assert set(row.nonzero().flatten().tolist()) <= {label.item(), neighbour.item()}
    _, val_target = next(iter(loaders.val))
    assert val_target.dtype == torch.int64 and val_target.dim() == 1


def test_mixing_after_a_mid_epoch_resume_mixes_the_remaining_batches_as_an_uninterrupted_run(tree):
    cfg = dali_cfg(tree, "dataset.mixup_alpha=0.2", "dataset.cutmix_alpha=1.0")
    through = loaders_of(cfg)
    uninterrupted = epoch_batches(through, 1)
    resumed = epoch_batches(loaders_of(cfg), 1, first_step=1)  # a fresh process resuming at batch 1 of epoch 1
    assert len(resumed) == len(uninterrupted) - 1
    # The images' crops are drawn anew after a mid-epoch DALI resume (README); the mixing (lambda, CutMix box,
    # which rows pair up) is not, and the soft targets show it.
    assert all(torch.equal(a[1], b[1]) for a, b in zip(uninterrupted[1:], resumed))
    next_epoch = epoch_batches(through, 2)  # while each epoch mixes anew
    assert not any(torch.equal(a[1], b[1]) for a, b in zip(uninterrupted, next_epoch))


# ---- everything at once ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_same_seed_and_epoch_give_identical_batches_with_every_option_on(tree):
    cfg = dali_cfg(tree, *ALL_ON)
    first, second = loaders_of(cfg), loaders_of(cfg)  # e.g. an uninterrupted run and one resumed at epoch 1
    a, b = stacked(epoch_batches(first, 1)), stacked(epoch_batches(second, 1))
    assert a[0].shape == (3 * BATCH, 3, SIDE, SIDE) and a[1].shape == (3 * BATCH, CLASSES)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert torch.isfinite(a[0]).all() and torch.allclose(a[1].sum(1), torch.ones(3 * BATCH))


def test_repeated_augmentation_gives_the_copies_different_crops_and_keeps_the_epoch_length(tree):
    plain_len = len(loaders_of(dali_cfg(tree)).train)
    loaders = loaders_of(dali_cfg(tree, "dataset.ra_reps=3"))
    images, _ = stacked(epoch_batches(loaders, 0))
    order = loaders.train.order()
    assert len(loaders.train) == plain_len == 3 and len(order) == len(images) == 3 * BATCH
    copies = [(i, i + 1) for i in range(len(order) - 1) if order[i] == order[i + 1]]
    assert len(copies) >= 6  # one rank: each index's copies sit side by side
    assert all(not torch.equal(images[i], images[j]) for i, j in copies)


def test_light_pads_by_an_eighth_of_the_side_as_the_torch_loader(tree):
    side = 48  # 6 px of padding under the shared rule; the DALI loader used to pad a constant 4
    cfg = dali_cfg(tree, "dataset.augment=light", "dataset.hflip=false", f"dataset.image_size={side}",
                   "dataset.val_resize=56")
    images, _ = stacked(epoch_batches(loaders_of(cfg), 0))
    fill = (-torch.tensor(cfg.dataset.mean) / torch.tensor(cfg.dataset.std)).view(3, 1)  # zero pixels, normalised
    widest = 0
    for image in images:
        for lines in (image, image.transpose(1, 2)):  # rows, then columns
            padded = [bool(torch.allclose(lines[:, i, :], fill.expand(3, side), atol=1e-4)) for i in range(side)]
            leading = padded.index(False) if False in padded else side
            trailing = padded[::-1].index(False) if False in padded else side
            widest = max(widest, leading, trailing)
    assert widest == light_padding(side) == 6


# ---- choosing the loader, and a run ---------------------------------------------------------------------

def test_auto_picks_dali_with_every_regulariser_set_and_loader_dali_accepts_them(tree):
    cfg = dali_cfg(tree, *ALL_ON, loader="auto")
    assert resolve_loader(cfg.dataset) == ("dali", f"dataset.loader=auto: NVIDIA DALI {dali.__version__} imports")
    cfg.dataset.loader = "dali"
    assert resolve_loader(cfg.dataset) == ("dali", "dataset.loader=dali")


@pytest.mark.slow
def test_a_tiny_cli_run_with_tv_v2s_regularisers_on_dali_writes_finite_losses(tree, tmp_path):
    overrides = ["dataset=folder", f"dataset.root={tree}", "dataset.loader=dali", "dataset.image_size=16",
                 "dataset.val_resize=18", f"dataset.batch_size={BATCH}", f"dataset.val_batch_size={BATCH}",
                 "dataset.dali_threads=1", *ALL_ON, "optim.label_smoothing=0.1", "optim.lr=0.01",
                 "max_steps_per_epoch=2"]
    proc = run_cli([*tiny_for(overrides), *overrides], tmp_path)
    assert "input pipeline: NVIDIA DALI" in proc.stdout + proc.stderr
    records = read_metrics(find_run_dir(tmp_path))
    assert len(records) == 1
    assert math.isfinite(records[0]["train_loss"]) and math.isfinite(records[0]["val_loss"])


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_every_regulariser_runs_with_mixed_decoding_on_the_gpu(tree):
    torch.cuda.set_device(0)
    cfg = dali_cfg(tree, *ALL_ON)
    loaders = build_loaders(cfg.dataset, seed=0, rank=0, world_size=1, device_type="cuda", channels_last=True)
    loaders.set_epoch(0)
    images, target = next(iter(loaders.train))
    assert images.is_cuda and images.shape == (BATCH, 3, SIDE, SIDE) and torch.isfinite(images).all()
    assert target.shape == (BATCH, CLASSES) and torch.allclose(target.sum(1).cpu(), torch.ones(BATCH))
