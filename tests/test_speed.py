"""Fast defaults (speed.py): channels_last and TF32 resolve per device; torch.compile trains with DDP and amp."""
from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

from resnext.checkpoint import load_checkpoint
from resnext.metrics import read_metrics
from resnext.models import build_model
from resnext.speed import apply_tf32, use_channels_last, use_tf32
from tests.conftest import compose_config, train_in_process


@pytest.mark.parametrize("setting, device, expected", [
    (None, "cuda", True), (None, "cpu", False), (None, "npu", False), (True, "cpu", True), (False, "cuda", False),
])
def test_channels_last_null_means_on_for_cuda_only(setting, device, expected):
    assert use_channels_last(OmegaConf.create({"channels_last": setting}), device) is expected


def test_the_composed_default_is_null_and_tf32_only_ever_applies_to_cuda():
    cfg = compose_config()
    assert cfg.model.channels_last is None and cfg.amp.tf32 is None
    assert use_tf32(cfg.amp, "cuda") is True and use_tf32(cfg.amp, "cpu") is False
    assert use_tf32(OmegaConf.create({"tf32": False}), "cuda") is False
    before = torch.backends.cuda.matmul.allow_tf32
    assert apply_tf32(OmegaConf.create({"tf32": True}), "cpu") is False
    assert torch.backends.cuda.matmul.allow_tf32 == before  # a CPU run leaves the CUDA switches alone


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_compiled_model_trains_under_ddp_with_bf16_autocast(tmp_path, monkeypatch):
    """model.compile=true around DDP (2 CPU ranks over gloo) with amp=bf16: finite loss, a loadable checkpoint."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    cfg = compose_config(["device=cpu", "distributed=spawn", "device.nprocs=2", "model.compile=true", "amp=bf16",
                          "model=resnet50", "model.norm=group", "max_steps_per_epoch=3", "fps_warmup_steps=1",
                          "dataset.train_size=48", "validate=false"])
    train_in_process(cfg, tmp_path)
    record = read_metrics(tmp_path)[-1]
    assert math.isfinite(record["train_loss"]) and record["fps"] > 0
    saved = load_checkpoint(tmp_path / "checkpoint.pth.tar")["state_dict"]
    # The compiled wrapper is not what is saved: the keys are torchvision's, so the weights load anywhere.
    assert saved.keys() == build_model(cfg.model, 10).state_dict().keys()
