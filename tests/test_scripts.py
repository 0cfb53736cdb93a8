"""The command line and the ModelZoo scripts end to end, on CPU with tiny synthetic data."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TINY

REPO = Path(__file__).resolve().parents[1]


# The CLI with two spawned ranks, only rank 0 writing: tests/test_cli.py (test_a_run_writes_the_documented_outputs_...).


@pytest.mark.timeout(300)
@pytest.mark.slow
def test_performance_script_prints_the_modelzoo_summary(tmp_path):
    out = tmp_path / "output"
    env = {**os.environ, "PYTHON": sys.executable, "RESNEXT_OUTPUT_DIR": str(out), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        ["bash", str(REPO / "scripts/train_performance_1p.sh"), "--data_path=/unused", "--batch_size=16",
         "--device_id=0", "--steps=3", "--", *TINY, "device=cpu", "amp=off", "validate=true"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = dict(line.split(" = ") for line in proc.stdout.splitlines() if " = " in line)
    assert summary["RankSize"] == "1" and summary["BatchSize"] == "16"
    assert float(summary["ActualFPS"]) > 0 and float(summary["TrainingTime"]) > 0
    assert float(summary["ActualLoss"]) > 0 and 0 <= float(summary["TrainAccuracy"]) <= 100
    assert (out / "0" / "train_0.log").exists()
    assert (out / "0" / f"{summary['CaseName']}.log").read_text().count(" = ") == len(summary)
    assert "Epoch: [0][3/3]" in proc.stdout  # stopped after --steps=3 through max_steps_per_epoch


@pytest.mark.slow
@pytest.mark.timeout(200)
def test_every_gpu_benchmark_command_still_composes(tmp_path):
    """scripts/gpu_benchmark.sh waits for a session with a GPU; its dry run catches a renamed key before that."""
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path), "GPU_BENCHMARK_DRY": "1"}
    proc = subprocess.run(["bash", str(REPO / "scripts/gpu_benchmark.sh")], env=env, capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in ("step_bf16", "step_bf16_compile", "loaders", "e2e_torch", "e2e_dali"):
        assert f"{name}: composes" in proc.stdout
    assert not (tmp_path / "summary.md").exists()  # nothing was measured


def test_readme_states_the_digits_recipe_its_script_runs():
    """README's digits comparison names every training override scripts/compare_loaders.py passes."""
    spec = importlib.util.spec_from_file_location("compare_loaders", REPO / "scripts" / "compare_loaders.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    readme = " ".join((REPO / "README.md").read_text().split())  # line breaks inside the sentence do not count
    quiet = ("logger=", "progress_bar=", "print_freq=")  # what the run prints, not what it learns
    missing = [o for o in script.DIGITS_RECIPE if not o.startswith(quiet) and o not in readme]
    assert not missing, missing
