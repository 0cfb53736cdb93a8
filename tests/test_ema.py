"""model.ema: torchvision's decay adjustment, the update rule, exact resume, strict torchvision load, model_best."""
from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import torch
import torchvision
from torch import nn

from resnext.models import checkpoint
from resnext.training.ema import ModelEma, ema_decay
from resnext.loggers.metrics import read_metrics
from tests.conftest import compose_config, train_in_process
from tests.test_train import assert_same_weights, final_weights, run_whole_and_resumed


def _mcfg(steps: int = 1, decay: float = 0.9) -> SimpleNamespace:
    return SimpleNamespace(ema_steps=steps, ema_decay=decay)


def test_the_decay_is_adjusted_for_global_batch_and_epochs_as_torchvision_does():
    # tv_v2: 1 - (1 - 0.99998) * 1024 * 32 / 600
    assert ema_decay(_mcfg(32, 0.99998), 1024, 600) == pytest.approx(1 - 2e-5 * 1024 * 32 / 600)
    assert ema_decay(_mcfg(32, 0.5), 1024, 1) == 0.0  # alpha is capped at 1: the average is the model


def test_the_average_follows_the_ema_rule_every_n_steps_and_restarts_in_warmup():
    torch.manual_seed(0)
    model = nn.Linear(2, 2)
    ema = ModelEma(model, _mcfg(steps=2, decay=0.5), global_batch=1, epochs=2, warmup_epochs=1)
    assert ema.decay == pytest.approx(1 - 0.5 * 2 / 2)  # adjust = 1 * 2 / 2
    first = model.weight.detach().clone()
    ema.after_step(epoch=1, step=0)  # n_averaged 0: a copy
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.after_step(epoch=1, step=1)  # not a multiple of ema_steps: no update
    assert torch.equal(ema.module.weight, first)
    ema.after_step(epoch=1, step=2)
    assert torch.allclose(ema.module.weight, ema.decay * first + (1 - ema.decay) * model.weight)
    ema.after_step(epoch=0, step=0)  # a warm-up epoch: the average restarts, so the next update copies
    ema.after_step(epoch=0, step=2)
    assert torch.equal(ema.module.weight, model.weight)


# Resume at an epoch boundary (tests/test_train.py points here): the raw training state, and the EMA, MixUp and
# repeated augmentation on top of it, must all continue exactly.
EMA_RUN = ["deterministic=true", "epochs=4", "schedule.warmup_epochs=1", "optim.nesterov=true",
           "dataset.train_size=32", "dataset.val_size=20", "model.ema=true", "model.ema_steps=1",
           "model.ema_decay=0.99", "dataset.mixup_alpha=0.2", "dataset.ra_reps=2"]


@pytest.mark.slow
def test_resume_is_bit_identical_with_the_ema_too_and_the_ema_is_the_runs_result(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="resnext")
    run_whole_and_resumed(EMA_RUN, tmp_path, resume_epoch=2)

    whole = checkpoint.load_checkpoint(tmp_path / "whole" / checkpoint.LAST)
    again = checkpoint.load_checkpoint(tmp_path / "resumed" / checkpoint.LAST)
    assert_same_weights(whole["state_dict"], again["state_dict"])
    assert_same_weights(whole["ema"]["state_dict"], again["ema"]["state_dict"])
    # Epoch 0 (warm-up) restarted the average at every step; epochs 1-3 add 2 steps each.
    assert int(whole["ema"]["n_averaged"]) == int(again["ema"]["n_averaged"]) == 6
    records, rest = read_metrics(tmp_path / "whole"), read_metrics(tmp_path / "resumed")
    assert [r["epoch"] for r in rest] == [2, 3]
    assert [r["train_loss"] for r in rest] == [r["train_loss"] for r in records[2:]]
    assert [r["lr"] for r in rest] == [r["lr"] for r in records[2:]]
    assert [r["ema_acc1"] for r in rest] == [r["ema_acc1"] for r in records[2:]]
    assert [r["ema_val_loss"] for r in rest] == [r["ema_val_loss"] for r in records[2:]]
    # The EMA differs from the raw weights, and it is what best_acc1 and model_best follow.
    assert not torch.equal(whole["ema"]["state_dict"]["fc.weight"], whole["state_dict"]["fc.weight"])
    assert whole["result"] == "ema" and whole["best_acc1"] == max(r["ema_acc1"] for r in records)
    assert whole["class_names"][:2] == ["horizontal_stripes", "vertical_stripes"]
    assert any(" * EMA Acc@1" in m for m in caplog.messages) and any(m.startswith(" * Acc@1") for m in caplog.messages)

    # The EMA's state dict is a plain torchvision one.
    torchvision.models.resnext50_32x4d(num_classes=10).load_state_dict(whole["ema"]["state_dict"], strict=True)
    # Evaluating model_best.pth.tar evaluates its EMA weights, and gives the recorded best.
    best = tmp_path / "whole" / checkpoint.BEST
    acc1 = train_in_process(compose_config(["dataset.val_size=20", "evaluate=true", f"model.weights={best}"]),
                            tmp_path / "eval")
    assert acc1 == pytest.approx(whole["best_acc1"])
    assert final_weights(tmp_path / "whole").keys() == whole["ema"]["state_dict"].keys()
