"""The ModelZoo 8p recipe end to end on eight torch_npu stand-in ranks (CPU, hccl played by gloo):
scripts/train_full_8p.sh -> python -m resnext.train experiment=seed_8p device=npu_8p -> 8 spawned ranks,
each importing the stand-in, binding npu:N, training with the fused SGD and int32 targets under DDP."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests import fake_npu
from tests.conftest import TINY

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_train_full_8p_runs_eight_standin_npu_ranks(tmp_path):
    out = tmp_path / "output"
    env = {**fake_npu.subprocess_env(tmp_path), "PYTHON": sys.executable, "RESNEXT_OUTPUT_DIR": str(out)}
    # amp=off: the recipe's fp16 autocast runs ResNeXt-50 convolutions ~20x slower on a CPU than fp32
    # (11 s a step here); fp16 with torch_npu's scaler is covered in-process by tests/test_npu.py.
    overrides = [*TINY, "device=npu_8p", "device.port=null", "amp=off", "dataset.train_size=16",
                 "dataset.val_size=16", "dataset.val_batch_size=16", "dataset.workers=0", "max_steps_per_epoch=1",
                 "fps_warmup_steps=0"]
    proc = subprocess.run(["bash", str(REPO / "scripts/train_full_8p.sh"), "--data_path=/unused", "--batch_size=16",
                           "--epochs=1", "--", *overrides], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=580)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "experiment=seed_8p" in proc.stdout and "device=npu_8p" in proc.stdout
    summary = dict(line.split(" = ") for line in proc.stdout.splitlines() if " = " in line)
    assert summary["RankSize"] == "8" and summary["BatchSize"] == "16" and float(summary["ActualFPS"]) > 0
    assert 0 <= float(summary["TrainAccuracy"]) <= 100
    run_dir, = (out / "8p").glob("run-*")
    assert {f"train_rank{r}.log" for r in range(1, 8)} <= {p.name for p in run_dir.iterdir()}
    assert proc.stdout.count("FPS@all") == 1 and "[device npu:0] Epoch: [0]" in proc.stdout  # rank 0 on npu:0
    state = torch.load(run_dir / "checkpoint.pth.tar", weights_only=True)
    assert state["optimizer"]["state"] and state["config"]["device"]["type"] == "npu"
