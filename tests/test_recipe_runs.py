"""Shrunk recipe runs on CPU: every regulariser of a preset on, a few steps, and the model learns."""
from __future__ import annotations

import pytest

from resnext.loggers.metrics import read_metrics
from tests.conftest import compose_config, needs, train_in_process
from tests.recipe_data import write_noisy_colour_tree

# The preset's keys stay as published except what must shrink for a 2-core CPU: the data, image sides
# (train 16, validate 20 after a 24 resize: still train small, test large), batch, epochs, warm-up and lr
# (the published lr is for a global batch of 1024/2048), the EMA interval, and repeated augmentation,
# 2 copies for both presets (tv_v2 publishes 4, rsb_a3 none) so that 24 images still fill an epoch.
SHRINK = ["dataset=folder", "dataset.image_size=16", "dataset.val_crop=20", "dataset.val_resize=24",
          "dataset.batch_size=8", "dataset.val_batch_size=24", "dataset.workers=0", "dataset.ra_reps=2",
          "epochs=5", "schedule.warmup_epochs=1", "model.ema_steps=1", "model.zero_init_residual=true",
          "print_freq=10"]


@pytest.mark.slow
@pytest.mark.parametrize("preset, lr, loader", [
    # SGD; TA-wide, random erasing 0.1, MixUp 0.2 / CutMix 1.0, smoothing 0.1, RA, EMA: PIL workers
    ("tv_v2", 0.01, "torch"),
    # LAMB at the published lr, BCE; RandAugment, MixUp 0.1 / CutMix 1.0, bicubic: the DALI pipeline
    pytest.param("rsb_a3", 8e-3, "dali", marks=needs("timm", "nvidia.dali", extra="lamb,dali")),
])
def test_a_shrunk_preset_with_every_regulariser_on_learns(tmp_path, preset, lr, loader):
    """The training loss is measured against augmented, mixed targets, so it is noisy by design; the clean
    validation loss (hard targets, no augmentation) is the measure that the model learns. One preset per
    loader: both carry every regulariser.
    """
    root = write_noisy_colour_tree(tmp_path / "data")
    cfg = compose_config([f"experiment={preset}", f"dataset.root={root}", *SHRINK, f"optim.lr={lr}",
                          f"dataset.loader={loader}"])
    assert cfg.dataset.auto_augment is not None and cfg.dataset.mixup_alpha > 0 and cfg.dataset.cutmix_alpha > 0
    train_in_process(cfg, tmp_path / "run")
    records = read_metrics(tmp_path / "run")
    assert len(records) == 5
    assert records[-1]["val_loss"] < 0.7 * records[0]["val_loss"]
    assert records[-1]["acc1"] >= 90.0  # three colour classes: chance is 33%
    assert all(("ema_acc1" in r) == cfg.model.ema for r in records)
