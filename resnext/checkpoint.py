"""Atomic checkpoints that load with weights_only=True, and the RNG state that makes resume exact."""
from __future__ import annotations

import errno
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict

import numpy as np
import torch

from .config import ConfigError

LAST = "checkpoint.pth.tar"
BEST = "model_best.pth.tar"
EPOCH_COPY = "checkpoint_epoch{epoch:04d}.pth.tar"  # checkpoint.keep_last copies
AUTO = "auto"  # resume=auto


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (disk full, quota, I/O error); the previous one is untouched."""


def save_atomic(obj: Any, path: Path) -> None:
    """Write to a temp file in the same directory, then rename: a crash never leaves half a checkpoint."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        full = " (the disk is full: free space or point the run directory elsewhere)" if err.errno in (
            errno.ENOSPC, errno.EDQUOT) else ""
        kept = f"the previous {path} is intact" if path.exists() else f"no previous {path.name} existed"
        raise CheckpointWriteError(err.errno, f"could not write {path}: {err.strerror or err}{full}; {kept}, "
                                   "resume from it") from err
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(state: Dict[str, Any], run_dir: Path, is_best: bool) -> None:
    save_atomic(state, Path(run_dir) / LAST)
    if is_best:
        # A copy rather than a second serialisation: same bytes, half the time on large models.
        tmp = Path(run_dir) / (BEST + ".tmp")
        shutil.copyfile(Path(run_dir) / LAST, tmp)
        os.replace(tmp, Path(run_dir) / BEST)


def keep_epoch_copy(run_dir: Path, epoch: int, keep_last: int) -> None:
    """checkpoint.keep_last=N: a copy of checkpoint.pth.tar per finished epoch, the newest N kept."""
    if keep_last <= 0:
        return
    run_dir = Path(run_dir)
    target = run_dir / EPOCH_COPY.format(epoch=epoch)
    tmp = target.with_name(target.name + ".tmp")
    shutil.copyfile(run_dir / LAST, tmp)
    os.replace(tmp, target)
    copies = sorted(run_dir.glob(EPOCH_COPY.replace("{epoch:04d}", "[0-9]*")))
    for old in copies[:-keep_last]:
        old.unlink(missing_ok=True)


def resolve_resume(resume: Any, run_dir: Path) -> Any:
    """resume=auto: the run directory's checkpoint.pth.tar if there is one, else None (a fresh start)."""
    if resume != AUTO:
        return resume
    last = Path(run_dir) / LAST
    return str(last) if last.is_file() else None


def remove_stale_temp_files(run_dir: Path) -> None:
    """Checkpoint temp files a killed run left behind (a kill -9 mid-write cannot clean up): full-size copies."""
    for pattern in (LAST + "*.tmp", BEST + ".tmp", "checkpoint_epoch*.tmp"):
        for stale in Path(run_dir).glob(pattern):
            stale.unlink(missing_ok=True)


def check_auto_resume(cfg: Any, run_dir: Path) -> None:
    """evaluate=true with resume=auto and nothing to resume would validate random weights: refuse it."""
    if cfg.resume == AUTO and cfg.evaluate and not cfg.model.weights and resolve_resume(AUTO, run_dir) is None:
        raise ConfigError(f"evaluate=true with resume=auto: {Path(run_dir) / LAST} does not exist; set "
                          "hydra.run.dir to the run to evaluate, or resume=<checkpoint path>")


def load_checkpoint(path: str | Path) -> Dict[str, Any]:
    """Read a checkpoint with weights_only=True: tensors and plain containers only, no code."""
    return torch.load(Path(path), map_location="cpu", weights_only=True)


def capture_rng_state(device_rng: Any = None) -> Dict[str, Any]:
    """Python, NumPy and torch generators as tensors/ints, which weights_only loading accepts."""
    np_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
        "device": device_rng,
    }


def restore_rng_state(state: Dict[str, Any]) -> None:
    random.setstate(_as_python_state(state["python"]))
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"])


def _as_python_state(state: Any) -> Any:
    # torch.save turns random.getstate()'s tuples into lists on some versions; setstate wants tuples.
    version, internal, gauss = state
    return version, tuple(internal), gauss
