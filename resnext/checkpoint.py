"""Atomic checkpoints that load with weights_only=True, and the RNG state that makes resume exact.

A file that cannot be read (missing, truncated, not a checkpoint, holding pickled code) is refused
with one line naming it: never torch's own message, which suggests weights_only=False.
"""
from __future__ import annotations

import os
import pickle
import random
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Dict

import numpy as np
import torch

from .config import ConfigError

LAST = "checkpoint.pth.tar"
BEST = "model_best.pth.tar"
# model_best keeps what evaluate and export need; optimizer, scheduler, scaler and RNG state stay in LAST.
# class_names and model_card: what export and predict read (resnext.modelcard); ema and result: the EMA
# weights and whether they are the run's result (resnext.ema), which evaluate and export use.
BEST_KEYS = ("epoch", "arch", "num_classes", "state_dict", "best_acc1", "config", "class_names", "model_card",
             "ema", "result")


class CheckpointError(ConfigError):
    """A checkpoint or weights file that cannot be used; the message names the file and the fix."""


def _umask_mode() -> int:
    # os.umask can only be read by setting it: set it back at once (single-threaded at this point).
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def save_atomic(obj: Any, path: Path) -> None:
    """Write to a temp file in the same directory, then rename: a crash never leaves half a checkpoint."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        os.chmod(tmp, _umask_mode())  # mkstemp makes 0600: give it the mode any other file of the run gets
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def best_state(state: Dict[str, Any]) -> Dict[str, Any]:
    """What model_best keeps: the weights and what evaluate/export need, not the optimizer (a third of LAST)."""
    return {key: state[key] for key in BEST_KEYS if key in state}


def save_checkpoint(state: Dict[str, Any], run_dir: Path, is_best: bool, save: str = "all") -> None:
    """checkpoint.save: all = LAST every epoch + BEST when it improves; last; best; none."""
    if save in ("all", "last"):
        save_atomic(state, Path(run_dir) / LAST)
    if is_best and save in ("all", "best"):
        save_atomic(best_state(state), Path(run_dir) / BEST)


def _unreadable(path: Path, key: str, err: BaseException) -> CheckpointError:
    if isinstance(err, pickle.UnpicklingError) and zipfile.is_zipfile(path):
        why = ("it holds pickled Python objects besides tensors and plain containers, which are not loaded: "
               "loading them could run code from the file")
    elif path.stat().st_size == 0:
        why = "it is empty"
    elif path.read_bytes()[:2] == b"PK" and not zipfile.is_zipfile(path):
        why = "it is truncated (an interrupted copy or download?)"
    else:
        why = "it is not a PyTorch checkpoint or state dict"
    return CheckpointError(f"{key}={path}: cannot be loaded: {why}. Point {key} at a checkpoint.pth.tar or "
                           "model_best.pth.tar this trainer wrote, or a torchvision state dict")


def load_checkpoint(path: str | Path, key: str = "resume", mmap: bool = False) -> Dict[str, Any]:
    """Read a checkpoint with weights_only=True: tensors and plain containers only, no code.

    `key` is the config key that named the file, for the message when it cannot be read. mmap=True maps
    the tensors instead of reading them (a cheap look at a large file; zip-format files only).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{key}={path}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and zipfile.is_zipfile(path))
    except (pickle.UnpicklingError, RuntimeError, EOFError, KeyError, ValueError, zipfile.BadZipFile) as err:
        raise _unreadable(path, key, err) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{key}={path}: holds a {type(state).__name__}, not a checkpoint or state dict")
    return state


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
