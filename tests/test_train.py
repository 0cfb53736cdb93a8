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


# A run that learns: 3 epochs of 8 steps (on 2 cores a step costs about the same from batch 16 to 64 here,
# so few large steps are cheapest). Seeds 0, 1 and 2 reached Acc@1 43, 43 and 42% and cut the train loss
# to about a third. The tests below read what this one completed run leaves behind.
LEARNING_RUN = ["dataset.train_size=512", "dataset.val_size=200", "dataset.batch_size=64", "dataset.image_size=32",
                "dataset.val_batch_size=200", "epochs=3", "optim.lr=0.02", "print_freq=100"]


@pytest.fixture(scope="module")
def learned(tmp_path_factory):
    """(run directory, best Acc@1) of LEARNING_RUN, trained once for this module."""
    run_dir = tmp_path_factory.mktemp("learned")
    return run_dir, train_in_process(compose_config(LEARNING_RUN), run_dir)


@pytest.mark.slow
def test_loss_falls_and_accuracy_rises(learned):
    run_dir, best = learned
    records = read_metrics(run_dir)
    assert [r["epoch"] for r in records] == [0, 1, 2]
    assert records[-1]["train_loss"] < 0.5 * records[0]["train_loss"]
    assert records[-1]["acc1"] > records[0]["acc1"] + 10
    assert best >= 35.0  # ten classes: chance is 10% (this run reaches about 43%)


@pytest.mark.slow
def test_seeded_deterministic_runs_are_bit_identical(tmp_path):
    # validate=false: validation changes no weight, and these runs compare weights only.
    overrides = ["deterministic=true", "epochs=1", "max_steps_per_epoch=2", "validate=false"]
    train_in_process(compose_config([*overrides, "seed=3"]), tmp_path / "a")
    train_in_process(compose_config([*overrides, "seed=3"]), tmp_path / "b")
    assert_same_weights(final_weights(tmp_path / "a"), final_weights(tmp_path / "b"))
    other_seed = tmp_path / "c"
    train_in_process(compose_config([*overrides, "seed=4"]), other_seed)
    assert not torch.equal(final_weights(tmp_path / "a")["fc.weight"], final_weights(other_seed)["fc.weight"])


class Interrupted(Exception):
    pass


def interrupt_at_epoch(monkeypatch, stop_epoch: int) -> None:  # tests/test_dali.py stops a DALI run with it
    """Kill the run as the given epoch starts, after the previous epochs' checkpoints were written."""
    real_epoch = trainer.train_one_epoch

    def train_or_stop(*args, **kwargs):
        if args[7] == stop_epoch:  # train_one_epoch's `epoch` argument
            raise Interrupted
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(trainer, "train_one_epoch", train_or_stop)


def run_whole_and_resumed(overrides, tmp_path, resume_epoch: int) -> None:
    """tmp_path/whole: uninterrupted, keeping a copy of its checkpoint after every epoch (checkpoint.keep_last);
    tmp_path/resumed: resumed from the copy taken after `resume_epoch` epochs, the very file a run stopped as that
    epoch starts leaves behind (tests/test_preempt.py stops real processes: SIGTERM, kill -9)."""
    overrides = [*overrides, "checkpoint.keep_last=100"]
    train_in_process(compose_config(overrides), tmp_path / "whole")
    copy = tmp_path / "whole" / checkpoint.EPOCH_COPY.format(epoch=resume_epoch - 1)  # named by the finished epoch
    assert checkpoint.load_checkpoint(copy)["epoch"] == resume_epoch
    train_in_process(compose_config([*overrides, f"resume={copy}"]), tmp_path / "resumed")


# Resume after an epoch boundary ends with the weights, losses and lrs of an uninterrupted run: asserted with
# EMA, MixUp and repeated augmentation on, by tests/test_ema.py::test_resume_is_bit_identical_with_the_ema_too...;
# with random augmentation in DataLoader workers by tests/test_preempt.py.


@pytest.mark.slow
def test_checkpoint_holds_everything_resume_needs_and_loads_weights_only(learned):
    run_dir, _ = learned
    state = torch.load(run_dir / checkpoint.LAST, map_location="cpu", weights_only=True)
    assert {"epoch", "state_dict", "optimizer", "scheduler", "amp", "best_acc1", "rng", "config"} <= state.keys()
    assert state["epoch"] == 3 and state["arch"] == "resnext50_32x4d"
    assert (run_dir / checkpoint.BEST).exists()
    assert not list(run_dir.glob("*.tmp")), "a temporary file was left behind"


@pytest.mark.slow
def test_evaluate_only_reproduces_the_validation_of_the_checkpoint(learned, tmp_path):
    run_dir, _ = learned
    last = read_metrics(run_dir)[-1]
    cfg = compose_config([*LEARNING_RUN, "evaluate=true", f"resume={run_dir / checkpoint.LAST}"])
    acc1 = train_in_process(cfg, tmp_path / "eval")
    assert acc1 == pytest.approx(last["acc1"])
    assert not (tmp_path / "eval" / checkpoint.LAST).exists(), "evaluation must not write checkpoints"

    weights = tmp_path / "weights.pth"
    torch.save(final_weights(run_dir), weights)
    from_weights = train_in_process(compose_config([*LEARNING_RUN, "evaluate=true", f"model.weights={weights}"]),
                                    tmp_path / "w")
    assert from_weights == pytest.approx(last["acc1"])


@pytest.mark.slow
def test_result_and_metrics_records_have_the_documented_fields(learned):
    run_dir, _ = learned
    records = read_metrics(run_dir)
    assert len(records) == 3
    for key in ("epoch", "lr", "train_loss", "acc1", "acc5", "fps", "seconds", "best_acc1"):
        assert key in records[0], key
    assert records[-1]["best_acc1"] == max(r["acc1"] for r in records)
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "completed" and result["best_acc1"] == records[-1]["best_acc1"]


@pytest.mark.slow
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
