"""A sweep's probe cache: one measurement per combination that sets the step's cost, shared by its jobs.

An lr sweep changes nothing the probe measures, so its jobs reuse the first job's steps and only make their
own predictions (epochs, steps per epoch, resume point differ). The key holds what sets a step's time and
memory: batch, image size, model, amp (the issue's combination) and, so a reuse is never wrong, the device,
world, loader and layout. Files: <sweep dir>/.probe_cache/<key>.json, one flock'ed lock file beside each, so
parallel jobs of the same combination wait for the first one's measurement instead of measuring it again.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

from omegaconf import DictConfig

CACHE_DIR = ".probe_cache"


def key_of(cfg: DictConfig) -> Dict[str, Any]:
    d, m = cfg.dataset, cfg.model
    return {"batch_size": d.batch_size, "image_size": d.image_size, "arch": str(m.arch), "amp": str(cfg.amp.mode),
            "device": str(cfg.device.type), "nprocs": cfg.device.nprocs,
            "device_list": list(cfg.device.device_list or []), "distributed": str(cfg.distributed.mode),
            "dataset": str(d.name), "loader": str(d.loader), "workers": d.workers, "augment": str(d.augment),
            "channels_last": m.channels_last, "compile": m.compile, "ema": m.ema, "probe_steps": cfg.launch.probe_steps}


def path_for(cfg: DictConfig, sweep_dir: Path) -> Path:
    digest = hashlib.sha256(json.dumps(key_of(cfg), sort_keys=True, default=str).encode()).hexdigest()[:16]
    return Path(sweep_dir) / CACHE_DIR / f"{digest}.json"


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        try:
            import fcntl

            fcntl.flock(lock, fcntl.LOCK_EX)
        except (ImportError, OSError):  # no flock (Windows, some network mounts): jobs may probe twice
            pass
        yield  # closing the file releases the lock


def read(path: Path) -> Optional[Dict[str, Any]]:
    try:
        return json.loads(path.read_text())["measured"]
    except (OSError, ValueError, KeyError):
        return None


def write(path: Path, measured: Dict[str, Any], cfg: Optional[DictConfig] = None) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"key": key_of(cfg) if cfg is not None else None, "measured": measured}, indent=2))
    os.replace(tmp, path)
