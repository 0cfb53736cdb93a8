"""model.weights=torchvision:<NAME>: loads from torch's hub cache offline, downloads when online, refuses clearly."""
from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

import pytest
import torch
import torchvision
from torchvision.models import ResNeXt50_32X4D_Weights

from resnext.models import pretrained
from resnext.config.errors import ConfigError
from resnext.models.build import build_model
from tests.test_data import config

V2_FILE = "resnext50_32x4d-1a0047aa.pth"  # the file name in the V2 weights' url


@pytest.fixture
def offline(monkeypatch, tmp_path) -> Path:
    """An empty TORCH_HOME and no network: any connection attempt fails."""
    def refuse(*args, **kwargs):
        raise OSError("network blocked by the test")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(torch.hub, "urlopen", refuse)
    return tmp_path / "torch_home" / "hub" / "checkpoints"


def _fake_v2_file(directory: Path) -> dict:
    """A state dict of the real architecture under the exact name torchvision's cache uses."""
    torch.manual_seed(7)
    state = torchvision.models.resnext50_32x4d().state_dict()
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(state, directory / V2_FILE)
    return state


def test_the_cache_path_is_torchvisions(offline):
    assert pretrained.cached_file(ResNeXt50_32X4D_Weights.IMAGENET1K_V2) == offline / V2_FILE


def test_cached_weights_load_offline_and_another_head_is_reinitialised(offline):
    saved = _fake_v2_file(offline)
    cfg = config("model.weights=torchvision:IMAGENET1K_V2")
    model = build_model(cfg.model, num_classes=1000)
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())
    ten = build_model(cfg.model, num_classes=10).state_dict()
    assert ten["fc.weight"].shape == (10, 2048)
    assert torch.equal(ten["layer4.2.conv3.weight"], saved["layer4.2.conv3.weight"])


def test_offline_without_the_file_is_refused_naming_file_and_directory(offline):
    with pytest.raises(ConfigError) as err:
        pretrained.ensure_cached("resnext50_32x4d", "torchvision:IMAGENET1K_V2")
    message = str(err.value)
    assert "model.weights=torchvision:IMAGENET1K_V2" in message
    assert V2_FILE in message and str(offline) in message


def test_online_the_file_is_downloaded_into_the_cache(offline, monkeypatch):
    fetched = []

    def fake_download(url, dst, hash_prefix=None, progress=True):
        fetched.append(url)
        torch.save(torchvision.models.resnext50_32x4d().state_dict(), dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    assert pretrained.ensure_cached("resnext50_32x4d", "torchvision:DEFAULT") == offline / V2_FILE
    assert fetched == [ResNeXt50_32X4D_Weights.IMAGENET1K_V2.url] and (offline / V2_FILE).is_file()


def _wnids(count: int) -> list:
    return [f"n{i:08d}" for i in range(count)]


def test_imagenet_category_names_travel_with_the_weights():
    imagenet = config("dataset=imagenet", "model.weights=torchvision:IMAGENET1K_V2")
    names = pretrained.output_class_names(imagenet, _wnids(1000))
    assert names == ResNeXt50_32X4D_Weights.IMAGENET1K_V2.meta["categories"] and names[0] == "tench"
    folder = config("dataset=folder", "model.weights=torchvision:IMAGENET1K_V2")
    assert pretrained.output_class_names(folder, _wnids(3)) == ["n00000000", "n00000001", "n00000002"]


def test_the_pre_launch_file_check_leaves_torchvision_weight_names_to_the_weights_api():
    """train.main checks model.weights files before launch; torchvision:<NAME> is not a file to read there."""
    from resnext.training import resume

    resume.check_input_files(config("model.weights=torchvision:IMAGENET1K_V2"))  # no "no such file" refusal
    with pytest.raises(ConfigError, match="model.weights=/nowhere.pth: no such file"):
        resume.check_input_files(config("model.weights=/nowhere.pth"))
