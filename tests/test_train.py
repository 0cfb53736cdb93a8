"""End to end on CPU: the real conf/ tree, the real ResNeXt-50, tiny synthetic data."""
import json

import pytest
import torch

from resnext.models import checkpoint
from resnext.training import trainer
from resnext.loggers.metrics import read_metrics
from tests.conftest import compose_config, train_in_process


def final_weights(run_dir):
    return checkpoint.load_checkpoint(run_dir / checkpoint.LAST)["state_dict"]


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


@pytest.mark.slow
def test_loss_falls_and_accuracy_rises(tmp_path):
    cfg = compose_config(["dataset.train_size=512", "dataset.val_size=200", "dataset.batch_size=32",
                          "dataset.image_size=32", "epochs=4", "optim.lr=0.02", "print_freq=100"])
    best = train_in_process(cfg, tmp_path)
    records = read_metrics(tmp_path)
    assert [r["epoch"] for r in records] == [0, 1, 2, 3]
    assert records[-1]["train_loss"] < 0.5 * records[0]["train_loss"]
    assert records[-1]["acc1"] > records[0]["acc1"] + 10
    assert best >= 35.0  # ten classes: chance is 10% (this run reaches about 50%)


def test_seeded_deterministic_runs_are_bit_identical(tmp_path):
    overrides = ["deterministic=true", "seed=3", "epochs=1", "max_steps_per_epoch=2"]
    train_in_process(compose_config(overrides), tmp_path / "a")
    train_in_process(compose_config(overrides), tmp_path / "b")
    assert_same_weights(final_weights(tmp_path / "a"), final_weights(tmp_path / "b"))
    other_seed = tmp_path / "c"
    train_in_process(compose_config(["deterministic=true", "seed=4", "epochs=1", "max_steps_per_epoch=2"]),
                     other_seed)
    assert not torch.equal(final_weights(tmp_path / "a")["fc.weight"], final_weights(other_seed)["fc.weight"])


class Interrupted(Exception):
    pass


def interrupt_at_epoch(monkeypatch, stop_epoch: int) -> None:
    """Kill the run as the given epoch starts, after the previous epochs' checkpoints were written."""
    real_epoch = trainer.train_one_epoch

    def train_or_stop(*args, **kwargs):
        if args[7] == stop_epoch:  # train_one_epoch's `epoch` argument
            raise Interrupted
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(trainer, "train_one_epoch", train_or_stop)


def run_whole_stopped_and_resumed(overrides, tmp_path, monkeypatch, stop_epoch: int) -> None:
    """tmp_path/whole: uninterrupted; tmp_path/stopped: killed as stop_epoch starts; tmp_path/resumed: from it."""
    train_in_process(compose_config(overrides), tmp_path / "whole")
    with monkeypatch.context() as patch:
        interrupt_at_epoch(patch, stop_epoch)
        with pytest.raises(Interrupted):
            train_in_process(compose_config(overrides), tmp_path / "stopped")
    resumed = compose_config([*overrides, f"resume={tmp_path / 'stopped' / checkpoint.LAST}"])
    train_in_process(resumed, tmp_path / "resumed")


def test_resume_after_epoch_2_ends_with_the_weights_of_an_uninterrupted_run(tmp_path, monkeypatch):
    overrides = ["deterministic=true", "epochs=4", "schedule.warmup_epochs=1", "optim.nesterov=true",
                 "dataset.train_size=32"]
    train_in_process(compose_config(overrides), tmp_path / "whole")

    with monkeypatch.context() as patch:
        interrupt_at_epoch(patch, 2)
        with pytest.raises(Interrupted):
            train_in_process(compose_config(overrides), tmp_path / "stopped")
    assert checkpoint.load_checkpoint(tmp_path / "stopped" / checkpoint.LAST)["epoch"] == 2

    resumed = compose_config([*overrides, f"resume={tmp_path / 'stopped' / checkpoint.LAST}"])
    train_in_process(resumed, tmp_path / "resumed")
    assert_same_weights(final_weights(tmp_path / "whole"), final_weights(tmp_path / "resumed"))
    whole, rest = read_metrics(tmp_path / "whole"), read_metrics(tmp_path / "resumed")
    assert [r["epoch"] for r in rest] == [2, 3]
    assert [r["train_loss"] for r in rest] == [r["train_loss"] for r in whole[2:]]
    assert [r["lr"] for r in rest] == [r["lr"] for r in whole[2:]]


def test_checkpoint_holds_everything_resume_needs_and_loads_weights_only(tmp_path):
    train_in_process(compose_config(["epochs=1"]), tmp_path)
    state = torch.load(tmp_path / checkpoint.LAST, map_location="cpu", weights_only=True)
    assert {"epoch", "state_dict", "optimizer", "scheduler", "amp", "best_acc1", "rng", "config"} <= state.keys()
    assert state["epoch"] == 1 and state["arch"] == "resnext50_32x4d"
    assert (tmp_path / checkpoint.BEST).exists()
    assert not list(tmp_path.glob("*.tmp")), "a temporary file was left behind"


def test_evaluate_only_reproduces_the_validation_of_the_checkpoint(tmp_path):
    train_in_process(compose_config(["epochs=1"]), tmp_path / "train")
    last = read_metrics(tmp_path / "train")[-1]
    cfg = compose_config(["evaluate=true", f"resume={tmp_path / 'train' / checkpoint.LAST}"])
    acc1 = train_in_process(cfg, tmp_path / "eval")
    assert acc1 == pytest.approx(last["acc1"])
    assert not (tmp_path / "eval" / checkpoint.LAST).exists(), "evaluation must not write checkpoints"

    weights = tmp_path / "weights.pth"
    torch.save(final_weights(tmp_path / "train"), weights)
    from_weights = train_in_process(compose_config(["evaluate=true", f"model.weights={weights}"]), tmp_path / "w")
    assert from_weights == pytest.approx(last["acc1"])


def test_result_and_metrics_records_have_the_documented_fields(tmp_path):
    train_in_process(compose_config(["epochs=2"]), tmp_path)
    records = read_metrics(tmp_path)
    assert len(records) == 2
    for key in ("epoch", "lr", "train_loss", "acc1", "acc5", "fps", "seconds", "best_acc1"):
        assert key in records[0], key
    assert records[1]["best_acc1"] == max(r["acc1"] for r in records)
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["status"] == "completed" and result["best_acc1"] == records[1]["best_acc1"]


def test_resume_is_exact_with_random_augmentation_in_worker_processes(tmp_path, monkeypatch):
    """RandomResizedCrop + flip in a DataLoader worker: the restored RNG must replay the same crops."""
    from tests.test_data import write_image_tree, write_noise_images

    root = write_image_tree(tmp_path / "data", per_class=6)
    write_noise_images(root)  # noise, so that each crop and flip gives a different input
    overrides = ["dataset=folder", f"dataset.root={root}", "dataset.image_size=16", "dataset.val_resize=18",
                 "dataset.workers=1", "dataset.batch_size=6", "dataset.val_batch_size=6", "deterministic=true",
                 "epochs=3", "model.norm=group", "dataset.loader=torch"]
    train_in_process(compose_config(overrides), tmp_path / "whole")

    with monkeypatch.context() as patch:
        interrupt_at_epoch(patch, 1)
        with pytest.raises(Interrupted):
            train_in_process(compose_config(overrides), tmp_path / "stopped")
    resumed = compose_config([*overrides, f"resume={tmp_path / 'stopped' / checkpoint.LAST}"])
    train_in_process(resumed, tmp_path / "resumed")
    assert_same_weights(final_weights(tmp_path / "whole"), final_weights(tmp_path / "resumed"))


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    from resnext.training.engine import NonFiniteLossError

    real_epoch = trainer.train_one_epoch

    def poison_epoch_1(*args, **kwargs):
        if args[7] == 1:
            with torch.no_grad():
                args[0].fc.weight.fill_(float("nan"))  # every logit, so every loss, becomes NaN
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(trainer, "train_one_epoch", poison_epoch_1)
    with pytest.raises(NonFiniteLossError, match="loss is nan at epoch 1"):
        train_in_process(compose_config(["epochs=2"]), tmp_path)
    state = checkpoint.load_checkpoint(tmp_path / checkpoint.LAST)
    assert state["epoch"] == 1, "the checkpoint of epoch 0 must stay as it was"
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point())
    assert len(read_metrics(tmp_path)) == 1
