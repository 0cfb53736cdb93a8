"""Say so while a run diverges: a train loss far above chance after the warm-up, or a huge validation loss.

Why: a run at lr 0.1 on a small folder went train loss 59.6, then 9.27 (chance, ln 10, is 2.30), val loss
209,262, Acc@1 10.0, and ended `status: completed` without a word; only a NaN stopped a run
(engine.NonFiniteLossError). Each epoch's record is checked once, on rank 0: a finding is logged as a
warning naming the fixes and kept for result.json's `warnings`.

Chance is the loss of a uniform guess: ln(classes) for cross-entropy, ln 2 for binary cross-entropy (its
mean over every class's sigmoid). Label smoothing and MixUp raise a healthy loss, but not to twice chance.
"""
from __future__ import annotations

import logging
import math
from typing import Any, Dict, List, Optional

from .optim import effective_lr

log = logging.getLogger("resnext")

TRAIN_FACTOR = 2.0  # a mean train loss above 2 x chance after the warm-up: the steps make it worse than a guess
VAL_FACTOR = 10.0  # a validation loss above 10 x chance: confidently wrong (a BatchNorm mismatch stays below it)


def chance_loss(loss: str, num_classes: int) -> float:
    return math.log(2.0) if loss == "bce" else math.log(num_classes)


def _fixes(cfg: Any) -> str:
    """The three ways out, with this run's numbers."""
    lr, batch = effective_lr(cfg.optim, cfg.dataset.batch_size), cfg.dataset.batch_size
    scaled = effective_lr(cfg.optim, batch, rule="linear")
    scaling = ("" if cfg.optim.lr_scaling != "none" else
               f", or optim.lr_scaling=linear (the seed's rule: lr x batch / {cfg.optim.reference_batch}, 0.8 at "
               f"batch 2048; {scaled:g} at this batch)")
    return (f"lower optim.lr (lr {lr:g} at global batch {batch}), lengthen the warm-up (schedule.warmup_epochs="
            f"{cfg.schedule.warmup_epochs:g} now){scaling}")


class DivergenceWatch:
    """Checks each epoch's metrics record; `warnings` holds what it found, for result.json."""

    def __init__(self, cfg: Any, num_classes: int) -> None:
        self.chance = chance_loss(cfg.loss, num_classes)
        self.warmup_epochs = cfg.schedule.warmup_epochs
        self.fixes = _fixes(cfg)
        self.warnings: List[str] = []

    def problems(self, record: Dict[str, Any]) -> List[str]:
        found = []
        train = record.get("train_loss")
        if record["epoch"] >= self.warmup_epochs and train is not None and train > TRAIN_FACTOR * self.chance:
            found.append(f"train loss {train:.4g} is above {TRAIN_FACTOR:g} x chance ({self.chance:.2f})")
        val = record.get("val_loss")
        if val is not None and not (math.isfinite(val) and val <= VAL_FACTOR * self.chance):
            found.append(f"val loss {val:.4g} is above {VAL_FACTOR:g} x chance ({self.chance:.2f})"
                         if math.isfinite(val) else f"val loss is {val}")
        return found

    def check(self, record: Dict[str, Any]) -> Optional[str]:
        """The warning for this epoch's record (logged and kept), or None when it looks like learning."""
        found = self.problems(record)
        if not found:
            return None
        warning = f"diverging: epoch {record['epoch']}: {'; '.join(found)}: {self.fixes}"
        log.warning("%s", warning)
        self.warnings.append(warning)
        return warning
