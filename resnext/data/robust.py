"""Per-sample seeding and bad-image handling: a Dataset wrapper around whatever dataset and transforms run.

Why per-sample seeds: DataLoader workers draw augmentations from an RNG that lives in the worker
process, which neither a checkpoint nor a resume can reach (torchdata's StatefulDataLoader restores
the sample order but not those draws; DESIGN.md). Seeding the worker's torch/random/numpy streams from
(seed, epoch, rank, index) just before each sample's transforms makes every augmentation a function
of the sample's place in the run: a run resumed at any batch draws exactly what the uninterrupted run
drew, each rank has its own stream, and the stream's whole state is (seed, epoch, position), which the
checkpoint already holds. With workers=0 only torch's stream is seeded per sample, inside fork_rng, so
the main process's own (checkpointed) stream is untouched.

Why bad images live here too: the same wrapper sees every sample a loader reads, so one place decides
what an undecodable file means (dataset.bad_images=error|skip) for every dataset and transform preset.
A skip is appended to a small TSV in the run directory (worker processes cannot talk back to the
trainer cheaply), from which the trainer logs each path once and counts skips per epoch.
"""
from __future__ import annotations

import hashlib
import logging
import os
import random
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset, Subset, get_worker_info
from torchvision.datasets.folder import default_loader

from ..config.errors import ConfigError

log = logging.getLogger("resnext")

SKIP_LOG = "skipped_images.tsv"  # epoch \t split \t rank \t path, one line per skipped read
MAX_REPLACEMENTS = 50  # consecutive bad files before a skip run gives up: the data, not a file, is broken


class BadImageError(ConfigError):
    """An image that cannot be decoded, with dataset.bad_images=error (the default)."""


def bad_image_message(err: Any) -> str:
    """The message without the traceback around it: a DataLoader worker's exception carries one ("Caught
    BadImageError in DataLoader worker ..."), and so does a spawned rank's failure report."""
    return str(err).rsplit(f"{BadImageError.__name__}: ", 1)[-1].strip().splitlines()[0]


def sample_path(dataset: Dataset, index: int) -> Optional[str]:
    """The file behind sample `index` (ImageFolder, through Subsets), or None for in-memory datasets."""
    while isinstance(dataset, Subset):
        dataset, index = dataset.dataset, dataset.indices[index]
    samples = getattr(dataset, "samples", None)
    return str(samples[index][0]) if samples is not None else None


def sample_seed(seed: int, epoch: int, rank: int, index: int, stream: str = "") -> int:
    """A 63-bit seed per (run seed, epoch, rank, sample): a hash, so nearby keys give unrelated streams.
    `stream` names another use of the same key (data/mixing.py: one per batch) and keeps its seeds apart."""
    key = f"{stream}:{seed},{epoch},{rank},{index}" if stream else f"{seed},{epoch},{rank},{index}"
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def _seed_all(seed: int) -> None:
    # The CPU generator only (torch.manual_seed also seeds every accelerator: ~1 ms a call); torchvision
    # transforms draw from torch, older and third-party ones (timm) from random and numpy.
    torch.default_generator.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)


def decode_image(path: str) -> Tuple[Any, Optional[str]]:
    """(RGB image, None), or (None, "<error type>: <message>") for a file that cannot be decoded.

    What ImageFolder reads with (open + convert("RGB"), a full decode); the one place that decides what an
    undecodable file is, for training's bad_images policy, verify_data and predict.
    """
    try:
        return default_loader(path), None
    except Exception as err:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ValueError, DecompressionBombError
        reason = str(err).splitlines()[0] if str(err) else ""
        return None, f"{type(err).__name__}: {reason}" if reason else type(err).__name__


def _decodes(path: str) -> bool:
    return decode_image(path)[1] is None


class GuardedSamples(Dataset):
    """`dataset` with seeded per-sample randomness (when `seeded`) and the bad_images policy."""

    def __init__(self, dataset: Dataset, *, split: str, seed: int, rank: int, bad_images: str,
                 skip_log: Optional[Path], seeded: bool) -> None:
        self.dataset, self.split, self.seed, self.rank = dataset, split, seed, rank
        self.bad_images, self.skip_log, self.seeded = bad_images, skip_log, seeded
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        # Read when the epoch's iterator starts: non-persistent workers get a copy with this value.
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Tuple[Any, Any]:
        for attempt in range(MAX_REPLACEMENTS + 1):
            # A replacement is the next sample, deterministically: a resumed run replaces it the same way.
            current = (index + attempt) % len(self.dataset)
            try:
                return self._read(current)
            except Exception as err:  # noqa: BLE001 - decoders raise OSError, ValueError, SyntaxError ...
                path = sample_path(self.dataset, current)
                if path is None or _decodes(path):
                    raise  # not the file's fault (in-memory data, a transform bug): keep its traceback
                if self.bad_images != "skip":
                    raise BadImageError(
                        f"cannot decode {path} ({type(err).__name__}: {err}); set dataset.bad_images=skip to "
                        "replace such images (each is logged and counted), or list them all with "
                        "python -m resnext.verify_data dataset=...") from None
                self._record_skip(path)
        raise BadImageError(f"{MAX_REPLACEMENTS + 1} images in a row from sample {index} of the {self.split} set "
                            f"cannot be decoded (the last: {path}); check the dataset with python -m "
                            "resnext.verify_data")

    def _read(self, index: int) -> Tuple[Any, Any]:
        if not self.seeded:
            return self.dataset[index]
        seed = sample_seed(self.seed, self.epoch, self.rank, index)
        if get_worker_info() is not None:  # a worker's global streams serve only its samples: no restore
            _seed_all(seed)
            return self.dataset[index]
        # workers=0: the main process's torch stream is the run's own, so it is put back afterwards. Python's
        # and NumPy's are left alone (saving and restoring them costs ~0.7 ms a sample): transforms that
        # draw from them still resume exactly, since the checkpoint holds those streams at every step.
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            return self.dataset[index]

    def _record_skip(self, path: str) -> None:
        if self.skip_log is None:
            return
        line = f"{self.epoch}\t{self.split}\t{self.rank}\t{path}\n".encode()
        # O_APPEND: lines from several workers and ranks do not interleave (one small write each).
        fd = os.open(self.skip_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)


def read_skips(run_dir: Path) -> list:
    """[(epoch, split, rank, path)] from the run's skip log (empty when nothing was skipped)."""
    path = Path(run_dir) / SKIP_LOG
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        parts = line.split("\t", 3)
        if len(parts) == 4:  # a line cut by a kill -9 is ignored
            rows.append((int(parts[0]), parts[1], int(parts[2]), parts[3]))
    return rows


class SkipReport:
    """Rank 0's view of dataset.bad_images=skip: each skipped path logged once, a count per epoch."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir, self.logged = run_dir, set()

    def for_epoch(self, epoch: int) -> Dict[str, int]:
        rows = [row for row in read_skips(self.run_dir) if row[0] == epoch]
        for path in sorted({row[3] for row in rows} - self.logged):
            log.warning("skipped an undecodable image (dataset.bad_images=skip): %s", path)
            self.logged.add(path)
        return {"skipped_images": len(rows)}
