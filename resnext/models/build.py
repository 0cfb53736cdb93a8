"""build_model(cfg) -> nn.Module: torchvision's ResNet family, state-dict compatible with torchvision.

The network is torchvision's own (so torchvision checkpoints load strictly); the options only swap the
stem for 32 px inputs and the normalisation layer, both of which torchvision exposes.
"""
from __future__ import annotations

import functools
import logging
from typing import Callable

import torchvision
from torch import nn

from . import pretrained
from .checkpoint import load_checkpoint
from ..config.errors import ConfigError

log = logging.getLogger(__name__)

ARCHS = ("resnext50_32x4d", "resnext101_32x8d", "resnext101_64x4d", "resnet50")


def _norm_layer(norm: str) -> Callable[[int], nn.Module]:
    if norm == "batch":
        return nn.BatchNorm2d
    if norm == "group":
        # 32 groups (Wu & He); every ResNeXt/ResNet width is a multiple of 32.
        return functools.partial(nn.GroupNorm, 32)
    if norm == "frozen":
        return torchvision.ops.FrozenBatchNorm2d
    raise ConfigError(f"model.norm={norm!r} is not one of batch, group, frozen")


def _use_cifar_stem(model: torchvision.models.ResNet) -> None:
    """3x3 stride-1 stem and no max-pool: a 32 px image keeps its resolution into layer1."""
    model.conv1 = nn.Conv2d(3, model.conv1.out_channels, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()


def build_model(mcfg, num_classes: int) -> nn.Module:
    if mcfg.arch not in ARCHS:
        raise ConfigError(f"model.arch={mcfg.arch!r} is not one of {', '.join(ARCHS)}")
    builder = getattr(torchvision.models, mcfg.arch)
    model = builder(
        weights=None,
        num_classes=num_classes,
        zero_init_residual=mcfg.zero_init_residual,
        norm_layer=_norm_layer(mcfg.norm),
    )
    if mcfg.stem == "cifar":
        _use_cifar_stem(model)
    elif mcfg.stem != "imagenet":
        raise ConfigError(f"model.stem={mcfg.stem!r} is not one of imagenet, cifar")
    if mcfg.weights:
        load_weights(model, mcfg.weights, mcfg.arch)
    return model


def _read_state(path: str, arch: str) -> dict:
    if pretrained.is_torchvision(path):
        return pretrained.read_state_dict(arch, path)
    state = load_checkpoint(path, "model.weights")  # one clear line for a missing or unreadable file
    if isinstance(state, dict) and state.get("result") == "ema":
        return state["ema"]["state_dict"]  # a checkpoint whose result is its EMA (model.ema=true)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]  # a checkpoint.pth.tar of ours works too
    return state


def load_weights(model: nn.Module, path: str, arch: str) -> None:
    """Load a torchvision-format state dict (a file or torchvision:<NAME>); a head of another class count is
    left freshly initialised."""
    state = _read_state(path, arch)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    own = model.state_dict()
    head = [k for k in ("fc.weight", "fc.bias") if k in state and state[k].shape != own[k].shape]
    if head:
        log.info("model.weights: the head in %s has %d classes, this run has %d: fc is re-initialised",
                 path, state["fc.weight"].shape[0], own["fc.weight"].shape[0])
        for key in head:
            del state[key]
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # a tensor of the wrong shape outside the head
        raise ConfigError(f"model.weights={path} does not fit model.arch={type(model).__name__}: {err}") from None
    if unexpected or set(missing) - set(head):
        raise ConfigError(f"model.weights={path} does not fit model.arch: missing {missing}, unexpected {unexpected}")
    log.info("loaded weights from %s", path)
