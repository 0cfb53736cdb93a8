"""The files a run starts from (resume=<checkpoint>, model.weights=<state dict>): checked, then restored.

`check_input_files` runs in train.main before any rank starts, so a missing, unreadable or unfitting
file costs a second and one line naming it, not a traceback after the model was built. `restore` is
what each rank does with a checkpoint that passed.

A resumed run whose length differs from the checkpoint's (`epochs`, or the steps per epoch) does not
continue the old schedule, which past its end would climb again: the schedule is rebuilt for the new
length and fast-forwarded to the resumed step, so the rest of the run follows the curve a run of the new
length would have followed from the start (a cosine resumed at its end with more epochs jumps back up
to that curve's value at the resumed step, then anneals to min_lr over the new end). The log says so.
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ..models import checkpoint
from ..models.checkpoint import AUTO, CheckpointError
from ..models.build import build_model
from ..models.pretrained import is_torchvision

log = logging.getLogger("resnext")

TRAINING_KEYS = ("optimizer", "scheduler", "epoch", "rng")


def model_weights(state: Dict[str, Any]) -> Dict[str, torch.Tensor]:
    """The state dict inside one of our checkpoints, or the file itself (torchvision format); no DDP prefix."""
    inner = state.get("state_dict")
    weights = inner if isinstance(inner, dict) else state
    return {k.removeprefix("module."): v for k, v in weights.items()}


def _head_classes(weights: Dict[str, torch.Tensor]) -> Optional[int]:
    head = weights.get("fc.weight")
    return int(head.shape[0]) if isinstance(head, torch.Tensor) and head.dim() == 2 else None


def _check_fits(weights: Dict[str, Any], cfg: DictConfig, key: str, path: str, num_classes: int,
                allow_other_head: bool) -> None:
    """Compare names and shapes with the model this run builds (on the meta device: no memory, no time)."""
    with torch.device("meta"):
        expected = build_model(OmegaConf.merge(cfg.model, {"weights": None}), num_classes).state_dict()
    skip = {"fc.weight", "fc.bias"} if allow_other_head else set()
    # BatchNorm's step counter: FrozenBatchNorm2d drops it on load, and torchvision's files lack it.
    counters = {k for k in set(expected) | set(weights) if k.endswith("num_batches_tracked")}
    missing = sorted(set(expected) - set(weights) - skip - counters)
    unexpected = sorted(set(weights) - set(expected) - counters)
    wrong = sorted(k for k in set(expected) & set(weights) - skip
                   if not isinstance(weights[k], torch.Tensor) or weights[k].shape != expected[k].shape)
    if missing or unexpected or wrong:
        found = ", ".join(f"{what} {names[:3]}{' ...' if len(names) > 3 else ''}"
                          for what, names in (("missing", missing), ("unexpected", unexpected),
                                              ("other shape", wrong)) if names)
        raise CheckpointError(f"{key}={path} does not fit model.arch={cfg.model.arch} (model.stem="
                              f"{cfg.model.stem}, model.norm={cfg.model.norm}): {found}. Use the model options "
                              "the file was trained with")


def check_resume_state(state: Dict[str, Any], cfg: DictConfig, path: str, num_classes: Optional[int]) -> None:
    """Refuse a checkpoint that cannot continue (or, with evaluate=true, be evaluated by) this run."""
    if not isinstance(state.get("state_dict"), dict):
        raise CheckpointError(f"resume={path} is not a checkpoint of this trainer (no state_dict): to start "
                              f"from a torchvision state dict use model.weights={path}")
    saved_cfg = state.get("config") or {}
    arch = state.get("arch")
    if arch and arch != cfg.model.arch:
        raise CheckpointError(f"resume={path} holds a {arch}, this run builds model.arch={cfg.model.arch}: "
                              f"add model={arch}")
    weights = model_weights(state)
    classes = _head_classes(weights)
    if num_classes is not None and classes is not None and classes != num_classes:
        raise CheckpointError(f"resume={path} has a {classes}-class head, dataset={cfg.dataset.name} has "
                              f"{num_classes} classes: resume on the dataset it was trained on, or fine-tune "
                              f"from it with model.weights={path} (the head is re-initialised)")
    _check_fits(weights, cfg, "resume", path, classes or num_classes or 1000, allow_other_head=False)
    if cfg.evaluate:
        return  # weights are all evaluation needs: model_best.pth.tar is fine
    if any(key not in state for key in TRAINING_KEYS):
        raise CheckpointError(f"resume={path} holds weights only (model_best.pth.tar keeps no optimizer or "
                              f"schedule): continue from checkpoint.pth.tar, evaluate it with evaluate=true, or "
                              f"fine-tune from it with model.weights={path}")
    saved_amp = (saved_cfg.get("amp") or {}).get("mode", "off")
    if saved_amp != cfg.amp.mode:
        raise CheckpointError(f"resume={path} was trained with amp.mode={saved_amp}, this run has amp.mode="
                              f"{cfg.amp.mode}: resume with the same amp option, or start a new run from its "
                              f"weights with model.weights={path}")


def check_input_files(cfg: DictConfig, run_dir: Optional[Path] = None) -> None:
    """Before launch: resume and model.weights exist, load (weights only) and fit this run's model.

    resume=auto (also what sweep.resume=true sets for an interrupted job) is checked when `run_dir` is
    given: the checkpoint it resolves to there may be damaged too, and is better refused here than in
    every rank.
    """
    path = checkpoint.resolve_resume(cfg.resume, run_dir) if run_dir is not None else cfg.resume
    if path is not None and path != AUTO:
        state = checkpoint.load_checkpoint(path, "resume", mmap=True)
        check_resume_state(state, cfg, path, cfg.dataset.num_classes)
    # torchvision:<NAME> weights are checked and fetched by pretrained.ensure_cached, not read as a file here.
    if cfg.model.weights and not is_torchvision(cfg.model.weights):
        weights = model_weights(checkpoint.load_checkpoint(cfg.model.weights, "model.weights", mmap=True))
        _check_fits(weights, cfg, "model.weights", cfg.model.weights, _head_classes(weights) or 1000,
                    allow_other_head=True)


def describe_start(path: str, state: Dict[str, Any], evaluate: bool) -> str:
    """The log line for a run that starts from a checkpoint: where in training it was written, and its best
    Acc@1 when it has one (-1 in the file: no epoch was validated before it was written)."""
    epoch, step, best = state.get("epoch", 0), state.get("step", 0), state.get("best_acc1", -1.0)
    best_text = f" (best Acc@1 {best:.3f})" if best is not None and best >= 0 else " (not validated yet)"
    if evaluate:  # model_best or checkpoint: `epoch` is the next epoch, so the epochs it was trained for
        trained = f"{epoch} epoch(s)" + (f" and {step} step(s)" if step else "")
        return f"evaluating {path}: the weights after {trained} of training{best_text}"
    return f"resumed from {path} at epoch {epoch} step {step}{best_text}"


def schedule_length(cfg: DictConfig, steps_per_epoch: int) -> Dict[str, int]:
    """What the schedule was built for; saved in each checkpoint so resume can tell a longer run."""
    return {"epochs": int(cfg.epochs), "steps_per_epoch": int(steps_per_epoch)}


def restore(state: Dict[str, Any], path: str, cfg: DictConfig, model: nn.Module, optimizer: Any, scheduler: Any,
            amp: Any, num_classes: int, steps_per_epoch: int,
            make_scheduler: Callable[[], Any]) -> Tuple[int, float, Any]:
    """Load a checked checkpoint into this rank's objects: (start epoch, best Acc@1, the scheduler to use)."""
    check_resume_state(state, cfg, path, num_classes)
    model.load_state_dict(model_weights(state))
    if cfg.evaluate:
        return 0, state.get("best_acc1", -1.0), scheduler
    optimizer.load_state_dict(state["optimizer"])
    amp.load_state_dict(state["amp"])
    checkpoint.restore_rng_state(state["rng"])
    start_epoch = state["epoch"]
    saved = state.get("schedule") or {"epochs": (state.get("config") or {}).get("epochs", cfg.epochs),
                                      "steps_per_epoch": steps_per_epoch}
    now = schedule_length(cfg, steps_per_epoch)
    if saved == now:
        scheduler.load_state_dict(state["scheduler"])
        return start_epoch, state["best_acc1"], scheduler
    return start_epoch, state["best_acc1"], _rebuilt_schedule(optimizer, make_scheduler, saved, now, start_epoch)


def _rebuilt_schedule(optimizer: Any, make_scheduler: Callable[[], Any], saved: Dict[str, int], now: Dict[str, int],
                      start_epoch: int) -> Any:
    lr_before = optimizer.param_groups[0]["lr"]
    for group in optimizer.param_groups:  # the checkpoint left its schedule's lr here: start from the base lr
        group["lr"] = group.get("initial_lr", group["lr"])
    scheduler = make_scheduler()
    with warnings.catch_warnings():  # "scheduler.step() before optimizer.step()": intended while fast-forwarding
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(start_epoch * now["steps_per_epoch"]):
            scheduler.step()
    log.warning("resume: the checkpoint's schedule was built for %d epochs of %d steps, this run has %d of %d: "
                "the schedule is rebuilt for the new length and continues from epoch %d; lr %.5g -> %.5g",
                saved["epochs"], saved["steps_per_epoch"], now["epochs"], now["steps_per_epoch"], start_epoch,
                lr_before, optimizer.param_groups[0]["lr"])
    return scheduler
