"""Atomic checkpoints that load with weights_only=True, and the RNG state that makes resume exact."""
from __future__ import annotations

import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict

import numpy as np
import torch

LAST = "checkpoint.pth.tar"
BEST = "model_best.pth.tar"


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
