"""What a trained model needs outside training, kept in its checkpoint: the model card.

The trainer stores `class_names` and `model_card` (arch, class count, stem, norm, eval preprocessing) in
every checkpoint; export.py copies the card into ONNX metadata, TorchScript extra files and a JSON sidecar;
predict.py rebuilds the eval preprocessing from it. Checkpoints written before the card existed still load:
the card is rebuilt from the config they carry.
"""
from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch import nn
from torchvision.transforms import v2

from ..config.errors import ConfigError
from ..config.eval_size import val_crop, val_resize
from .checkpoint import load_checkpoint

CARD_KEY = "model_card"
# Where issue #11's EMA (torch.optim.swa_utils.AveragedModel) may keep its weights in a checkpoint.
EMA_KEYS = ("ema_state_dict", "model_ema", "ema")


def model_card(cfg: Any, class_names: Sequence[str]) -> Dict[str, Any]:
    """The card for a run's config: eval preprocessing as the dataset's validation pipeline does it."""
    d = cfg.dataset
    crop = val_crop(d)
    # ImageNet/folder: shorter side to val_resize, centre crop. CIFAR and synthetic: the image is the crop.
    resize = val_resize(d) if d.name in ("imagenet", "folder") else crop
    # Plain strings, not the config's Enums: the card goes into checkpoints and JSON for tools without resnext.
    return {"arch": str(cfg.model.arch), "num_classes": len(class_names), "class_names": list(class_names),
            "stem": str(cfg.model.stem), "norm": str(cfg.model.norm), "image_size": int(crop), "resize": int(resize),
            "mean": [float(m) for m in d.mean], "std": [float(s) for s in d.std]}


# What every reader of a card relies on (build_from_card, eval_transform): a damaged file can load as a dict
# with a key or a value garbled, and that is one line naming the file, not a KeyError inside torchvision.
CARD_FIELDS = {"arch": str, "num_classes": int, "stem": str, "norm": str, "image_size": int, "resize": int,
               "mean": list, "std": list}


def checked_card(card: Any, source: str) -> Dict[str, Any]:
    """The card, when it has every field with its type; else a ConfigError naming `source` (key=file)."""
    bad = [k for k, kind in CARD_FIELDS.items() if not isinstance(card, dict) or not isinstance(card.get(k), kind)]
    if bad:
        raise ConfigError(f"{source}: its model card is damaged or not resnext's (missing or wrong: "
                          f"{', '.join(bad)}); export or predict from a checkpoint a resnext run wrote")
    return dict(card)


def card_from_json(text: Any, source: str) -> Dict[str, Any]:
    """A card stored as JSON (an ONNX file's metadata), checked as `checked_card` does."""
    try:
        card = json.loads(text)
    except (TypeError, ValueError):
        card = None
    return checked_card(card, source)


def card_from_checkpoint(state: Dict[str, Any], path: str) -> Dict[str, Any]:
    if CARD_KEY in state:
        return checked_card(state[CARD_KEY], f"checkpoint={path}")
    if "config" not in state:
        raise ConfigError(f"checkpoint={path} has no model card and no config: not a checkpoint written by resnext")
    try:  # a checkpoint from before the card: rebuilt from the config it carries
        cfg = OmegaConf.create(state["config"])
        count = int(state["state_dict"]["fc.weight"].shape[0])
        names = state.get("class_names") or [f"class_{i}" for i in range(count)]
        card = model_card(cfg, names)
    except (LookupError, AttributeError, TypeError, ValueError, OmegaConfBaseException):
        card = None  # a config or head that is not what resnext writes: refused below, naming the file
    return checked_card(card, f"checkpoint={path}")


def eval_transform(card: Dict[str, Any]) -> v2.Compose:
    """PIL image -> normalised CHW float tensor, as the run's validation pipeline."""
    return v2.Compose([
        v2.Resize(card["resize"], antialias=True),
        v2.CenterCrop(card["image_size"]),
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=card["mean"], std=card["std"]),
        v2.ToPureTensor(),
    ])


def read_checkpoint(path: str) -> Dict[str, Any]:
    """A checkpoint dict, or a ConfigError that names the file and what is wrong with it."""
    state = load_checkpoint(path, "checkpoint")  # the one reader: any damaged file is one line naming it
    if not isinstance(state.get("state_dict"), dict):
        raise ConfigError(f"checkpoint={path} has no 'state_dict': not a checkpoint written by resnext")
    return state


def _weights(state: Dict[str, Any], ema: bool, path: str) -> Dict[str, torch.Tensor]:
    if not ema:
        weights = state["state_dict"]
    else:
        found = [k for k in EMA_KEYS if isinstance(state.get(k), dict)]
        if not found:
            raise ConfigError(f"ema=true but checkpoint={path} holds no EMA weights (train with model.ema, "
                              "or drop ema=true)")
        weights = state[found[0]]
    # DDP ("module."), torch.compile ("_orig_mod.") and AveragedModel ("module." + n_averaged) wrappers.
    cleaned = {}
    for key, value in weights.items():
        for prefix in ("module.", "_orig_mod."):
            key = key.removeprefix(prefix)
        if key != "n_averaged":
            cleaned[key] = value
    return cleaned


def build_from_card(card: Dict[str, Any]) -> nn.Module:
    """A freshly initialised model of the card's arch, stem, norm and class count."""
    from .build import build_model

    mcfg = OmegaConf.create({"arch": card["arch"], "zero_init_residual": False, "stem": card["stem"],
                             "norm": card["norm"], "weights": None})
    return build_model(mcfg, card["num_classes"])


def load_model(path: str, ema: bool = False) -> Tuple[nn.Module, Dict[str, Any]]:
    """(model in eval mode on the CPU, card) from a checkpoint; arch and class count come from the card."""
    state = read_checkpoint(path)
    card = card_from_checkpoint(state, path)
    model = build_from_card(card)
    try:
        model.load_state_dict(_weights(state, ema, path))
    except RuntimeError as err:
        raise ConfigError(f"checkpoint={path}: its weights do not fit {card['arch']} with "
                          f"{card['num_classes']} classes: {str(err).splitlines()[0]}") from None
    return model.eval(), card


def card_json(card: Dict[str, Any]) -> str:
    return json.dumps(card, indent=2)


def class_name(card: Dict[str, Any], index: int) -> str:
    names: Optional[List[str]] = card.get("class_names")
    return names[index] if names and index < len(names) else str(index)
