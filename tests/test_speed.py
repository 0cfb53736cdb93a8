"""Fast defaults (speed.py): channels_last and TF32 resolve per device; torch.compile trains with DDP and amp."""
from __future__ import annotations

import math
import os

import pytest
import torch
from omegaconf import OmegaConf

from resnext.models.checkpoint import load_checkpoint
from resnext.loggers.metrics import read_metrics
from resnext.models.build import build_model
from resnext.runtime.speed import apply_tf32, use_channels_last, use_tf32
from tests.conftest import BF16_IMAGE_SIZE, compose_config, train_in_process


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
def test_compiled_model_trains_with_bf16_autocast_and_saves_plain_weights(tmp_path, monkeypatch):
    """model.compile=true + amp=bf16 through the trainer; torch.compile's aot_eager backend traces the same
    graphs (dynamo + AOT autograd under autocast) without inductor's C++ code generation, which takes
    minutes on 2 cores."""
    real_compile = torch.compile
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda model, **kw: compiled.append(model) or real_compile(
        model, backend="aot_eager", **kw))
    # 32 px, not TINY's 16: see BF16_IMAGE_SIZE in tests/conftest.py.
    cfg = compose_config(["model.compile=true", "amp=bf16", "max_steps_per_epoch=2", "validate=false",
                          f"dataset.image_size={BF16_IMAGE_SIZE}"])
    train_in_process(cfg, tmp_path)
    assert compiled, "model.compile=true did not call torch.compile"
    record = read_metrics(tmp_path)[-1]
    assert math.isfinite(record["train_loss"]) and record["fps"] > 0
    saved = load_checkpoint(tmp_path / "checkpoint.pth.tar")["state_dict"]
    # The compiled wrapper is not what is saved: the keys are torchvision's, so the weights load anywhere.
    assert saved.keys() == build_model(cfg.model, 10).state_dict().keys()


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.skipif(os.environ.get("RESNEXT_COMPILE_TESTS") != "1",
                    reason="inductor compiles ResNet-50 for minutes per rank on 2 cores (passed in 747 s, "
                           "6.4 CPU-minutes, on the shared 2-core machine on 2026-11-28); "
                           "set RESNEXT_COMPILE_TESTS=1 to run it")
def test_compiled_model_trains_under_ddp_with_bf16_autocast(tmp_path, monkeypatch):
    """model.compile=true around DDP (2 CPU ranks over gloo) with amp=bf16, real inductor: finite loss."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    cfg = compose_config(["device=cpu", "distributed=spawn", "device.nprocs=2", "model.compile=true", "amp=bf16",
                          "model=resnet50", "model.norm=group", "max_steps_per_epoch=3", "fps_warmup_steps=1",
                          "dataset.train_size=48", "validate=false"])
    train_in_process(cfg, tmp_path)
    record = read_metrics(tmp_path)[-1]
    assert math.isfinite(record["train_loss"]) and record["fps"] > 0
