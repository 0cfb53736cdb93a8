"""A diverging run says so while it runs and in result.json (resnext/training/divergence.py)."""
import json
import math

import pytest

from resnext.training import divergence
from resnext.training.divergence import DivergenceWatch
from tests.conftest import TINY, cli_in_process, compose_config, find_run_dir


def warnings_for(history, *overrides, num_classes=10):
    watch = DivergenceWatch(compose_config(["dataset=folder", "dataset.batch_size=16", *overrides]), num_classes)
    for record in history:
        watch.check(record)
    return watch.warnings


def test_the_folder_run_of_issue_19_is_called_diverging_every_epoch_with_the_fixes():
    # lr 0.1 on a 10-class folder: train loss 59.6 then 9.27 (chance 2.30), val loss 209,262, Acc@1 10.0.
    first, second = warnings_for([{"epoch": 0, "train_loss": 59.6, "val_loss": 209262.0},
                                  {"epoch": 1, "train_loss": 9.27, "val_loss": 2.4}])
    assert first.startswith("diverging: epoch 0: train loss 59.6 is above 2 x chance (2.30); val loss 2.093e+05")
    assert second.startswith("diverging: epoch 1: train loss 9.27 is above 2 x chance (2.30): lower optim.lr")
    for fix in ("lower optim.lr (lr 0.1 at global batch 16)", "schedule.warmup_epochs=0 now",
                "optim.lr_scaling=linear (the seed's rule: lr x batch / 256, 0.8 at batch 2048; "
                "0.00625 at this batch)"):
        assert fix in first


def test_a_learning_run_and_its_warm_up_are_left_alone():
    assert warnings_for([{"epoch": 0, "train_loss": 2.80, "val_loss": 0.5},
                         {"epoch": 1, "train_loss": 0.11, "val_loss": 0.06}]) == []
    warm = [{"epoch": 0, "train_loss": 5.0}, {"epoch": 1, "train_loss": 5.0}]  # validate=false: no val_loss
    [warning] = warnings_for(warm, "schedule.warmup_epochs=1")  # epoch 0 is the warm-up
    assert warning.startswith("diverging: epoch 1:")
    assert warnings_for(warm, "loss=bce", "optim.lr_scaling=linear", num_classes=1000)[0].endswith(
        "(schedule.warmup_epochs=0 now)")  # bce's chance is ln 2; the scaling fix is not offered twice


def test_a_non_finite_validation_loss_is_named():
    [warning] = warnings_for([{"epoch": 0, "train_loss": 1.0, "val_loss": math.nan}])
    assert "val loss is nan" in warning


@pytest.mark.slow
def test_the_warning_lands_in_result_json(monkeypatch, tmp_path):
    monkeypatch.setattr(divergence, "TRAIN_FACTOR", 0.0)  # any loss counts as diverging: one step shows the path
    assert cli_in_process(monkeypatch, tmp_path, [*TINY, "max_steps_per_epoch=1", "validate=false",
                                                  "schedule.warmup_epochs=0", "checkpoint.save=none"]) == 0
    result = json.loads((find_run_dir(tmp_path) / "result.json").read_text())
    assert result["status"] == "completed"
    [warning] = result["warnings"]
    assert warning.startswith("diverging: epoch 0: train loss") and "lower optim.lr" in warning
