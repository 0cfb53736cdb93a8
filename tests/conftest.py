"""Shared test helpers: compose the real conf/ tree, shrink the run, run the CLI in a subprocess."""
from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import List, Sequence

import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from resnext.config.schema import register_configs

register_configs()


def installed(module: str) -> bool:
    """Whether `module` (dotted names too: nvidia.dali, hydra_plugins.X) can be imported, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package is absent
        return False


def needs(*modules: str, extra: str) -> pytest.MarkDecorator:
    """Skip where an optional extra is absent, naming the pip line that installs it: only `.[test]` is required,
    so `pip install -e ".[test]"` alone passes (scripts/compat.sh tests that way); CI installs every extra."""
    missing = [m for m in modules if not installed(m)]
    return pytest.mark.skipif(bool(missing), reason=f"{', '.join(missing)} not installed: pip install -e \".[{extra}]\"")


# A run that takes seconds on a 2-core CPU: the real ResNeXt-50, 16 px synthetic images, few samples.
TINY = [
    "dataset=synthetic",
    "dataset.image_size=16",
    "dataset.train_size=64",
    "dataset.val_size=40",
    "dataset.batch_size=16",
    "dataset.val_batch_size=20",
    "epochs=1",
    "print_freq=2",
    "fps_warmup_steps=1",
    "logger=none",
    "progress_bar=false",
]


# Image size for CPU runs under amp=bf16. At 16 px, layer3 leaves 1x1 maps and the weight gradient of layer4.0.conv2
# (grouped 3x3, stride 2) in bf16 is sometimes garbage on torch 2.14.1's CPU kernels (up to 1e30, then NaN losses;
# 2 of 8 identical backward passes on 2026-12-03, also with one thread); at 32 px none of 8 was.
BF16_IMAGE_SIZE = 32


# Keys only dataset=synthetic has (its schema, SyntheticDatasetConfig): TINY drops them for other datasets.
SYNTHETIC_ONLY = ("dataset.train_size", "dataset.val_size")


def tiny_for(overrides: Sequence[str]) -> List[str]:
    """TINY, less the synthetic-only keys when the overrides choose another dataset (or an experiment)."""
    other = any(o.startswith(("dataset=", "experiment=")) and o != "dataset=synthetic" for o in overrides)
    return [o for o in TINY if not (other and o.split("=")[0] in SYNTHETIC_ONLY)]


def compose_config(overrides: Sequence[str] = (), tiny: bool = True) -> DictConfig:
    """The config `python -m resnext.train <overrides>` would run, composed from the real conf/ tree."""
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="resnext.conf", version_base="1.3"):
        return compose(config_name="config", overrides=[*(tiny_for(overrides) if tiny else []), *overrides])


def run_cli(args: Sequence[str], cwd: Path, timeout: float = 300, env_extra: dict | None = None,
            check: bool = True) -> subprocess.CompletedProcess:
    """`python -m resnext.train <args>` in a fresh process, as a user would run it."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env_extra or {})}
    proc = subprocess.run([sys.executable, "-m", "resnext.train", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def cli_in_process(monkeypatch: pytest.MonkeyPatch, cwd: Path, args: Sequence[str], command: str = "train") -> int:
    """`python -m resnext.<command> <args>` in cwd, run by this process (the same Hydra composition, checks and exit
    code, without the seconds a fresh interpreter spends importing torch); returns the exit code."""
    module = importlib.import_module(f"resnext.{command}")

    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", [f"resnext.{command}", *args])
    try:
        module.cli()
    except SystemExit as stop:
        return stop.code
    return 0


def refusal_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, cwd: Path, args: Sequence[str],
                 command: str = "train") -> str:
    """Run the CLI in-process, assert it refused (exit 2) in exactly one line, and return that line (a refusal
    is logged once a run in this process has set up logging, so the line may start with the log's prefix)."""
    code = cli_in_process(monkeypatch, cwd, args, command)
    captured = capsys.readouterr()
    lines = (captured.out + captured.err).strip().splitlines()
    assert code == 2 and len(lines) == 1, f"exit {code}, {len(lines)} lines:\n" + "\n".join(lines)
    return lines[0]


def find_run_dir(cwd: Path) -> Path:
    """The single Hydra run directory under cwd/outputs."""
    runs = [p.parent for p in (cwd / "outputs").glob("*/*/.hydra")]
    assert len(runs) == 1, f"expected one run directory, found {runs}"
    return runs[0]


@pytest.fixture(autouse=True)
def _small_threads() -> None:
    # Two cores, and pytest's own process is one of the workers: keep intra-op threads modest.
    torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def tiny_overrides() -> List[str]:
    return list(TINY)


def train_in_process(cfg: DictConfig, run_dir: Path) -> float:
    """What train.main does after validation, without Hydra: plan the ranks, run them, return best Acc@1."""
    from resnext.training import launch
    from resnext.training.trainer import fit

    run_dir.mkdir(parents=True, exist_ok=True)
    return launch.run(cfg, launch.plan(cfg), run_dir, fit)
