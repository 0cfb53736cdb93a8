"""The device interface: cpu, and npu through stand-ins at the torch_npu boundary; the refusals."""
from __future__ import annotations

import pytest
import torch

from tests import fake_npu
from tests.conftest import compose_config
from resnext.training import launch
from resnext.config.errors import ConfigError
from resnext.runtime.devices import Device, resolve_type


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_npu_activation_sets_card_and_compile_mode(monkeypatch):
    _, npu = fake_npu.install(monkeypatch)
    Device("npu", 3, jit_compile=False).activate()
    assert fake_npu.calls(npu, "set_device") == [("npu:3",)]
    assert fake_npu.calls(npu, "set_compile_mode") == [(False,)]

    npu.calls.clear()
    Device("npu", 0).activate()  # jit_compile=None: torch_npu's default is left alone
    assert fake_npu.calls(npu, "set_compile_mode") == []


def test_npu_rank_pieces(monkeypatch):
    module, npu = fake_npu.install(monkeypatch)
    device = Device("npu", 2)
    assert device.backend == "hccl"
    # The target dtype is the NPU's; the stand-in's 'npu' tensors live on the CPU.
    assert device.torch_device == torch.device("cpu") and device.ddp_device_ids is None
    assert device.prepare_target(torch.tensor([1, 2], dtype=torch.int64)).dtype == torch.int32
    assert Device("cpu").prepare_target(torch.tensor([1])).dtype == torch.int64

    params = [torch.nn.Parameter(torch.zeros(2))]
    assert type(device.sgd(params, lr=0.1, momentum=0.9)) is fake_npu.FakeFusedSGD
    assert isinstance(device.grad_scaler(init_scale=1024.0), fake_npu.FakeNpuScaler)
    device.manual_seed(7)
    device.synchronize()
    assert fake_npu.calls(npu, "manual_seed") == [(7,)] and fake_npu.calls(npu, "synchronize") == [(2,)]

    del module.optim.NpuFusedSGD  # an older torch_npu: plain SGD, same update rule
    assert type(device.sgd(params, lr=0.1)) is torch.optim.SGD


def test_npu_8p_plan_uses_hccl_on_every_card(monkeypatch):
    fake_npu.install(monkeypatch, cards=8)
    plan = launch.plan(compose_config(["device=npu_8p", "dataset.batch_size=64"]))
    assert (plan.mode, plan.world_size, plan.backend, plan.port) == ("spawn", 8, "hccl", 29688)
    assert [str(d) for d in plan.devices] == [f"npu:{i}" for i in range(8)]
    assert all(d.jit_compile is False for d in plan.devices) and plan.per_rank_batch == 8


@pytest.mark.parametrize("setup, expected", [
    (lambda mp: fake_npu.uninstall(mp), ["torch_npu does not import", "pip install torch-npu", "env_npu.sh"]),
    (lambda mp: fake_npu.install(mp, available=False), ["sees no NPU", "CANN", "driver"]),
    (lambda mp: fake_npu.install(mp, cards=2), ["only 2 are visible", "device_list=[0,1]"]),
])
def test_missing_npu_pieces_are_refused_before_start(monkeypatch, setup, expected):
    setup(monkeypatch)
    with pytest.raises(ConfigError) as err:
        launch.plan(compose_config(["device=npu_8p"]))
    for text in expected:
        assert text in str(err.value)


def test_auto_picks_npu_only_with_torch_npu_and_a_card(monkeypatch, no_cuda):
    fake_npu.install(monkeypatch, cards=1)
    assert resolve_type("auto") == "npu"
    fake_npu.install(monkeypatch, available=False)
    assert resolve_type("auto") == "cpu"
    fake_npu.uninstall(monkeypatch)
    assert resolve_type("auto") == "cpu"


def test_cuda_absent_is_refused(no_cuda):
    with pytest.raises(ConfigError, match="no CUDA GPU.*device=cpu"):
        launch.plan(compose_config(["device=cuda_1p"]))


def test_cpu_processes():
    plan = launch.plan(compose_config(["device=cpu", "distributed=spawn", "device.nprocs=2"]))
    assert [str(d) for d in plan.devices] == ["cpu", "cpu"] and plan.backend == "gloo"
    assert plan.port is not None  # a free port, picked before the ranks start
