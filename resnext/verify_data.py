"""python -m resnext.verify_data dataset=<name> dataset.root=<dir> [...]: decode every image, list the bad ones.

Why a separate command: check_dataset (run before every launch) only lists directories, so that a
run starts in seconds; a truncated or undecodable file shows up only when a loader reaches it, hours
into an epoch. This decodes every file the training would read, the same way (torchvision's PIL
loader, converted to RGB), in one process per core, prints each bad file with its error and a
summary, and exits 1 when any file is bad (2 for a configuration that cannot work), so it can guard
a job script: `python -m resnext.verify_data dataset=imagenet dataset.root=... && sbatch train.sh`.
"""
from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from typing import List, Optional, Sequence, Tuple

from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from .config.errors import ConfigError
from .config.schema import register_configs
from .data.checks import SPLITS, check_dataset, dataset_root
from .data.robust import decode_image

CHUNK = 64  # files per task: large enough to amortise the inter-process round trip


def image_files(dcfg) -> List[str]:
    """Every file ImageFolder would read for the train and val splits, in its order."""
    root = dataset_root(dcfg)
    files: List[str] = []
    for split in SPLITS:
        _, class_to_idx = find_classes(str(root / split))
        files += [path for path, _ in make_dataset(str(root / split), class_to_idx, extensions=IMG_EXTENSIONS)]
    return files


def decode_errors(paths: Sequence[str]) -> List[Tuple[str, str]]:
    """(path, error) for each file in `paths` that the training loader could not read."""
    found = ((path, decode_image(path)[1]) for path in paths)  # decodes the whole image, as training does
    return [(path, error) for path, error in found if error is not None]


def verify(files: Sequence[str], workers: int) -> List[Tuple[str, str]]:
    chunks = [files[i:i + CHUNK] for i in range(0, len(files), CHUNK)]
    if workers <= 1 or len(chunks) <= 1:
        return [item for chunk in chunks for item in decode_errors(chunk)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return [item for found in pool.map(decode_errors, chunks) for item in found]


def _compose(overrides: Sequence[str]):
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="resnext.conf", version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        cfg = _compose(args)
        check_dataset(cfg.dataset)
        if cfg.dataset.name not in ("imagenet", "folder"):
            print(f"dataset={cfg.dataset.name} has no image files to decode (synthetic is made in memory; "
                  "CIFAR-10's files are md5-checked before every run)")
            return 0
        files = image_files(cfg.dataset)
    except (ConfigError, HydraException, OmegaConfBaseException) as err:
        print(f"verify_data: {err}", file=sys.stderr)
        return 2
    workers = os.cpu_count() or 1
    started = time.time()
    bad = verify(files, workers)
    for path, error in bad:
        print(f"BAD {path}: {error}")
    print(f"checked {len(files)} images under {cfg.dataset.root} in {time.time() - started:.1f} s with {workers} "
          f"process(es): {len(bad)} bad" + ("; train with dataset.bad_images=skip or remove them" if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
