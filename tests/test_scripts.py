"""The command line and the ModelZoo scripts end to end, on CPU with tiny synthetic data."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TINY

REPO = Path(__file__).resolve().parents[1]


# The CLI with two spawned ranks, only rank 0 writing: tests/test_cli.py (test_a_run_writes_the_documented_outputs_...).


@pytest.mark.timeout(300)
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
