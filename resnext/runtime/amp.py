"""Autocast and loss scaling behind one object the training loop calls.

off   plain fp32.
bf16  torch.autocast(bfloat16); no scaler (bf16 has fp32's exponent range), so also on CPU.
fp16  torch.autocast(float16) + GradScaler. `loss_scale: dynamic` grows/backs off the scale;
      a number is a static scale. Steps whose gradients overflow are skipped either way.
apex  apex.amp.initialize(opt_level O1/O2, loss_scale, Ascend's combine_grad), when apex imports.

`amp_problem` says, before any process starts, when the chosen mode cannot run here.
"""
from __future__ import annotations

import inspect
import logging
from types import ModuleType
from typing import Any, ContextManager, Dict, Optional

import torch

from .devices import Device, npu_visible

log = logging.getLogger("resnext")

DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16, "apex": None}
DYNAMIC_INIT_SCALE = 2.0 ** 16  # GradScaler's own default


def import_apex_amp() -> ModuleType:
    from apex import amp  # optional dependency, only for amp=apex_*

    return amp


def amp_problem(acfg, kind: str) -> Optional[str]:
    """None when amp mode `acfg.mode` can run on device type `kind` here; else what to do instead."""
    if acfg.mode == "apex":
        if kind == "cpu":
            return f"amp=apex_{acfg.opt_level.lower()} needs a cuda or npu device: on cpu use amp=bf16"
        try:
            apex_amp = import_apex_amp()
        except Exception as err:  # ImportError, or a broken apex build failing while it loads its extensions
            return (f"amp=apex_{acfg.opt_level.lower()} needs apex, which does not import here ({err}). Use "
                    "torch's native mixed precision instead: amp=fp16 (amp.loss_scale=1024 for the seed's "
                    "static scale). apex must be built from source (NVIDIA apex, or Ascend's apex for NPU); "
                    "never `pip install apex`, which is an unrelated package")
        if acfg.combine_grad and "combine_grad" not in inspect.signature(apex_amp.initialize).parameters:
            return ("amp.combine_grad=true needs Ascend's apex; this apex's amp.initialize has no combine_grad: "
                    "set amp.combine_grad=false")
    if acfg.mode == "bf16" and kind == "cuda" and torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        return "amp=bf16: this GPU has no bfloat16 support (pre-Ampere): use amp=fp16"
    # Ascend: bf16 depends on the chip (910B and later have it, 910A/310P do not); asked only when a card
    # is visible, since torch.npu.is_bf16_supported() initialises the device.
    if acfg.mode == "bf16" and kind == "npu" and npu_visible() and not torch.npu.is_bf16_supported():
        return ("amp=bf16: this Ascend NPU has no bfloat16 support (torch.npu.is_bf16_supported() is false): "
                "use amp=fp16")
    return None


def amp_advice(acfg, kind: str) -> Optional[str]:
    """A mode that runs here but badly, and what to use instead; None when there is nothing to say.

    fp16 on a CPU is correct (autocast and GradScaler support it) but CPUs lack fast float16 kernels:
    ResNeXt-50 trained at about 3 img/s on 2 cores where fp32 did 10-15 (issue 19). It is a warning, not
    a refusal: experiment=seed_1p sets amp=fp16 for the cards it was written for, and a short CPU run of
    that preset (device=auto on a machine without them) should still run.
    """
    if acfg.mode == "fp16" and kind == "cpu":
        return ("amp=fp16 on cpu trains slower than fp32 (CPUs have no fast float16 kernels: ResNeXt-50 ran at "
                "about 3 img/s against 10-15 in fp32 on 2 cores); use amp=bf16 (CPU autocast's fast type) or amp=off")
    return None


def describe_amp(acfg) -> str:
    if acfg.mode == "fp16":
        return f"fp16 autocast + GradScaler (loss scale {acfg.loss_scale})"
    if acfg.mode == "apex":
        return f"apex {acfg.opt_level} (loss scale {acfg.loss_scale}, combine_grad {acfg.combine_grad})"
    return {"off": "off (fp32)", "bf16": "bf16 autocast, no loss scaling"}[acfg.mode]


class MixedPrecision:
    """What the loop calls: prepare, autocast, backward_and_step (or backward per micro-batch, then step),
    skipped_steps, state_dict."""

    def __init__(self, acfg, device: Device) -> None:
        self.mode = str(acfg.mode)  # a plain string (not the config's Enum): it goes into checkpoints
        self.device = device
        self.dtype: Optional[torch.dtype] = DTYPES[acfg.mode]
        dynamic = acfg.loss_scale == "dynamic"
        self.static_scale: Optional[float] = None if dynamic or acfg.mode not in ("fp16", "apex") \
            else float(acfg.loss_scale)
        self.scaler: Optional[torch.amp.GradScaler] = None
        if self.mode == "fp16":
            self.scaler = device.grad_scaler(init_scale=self.static_scale or DYNAMIC_INIT_SCALE)
        self._acfg = acfg
        self._apex: Optional[ModuleType] = None
        # Skipped steps since the last skipped_steps() call: a device tensor for fp16 (no host sync per
        # step), a host int for apex (apex decides on the host anyway).
        self._skipped_dev: Optional[torch.Tensor] = None
        self._skipped_host = 0

    @property
    def absorbs_overflow(self) -> bool:
        """True when a loss scaler skips non-finite steps, so a NaN loss is not fatal."""
        return self.mode in ("fp16", "apex")

    def prepare(self, model, optimizer):
        if self.mode != "apex":
            return model, optimizer
        self._apex = import_apex_amp()
        kwargs: Dict[str, Any] = {"opt_level": self._acfg.opt_level,
                                  "loss_scale": self.static_scale if self.static_scale is not None else "dynamic"}
        if self._acfg.combine_grad:
            kwargs["combine_grad"] = True  # Ascend apex only; amp_problem refused it for other builds
        return self._apex.initialize(model, optimizer, **kwargs)

    def autocast(self) -> ContextManager:
        return self.device.autocast(self.dtype)

    def backward_and_step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        self.backward(loss, optimizer)
        self.step(optimizer)

    def backward(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer, final: bool = True) -> None:
        """One (micro-)batch's backward; gradients add up until step(). `final`: the last micro-batch before
        the step (apex unscales then, and only then: its documented delay_unscale for accumulation)."""
        if self.scaler is not None:
            self.scaler.scale(loss).backward()  # every micro-batch with the same scale; step() unscales the sum
        elif self._apex is not None:
            delay = {} if final else {"delay_unscale": True}  # apex's default (False) for a plain step
            with self._apex.scale_loss(loss, optimizer, **delay) as scaled_loss:
                scaled_loss.backward()
        else:
            loss.backward()

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """The optimizer step on the gradients backward() accumulated; the loss scale moves once per step."""
        if self.scaler is not None:
            self._scaled_step(optimizer)
        elif self._apex is not None:
            self._apex_step(optimizer)
        else:
            optimizer.step()

    def _scaled_step(self, optimizer: torch.optim.Optimizer) -> None:
        scaler = self.scaler
        scaler.step(optimizer)  # skips optimizer.step() when the unscaled gradients hold inf/NaN
        self._count_skip(scaler, optimizer)
        if self.static_scale is None:
            scaler.update()
        else:
            # GradScaler has no "never change the scale" mode (growth_factor must exceed 1, backoff be
            # below 1; torch_npu's dynamic=False also stops skipping overflowing steps); resetting it each
            # step keeps it static while step() still skips overflows.
            scaler.update(new_scale=self.static_scale)

    def _count_skip(self, scaler: torch.amp.GradScaler, optimizer: torch.optim.Optimizer) -> None:
        """Add 1 when step() just skipped: read between step() and update(), which clears the evidence."""
        if hasattr(scaler, "_has_overflow"):
            # torch_npu's GradScaler skips on its host flag, which also carries overflow on other ranks
            # and on the chip's global float status (it already synced to set it), and it adds 1 more to
            # found_inf then, so found_inf can read 2 for one skipped step.
            self._skipped_host += int(bool(scaler._has_overflow))
            return
        # torch's GradScaler: found_inf per device is a 0/1 tensor; summing on the device keeps the count
        # free of host syncs.
        found = torch.stack([f.float() for f in scaler._found_inf_per_device(optimizer).values()]).amax()
        self._skipped_dev = found if self._skipped_dev is None else self._skipped_dev + found

    def _apex_step(self, optimizer: torch.optim.Optimizer) -> None:
        # On overflow apex swaps in a one-shot step() that skips the update and flags the optimizer.
        stash = getattr(optimizer, "_amp_stash", None)
        self._skipped_host += int(bool(getattr(stash, "already_patched", False)))
        optimizer.step()

    def skipped_steps(self) -> int:
        """Steps skipped for overflow since the previous call; the loop calls it once per epoch."""
        skipped = self._skipped_host
        if self._skipped_dev is not None:
            skipped += int(self._skipped_dev.item())
        self._skipped_dev, self._skipped_host = None, 0
        return skipped

    def loss_scale(self) -> Optional[float]:
        return None if self.scaler is None else self.scaler.get_scale()

    def state_dict(self) -> Dict[str, Any]:
        if self.scaler is not None:
            return {"mode": self.mode, "scaler": self.scaler.state_dict()}
        if self._apex is not None:
            return {"mode": self.mode, "apex": self._apex.state_dict()}
        return {}

    def _scaler_state(self, saved: Dict[str, Any]) -> Dict[str, Any]:
        """torch_npu's GradScaler.load_state_dict requires its own 'dynamic' key, which a checkpoint of torch's
        GradScaler (a CUDA or CPU run) lacks; torch's ignores the key. Only dynamic scales are restored."""
        if hasattr(self.scaler, "_has_overflow") and "dynamic" not in saved:
            return {**saved, "dynamic": True}
        return saved

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        saved = state.get("mode", "off") if state else "off"
        if saved != self.mode:
            if state:
                log.info("checkpoint was trained with amp mode %s: its loss-scaler state is not used with amp %s",
                         saved, self.mode)
            return
        if self.scaler is not None and self.static_scale is None:
            # A static scale comes from the config, not the checkpoint: only a dynamic one is restored.
            self.scaler.load_state_dict(self._scaler_state(state["scaler"]))
        elif self._apex is not None:
            self._apex.load_state_dict(state["apex"])
