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


def refusal_lines(capsys):
    captured = capsys.readouterr()
    return (captured.out + captured.err).strip().splitlines()


def test_each_mistyped_key_gets_one_line_with_a_suggestion_and_exit_2(monkeypatch, tmp_path, capsys):
    assert cli(monkeypatch, tmp_path, "optim.lrr=0.2", "epoch=2") == 2
    assert refusal_lines(capsys) == ["optim.lrr: Key 'lrr' not in 'OptimConfig': did you mean `optim.lr`?",
                                     "epoch: not a key of the config: did you mean `epochs`?"]


def test_a_group_choice_is_never_taken_for_a_mistyped_key(monkeypatch, tmp_path, capsys):
    """experiment=tv_v2 picks a preset; it once got "did you mean `logger.mlflow.experiment`?" beside a real typo."""
    assert cli(monkeypatch, tmp_path, "experiment=tv_v2", "optim.lrr=1") == 2
    assert refusal_lines(capsys) == ["optim.lrr: Key 'lrr' not in 'OptimConfig': did you mean `optim.lr`?"]


def test_a_value_outside_its_choices_gets_one_line_a_suggestion_and_exit_2(monkeypatch, tmp_path, capsys):
    assert cli(monkeypatch, tmp_path, "model.arch=resnext50", "amp.mode=bf61") == 2
    assert refusal_lines(capsys) == [
        "model.arch='resnext50' is not one of resnext50_32x4d, resnext101_32x8d, resnext101_64x4d, resnet50: "
        "did you mean `resnext50_32x4d`?",
        "amp.mode='bf61' is not one of off, fp16, bf16, apex: did you mean `bf16`?"]


def test_a_plus_override_cannot_add_a_key_that_nothing_reads(monkeypatch, tmp_path, capsys):
    """Hydra's own fix for `optim.lrr=0.1` is `+optim.lrr=0.1`, which composed and trained at lr 0.1."""
    assert cli(monkeypatch, tmp_path, "+optim.lrr=0.05") == 2
    [line] = [line for line in refusal_lines(capsys) if "lrr" in line]
    assert line.endswith("+optim.lrr=0.05: Key 'lrr' not in 'OptimConfig'; a + override adds a key that nothing "
                         "reads: did you mean `optim.lr`?")
    assert not (tmp_path / "outputs").exists()
    assert cli(monkeypatch, tmp_path, "++optim.lr=0.05", "launch.dry_run=true") == 0  # a key the schema has


@pytest.mark.slow
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


def test_every_readme_table_row_has_as_many_cells_as_its_header():
    """Two rows of the Datasets table once ran their cells together (a `|` was missing)."""
    def cells(row: str) -> int:
        return len(row.replace("\\|", "").strip().strip("|").split("|"))

    broken, header = [], None
    for number, line in enumerate(README.read_text().splitlines(), 1):
        if not line.startswith("|"):
            header = None
        elif header is None:
            header = cells(line)
        elif cells(line) != header:
            broken.append(f"line {number}: {cells(line)} cells, the header has {header}")
    assert not broken, broken


def test_the_default_mlflow_store_is_git_ignored():
    """logger=mlflow without a tracking URI writes MLflow's default, mlflow.db, into the directory it ran from."""
    ignored = (README.parent / ".gitignore").read_text().split()
    assert "mlflow.db" in ignored and "mlruns/" in ignored
