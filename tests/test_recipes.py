"""Recipes: presets compose with the other groups, refusals name the key, optimisers and losses work."""
from __future__ import annotations

import sys

import pytest
import torch
from torch import nn
from omegaconf import OmegaConf

from resnext.config.errors import ConfigError
from resnext.config.schema import check_config
from resnext.runtime.devices import Device
from resnext.training.losses import BinaryCrossEntropy, build_criterion
from resnext.training.optim import build_optimizer
from resnext.training.recipe_checks import check_recipe
from tests.conftest import TINY, compose_config, needs, run_cli
from tests.test_data import config

LAMB = needs("timm", extra="lamb")  # optim=lamb, and so experiment=rsb_a3


def _checked(*overrides: str, tiny: bool = True):
    cfg = config(*overrides) if tiny else compose_config(overrides, tiny=False)
    check_config(cfg)
    check_recipe(cfg)
    return cfg


# ---- presets ------------------------------------------------------------------------------------------------

def test_tv_v2_holds_torchvisions_recipe():
    cfg = _checked("experiment=tv_v2", "dataset.root=/data/imagenet", tiny=False)
    d, o, s = cfg.dataset, cfg.optim, cfg.schedule
    assert (d.name, d.batch_size, d.image_size, d.val_resize, d.val_crop) == ("imagenet", 1024, 176, 232, 224)
    assert (d.auto_augment, d.random_erase, d.mixup_alpha, d.cutmix_alpha, d.ra_reps) == ("ta_wide", 0.1, 0.2, 1.0, 4)
    assert (o.name, o.lr, o.weight_decay, o.no_decay_norm_bias, o.label_smoothing) == ("sgd", 0.5, 2e-5, True, 0.1)
    assert (s.name, s.warmup_epochs, s.warmup_start_factor) == ("cosine", 5, 0.01)
    assert (cfg.model.ema, cfg.model.ema_steps, cfg.model.ema_decay, cfg.epochs, cfg.loss) == (True, 32, 0.99998, 600, "ce")


@LAMB
def test_rsb_a3_holds_the_papers_recipe():
    cfg = _checked("experiment=rsb_a3", "dataset.root=/data/imagenet", tiny=False)
    d, o = cfg.dataset, cfg.optim
    assert (d.batch_size, d.image_size, d.val_crop, d.val_resize, d.interpolation) == (2048, 160, 224, 235, "bicubic")
    assert (d.auto_augment, d.mixup_alpha, d.cutmix_alpha, d.ra_reps, d.random_erase) == ("randaugment", 0.1, 1.0, 1, 0)
    assert (o.name, o.lr, o.weight_decay, o.label_smoothing) == ("lamb", 8e-3, 0.02, 0.0)
    assert (cfg.loss, cfg.epochs, cfg.schedule.warmup_epochs, cfg.model.ema) == ("bce", 100, 5, False)


def test_finetune_starts_from_imagenet_weights_on_a_folder():
    cfg = _checked("experiment=finetune", "dataset.root=/data/flowers", tiny=False)
    assert cfg.model.weights == "torchvision:IMAGENET1K_V2" and cfg.dataset.name == "folder"
    assert cfg.optim.lr == 0.01


@pytest.mark.parametrize("preset", ["tv_v2", pytest.param("rsb_a3", marks=LAMB), "finetune"])
@pytest.mark.parametrize("others", [["device=cpu", "amp=bf16"], ["device=cuda_8p"], ["distributed=env"],
                                    ["sweep=lr_bs"]])
def test_presets_compose_with_devices_precision_distribution_and_sweeps(preset, others):
    cfg = _checked(f"experiment={preset}", "dataset.root=/data", *others, tiny=False)
    assert cfg.dataset.name in ("imagenet", "folder")
    if "amp=bf16" in others:
        assert cfg.amp.mode == "bf16"
    if "device=cuda_8p" in others:
        assert cfg.distributed.mode == "spawn" and cfg.device.type == "cuda"


def test_command_line_keys_win_over_a_preset():
    cfg = _checked("experiment=tv_v2", "dataset.root=/d", "epochs=3", "dataset.mixup_alpha=0.5", tiny=False)
    assert cfg.epochs == 3 and cfg.dataset.mixup_alpha == 0.5 and cfg.dataset.cutmix_alpha == 1.0


@pytest.mark.slow
def test_cfg_job_shows_a_preset(tmp_path):
    proc = run_cli(["experiment=tv_v2", "dataset.root=/data/imagenet", "--cfg", "job"], cwd=tmp_path, timeout=120)
    shown = OmegaConf.create(proc.stdout)
    assert shown.dataset.auto_augment == "ta_wide" and shown.model.ema is True and shown.epochs == 600


# ---- refusals -------------------------------------------------------------------------------------------------

# A value outside a key's choices (dataset.augment=heavy, loss=mse, optim.name=rmsprop ...) is refused by Hydra
# at composition: tests/test_config.py.
@pytest.mark.parametrize("override, key", [
    ("dataset.mixup_alpha=-0.1", "dataset.mixup_alpha=-0.1"),
    ("dataset.cutmix_alpha=-1", "dataset.cutmix_alpha=-1"),
    ("dataset.auto_augment=augmix", "dataset.auto_augment='augmix'"),
    ("dataset.auto_augment_magnitude=31", "dataset.auto_augment_magnitude=31"),
    ("dataset.random_erase=1.5", "dataset.random_erase=1.5"),
    ("dataset.ra_reps=0", "dataset.ra_reps=0"),
    ("dataset.crop_scale=[0.5,0.2]", "dataset.crop_scale=[0.5, 0.2]"),
    ("dataset.crop_ratio=[0.75]", "dataset.crop_ratio=[0.75]"),
    ("model.ema_decay=1.5", "model.ema_decay=1.5"),
    ("optim.label_smoothing=1.0", "optim.label_smoothing=1.0"),
    ("model.weights=torchvision:IMAGENET1K_V9", "model.weights=torchvision:IMAGENET1K_V9"),
])
def test_bad_recipe_values_are_refused_naming_the_key(override, key):
    extra = ["model.ema=true"] if override.startswith("model.ema") else []
    with pytest.raises(ConfigError, match=None) as err:
        _checked(override, *extra)
    assert key in str(err.value)


def test_lamb_without_timm_is_refused_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm now raises ImportError
    monkeypatch.setitem(sys.modules, "timm.optim", None)
    with pytest.raises(ConfigError) as err:
        _checked("optim=lamb")
    assert "optim.name=lamb" in str(err.value) and "resnext[lamb]" in str(err.value)


@pytest.mark.slow
def test_a_refusal_stops_the_cli_before_training(tmp_path):
    proc = run_cli([*TINY, "dataset.mixup_alpha=-1"], cwd=tmp_path, check=False, timeout=120)
    assert proc.returncode == 2
    assert "dataset.mixup_alpha=-1.0 must be 0 (off) or positive" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


# ---- optimisers and losses ----------------------------------------------------------------------------------

def _tiny_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))


@pytest.mark.parametrize("name, cls", [("adamw", "AdamW"), pytest.param("lamb", "Lamb", marks=LAMB), ("sgd", "SGD")])
def test_every_optimizer_spares_norms_and_biases_and_learns(name, cls):
    cfg = config(f"optim={name}", "optim.no_decay_norm_bias=true", "optim.weight_decay=0.1")
    torch.manual_seed(0)
    net = _tiny_net()
    optimizer = build_optimizer(cfg.optim, net, Device("cpu", None), lr=0.01)
    assert type(optimizer).__name__ == cls
    groups = {g["weight_decay"]: len(g["params"]) for g in optimizer.param_groups}
    assert groups == {0.1: 2, 0.0: 3}  # conv + fc weights decay; bn weight, bn bias, fc bias do not
    x, y = torch.randn(16, 3, 6, 6), torch.randint(0, 3, (16,))
    losses = []
    for _ in range(20):
        loss = nn.functional.cross_entropy(net(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_bce_matches_one_hot_binary_cross_entropy_with_smoothing():
    logits, target = torch.randn(4, 5), torch.tensor([0, 3, 1, 4])
    smoothed = nn.functional.one_hot(target, 5).float() * 0.9 + 0.1 / 5
    expected = nn.functional.binary_cross_entropy_with_logits(logits, smoothed)
    assert torch.allclose(BinaryCrossEntropy(0.1)(logits, target), expected)
    assert torch.allclose(BinaryCrossEntropy(0.1)(logits, nn.functional.one_hot(target, 5).float()), expected)
    assert isinstance(build_criterion("ce", 0.1), nn.CrossEntropyLoss)


def test_cross_entropy_takes_soft_targets_with_smoothing():
    logits, soft = torch.randn(4, 5), torch.softmax(torch.randn(4, 5), 1)
    smoothed = soft * 0.9 + 0.1 / 5
    expected = -(smoothed * logits.log_softmax(1)).sum(1).mean()
    assert torch.allclose(build_criterion("ce", 0.1)(logits, soft), expected, atol=1e-6)
