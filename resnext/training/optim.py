"""Optimizer and per-iteration lr schedule from the optim/ and schedule/ config groups."""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional

import torch
from torch import nn
from torch.optim import lr_scheduler

from ..config.errors import ConfigError
from ..runtime.devices import Device

_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def effective_lr(ocfg, global_batch: int, rule: Optional[str] = None) -> float:
    """optim.lr scaled from optim.reference_batch to the global batch (Goyal et al.'s linear rule, or sqrt);
    `rule` asks what another optim.lr_scaling would give (the divergence warning quotes the linear one)."""
    rule = ocfg.lr_scaling if rule is None else rule
    ratio = global_batch / ocfg.reference_batch
    if rule == "linear":
        return ocfg.lr * ratio
    if rule == "sqrt":
        return ocfg.lr * math.sqrt(ratio)
    return ocfg.lr


def param_groups(model: nn.Module, weight_decay: float, no_decay_norm_bias: bool) -> List[Dict[str, Any]]:
    if not no_decay_norm_bias:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": weight_decay}]
    decay, no_decay = [], []
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            (no_decay if isinstance(module, _NORM_TYPES) or name == "bias" else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(ocfg, model: nn.Module, device: Device, lr: float) -> torch.optim.Optimizer:
    """sgd (the device's fused one where it has one), adamw (torch) or lamb (timm, the `[lamb]` extra).

    optim.no_decay_norm_bias applies to all three: the parameter groups carry their own weight decay.
    """
    groups = param_groups(model, ocfg.weight_decay, ocfg.no_decay_norm_bias)
    if ocfg.name == "sgd":
        return device.sgd(groups, lr=lr, momentum=ocfg.momentum, nesterov=ocfg.nesterov,
                          weight_decay=ocfg.weight_decay)
    betas = tuple(ocfg.betas)
    if ocfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=ocfg.eps, weight_decay=ocfg.weight_decay)
    if ocfg.name == "lamb":
        return lamb_class()(groups, lr=lr, betas=betas, eps=ocfg.eps, weight_decay=ocfg.weight_decay)
    raise ConfigError(f"optim.name={ocfg.name!r} is not one of sgd, adamw, lamb")


def lamb_class() -> type:
    """timm's LAMB (You et al. 2019, as ResNet Strikes Back used it); a ConfigError naming the extra without timm."""
    try:
        from timm.optim import Lamb
    except ImportError:
        raise ConfigError("optim.name=lamb needs timm's LAMB: pip install 'resnext[lamb]' (or pip install timm), "
                          "or choose optim=adamw / optim=sgd") from None
    return Lamb


def build_scheduler(scfg, optimizer: torch.optim.Optimizer, epochs: int,
                    steps_per_epoch: int) -> lr_scheduler.LRScheduler:
    """A schedule stepped once per iteration: warm-up then step decay or cosine annealing."""
    total = epochs * steps_per_epoch
    warmup = min(int(round(scfg.warmup_epochs * steps_per_epoch)), total)
    if scfg.name == "step":
        # Decay at every step_epochs counted from the start of training (the PyTorch ImageNet example),
        # also when a warm-up runs first.
        step_iters = max(scfg.step_epochs * steps_per_epoch, 1)
        milestones = [m - warmup for m in range(step_iters, total, step_iters) if m > warmup]
        main: lr_scheduler.LRScheduler = lr_scheduler.MultiStepLR(optimizer, milestones, gamma=scfg.gamma)
    elif scfg.name == "cosine":
        main = lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total - warmup, 1), eta_min=scfg.min_lr)
    else:
        raise ConfigError(f"schedule.name={scfg.name!r} is not one of step, cosine")
    if warmup == 0:
        return main
    warm = lr_scheduler.LinearLR(optimizer, start_factor=scfg.warmup_start_factor, end_factor=1.0,
                                 total_iters=warmup)
    return lr_scheduler.SequentialLR(optimizer, [warm, main], milestones=[warmup])
