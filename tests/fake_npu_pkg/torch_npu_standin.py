"""The parts of a CPU stand-in for torch_npu 2.14.0, each keeping the real package's contract.

Read from the torch_npu 2.14.0 wheel's Python sources (see docs/npu.md for the table):
- optim.NpuFusedSGD (npu_fused_optim_base.py): zero_grad(set_to_none=True) raises ValueError; the first
  step (or unscale) moves every gradient into one combined buffer, which needs float32/float16 and
  contiguous tensors; afterwards the optimizer updates from that buffer, so a gradient that is freed
  or replaced is silently ignored on a card. The stand-in raises instead, so a test sees it.
- npu.amp.GradScaler (grad_scaler.py): `dynamic` argument (False: no overflow check, no skipping), a
  host `_has_overflow` flag set by the check, by the chip's global float status and by other ranks,
  found_inf incremented once more when the flag is up, state_dict with a 'dynamic' key that
  load_state_dict requires.
- torch.npu: set_device('npu:N'), set_compile_mode(jit_compile=...), is_bf16_supported(), RNG calls
  with a device index; hccl registered with torch.distributed (here it runs gloo underneath).
- Ascend's loss kernels take int32 class indices (the CPU kernel wants int64): `int32_cross_entropy`.
No module-level side effects: `torch_npu/__init__.py` (the subprocess package) and tests/fake_npu.py
(in-process, via monkeypatch) install what they need.
"""
from __future__ import annotations

import types
from collections import defaultdict
from typing import Any, Dict, List, Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.amp.grad_scaler import _refresh_per_optimizer_state

FUSED_SET_TO_NONE = "set_to_none is not supported in fused optimizers"


class FakeNpu(types.SimpleNamespace):
    """torch.npu as torch_npu registers it, with `cards` visible cards; records the calls it gets."""

    def __init__(self, cards: int = 8, available: bool = True, bf16: bool = True) -> None:
        super().__init__(cards=cards, available=available, bf16=bf16, calls=[], float_status_overflow=False,
                         amp=types.SimpleNamespace(GradScaler=GradScaler))

    def _record(self, *call: Any) -> None:
        self.calls.append(call)

    def is_available(self) -> bool:
        return self.available

    def device_count(self) -> int:
        return self.cards if self.available else 0

    def set_device(self, device: Any) -> None:
        # torch_npu takes 'npu:N', N or torch.device('npu', N); 'npu' itself is no torch device type here.
        kind, _, number = str(device).partition(":") if isinstance(device, str) else ("npu", "", str(int(device)))
        index = int(number) if kind == "npu" and number.isdigit() else None
        if index is None or not 0 <= index < self.device_count():
            raise RuntimeError(f"set_device({device!r}): no such NPU")
        self._record("set_device", device)

    def set_compile_mode(self, jit_compile: bool = False) -> None:
        self._record("set_compile_mode", jit_compile)

    def is_bf16_supported(self, including_emulation: bool = False) -> bool:
        return self.bf16

    def synchronize(self, device: Any = None) -> None:
        self._record("synchronize", device)

    def manual_seed(self, seed: int) -> None:
        self._record("manual_seed", int(seed))

    # The stand-in's 'npu' tensors live on the CPU: their generator is the CPU one.
    def get_rng_state(self, device: Any = "npu") -> torch.Tensor:
        return torch.get_rng_state()

    def set_rng_state(self, new_state: torch.Tensor, device: Any = "npu") -> None:
        self._record("set_rng_state", device)
        torch.set_rng_state(new_state)


class NpuFusedSGD(torch.optim.SGD):
    """torch_npu.optim.NpuFusedSGD's contract; the update rule is torch.optim.SGD's, as in torch_npu."""

    def __init__(self, params: Any, lr: float, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False) -> None:
        super().__init__(params, lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                         nesterov=nesterov, foreach=False)
        self.is_fused_optimizer = True
        self.is_params_grads_combined = False
        self.grads_all_group_combined: List[List[torch.Tensor]] = []
        self._combined: Dict[int, torch.Tensor] = {}

    def _maybe_init_combined_params_and_grads(self) -> None:
        if self.is_params_grads_combined:
            return
        by_dtype: Dict[torch.dtype, List[torch.Tensor]] = defaultdict(list)
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.dtype not in (torch.float32, torch.float16):
                    raise TypeError(f"Fused optimizer's parameters must be either float32 or float16, but "
                                    f"received {p.dtype}")
                if not (p.is_contiguous() and p.grad.is_contiguous()):
                    raise RuntimeError("Tensors to combine must be contiguous.")
                by_dtype[p.dtype].append(p.grad)
                self._combined[id(p)] = p.grad
        self.grads_all_group_combined = list(by_dtype.values())
        self.is_params_grads_combined = bool(self._combined)

    def _check_grads_still_combined(self) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if id(p) in self._combined and p.grad is not self._combined[id(p)]:
                    raise RuntimeError("NpuFusedSGD stand-in: a gradient was freed or replaced after torch_npu "
                                       "combined it; the real fused optimizer would keep updating from the "
                                       "stale combined buffer")

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        self._maybe_init_combined_params_and_grads()
        self._check_grads_still_combined()
        return super().step(closure)

    @torch.no_grad()
    def zero_grad(self, set_to_none: bool = False) -> None:
        if set_to_none:
            raise ValueError(FUSED_SET_TO_NONE)
        self._maybe_init_combined_params_and_grads()
        super().zero_grad(set_to_none=False)


class GradScaler(torch.amp.GradScaler):
    """torch_npu.npu.amp.GradScaler's contract, on CPU tensors."""

    npu: Optional[FakeNpu] = None  # the torch.npu whose float_status_overflow plays the chip's flag

    def __init__(self, init_scale: float = 2.0 ** 16, growth_factor: float = 2.0, backoff_factor: float = 0.5,
                 growth_interval: int = 2000, dynamic: bool = True, enabled: bool = True) -> None:
        super().__init__("cpu", init_scale=init_scale, growth_factor=growth_factor, backoff_factor=backoff_factor,
                         growth_interval=growth_interval, enabled=enabled)
        self._dynamic = dynamic
        self._has_overflow = False

    def _unscale_grads_(self, optimizer, inv_scale, found_inf, allow_fp16):
        with torch.no_grad():
            if hasattr(optimizer, "is_fused_optimizer"):
                if not optimizer.is_params_grads_combined:
                    optimizer._maybe_init_combined_params_and_grads()
                groups = optimizer.grads_all_group_combined
            else:
                groups = [[p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]]
            for grads in groups:
                if not grads:
                    continue
                if self._dynamic:
                    torch._amp_foreach_non_finite_check_and_unscale_(grads, found_inf, inv_scale)
                    if found_inf.item() > 0:
                        self._has_overflow = True
                else:
                    for grad in grads:
                        grad.mul_(inv_scale)
            # The chip's global float status (Ascend 910A) or another rank's overflow, as synced by
            # _sync_dist_overflow_count: the step is skipped although these gradients look finite.
            if self._dynamic and self.npu is not None and self.npu.float_status_overflow:
                self._has_overflow = True
            if self._has_overflow:
                found_inf.add_(1)
        return {found_inf.device: found_inf}

    def _maybe_opt_step(self, optimizer, optimizer_state, *args, **kwargs):
        if not self._dynamic:
            return optimizer.step(*args, **kwargs)
        if not sum(v.item() for v in optimizer_state["found_inf_per_device"].values()) and not self._has_overflow:
            return optimizer.step(*args, **kwargs)
        return None

    def update(self, new_scale: Any = None) -> None:
        if new_scale is None and not self._dynamic:
            self._per_optimizer_states = defaultdict(_refresh_per_optimizer_state)
        else:
            super().update(new_scale)
        self._has_overflow = False

    def state_dict(self) -> Dict[str, Any]:
        state = super().state_dict()
        if self._enabled:
            state["dynamic"] = self._dynamic
        return state

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        if not self._enabled:
            return
        if len(state_dict) == 0:
            raise RuntimeError("The source state dict is empty, possibly because it was saved from a disabled "
                               "instance of GradScaler.")
        super().load_state_dict(state_dict)
        self._dynamic = state_dict["dynamic"]  # KeyError for a torch GradScaler's state, as in torch_npu


_cpu_cross_entropy = F.cross_entropy


def int32_cross_entropy(input: torch.Tensor, target: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    """F.cross_entropy as Ascend's kernel takes it: int32 class indices are accepted (CPU's wants int64)."""
    if target.dtype == torch.int32:
        target = target.long()
    return _cpu_cross_entropy(input, target, *args, **kwargs)


def _hccl_as_gloo(opts: Any, pg_options: Any) -> Any:
    return dist.ProcessGroupGloo(opts.store, opts.group_rank, opts.group_size, opts.timeout)


def register_hccl() -> None:
    """torch_npu registers 'hccl' with torch.distributed on import; the stand-in's runs gloo on CPU."""
    if "hccl" not in dist.Backend.backend_list:
        dist.Backend.register_backend("hccl", _hccl_as_gloo, extended_api=True, devices=["cpu"])


def torch_release_of_this_torch() -> str:
    """The stand-in's __version__: the torch release it runs with (a matching pair, as installed right)."""
    return torch.__version__.split("+")[0]


def module_parts(npu: FakeNpu, fused_sgd: bool = True) -> Dict[str, Any]:
    """The attributes of the torch_npu module that resnext uses, bound to `npu` (torch.npu)."""
    GradScaler.npu = npu
    return {"npu": npu, "optim": types.SimpleNamespace(**({"NpuFusedSGD": NpuFusedSGD} if fused_sgd else {})),
            "STANDIN_TENSOR_DEVICE": "cpu"}
