"""Files a run starts from: refused before launch with one line naming them; what checkpoints keep on disk;
a resume with more epochs follows the new length's schedule."""
import argparse
import json
import os
import statistics

import pytest
import torch

from resnext.models import checkpoint
from resnext.training import resume
from resnext.models.checkpoint import CheckpointError
from resnext.loggers.metrics import read_metrics
from resnext.models.build import build_model
from resnext.training.optim import build_scheduler
from tests.conftest import compose_config, train_in_process

ONE_STEP = ["max_steps_per_epoch=1"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny run (two epochs of one step): its run directory."""
    run_dir = tmp_path_factory.mktemp("trained")
    train_in_process(compose_config([*ONE_STEP, "epochs=2"]), run_dir)
    return run_dir


def refusal(overrides, run_dir=None) -> str:
    with pytest.raises(CheckpointError) as caught:
        resume.check_input_files(compose_config(overrides), run_dir)
    message = str(caught.value)
    assert "\n" not in message and "weights_only=False" not in message
    return message


def bad_file(tmp_path, kind, trained):
    path = tmp_path / f"{kind}.pth"
    if kind == "garbage":
        path.write_bytes(os.urandom(4096))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        data = (trained / checkpoint.LAST).read_bytes()
        path.write_bytes(data[:len(data) // 3])
    elif kind == "pickled_object":
        torch.save({"args": argparse.Namespace(lr=0.1)}, path)
    return path


@pytest.mark.parametrize("key", ["resume", "model.weights"])
@pytest.mark.parametrize("kind, why", [("garbage", "not a PyTorch checkpoint"), ("empty", "empty"),
                                       ("truncated", "truncated"), ("pickled_object", "pickled Python objects")])
def test_an_unreadable_file_is_refused_naming_it(tmp_path, trained, key, kind, why):
    path = bad_file(tmp_path, kind, trained)
    message = refusal([f"{key}={path}"])
    assert message.startswith(f"{key}={path}: cannot be loaded") and why in message


def test_a_missing_file_is_named(tmp_path):
    assert refusal([f"resume={tmp_path / 'nope.pth.tar'}"]) == f"resume={tmp_path / 'nope.pth.tar'}: no such file"
    assert resume.check_input_files(compose_config(["resume=auto"])) is None  # resolved elsewhere (#10)


def test_resume_auto_is_checked_in_the_run_directory_before_launch(trained):
    """resume=auto (and sweep.resume=true's interrupted jobs) resolve to the run directory's checkpoint."""
    resume.check_input_files(compose_config(["resume=auto"]), trained)  # the run's own checkpoint fits
    assert "amp.mode=off, this run has amp.mode=bf16" in refusal(["resume=auto", "amp=bf16"], trained)


def test_a_checkpoint_of_another_run_kind_is_refused_naming_the_fix(tmp_path, trained):
    last = trained / checkpoint.LAST
    assert "add model=resnext50_32x4d" in refusal([f"resume={last}", "model=resnet50"])
    assert "10-class head, dataset=synthetic has 5 classes" in refusal([f"resume={last}", "dataset.num_classes=5"])
    assert "amp.mode=off, this run has amp.mode=bf16" in refusal([f"resume={last}", "amp=bf16"])
    assert "does not fit model.arch" in refusal([f"resume={last}", "model.stem=cifar"])
    best = trained / checkpoint.BEST
    assert "holds weights only" in refusal([f"resume={best}"])
    resume.check_input_files(compose_config([f"resume={best}", "evaluate=true"]))  # weights are enough here


def test_weights_of_another_architecture_are_refused_before_launch(tmp_path):
    weights = tmp_path / "resnet50.pth"
    torch.save(build_model(compose_config(["model=resnet50"]).model, 10).state_dict(), weights)
    assert "does not fit model.arch=resnext50_32x4d" in refusal([f"model.weights={weights}"])
    resume.check_input_files(compose_config([f"model.weights={weights}", "model=resnet50"]))


def test_model_best_keeps_weights_only_and_files_get_the_umask_mode(trained):
    best = checkpoint.load_checkpoint(trained / checkpoint.BEST)
    assert set(best) == set(checkpoint.BEST_KEYS) - {"ema"}  # this run has no model.ema
    assert best["num_classes"] == 10 and best["arch"] == "resnext50_32x4d"
    umask = os.umask(0)
    os.umask(umask)
    for name in (checkpoint.LAST, checkpoint.BEST):
        assert (trained / name).stat().st_mode & 0o777 == 0o666 & ~umask, name
    # No optimizer: model_best is about half of the last checkpoint (one momentum buffer per weight).
    assert (trained / checkpoint.BEST).stat().st_size < 0.55 * (trained / checkpoint.LAST).stat().st_size


@pytest.mark.parametrize("save, kept", [("last", {checkpoint.LAST}), ("best", {checkpoint.BEST}), ("none", set())])
@pytest.mark.slow
def test_checkpoint_save_chooses_what_is_kept(tmp_path, save, kept):
    train_in_process(compose_config([*ONE_STEP, f"checkpoint.save={save}"]), tmp_path)
    assert {p.name for p in tmp_path.glob("*.pth.tar")} == kept


def test_eval_json_and_result_fps_median(tmp_path, trained):
    acc1 = train_in_process(compose_config(["evaluate=true", f"resume={trained / checkpoint.BEST}"]), tmp_path)
    record = json.loads((tmp_path / "eval.json").read_text())
    assert record["acc1"] == acc1 and record["val_samples"] == 40
    assert record["resume"] == str(trained / checkpoint.BEST)
    result = json.loads((trained / "result.json").read_text())
    assert result["fps"] == statistics.median(r["fps"] for r in read_metrics(trained))
    assert "median" in result["fps_is"]


def expected_lr(cfg, steps_per_epoch, step):
    """The lr a fresh run of cfg's length uses at `step`."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.optim.lr)
    scheduler = build_scheduler(cfg.schedule, optimizer, cfg.epochs, steps_per_epoch)
    for _ in range(step):
        optimizer.step()
        scheduler.step()
    return optimizer.param_groups[0]["lr"]


@pytest.mark.slow
def test_resume_with_more_epochs_follows_the_schedule_of_the_new_length(tmp_path, trained, caplog):
    longer = compose_config([*ONE_STEP, "epochs=4", "validate=false", f"resume={trained / checkpoint.LAST}"])
    train_in_process(longer, tmp_path)
    records = read_metrics(tmp_path)
    assert [r["epoch"] for r in records] == [2, 3]
    # A 2-epoch cosine ends at lr 0 and, stepped on, climbs back; a 4-epoch one is half-way down at step 2.
    assert records[0]["lr"] == pytest.approx(expected_lr(longer, 1, 2))
    assert records[1]["lr"] == pytest.approx(expected_lr(longer, 1, 3))
    assert records[0]["lr"] > records[1]["lr"] > 0
    assert "the schedule is rebuilt for the new length" in caplog.text
    state = checkpoint.load_checkpoint(tmp_path / checkpoint.LAST)
    assert state["schedule"] == {"epochs": 4, "steps_per_epoch": 1}
