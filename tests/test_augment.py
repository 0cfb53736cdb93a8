"""Recipes, data side: base augmentation keys, auto-augment, random erasing, MixUp/CutMix, RA sampler."""
from __future__ import annotations

import pytest
import torch
from PIL import Image
from torch.utils.data import DistributedSampler

from resnext.data.mixing import build_mixing
from resnext.data.ra_sampler import RASampler
from resnext.data.transforms import eval_transform, train_transform
from resnext.models.card import model_card
from resnext.training.meters import correct_topk
from tests.conftest import compose_config
from tests.test_data import config, folder_config, loaders_for, write_image_tree, write_noise_images


def _gradient_image(width: int = 40, height: int = 30) -> Image.Image:
    """Left dark, right bright: a horizontal flip is visible, and crops of different places differ."""
    row = torch.linspace(0, 255, width).to(torch.uint8)
    pixels = row.view(1, width, 1).expand(height, width, 3).contiguous().numpy()
    return Image.fromarray(pixels)


def _outputs(transform, image, n: int = 12):
    torch.manual_seed(0)
    return [transform(image) for _ in range(n)]


def test_no_flip_and_a_full_square_crop_make_training_deterministic():
    cfg = config("dataset.augment=imagenet", "dataset.image_size=20", "dataset.hflip=false", "dataset.crop_scale=[1.0,1.0]",
                 "dataset.crop_ratio=[1.0,1.0]")
    image = _gradient_image(20, 20)
    first, *rest = _outputs(train_transform(cfg.dataset), image)
    assert all(torch.equal(first, other) for other in rest)
    flipping = config("dataset.augment=imagenet", "dataset.image_size=20", "dataset.crop_scale=[1.0,1.0]", "dataset.crop_ratio=[1.0,1.0]")
    flipped = [out for out in _outputs(train_transform(flipping.dataset), image) if not torch.equal(out, first)]
    assert flipped and torch.equal(flipped[0], first.flip(-1))


def test_crop_scale_bounds_the_random_resized_crop():
    # A crop of at most 1% of the area of a left-to-right gradient sees a narrow band of brightness.
    cfg = config("dataset.augment=imagenet", "dataset.image_size=16", "dataset.hflip=false",
                 "dataset.crop_scale=[0.005,0.01]")
    spreads = [out[0].max() - out[0].min() for out in _outputs(train_transform(cfg.dataset), _gradient_image(200, 200))]
    full = config("dataset.augment=imagenet", "dataset.image_size=16", "dataset.hflip=false",
                  "dataset.crop_scale=[1.0,1.0]")
    full_spread = _outputs(train_transform(full.dataset), _gradient_image(200, 200), 1)[0][0]
    assert max(spreads) < 0.25 * (full_spread.max() - full_spread.min())


@pytest.mark.parametrize("augment", ["imagenet", "light", "none"])
def test_every_base_augment_gives_the_training_side_on_folders(augment):
    cfg = config("dataset=folder", "dataset.image_size=24", "dataset.val_resize=28", f"dataset.augment={augment}")
    outputs = _outputs(train_transform(cfg.dataset), _gradient_image(), 6)
    assert all(out.shape == (3, 24, 24) and out.dtype == torch.float32 for out in outputs)
    if augment == "none":  # no augmentation at all, not even the flip
        assert all(torch.equal(outputs[0], o) for o in outputs)
    else:
        assert len({o.sum().item() for o in outputs}) > 2  # random crops


def test_light_pads_and_crops_synthetic_images_and_none_leaves_them_alone():
    light = loaders_for(config("dataset.augment=light", "dataset.hflip=false")).train.dataset
    plain = loaders_for(config()).train.dataset
    torch.manual_seed(0)
    shifted = [light[0][0] for _ in range(8)]
    assert all(s.shape == plain[0][0].shape for s in shifted)
    assert any(not torch.allclose(s, plain[0][0], atol=1e-5) for s in shifted)


def test_validation_crops_val_crop_after_val_resize():
    cfg = config("dataset=folder", "dataset.image_size=16", "dataset.val_crop=24", "dataset.val_resize=28")
    assert eval_transform(cfg.dataset)(_gradient_image()).shape == (3, 24, 24)
    assert train_transform(cfg.dataset)(_gradient_image()).shape == (3, 16, 16)


@pytest.mark.parametrize("overrides, resize, crop", [
    (["dataset=imagenet"], 256, 224),  # ImageNet's own sides, exactly
    (["dataset=folder", "dataset.image_size=32"], 36, 32),  # not Resize(256) + CenterCrop(32): the centre eighth
    (["dataset=folder", "dataset.image_size=16", "dataset.val_crop=24"], 27, 24),  # follows the validation crop
    (["experiment=tv_v2"], 232, 224),  # a val_resize that is set is kept
])
def test_the_validation_resize_follows_the_crop_unless_set(overrides, resize, crop):
    cfg = compose_config(overrides, tiny=False)
    steps = eval_transform(cfg.dataset).transforms
    assert (list(steps[0].size), list(steps[1].size)) == ([resize], [crop, crop])
    card = model_card(cfg, ["a", "b"])  # what export and predict resize to
    assert (card["resize"], card["image_size"]) == (resize, crop)


@pytest.mark.parametrize("policy", ["ta_wide", "randaugment", "autoaugment"])
@pytest.mark.slow
def test_auto_augment_policies_change_the_image(policy):
    base = config("dataset=folder", "dataset.image_size=24", "dataset.augment=none", "dataset.hflip=false")
    cfg = config("dataset=folder", "dataset.image_size=24", "dataset.augment=none", "dataset.hflip=false",
                 f"dataset.auto_augment={policy}")
    image = _gradient_image()
    plain = train_transform(base.dataset)(image)
    assert any(not torch.equal(out, plain) for out in _outputs(train_transform(cfg.dataset), image, 8))


def test_random_erase_one_always_erases_a_block():
    cfg = config("dataset=folder", "dataset.image_size=24", "dataset.augment=none", "dataset.hflip=false",
                 "dataset.random_erase=1.0")
    base = config("dataset=folder", "dataset.image_size=24", "dataset.augment=none", "dataset.hflip=false")
    plain = train_transform(base.dataset)(_gradient_image())
    for out in _outputs(train_transform(cfg.dataset), _gradient_image(), 4):
        assert (out != plain).any()


# ---- batch mixing -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("mix", [["dataset.mixup_alpha=0.2"], ["dataset.cutmix_alpha=1.0"],
                                 ["dataset.mixup_alpha=0.2", "dataset.cutmix_alpha=1.0"]])
def test_training_batches_carry_soft_targets_and_validation_stays_hard(mix):
    loaders = loaders_for(config(*mix))
    torch.manual_seed(0)
    images, target = next(iter(loaders.train))
    assert images.shape == (16, 3, 16, 16)
    assert target.shape == (16, 10) and target.dtype == torch.float32
    assert torch.allclose(target.sum(1), torch.ones(16))
    assert (target.max(1).values < 1).any(), "no sample of the batch was mixed"
    _, val_target = next(iter(loaders.val))
    assert val_target.dtype == torch.int64 and val_target.dim() == 1


def test_no_alpha_means_no_mixing():
    assert build_mixing(config().dataset, 10) is None


def test_training_top1_counts_the_largest_share_of_a_soft_target():
    output = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1]])
    soft = torch.tensor([[0.3, 0.7, 0.0], [0.4, 0.6, 0.0]])
    assert correct_topk(output, soft, topk=(1,)).tolist() == [1.0]


def test_mixing_replays_after_a_restored_rng():
    loader = loaders_for(config("dataset.mixup_alpha=0.2", "dataset.cutmix_alpha=1.0")).train
    torch.manual_seed(5)
    first = [t for _, t in loader]
    torch.manual_seed(5)
    assert all(torch.equal(a, b) for a, b in zip(first, [t for _, t in loader]))


def test_mixing_works_in_worker_processes(tmp_path):
    root = write_image_tree(tmp_path / "data")
    write_noise_images(root)
    cfg = folder_config(root, "dataset.mixup_alpha=0.4", "dataset.workers=1")
    _, target = next(iter(loaders_for(cfg).train))
    assert target.shape == (4, 3)


# ---- repeated augmentation --------------------------------------------------------------------------------

@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_ra_sampler_keeps_the_epoch_length_and_spreads_copies_over_ranks(world_size):
    data = list(range(48))
    plain = [len(DistributedSampler(data, world_size, r, drop_last=True)) for r in range(world_size)]
    samplers = [RASampler(data, world_size, r, seed=0, reps=3) for r in range(world_size)]
    for s in samplers:
        s.set_epoch(1)
    shards = [list(s) for s in samplers]
    assert [len(s) for s in shards] == plain
    everything = [i for shard in shards for i in shard]
    counts = torch.bincount(torch.tensor(everything))
    assert counts.max() <= 3 and (counts == 3).sum() >= 48 // 3 - 1
    if world_size == 3:  # each index's three copies land on three different ranks
        assert all(len({r for r, shard in enumerate(shards) if i in shard}) == 3 for i in set(everything)
                   if everything.count(i) == 3)


def test_ra_sampler_order_depends_only_on_seed_and_epoch():
    def order(seed: int, epoch: int):
        sampler = RASampler(list(range(40)), 1, 0, seed=seed, reps=4)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert order(0, 2) == order(0, 2)
    assert order(0, 2) != order(0, 3) and order(0, 2) != order(1, 2)
    assert order(0, 2)[:4] == [order(0, 2)[0]] * 4  # one rank: the copies sit side by side, in one batch


def test_ra_reps_selects_the_ra_sampler_in_the_loader():
    loaders = loaders_for(config("dataset.ra_reps=4"))
    assert isinstance(loaders.train_sampler, RASampler) and len(loaders.train) == 4
