"""The closed sets of values that config keys take (amp.mode, model.arch ...), as Enums.

A schema field typed with one of these (resnext/config/schema.py) makes Hydra itself refuse any other value
at composition, naming the key and listing the valid ones, before any work starts. The members are
also plain strings: every name equals its value, because OmegaConf turns a YAML or command-line
string into a member by name; `str` is mixed in, so the code keeps comparing with plain strings
(`cfg.amp.mode == "fp16"`) and keying dicts with them; and `str()`/`format()` give the bare value,
so f-strings, log lines, CSVs and logger params read `fp16`, not `AmpMode.fp16`. `enum.StrEnum`
would do the last part by itself but needs Python 3.11 (python_requires is >=3.9).

Pickle is the one place a member stays a member: `plain_values` turns them into plain strings for
files that `torch.load(weights_only=True)` must read back (checkpoints).
"""
from __future__ import annotations

from enum import Enum
from typing import Any, List


class Choice(str, Enum):
    """A config value from a closed set; it prints, formats and compares as its plain string."""

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:  # Python < 3.12 formats a mixed-in Enum as Class.member
        return format(self.value, spec)

    @classmethod
    def values(cls) -> List[str]:
        return [member.value for member in cls]


class Arch(Choice):  # model.arch: a torchvision ResNet-family builder
    resnext50_32x4d = "resnext50_32x4d"
    resnext101_32x8d = "resnext101_32x8d"
    resnext101_64x4d = "resnext101_64x4d"
    resnet50 = "resnet50"


class Stem(Choice):  # model.stem
    imagenet = "imagenet"
    cifar = "cifar"


class Norm(Choice):  # model.norm
    batch = "batch"
    group = "group"
    frozen = "frozen"


class DatasetName(Choice):  # dataset.name: what the data is (each conf/dataset option sets it)
    synthetic = "synthetic"
    cifar10 = "cifar10"
    imagenet = "imagenet"
    folder = "folder"


class Augment(Choice):  # dataset.augment
    imagenet = "imagenet"
    light = "light"
    none = "none"


class Interpolation(Choice):  # dataset.interpolation
    bilinear = "bilinear"
    bicubic = "bicubic"
    nearest = "nearest"


class Loader(Choice):  # dataset.loader
    auto = "auto"
    torch = "torch"
    dali = "dali"


class BadImages(Choice):  # dataset.bad_images
    error = "error"
    skip = "skip"


class DeviceType(Choice):  # device.type
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    npu = "npu"


class AmpMode(Choice):  # amp.mode
    off = "off"
    fp16 = "fp16"
    bf16 = "bf16"
    apex = "apex"


class DistributedMode(Choice):  # distributed.mode
    none = "none"
    spawn = "spawn"
    env = "env"


class CheckpointSave(Choice):  # checkpoint.save
    all = "all"
    last = "last"
    best = "best"
    none = "none"


class OptimName(Choice):  # optim.name
    sgd = "sgd"
    adamw = "adamw"
    lamb = "lamb"


class LrScaling(Choice):  # optim.lr_scaling
    none = "none"
    linear = "linear"
    sqrt = "sqrt"


class ScheduleName(Choice):  # schedule.name
    step = "step"
    cosine = "cosine"


class Loss(Choice):  # loss
    ce = "ce"
    bce = "bce"


def plain_values(obj: Any) -> Any:
    """obj with every Choice member inside dicts, lists and tuples replaced by its plain string: pickled, a
    member needs resnext importable, and torch.load(weights_only=True) refuses it. A container with no
    member in it is returned as it is (a state dict keeps its OrderedDict type and _metadata)."""
    if isinstance(obj, Choice):
        return obj.value
    if isinstance(obj, dict):
        items = [(plain_values(key), plain_values(value)) for key, value in obj.items()]
        if all(new[0] is old[0] and new[1] is old[1] for new, old in zip(items, obj.items())):
            return obj
        return dict(items)
    if isinstance(obj, (list, tuple)):
        elements = [plain_values(item) for item in obj]
        if all(new is old for new, old in zip(elements, obj)):
            return obj
        return list(elements) if isinstance(obj, list) else tuple(elements)
    return obj
