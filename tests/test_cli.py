"""`python -m resnext.train` as a user runs it: a fresh process, any working directory."""
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import TINY, cli_in_process, find_run_dir, refusal_line, run_cli

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(300)
@pytest.mark.slow
def test_a_run_writes_the_documented_outputs_and_only_rank_0_writes_them(tmp_path):
    """Two spawned ranks (device.nprocs=2), so that one real process tree shows both: the run directory's files,
    and that rank 0 alone prints progress and writes them while rank 1 keeps its own log."""
    proc = run_cli([*TINY, "epochs=2", "tensorboard=true", "device=cpu", "distributed=spawn", "device.nprocs=2",
                    "max_steps_per_epoch=2"], cwd=tmp_path)
    run_dir = find_run_dir(tmp_path)
    assert run_dir.parent.parent == tmp_path / "outputs"
    for name in ("train.log", "metrics.jsonl", "curves.png", "checkpoint.pth.tar", "model_best.pth.tar", "result.json",
                 ".hydra/config.yaml", ".hydra/overrides.yaml", "train_rank1.log"):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 2
    log = (run_dir / "train.log").read_text()
    # The lines the ModelZoo scripts parse, once per epoch: rank 0 alone prints them.
    assert log.count("FPS@all") == 2 and log.count("* Acc@1") == 2
    assert proc.stdout.count("FPS@all") == 2 and proc.stdout.count("* Acc@1") == 2
    assert "FPS@all" not in (run_dir / "train_rank1.log").read_text()
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "completed"


# Refusals run the CLI in this process (the same composition, checks and exit code; tests/conftest.py's
# cli_in_process); test_a_missing_dataset_root_is_named_in_the_error is the fresh-process refusal.
@pytest.mark.parametrize("args, line", [
    (["dataset.bogus=1"], "dataset.bogus: Key 'bogus' not in 'SyntheticDatasetConfig'"),
    (["dataset=imagenet", "dataset.root=/data", "dataset.train_size=9"],
     "dataset.train_size: Key 'train_size' not in 'DatasetConfig': a key of dataset=synthetic only"),
    (["epochs=abc"], "epochs=abc: Value 'abc' of type 'str' could not be converted to Integer"),
    (["model=resnext51"], "model=resnext51: model has no option 'resnext51' (options: resnet50, resnext101_32x8d, "
                          "resnext101_64x4d, resnext50_32x4d): did you mean `model=resnext50_32x4d`?"),
    (["experiment=tv_v3"], "experiment=tv_v3: experiment has no option 'tv_v3' (options: finetune, rsb_a3, seed_1p, "
                           "seed_8p, tv_v2): did you mean `experiment=tv_v2`?"),
    (["model.arch=vgg16"], "model.arch='vgg16' is not one of resnext50_32x4d, resnext101_32x8d, resnext101_64x4d, "
                           "resnet50"),
])
def test_hydra_refusals_are_one_line_and_exit_2(tmp_path, monkeypatch, capsys, args, line):
    """README's contract for every mistake on the command line, Hydra's composition errors included."""
    assert refusal_line(monkeypatch, capsys, tmp_path, args) == line
    assert not (tmp_path / "outputs").exists()


def test_a_missing_root_is_refused_before_any_work(tmp_path, monkeypatch, capsys):
    assert cli_in_process(monkeypatch, tmp_path, ["dataset=imagenet"]) == 2
    captured = capsys.readouterr()
    assert "dataset.root" in captured.out + captured.err
    assert not list(tmp_path.glob("outputs/*/*/checkpoint.pth.tar"))


@pytest.mark.slow
def test_a_missing_dataset_root_is_named_in_the_error(tmp_path):
    missing = tmp_path / "no-imagenet-here"
    proc = run_cli(["dataset=imagenet", f"dataset.root={missing}"], cwd=tmp_path, check=False, timeout=120)
    assert proc.returncode == 2
    assert str(missing) in proc.stdout + proc.stderr


@pytest.mark.slow
def test_console_script_is_installed(tmp_path):
    script = Path(sys.executable).parent / "resnext-train"
    assert script.exists(), "pip install should create the resnext-train console script"
    proc = subprocess.run([str(script), "launch.dry_run=true", *TINY], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "world" in proc.stdout.lower()


@pytest.mark.slow
def test_a_built_wheel_ships_the_config_tree_and_runs_from_anywhere(tmp_path):
    """A non-editable install must find conf/ inside the package, not in a source checkout."""
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path / "wheel"), str(REPO)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    wheel = next((tmp_path / "wheel").glob("resnext-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "resnext/conf/config.yaml" in names and "resnext/conf/dataset/imagenet.yaml" in names
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = subprocess.run([sys.executable, "-m", "resnext.train", "launch.dry_run=true", "dataset=imagenet",
                           f"dataset.root={tmp_path}", "--cfg", "job"], cwd=elsewhere, capture_output=True,
                          text=True, timeout=120, env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert "name: imagenet" in proc.stdout
    shutil.rmtree(site)
