"""model.weights=torchvision:<NAME>: pretrained weights by name through torchvision's weights API.

Any member of the arch's weights enum (IMAGENET1K_V1, IMAGENET1K_V2, DEFAULT) is read from torch's hub
cache (<TORCH_HOME>/hub/checkpoints/<file>, exactly where torchvision itself looks), so a machine that
has the file needs no network. `ensure_cached` runs once in train.main before any rank starts: it
downloads into the cache when the file is missing, and refuses with the file name and directory when
that fails (offline) or when the cached file does not load (a damaged copy). The weights' ImageNet
category names travel with them (`class_names`).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Optional
from urllib.parse import urlparse

import torch
import torchvision

from ..config.errors import ConfigError
from .checkpoint import load_checkpoint

log = logging.getLogger("resnext")

PREFIX = "torchvision:"


def is_torchvision(spec: Optional[str]) -> bool:
    return bool(spec) and spec.startswith(PREFIX)


def resolve(arch: str, spec: str) -> Any:
    """The weights enum member that `spec` (torchvision:<NAME>) names for `arch`; no download."""
    enum = torchvision.models.get_model_weights(arch)
    name = spec[len(PREFIX):]
    try:
        return enum[name]
    except KeyError:
        names = ", ".join(w.name for w in enum)
        raise ConfigError(f"model.weights={spec}: {enum.__name__} has no {name!r}; choose one of {names} or "
                          f"DEFAULT (model.arch={arch})") from None


def cached_file(weights: Any) -> Path:
    """Where torch.hub keeps this file: <torch.hub.get_dir()>/checkpoints/<basename of the url>."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name


def ensure_cached(arch: str, spec: str) -> Path:
    """The cached file, downloaded first when missing and checked to load (mapped, not read: cheap); a
    ConfigError naming file and directory offline or when the file is damaged."""
    file = _download_if_missing(arch, spec)
    _load(file, spec, mmap=True)
    return file


def _download_if_missing(arch: str, spec: str) -> Path:
    weights = resolve(arch, spec)
    file = cached_file(weights)
    if file.is_file():
        return file
    log.info("model.weights=%s: downloading %s into %s", spec, weights.url, file.parent)
    try:
        torch.hub.load_state_dict_from_url(weights.url, progress=False, check_hash=True)
    except (OSError, RuntimeError) as err:  # URLError/HTTPError are OSErrors; a bad hash is a RuntimeError
        raise ConfigError(f"model.weights={spec}: {file.name} is not in {file.parent} and downloading {weights.url} "
                          f"failed ({err}). Offline: copy {file.name} into {file.parent} (TORCH_HOME moves it), "
                          "or give model.weights a path to the file") from None
    return file


def _load(file: Path, spec: str, mmap: bool = False) -> Dict[str, torch.Tensor]:
    """The cached file through the one checkpoint reader: a damaged copy is one line naming it and the cure."""
    return load_checkpoint(file, "model.weights", mmap=mmap,
                           fix=f"It is torch's cached copy of {spec}: delete it to download it again, or copy a "
                               f"good {file.name} into {file.parent}")


def read_state_dict(arch: str, spec: str) -> Dict[str, torch.Tensor]:
    return _load(_download_if_missing(arch, spec), spec)  # read in full here: no need to map it first


def output_class_names(cfg, names: List[str]) -> List[str]:
    """The names of the model's outputs, for checkpoints and predictions.

    ImageNet trained from torchvision weights: the weights' categories ("tench", ...), which follow the
    same sorted-wnid order as the class folders; otherwise the dataset's own class names (`names`).
    """
    names = list(names)
    if is_torchvision(cfg.model.weights) and cfg.dataset.name == "imagenet":
        categories = resolve(cfg.model.arch, cfg.model.weights).meta.get("categories") or []
        if len(categories) == len(names):
            return list(categories)
    return names
