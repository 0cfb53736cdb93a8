#!/usr/bin/env python3
"""Check that dataset.loader=torch and dataset.loader=dali validate alike on one JPEG folder.

usage: python scripts/compare_loaders.py dataset=folder dataset.root=/data/x [overrides ...]
       python scripts/compare_loaders.py --generate 32    (a temporary folder of 32 ImageNet-size JPEGs)
       python scripts/compare_loaders.py --digits DIR [train overrides ...]
The first two print the validation sample counts (they must be equal) and the mean / max absolute
difference of the validation tensors in normalised units. --digits writes a learnable JPEG folder
into DIR (scripts/digits_folder.py; needs scikit-learn), trains a ResNeXt-50 on it with the torch
loader through the real CLI, evaluates that checkpoint with each loader (`evaluate=true resume=...`)
and prints both Acc@1 / Acc@5, their difference and both sample counts; the runs go to DIR/runs/
(delete it to train again). Several minutes on a quiet 2-core CPU, 37 on a busy one (README).
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Sequence

import torch
from hydra import compose, initialize_config_module

from resnext.config.schema import register_configs
from resnext.data import build_loaders
from resnext.data.jpeg_tree import make_jpeg_tree

# The digits recipe: 32 px (the 8x8 digits stay legible, and a ResNeXt-50 step is 4x cheaper than at 64),
# validation resize 36 then centre crop 32 (dataset.val_resize left null: derived by the 256/224 ratio,
# resnext/config/eval_size.py), `light` augmentation without the flip
# (a mirrored 2 or 3 is another glyph), AdamW (SGD at lr 0.05-0.1 diverged from scratch at batch 32;
# AdamW at lr 1e-3, batch 32, 4 epochs reached 67%; this recipe reached 92.8%).
DIGITS_RECIPE = ["dataset.image_size=32", "dataset.augment=light", "dataset.hflip=false",
                 "dataset.batch_size=16", "dataset.workers=2", "optim=adamw", "optim.lr=2e-3",
                 "model.zero_init_residual=true", "epochs=5", "logger=none", "progress_bar=false", "print_freq=15"]


def validation(cfg, loader: str) -> torch.Tensor:
    cfg.dataset.loader = loader
    loaders = build_loaders(cfg.dataset, seed=0, rank=0, world_size=1, device_type="cpu")
    return torch.cat([images for images, _ in loaders.val])


def compare_tensors(overrides: Sequence[str]) -> None:
    """Both loaders' validation tensors for the composed dataset: counts, mean and max |difference|."""
    with initialize_config_module(config_module="resnext.conf", version_base="1.3"):
        # batch_size 1: any training set passes the one-full-batch check; only validation is read.
        cfg = compose(config_name="config", overrides=["dataset.workers=0", "dataset.batch_size=1",
                                                       "dataset.val_batch_size=8", *overrides])
    reference, dali = validation(cfg, "torch"), validation(cfg, "dali")
    print(f"validation samples: torch {len(reference)}, dali {len(dali)}")
    if reference.shape == dali.shape:
        diff = (dali - reference).abs()
        print(f"mean |dali - torch| {diff.mean():.4f}, max {diff.max():.4f} (normalised units; data std "
              f"{reference.std():.3f})")


def _cli(args: Sequence[str]) -> None:
    print("$ python -m resnext.train " + " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "resnext.train", *args], check=True)


def compare_accuracy(root: Path, overrides: Sequence[str]) -> Dict[str, dict]:
    """Train on root with the torch loader (unless DIR/runs/train holds a checkpoint), evaluate with both."""
    runs = root / "runs"
    data = ["dataset=folder", f"dataset.root={root}", *DIGITS_RECIPE, *overrides]
    checkpoint = runs / "train" / "checkpoint.pth.tar"
    if checkpoint.exists():
        print(f"using {checkpoint}, trained earlier (delete {runs} to train again)")
    else:
        _cli([*data, "dataset.loader=torch", f"hydra.run.dir={runs / 'train'}"])
    results = {}
    for loader in ("torch", "dali"):
        run_dir = runs / f"eval_{loader}"
        _cli([*data, "evaluate=true", f"resume={checkpoint}", f"dataset.loader={loader}", f"hydra.run.dir={run_dir}"])
        results[loader] = json.loads((run_dir / "eval.json").read_text())
        # Per class (resnext/loggers/perclass.py): class, index, samples, correct, ...; equal sums can hide swaps.
        rows = (run_dir / "per_class.csv").read_text().splitlines()[1:]
        results[loader]["correct_per_class"] = [int(row.split(",")[3]) for row in rows]
    (runs / "agreement.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def report_accuracy(results: Dict[str, dict]) -> None:
    torch_run, dali_run = results["torch"], results["dali"]
    for loader, run in results.items():
        print(f"{loader:5s} Acc@1 {run['acc1']:.3f} Acc@5 {run['acc5']:.3f} loss {run['val_loss']:.4f} on "
              f"{run['val_samples']} validation images")
    gap = dali_run["acc1"] - torch_run["acc1"]
    print(f"Acc@1 dali - torch: {gap:+.3f} points ({round(gap * torch_run['val_samples'] / 100):+d} images); Acc@5: "
          f"{dali_run['acc5'] - torch_run['acc5']:+.3f}; sample counts "
          f"{'identical' if dali_run['val_samples'] == torch_run['val_samples'] else 'DIFFER'}")
    same = sum(a == b for a, b in zip(torch_run["correct_per_class"], dali_run["correct_per_class"]))
    print(f"correct answers per class: equal in {same} of {len(torch_run['correct_per_class'])} classes")


def digits(argv: List[str]) -> None:
    from digits_folder import make_digits_tree  # beside this script; imports scikit-learn only when called

    root = Path(argv[0]).resolve()
    if not (root / "val").is_dir():
        print(f"writing the digits folder into {root} ...", flush=True)
        make_digits_tree(root)
    results = compare_accuracy(root, argv[1:])
    compare_tensors(["dataset=folder", f"dataset.root={root}", *DIGITS_RECIPE[:1], *argv[1:]])
    report_accuracy(results)


def main(argv: List[str]) -> None:
    register_configs()
    if argv[:1] == ["--digits"] and len(argv) > 1:
        digits(argv[1:])
        return
    with tempfile.TemporaryDirectory() as tmp:
        if argv[:1] == ["--generate"]:
            count = int(argv[1])
            root = make_jpeg_tree(Path(tmp), classes=4, train_per_class=1, val_per_class=max(count // 4, 1))
            argv = ["dataset=folder", f"dataset.root={root}", *argv[2:]]
        compare_tensors(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
