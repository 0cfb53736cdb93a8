"""The command line and the ModelZoo scripts end to end, on CPU with tiny synthetic data."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TINY, find_run_dir, run_cli

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(300)
def test_spawn_cli_trains_two_ranks_and_only_rank_0_writes(tmp_path):
    proc = run_cli([*TINY, "device=cpu", "distributed=spawn", "device.nprocs=2", "max_steps_per_epoch=2"],
                   cwd=tmp_path)
    run_dir = find_run_dir(tmp_path)
    assert proc.stdout.count("FPS@all") == 1 and proc.stdout.count("* Acc@1") == 1  # rank 0 alone prints
    assert {"checkpoint.pth.tar", "metrics.jsonl", "result.json", "train.log", "train_rank1.log"} <= \
        {p.name for p in run_dir.iterdir()}
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 1
    assert json.loads((run_dir / "result.json").read_text())["status"] == "completed"
    assert "FPS@all" not in (run_dir / "train_rank1.log").read_text()


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
