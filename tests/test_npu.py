"""The NPU path against torch_npu 2.14.0's contracts (kept in tests/fake_npu_pkg): fused SGD, its
GradScaler, bf16 by chip, layouts, the torch/torch_npu pair, and the loop itself on the stand-in."""
from __future__ import annotations

import sys

import pytest
import torch
from omegaconf import OmegaConf

from tests import fake_npu
from tests.conftest import BF16_IMAGE_SIZE, compose_config, train_in_process
from resnext.training import launch
from resnext.runtime.amp import MixedPrecision
from resnext.config.schema import AmpConfig
from resnext.config.errors import ConfigError
from resnext.runtime.devices import Device, resolve_type, zero_grad
from resnext.runtime.npu_pairing import pairing_problem

NPU = Device("npu", 0)


def linear_on(device: Device):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3).to(device.torch_device)
    return model, device.sgd(model.parameters(), lr=0.1, momentum=0.9)


def scaled_step(amp: MixedPrecision, model, optimizer, poison: bool = False) -> None:
    with amp.autocast():
        loss = model(torch.randn(8, 4)).float().pow(2).mean()
    if poison:
        loss = loss * float("inf")
    zero_grad(optimizer)
    amp.backward_and_step(loss, optimizer)


def test_fused_sgd_gradients_are_zeroed_in_place_never_freed(monkeypatch):
    fake_npu.install(monkeypatch)
    model, optimizer = linear_on(NPU)
    assert type(optimizer) is fake_npu.FakeFusedSGD
    with pytest.raises(ValueError, match="set_to_none is not supported in fused optimizers"):
        optimizer.zero_grad(set_to_none=True)  # what the loop used to call: torch_npu's own refusal
    for _ in range(3):
        zero_grad(optimizer)
        model(torch.randn(8, 4)).sum().backward()
        optimizer.step()
    grads = [p.grad for p in model.parameters()]
    zero_grad(optimizer)
    assert all(g is p.grad and not g.any() for g, p in zip(grads, model.parameters()))
    plain = torch.optim.SGD(model.parameters(), lr=0.1)
    zero_grad(plain)  # any other optimizer frees them
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("loss_scale", [1024, "dynamic"])
def test_npu_scaler_counts_each_skipped_step_once(monkeypatch, loss_scale):
    fake_npu.install(monkeypatch)
    amp = MixedPrecision(OmegaConf.structured(AmpConfig(mode="fp16", loss_scale=loss_scale)), NPU)
    assert isinstance(amp.scaler, fake_npu.FakeNpuScaler)
    model, optimizer = linear_on(NPU)
    scaled_step(amp, model, optimizer)
    before = [p.detach().clone() for p in model.parameters()]
    scaled_step(amp, model, optimizer, poison=True)  # found_inf reads 2 here: the check plus the flag
    scaled_step(amp, model, optimizer, poison=True)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert amp.skipped_steps() == 2


def test_npu_scaler_skip_on_the_chips_global_overflow_flag_is_counted(monkeypatch):
    _, npu = fake_npu.install(monkeypatch)
    amp = MixedPrecision(OmegaConf.structured(AmpConfig(mode="fp16", loss_scale="dynamic")), NPU)
    model, optimizer = linear_on(NPU)
    scaled_step(amp, model, optimizer)
    before = [p.detach().clone() for p in model.parameters()]
    npu.float_status_overflow = True  # finite gradients, but the chip (or another rank) saw an overflow
    scaled_step(amp, model, optimizer)
    npu.float_status_overflow = False
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert amp.skipped_steps() == 1 and amp.loss_scale() == 2.0 ** 15


def test_npu_scaler_resumes_from_a_torch_gradscaler_checkpoint(monkeypatch):
    fake_npu.install(monkeypatch)
    dynamic = OmegaConf.structured(AmpConfig(mode="fp16", loss_scale="dynamic"))
    saved = MixedPrecision(dynamic, Device("cpu"))  # e.g. a run started on CPU or CUDA
    model, optimizer = linear_on(Device("cpu"))
    scaled_step(saved, model, optimizer, poison=True)
    amp = MixedPrecision(dynamic, NPU)
    amp.load_state_dict(saved.state_dict())  # torch_npu's load_state_dict wants a 'dynamic' key
    assert amp.loss_scale() == 2.0 ** 15


@pytest.mark.parametrize("bf16, refused", [(False, True), (True, False)])
def test_bf16_is_refused_on_a_chip_without_it(monkeypatch, bf16, refused):
    fake_npu.install(monkeypatch, bf16=bf16)
    cfg = compose_config(["device=npu_1p", "amp=bf16"])
    if refused:
        with pytest.raises(ConfigError, match=r"is_bf16_supported\(\) is false.*amp=fp16"):
            launch.plan(cfg)
    else:
        assert launch.plan(cfg).amp.startswith("bf16")


def test_channels_last_is_refused_on_npu(monkeypatch):
    fake_npu.install(monkeypatch)
    with pytest.raises(ConfigError, match="model.channels_last=true on npu.*model.channels_last=false"):
        launch.plan(compose_config(["device=npu_1p", "model.channels_last=true"]))
    # what torch_npu would do at the first step otherwise
    model, _ = linear_on(NPU)
    conv = torch.nn.Conv2d(3, 4, 3).to(memory_format=torch.channels_last)
    conv(torch.randn(1, 3, 5, 5)).sum().backward()
    with pytest.raises(RuntimeError, match="must be contiguous"):
        NPU.sgd(conv.parameters(), lr=0.1).step()


def test_mismatched_torch_npu_pair_is_refused_before_import_with_the_pip_line(monkeypatch, tmp_path):
    fake_npu.uninstall(monkeypatch)  # the import would fail: the pair is judged from metadata first
    fake_npu.write_dist_info(tmp_path, "2.14.0", "torch==2.14.0.*")
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])
    monkeypatch.setattr(torch, "__version__", "2.13.1+cpu")
    expected = ['torch_npu 2.14.0 is built for torch==2.14.0.*', "torch 2.13.1+cpu is installed",
                'pip install "torch==2.14.0.*" --index-url https://download.pytorch.org/whl/cpu']
    with pytest.raises(ConfigError) as err:
        launch.plan(compose_config(["device=npu_8p"]))
    assert all(text in str(err.value) for text in expected)
    dry = launch.plan(compose_config(["device=npu_8p", "launch.dry_run=true"]))
    assert any(all(text in p for text in expected) for p in dry.problems)
    assert "would refuse: device.type=npu: torch_npu 2.14.0" in dry.describe()


def test_torch_npu_without_metadata_is_paired_by_its_version(monkeypatch):
    fake_npu.install(monkeypatch, version="2.13.0.post2")
    pin = r"torch==2\.13\.0\.\*"
    with pytest.raises(ConfigError, match=rf'built for {pin} but torch .* pip install "{pin}"'):
        launch.plan(compose_config(["device=npu_1p"]))


def test_pairing_rule():
    assert pairing_problem("torch==2.14.0.*", "2.14.0", "2.14.0+cpu") is None
    assert pairing_problem("torch==2.14.0.*", "2.14.0", "2.14.0") is None
    assert "2.14.1" in pairing_problem("torch==2.14.0.*", "2.14.0", "2.14.1+cu130")
    assert pairing_problem(None, None, "2.14.1") is None


@pytest.mark.timeout(300)  # bf16 on CPU at 32 px: two minutes on a loaded machine
@pytest.mark.slow
def test_npu_1p_trains_on_the_standin_with_fused_sgd_int32_targets_and_its_card(monkeypatch, tmp_path):
    module, npu = fake_npu.install(monkeypatch)
    seen = []
    loss_fn = torch.nn.functional.cross_entropy
    monkeypatch.setattr(torch.nn.functional, "cross_entropy",
                        lambda input, target, *a, **k: seen.append(target.dtype) or loss_fn(input, target, *a, **k))
    cfg = compose_config(["device=npu_1p", "device.device_list=[3]", "amp=bf16", "max_steps_per_epoch=2",
                          f"dataset.image_size={BF16_IMAGE_SIZE}",
                          "dataset.val_size=8", "dataset.val_batch_size=8", "dataset.pin_memory=false"])
    acc1 = train_in_process(cfg, tmp_path / "run")
    assert 0.0 <= acc1 <= 100.0 and seen and set(seen) == {torch.int32}
    assert fake_npu.calls(npu, "set_device") == [("npu:3",)] and fake_npu.calls(npu, "set_compile_mode") == [(False,)]
    state = torch.load(tmp_path / "run" / "checkpoint.pth.tar", weights_only=True)
    assert state["optimizer"]["state"], "the fused SGD took no step"


def test_auto_says_why_a_mismatched_torch_npu_is_passed_over(monkeypatch, tmp_path, caplog):
    fake_npu.install(monkeypatch)
    fake_npu.write_dist_info(tmp_path, "2.14.0", "torch==2.14.0.*")
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])
    monkeypatch.setattr(torch, "__version__", "2.13.1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_type("auto") == "cpu"
    assert "device=auto does not use the NPU: device.type=npu: torch_npu 2.14.0 is built for" in caplog.text


def test_torch_npu_refusing_a_cuda_torch_is_a_clear_refusal(monkeypatch, tmp_path):
    # torch_npu's _check_device_conflict, as it raises next to a CUDA build of torch
    (tmp_path / "torch_npu").mkdir()
    (tmp_path / "torch_npu" / "__init__.py").write_text(
        'raise RuntimeError("Two accelerators cannot be used at the same time in PyTorch: npu and cuda.\\nmore")\n')
    monkeypatch.delitem(sys.modules, "torch_npu", raising=False)
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])
    with pytest.raises(ConfigError, match="torch_npu refuses this torch .*npu and cuda.*CPU build"):
        launch.plan(compose_config(["device=npu_1p"]))
