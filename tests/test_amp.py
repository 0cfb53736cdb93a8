"""Mixed precision: fp16 loss scaling (dynamic and static) skips and counts overflowing steps, scaler
state survives a checkpoint, bf16 runs on CPU, apex is used only when it imports."""
from __future__ import annotations

import contextlib
import io
import sys
import types

import pytest
import torch
from omegaconf import OmegaConf

from tests.conftest import compose_config
from resnext.training import launch
from resnext.runtime.amp import MixedPrecision, amp_problem
from resnext.config.schema import AmpConfig
from resnext.config.errors import ConfigError
from resnext.runtime.devices import Device

CPU = Device("cpu")


def amp_cfg(**kwargs):
    return OmegaConf.structured(AmpConfig(**kwargs))


def model_and_optimizer():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    return model, torch.optim.SGD(model.parameters(), lr=0.1)


def step(amp: MixedPrecision, model, optimizer, poison: bool = False) -> None:
    x = torch.randn(8, 4)
    with amp.autocast():
        loss = model(x).float().pow(2).mean()
    if poison:
        loss = loss * float("inf")  # every gradient becomes inf/NaN: the step must be skipped
    optimizer.zero_grad(set_to_none=True)
    amp.backward_and_step(loss, optimizer)


# A static scale never backs off; a dynamic one halves on each of the two overflows.
@pytest.mark.parametrize("loss_scale, final_scale", [(1024, 1024.0), ("dynamic", 2.0 ** 14)])
def test_fp16_skips_and_counts_overflowing_steps(loss_scale, final_scale):
    amp = MixedPrecision(amp_cfg(mode="fp16", loss_scale=loss_scale), CPU)
    model, optimizer = model_and_optimizer()
    assert amp.absorbs_overflow

    step(amp, model, optimizer)
    before = [p.detach().clone() for p in model.parameters()]
    step(amp, model, optimizer, poison=True)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters())), "an overflowing step updated"
    step(amp, model, optimizer, poison=True)
    step(amp, model, optimizer)
    assert not all(torch.equal(a, b) for a, b in zip(before, model.parameters()))

    assert amp.loss_scale() == final_scale
    assert amp.skipped_steps() == 2
    assert amp.skipped_steps() == 0  # counted per call: the loop reads it once per epoch


def test_scaler_state_round_trips_through_a_checkpoint():
    amp = MixedPrecision(amp_cfg(mode="fp16"), CPU)
    model, optimizer = model_and_optimizer()
    step(amp, model, optimizer, poison=True)
    buffer = io.BytesIO()
    torch.save({"amp": amp.state_dict()}, buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)["amp"]  # what checkpoint.load_checkpoint does

    resumed = MixedPrecision(amp_cfg(mode="fp16"), CPU)
    resumed.load_state_dict(state)
    assert resumed.loss_scale() == amp.loss_scale() == 2.0 ** 15

    static = MixedPrecision(amp_cfg(mode="fp16", loss_scale=512), CPU)
    static.load_state_dict(state)  # a static scale is the config's, not the checkpoint's
    assert static.loss_scale() == 512.0
    MixedPrecision(amp_cfg(mode="off"), CPU).load_state_dict(state)  # changing mode on resume is allowed


def test_bf16_autocasts_on_cpu_without_a_scaler():
    amp = MixedPrecision(amp_cfg(mode="bf16"), CPU)
    model, optimizer = model_and_optimizer()
    with amp.autocast():
        assert model(torch.randn(2, 4)).dtype == torch.bfloat16
    step(amp, model, optimizer)
    assert not amp.absorbs_overflow and amp.state_dict() == {} and amp.skipped_steps() == 0


def test_apex_absent_is_refused_with_the_native_alternative(monkeypatch):
    monkeypatch.setitem(sys.modules, "apex", None)
    problem = amp_problem(amp_cfg(mode="apex", opt_level="O2", loss_scale=1024), "cuda")
    assert "does not import" in problem and "amp=fp16" in problem and "pip install apex" in problem
    with pytest.raises(ConfigError, match="cpu use amp=bf16"):
        launch.plan(compose_config(["device=cpu", "amp=apex_o1"]))


class FakeApexAmp(types.ModuleType):
    """apex.amp's surface: initialize, scale_loss (which flags a skipped step on overflow), state."""

    def __init__(self, combine_grad: bool) -> None:
        super().__init__("apex.amp")
        self.calls = {}
        self.overflow = False
        if combine_grad:
            def initialize(model, optimizer, opt_level, loss_scale, combine_grad=False):
                self.calls = dict(opt_level=opt_level, loss_scale=loss_scale, combine_grad=combine_grad)
                optimizer._amp_stash = types.SimpleNamespace(already_patched=False)
                return model, optimizer
        else:
            def initialize(model, optimizer, opt_level, loss_scale):
                return model, optimizer
        self.initialize = initialize

    @contextlib.contextmanager
    def scale_loss(self, loss, optimizer):
        yield loss * 1024.0
        optimizer._amp_stash.already_patched = self.overflow

    def state_dict(self):
        return {"loss_scaler0": {"loss_scale": 1024.0, "unskipped": 3}}

    def load_state_dict(self, state):
        self.loaded = state


def install_apex(monkeypatch, combine_grad: bool = True) -> FakeApexAmp:
    apex_amp = FakeApexAmp(combine_grad)
    package = types.ModuleType("apex")
    package.amp = apex_amp
    monkeypatch.setitem(sys.modules, "apex", package)
    monkeypatch.setitem(sys.modules, "apex.amp", apex_amp)
    return apex_amp


def test_apex_o2_initialises_scales_and_counts_skips(monkeypatch):
    apex_amp = install_apex(monkeypatch)
    acfg = compose_config(["amp=apex_o2"]).amp
    assert amp_problem(acfg, "npu") is None
    amp = MixedPrecision(acfg, CPU)
    model, optimizer = amp.prepare(*model_and_optimizer())
    assert apex_amp.calls == {"opt_level": "O2", "loss_scale": 1024.0, "combine_grad": True}
    optimizer.step = lambda: None  # apex's patched one-shot step is apex's business
    step(amp, model, optimizer)
    apex_amp.overflow = True
    step(amp, model, optimizer)
    assert amp.skipped_steps() == 1 and amp.absorbs_overflow
    assert amp.state_dict()["apex"]["loss_scaler0"]["loss_scale"] == 1024.0
    amp.load_state_dict(amp.state_dict())
    assert apex_amp.loaded["loss_scaler0"]["unskipped"] == 3


def test_combine_grad_needs_ascend_apex(monkeypatch):
    install_apex(monkeypatch, combine_grad=False)  # NVIDIA apex: no combine_grad
    assert "Ascend" in amp_problem(compose_config(["amp=apex_o2"]).amp, "cuda")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_cuda_1p_trains_with_mixed_precision(tmp_path, amp):
    from resnext.loggers.metrics import read_metrics
    from tests.conftest import train_in_process

    if amp == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    train_in_process(compose_config(["device=cuda_1p", f"amp={amp}", "max_steps_per_epoch=3"]), tmp_path)
    record = read_metrics(tmp_path)[-1]
    assert record["val_samples"] == compose_config().dataset.val_size
    assert torch.isfinite(torch.tensor(record["train_loss"])) and record["skipped_steps"] <= 3
    state = torch.load(tmp_path / "checkpoint.pth.tar", weights_only=True)["amp"]
    assert ("scaler" in state) == (amp == "fp16")  # the checkpoint carries the scaler state
