"""model.ema: an exponential moving average of the weights, as torchvision's classification references keep it.

torch.optim.swa_utils.AveragedModel with an EMA update over parameters and buffers, updated every
`model.ema_steps` steps. The decay is torchvision's adjustment of `model.ema_decay` for the global batch
and the run length (references/classification/train.py):
    alpha = min(1, (1 - ema_decay) * global_batch * ema_steps / epochs),  decay = 1 - alpha
and during the lr warm-up epochs the average restarts at every update (it follows the model).

The averaged network is validated every epoch beside the raw one (`ema_acc1` ... in metrics.jsonl, a
" * EMA Acc@1" log line) and, when on, it is the run's result: model_best.pth.tar follows its Acc@1, as
torchvision publishes its EMA weights. The checkpoint keeps its plain state dict (torchvision keys, loads
strictly into torchvision's model) and the update count, which is all that an exact resume needs.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, Optional

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from .engine import evaluate

log = logging.getLogger("resnext")

# The checkpoint's "result" key: whose Acc@1 chose model_best.pth.tar and best_acc1.
RESULT_EMA, RESULT_MODEL = "ema", "model"


def ema_decay(mcfg, global_batch: int, epochs: int) -> float:
    """torchvision's adjustment: the configured decay holds for its own batch and epoch count."""
    adjust = global_batch * mcfg.ema_steps / epochs
    return 1.0 - min(1.0, (1.0 - mcfg.ema_decay) * adjust)


class ModelEma:
    """The averaged copy of `model` and the hook that updates it after optimizer steps."""

    def __init__(self, model: nn.Module, mcfg, global_batch: int, epochs: int, warmup_epochs: float) -> None:
        self.source = model  # the unwrapped model: DDP and compile wrappers share its parameters
        self.every = mcfg.ema_steps
        self.warmup_epochs = warmup_epochs
        self.decay = ema_decay(mcfg, global_batch, epochs)
        self.averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(self.decay), use_buffers=True)

    @torch.no_grad()
    def after_step(self, epoch: int, step: int) -> None:
        if step % self.every:
            return
        self.averaged.update_parameters(self.source)
        if epoch < self.warmup_epochs:
            # As torchvision: the lr warm-up's early weights are not worth averaging in.
            self.averaged.n_averaged.fill_(0)

    @property
    def module(self) -> nn.Module:
        return self.averaged.module

    def validate(self, loader: Any, criterion: nn.Module, amp: Any, ctx: Any, settings: Any) -> Dict[str, float]:
        """The EMA's validation, keys prefixed ema_ (ema_acc1, ema_acc5, ema_val_loss)."""
        stats = evaluate(self.averaged.module, loader, criterion, amp, ctx, settings, label="EMA ")
        return {f"ema_{key}": value for key, value in stats.items() if key != "val_samples"}

    def state_dict(self) -> Dict[str, Any]:
        return {"state_dict": self.averaged.module.state_dict(), "n_averaged": self.averaged.n_averaged.clone(),
                "decay": self.decay}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.averaged.module.load_state_dict(state["state_dict"])
        self.averaged.n_averaged.copy_(state["n_averaged"])


def build_ema(cfg, model: nn.Module, is_main: bool) -> Optional[ModelEma]:
    if not cfg.model.ema:
        return None
    ema = ModelEma(model, cfg.model, cfg.dataset.batch_size, cfg.epochs, cfg.schedule.warmup_epochs)
    if is_main:
        log.info("model.ema: decay %.6f per update every %d steps (model.ema_decay %g adjusted for global batch "
                 "%d and %d epochs); model_best follows the EMA's Acc@1", ema.decay, ema.every, cfg.model.ema_decay,
                 cfg.dataset.batch_size, cfg.epochs)
    return ema


def result_key(ema: Optional[ModelEma]) -> str:
    """The validation metric that is the run's result: the EMA's when there is one."""
    return "ema_acc1" if ema is not None else "acc1"


def checkpoint_entries(ema: Optional[ModelEma]) -> Dict[str, Any]:
    """What the checkpoint holds for the EMA, and `result`: whose Acc@1 chose best_acc1 and model_best."""
    if ema is None:
        return {"result": RESULT_MODEL}
    return {"result": RESULT_EMA, "ema": ema.state_dict()}


def restore(ema: Optional[ModelEma], state: Dict[str, Any], is_main: bool) -> None:
    """Resume: the EMA from the checkpoint, or a fresh average (with a log line) when it had none."""
    if ema is None:
        return
    if "ema" in state:
        ema.load_state_dict(state["ema"])
    elif is_main:
        log.info("model.ema: the checkpoint has no EMA; the average starts from the resumed weights")
