"""The batch keys' arithmetic: global batch, per-device micro-batch and accumulation steps (issue 18).

`dataset.batch_size` is the global batch B (or `auto`), `optim.accum_steps` the micro-steps K per optimizer step
(or `auto`); each device then runs micro-batches of B / (world size x K). The schema types both keys `Any`
(OmegaConf has no Union[int, str]), so what a type would refuse is refused here, with one line naming the key.
Arithmetic only: no torch, so the launcher can refuse a bad split before any process starts.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional

from .errors import ConfigError

AUTO = "auto"


def _count(key: str, value: Any) -> Any:
    """`value` as a positive int, or AUTO; anything else is refused."""
    if isinstance(value, str) and value.strip().lower() == AUTO:
        return AUTO
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key}={value!r} must be a positive integer or auto")
    if value < 1:
        raise ConfigError(f"{key}={value} must be at least 1 (or auto)")
    return value


def requested(cfg: Any) -> "tuple[Any, Any]":
    """(dataset.batch_size, optim.accum_steps) as given: each a positive int or AUTO."""
    return _count("dataset.batch_size", cfg.dataset.batch_size), _count("optim.accum_steps", cfg.optim.accum_steps)


def check_batch_keys(cfg: Any) -> None:
    """The checks that need no world size (config.check_config runs them)."""
    batch, accum = requested(cfg)
    if batch == AUTO and accum == AUTO:
        raise ConfigError("dataset.batch_size=auto with optim.accum_steps=auto is ambiguous (any batch fits with "
                          "enough micro-steps): fix one, e.g. dataset.batch_size=2048 with optim.accum_steps=auto")
    d = cfg.dataset
    if AUTO in (batch, accum) and d.max_batch_size < 1:
        which = "dataset.batch_size=auto" if batch == AUTO else "optim.accum_steps=auto"
        raise ConfigError(f"dataset.max_batch_size={d.max_batch_size}: {which} searches per-device batches up to "
                          "this cap, which must be at least 1")
    if d.auto_memory_gib is not None and d.auto_memory_gib <= 0:
        raise ConfigError(f"dataset.auto_memory_gib={d.auto_memory_gib} must be positive "
                          "(null: half the available RAM)")


def _divisors(n: int) -> List[int]:
    return [k for k in range(1, n + 1) if n % k == 0]


def split(batch: int, world_size: int, accum: int) -> int:
    """The per-device micro-batch of global batch `batch` over `world_size` ranks and `accum` micro-steps;
    a batch that does not split exactly is refused with the nearest values that do."""
    unit = world_size * accum
    if batch % unit == 0:
        return batch // unit
    lower, upper = (batch // unit) * unit, (batch // unit + 1) * unit
    near = f"{lower} or {upper}" if lower else f"{upper}"
    how = f"{world_size} rank(s) x optim.accum_steps={accum}"
    fix = f"dataset.batch_size={near} (multiples of {unit} = {how})"
    if batch % world_size == 0 and accum > 1:
        ks = sorted(sorted(_divisors(batch // world_size), key=lambda k: abs(k - accum))[:3])
        fix += f", or optim.accum_steps={' or '.join(map(str, ks))} (dividing {batch // world_size} per rank)"
    if batch < unit:
        raise ConfigError(f"dataset.batch_size={batch} over {how} leaves a micro-batch of 0: use {fix}")
    if accum == 1:
        raise ConfigError(f"dataset.batch_size={batch} is the global batch and must divide by the world size "
                          f"{world_size}: use {fix}")
    raise ConfigError(f"dataset.batch_size={batch} does not split into {how}: use {fix}")


def accum_for(per_rank: int, fits: int) -> Optional[int]:
    """optim.accum_steps=auto: the fewest micro-steps K that divide the per-rank batch into micro-batches of at
    most `fits` samples; None when not even a micro-batch of 1 fits."""
    if fits < 1:
        return None
    return next(k for k in _divisors(per_rank) if per_rank // k <= fits)


@dataclass(frozen=True)
class BatchPlan:
    """What a run trains with: global batch = micro_batch x world_size x accum_steps."""

    global_batch: int
    micro_batch: int  # per device, per forward/backward
    accum_steps: int
    world_size: int
    chosen_by: str = "config"  # config | search | reused (auto_batch.json of this run directory)

    def describe(self) -> str:
        # As the line was before accumulation: scripts/_train_common.sh reads the word after "batch", and the
        # ModelZoo performance summary reads "key = value" lines, so no " = " here.
        return (f"global batch {self.global_batch} ({self.micro_batch} per device x {self.world_size} rank(s) x "
                f"{self.accum_steps} micro-step(s))")


def static_plan(cfg: Any, world_size: int) -> Optional[BatchPlan]:
    """The plan when neither key is auto (None otherwise); refuses a split that does not work."""
    batch, accum = requested(cfg)
    if AUTO in (batch, accum):
        if batch != AUTO and batch % world_size:
            split(batch, world_size, 1)  # refuses with the nearest multiples of the world size
        return None
    return BatchPlan(batch, split(batch, world_size, accum), accum, world_size)
