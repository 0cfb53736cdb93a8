"""What a run leaves behind, run as `python -m resnext.train` (in this process, for speed): nothing for a
refusal or a dry run, a failed record with its traceback, per-step TensorBoard scalars, "did you mean"."""
import json
from pathlib import Path

import pytest

from resnext import train
from tests.conftest import TINY, cli_in_process

README = Path(__file__).resolve().parents[1] / "README.md"


def cli(monkeypatch, tmp_path, *args) -> int:
    """`python -m resnext.train <TINY> <args>` in tmp_path; returns the exit code (0 when main returned)."""
    return cli_in_process(monkeypatch, tmp_path, [*TINY, *args])


def run_dirs(tmp_path):
    return [p.parent for p in tmp_path.glob("outputs/*/*/.hydra")]


@pytest.mark.parametrize("args, code", [(["resume=missing.pth.tar"], 2), (["model.arch=vgg"], 2),
                                        (["launch.dry_run=true"], 0)])
def test_refusals_and_dry_runs_leave_no_directory(monkeypatch, tmp_path, capsys, args, code):
    assert cli(monkeypatch, tmp_path, *args) == code
    assert not (tmp_path / "outputs").exists(), list(tmp_path.rglob("*"))
    if code:
        captured = capsys.readouterr()  # a composition refusal (model.arch) is reported on stderr, as Hydra's own
        assert args[0].split("=")[0] in captured.out + captured.err


def test_a_failed_run_records_status_failed_and_its_traceback(monkeypatch, tmp_path):
    def broken(cfg, ctx):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(train, "fit", broken)
    assert cli(monkeypatch, tmp_path) == 1
    [run_dir] = run_dirs(tmp_path)
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "failed" and result["error"] == "RuntimeError: disk on fire"
    log = (run_dir / "train.log").read_text()
    assert "Traceback (most recent call last)" in log and "in broken" in log


def test_a_mistyped_key_gets_a_suggestion(monkeypatch, tmp_path, capsys):
    assert cli(monkeypatch, tmp_path, "optim.lrr=0.2", "epoch=2") == 1
    err = capsys.readouterr().err
    assert "Key 'lrr' not in 'OptimConfig'" in err  # Hydra's own error stays
    assert "optim.lrr: did you mean `optim.lr`?" in err and "epoch: did you mean `epochs`?" in err


def test_a_value_outside_its_choices_gets_one_line_a_suggestion_and_exit_2(monkeypatch, tmp_path, capsys):
    assert cli(monkeypatch, tmp_path, "model.arch=resnext50", "amp.mode=bf61") == 2
    err = capsys.readouterr().err
    assert "Invalid value 'resnext50', expected one of [resnext50_32x4d, " in err  # Hydra's own error stays
    assert "model.arch='resnext50' is not one of resnext50_32x4d, resnext101_32x8d, resnext101_64x4d, resnet50: " \
           "did you mean `resnext50_32x4d`?" in err
    assert "amp.mode='bf61' is not one of off, fp16, bf16, apex: did you mean `bf16`?" in err


def test_per_step_scalars_reach_tensorboard_and_the_epoch_line_names_the_device(monkeypatch, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert cli(monkeypatch, tmp_path, "tensorboard=true", "max_steps_per_epoch=2", "print_freq=1",
               "validate=false", "checkpoint.save=none") == 0
    [run_dir] = run_dirs(tmp_path)
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    for tag in ("step/loss", "step/lr", "step/fps"):
        assert [e.step for e in events.Scalars(tag)] == [1, 2], tag
    assert "[device cpu] Epoch: [0]" in (run_dir / "train.log").read_text()


def test_readme_shows_the_cpu_only_install():
    assert "pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu" in README.read_text()
