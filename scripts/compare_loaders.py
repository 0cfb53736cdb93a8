#!/usr/bin/env python3
"""Compare the validation tensors of dataset.loader=torch and dataset.loader=dali on one JPEG folder.

usage: python scripts/compare_loaders.py dataset=folder dataset.root=/data/x [overrides ...]
       python scripts/compare_loaders.py --generate 32    (a temporary folder of 32 ImageNet-size JPEGs)
Prints the sample counts (they must be equal) and the mean / max absolute difference in normalised units.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch
from hydra import compose, initialize_config_module

from resnext.config import register_configs
from resnext.data import build_loaders
from resnext.data.jpeg_tree import make_jpeg_tree


def validation(cfg, loader: str) -> torch.Tensor:
    cfg.dataset.loader = loader
    loaders = build_loaders(cfg.dataset, seed=0, rank=0, world_size=1, device_type="cpu")
    return torch.cat([images for images, _ in loaders.val])


def main(argv) -> None:
    register_configs()
    with tempfile.TemporaryDirectory() as tmp:
        if argv[:1] == ["--generate"]:
            count = int(argv[1])
            root = make_jpeg_tree(Path(tmp), classes=4, train_per_class=1, val_per_class=max(count // 4, 1))
            argv = ["dataset=folder", f"dataset.root={root}", *argv[2:]]
        with initialize_config_module(config_module="resnext.conf", version_base="1.3"):
            # batch_size 1: any training set passes the one-full-batch check; only validation is read.
            cfg = compose(config_name="config", overrides=["dataset.workers=0", "dataset.batch_size=1",
                                                           "dataset.val_batch_size=8", *argv])
        reference, dali = validation(cfg, "torch"), validation(cfg, "dali")
    print(f"validation samples: torch {len(reference)}, dali {len(dali)}")
    if reference.shape == dali.shape:
        diff = (dali - reference).abs()
        print(f"mean |dali - torch| {diff.mean():.4f}, max {diff.max():.4f} (normalised units; data std "
              f"{reference.std():.3f})")


if __name__ == "__main__":
    main(sys.argv[1:])
