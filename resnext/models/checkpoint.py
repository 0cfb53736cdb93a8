"""Atomic checkpoints that load with weights_only=True, and the RNG state that makes resume exact.

Every checkpoint or weights file a user names is read by `load_checkpoint`, here and nowhere else. A file
that cannot be read (missing, empty, truncated, bit-flipped, not a checkpoint, holding pickled code) is
refused with one line naming the key and the file, whatever torch raised: never a traceback, never torch's
own message, which suggests weights_only=False.
"""
from __future__ import annotations

import errno
import os
import pickle
import random
import shutil
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import torch

from ..config.choices import plain_values
from ..config.errors import ConfigError

LAST = "checkpoint.pth.tar"
BEST = "model_best.pth.tar"
# model_best keeps what evaluate and export need; optimizer, scheduler, scaler and RNG state stay in LAST.
# class_names and model_card: what export and predict read (resnext.models.card); ema and result: the EMA
# weights and whether they are the run's result (resnext.training.ema), which evaluate and export use.
BEST_KEYS = ("epoch", "arch", "num_classes", "state_dict", "best_acc1", "config", "class_names", "model_card",
             "ema", "result")


class CheckpointError(ConfigError):
    """A checkpoint or weights file that cannot be used; the message names the file and the fix."""


def _read_umask() -> int:
    # os.umask can only be read by setting it: set it back at once. Read once, at import, before any thread
    # (watchdog, loggers) exists that could create a file in between.
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def _umask_mode() -> int:
    return 0o666 & ~_UMASK


EPOCH_COPY = "checkpoint_epoch{epoch:04d}.pth.tar"  # checkpoint.keep_last copies
AUTO = "auto"  # resume=auto


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (disk full, quota, I/O error); the previous one is untouched."""


def save_atomic(obj: Any, path: Path) -> None:
    """Write to a temp file in the same directory, then rename: a crash never leaves half a checkpoint."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        os.chmod(tmp, _umask_mode())  # mkstemp makes 0600: give it the mode any other file of the run gets
        with os.fdopen(fd, "wb") as f:
            torch.save(plain_values(obj), f)  # config values as plain strings: weights_only=True loads them
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


def best_state(state: Dict[str, Any]) -> Dict[str, Any]:
    """What model_best keeps: the weights and what evaluate/export need, not the optimizer (a third of LAST)."""
    return {key: state[key] for key in BEST_KEYS if key in state}


def save_checkpoint(state: Dict[str, Any], run_dir: Path, is_best: bool, save: str = "all") -> None:
    """checkpoint.save: all = LAST every epoch + BEST when it improves; last; best; none."""
    if save in ("all", "last"):
        save_atomic(state, Path(run_dir) / LAST)
    if is_best and save in ("all", "best"):
        save_atomic(best_state(state), Path(run_dir) / BEST)


# What a refusal tells the user to point the key at, unless the caller knows better (`fix`); resume needs
# the trainer's own files, model.weights takes torchvision's state dicts as well.
_RUN_FILES = "a checkpoint.pth.tar or model_best.pth.tar this trainer wrote"
_POINT_AT = {"model.weights": f"{_RUN_FILES}, or a torchvision state dict"}
_PICKLED = ("it holds pickled Python objects besides tensors and plain containers, which are not loaded: "
            "loading them could run code from the file")


def _first_bytes(path: Path, count: int = 4) -> bytes:
    with path.open("rb") as f:
        return f.read(count)


def _is_whole_zip(path: Path) -> bool:
    # zipfile.is_zipfile catches OSError only: a damaged end record raises BadZipFile through it.
    try:
        return zipfile.is_zipfile(path)
    except (OSError, zipfile.BadZipFile):
        return False


class _DamagedMember(Exception):
    """A member of the archive whose bytes no longer match the CRC-32 written beside them."""


def _verify_crcs(path: Path) -> None:
    """torch.load checks no CRC-32, so a flipped bit in tensor data would load as a changed weight; zipfile does.

    Reads the whole file once more (about 1 GB/s): cheap next to what a silently altered checkpoint costs.
    """
    if not _is_whole_zip(path):
        return  # not a zip (torch's legacy format, or damage): torch.load's refusal says which
    with zipfile.ZipFile(path) as archive:
        member = archive.testzip()
    if member is not None:
        raise _DamagedMember(member)


def _why_unreadable(path: Path, err: Exception) -> str:
    """What is wrong with a file torch.load refused, told from the file itself: torch's own message names
    its internals (or advises weights_only=False, which would run code from the file)."""
    if isinstance(err, _DamagedMember):
        return (f"its member {err} fails its CRC-32 check: the bytes changed after they were written (a disk, "
                "memory or copy error?)")
    if isinstance(err, MemoryError):
        return ("reading it asked for more memory than there is: a damaged file can claim a size it does not "
                "have (if the file is sound, load it on a machine with more free memory)")
    try:
        head = _first_bytes(path)
    except OSError as unreadable:
        return f"it cannot be read ({unreadable.strerror or unreadable})"
    if not head:
        return "it is empty"
    if head[:2] != b"PK":  # torch.save writes a zip archive since torch 1.6
        return "it is not a PyTorch checkpoint or state dict"
    if not _is_whole_zip(path):
        return "it is truncated or its archive is damaged (an interrupted copy or download?)"
    if isinstance(err, pickle.UnpicklingError) and "Unsupported global" in str(err):
        return _PICKLED
    return "it is damaged: its archive is complete but what it holds does not read back (a disk or copy error?)"


def _unreadable(path: Path, key: str, err: Exception, fix: Optional[str]) -> CheckpointError:
    return CheckpointError(f"{key}={path}: cannot be loaded: {_why_unreadable(path, err)}. "
                           f"{fix or f'Point {key} at {_POINT_AT.get(key, _RUN_FILES)}'}")


def _torch_load(path: Path, mmap: bool) -> Any:
    with warnings.catch_warnings():
        # Damaged bytes can look like a newer pickle protocol: torch warns about that before it fails, and the
        # refusal below says what is wrong in one line.
        warnings.filterwarnings("ignore", message="Detected pickle protocol")
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and _is_whole_zip(path))


def load_checkpoint(path: str | Path, key: str = "resume", mmap: bool = False,
                    fix: Optional[str] = None) -> Dict[str, Any]:
    """Read a checkpoint with weights_only=True: tensors and plain containers only, no code.

    The one reader of every file a user names (resume, model.weights, export/predict checkpoint=, the
    torchvision hub cache): whatever a damaged file makes torch raise, the caller gets a CheckpointError
    of one line naming `key`, the file and what is wrong with it; `fix` replaces its closing advice.
    KeyboardInterrupt and SystemExit pass through (they are not Exceptions). MemoryError is refused like
    a damaged file, naming both causes: a damaged size field is the usual way to ask for more memory than a
    machine has, and an interpreter that could not allocate is still fine to print one line and exit.
    mmap=True maps the tensors instead of reading them (zip files only). Every member's CRC-32 is checked first
    (_verify_crcs): a file changed after it was written is refused, not loaded with altered values.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{key}={path}: no such file")
    try:
        _verify_crcs(path)
        state = _torch_load(path, mmap)
    except Exception as err:  # noqa: BLE001 - torch raises a dozen types for damaged bytes; see the docstring
        raise _unreadable(path, key, err, fix) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{key}={path}: holds a {type(state).__name__}, not a checkpoint or state dict")
    return state


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
    for pattern in (LAST + "*.tmp", BEST + "*.tmp", "checkpoint_epoch*.tmp"):  # mkstemp: name + random + .tmp
        for stale in Path(run_dir).glob(pattern):
            stale.unlink(missing_ok=True)


def check_auto_resume(cfg: Any, run_dir: Path) -> None:
    """evaluate=true with resume=auto and nothing to resume would validate random weights: refuse it."""
    if cfg.resume == AUTO and cfg.evaluate and not cfg.model.weights and resolve_resume(AUTO, run_dir) is None:
        raise ConfigError(f"evaluate=true with resume=auto: {Path(run_dir) / LAST} does not exist; set "
                          "hydra.run.dir to the run to evaluate, or resume=<checkpoint path>")



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
