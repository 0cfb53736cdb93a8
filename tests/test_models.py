"""The model is torchvision's ResNet family: same parameters, same state dict, same outputs."""
import logging

import pytest
import torch
import torchvision
from omegaconf import OmegaConf
from torch import nn

from resnext.config.errors import ConfigError
from resnext.config.schema import ModelConfig
from resnext.models.build import build_model


def model_cfg(**kwargs):
    return OmegaConf.structured(ModelConfig(**kwargs))


def test_resnext50_has_torchvision_parameter_count():
    model = build_model(model_cfg(), num_classes=1000)
    assert sum(p.numel() for p in model.parameters()) == 25_028_904


@pytest.mark.parametrize("arch", ["resnext101_32x8d", "resnext101_64x4d", "resnet50"])
@pytest.mark.slow
def test_every_arch_matches_torchvision(arch):
    ours = build_model(model_cfg(arch=arch), num_classes=10)
    theirs = getattr(torchvision.models, arch)(num_classes=10)
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == \
           [(k, v.shape) for k, v in theirs.state_dict().items()]


@pytest.mark.slow
def test_state_dict_round_trips_with_torchvision_and_outputs_match():
    torch.manual_seed(0)
    ours = build_model(model_cfg(), num_classes=1000).eval()
    theirs = torchvision.models.resnext50_32x4d().eval()
    theirs.load_state_dict(ours.state_dict(), strict=True)
    back = build_model(model_cfg(), num_classes=1000).eval()
    back.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = ours(x)
        assert torch.equal(theirs(x), expected)
        assert torch.equal(back(x), expected)


def test_cifar_stem_keeps_32px_resolution_into_layer1():
    model = build_model(model_cfg(stem="cifar"), num_classes=10)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, nn.Identity)
    seen = {}
    model.layer1.register_forward_hook(lambda m, i, o: seen.update(shape=o.shape))
    out = model.eval()(torch.randn(1, 3, 32, 32))
    assert seen["shape"][-2:] == (32, 32) and out.shape == (1, 10)


def test_norm_options_swap_the_normalisation_layer():
    group = build_model(model_cfg(norm="group"), num_classes=10)
    frozen = build_model(model_cfg(norm="frozen"), num_classes=10)
    assert isinstance(group.bn1, nn.GroupNorm) and group.bn1.num_groups == 32
    assert isinstance(frozen.bn1, torchvision.ops.FrozenBatchNorm2d)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in group.modules())


def test_zero_init_residual_zeroes_the_last_norm_of_each_block():
    model = build_model(model_cfg(zero_init_residual=True), num_classes=10)
    assert torch.count_nonzero(model.layer1[0].bn3.weight) == 0


def test_weights_with_another_head_reinitialise_fc_and_keep_the_rest(tmp_path, caplog):
    source = torchvision.models.resnext50_32x4d()  # 1000 classes
    path = tmp_path / "imagenet.pth"
    torch.save(source.state_dict(), path)
    with caplog.at_level(logging.INFO):
        model = build_model(model_cfg(weights=str(path)), num_classes=10)
    assert torch.equal(model.conv1.weight, source.conv1.weight)
    assert torch.equal(model.layer4[2].conv2.weight, source.layer4[2].conv2.weight)
    assert model.fc.weight.shape == (10, 2048)
    assert "re-initialised" in caplog.text


def test_weights_of_another_arch_or_missing_file_are_refused(tmp_path):
    path = tmp_path / "r50.pth"
    torch.save(torchvision.models.resnet50().state_dict(), path)
    with pytest.raises(ConfigError, match="does not fit"):
        build_model(model_cfg(weights=str(path)), num_classes=1000)
    with pytest.raises(ConfigError, match="no such file"):
        build_model(model_cfg(weights=str(tmp_path / "absent.pth")), num_classes=10)
