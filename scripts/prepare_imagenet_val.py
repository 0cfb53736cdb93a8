#!/usr/bin/env python
"""Sort the flat ILSVRC2012 validation folder into class folders, the layout ImageFolder reads.

    python scripts/prepare_imagenet_val.py --val-dir /data/imagenet/val --solution LOC_val_solution.csv

reads Kaggle's LOC_val_solution.csv (header `ImageId,PredictionString`; the class of an image is the
first token of its PredictionString, e.g. `n01751748 12 34 56 78 n01751748 ...`) and puts every listed
image at <out>/<wnid>/<ImageId>.JPEG.

Where the images go:
  * no --out: sorted in place inside --val-dir, and moved by default (as ImageNet's valprep.sh does):
    nothing is duplicated and nothing is deleted, the files only change folder.
  * --out DIR: copied by default, so the flat source stays untouched; --move or --symlink on request
    (symlinks save the space but break when the source moves or is not mounted in a container).

Everything is checked before the first file is touched (CSV header, every listed image present), so a
refusal leaves the folder as it was. Re-running is safe: images already in place are counted and
skipped, and copies are written under a temporary name first, so an interrupted run never leaves a
half-written image behind. --dry-run checks and prints the summary without changing anything.
"""
from __future__ import annotations

import argparse
import csv
import os
import re
import shutil
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

HEADER = ["ImageId", "PredictionString"]
WNID = re.compile(r"^n\d{8}$")
SUFFIX = ".JPEG"


class PrepareError(Exception):
    """The input cannot be sorted as asked; the message says why and what to do."""


@dataclass(frozen=True)
class Placement:
    image_id: str
    wnid: str
    source: Optional[Path]  # None: not in the flat folder (any more)
    target: Path


def read_solution(csv_path: Path) -> Dict[str, str]:
    """ImageId -> wnid from a Kaggle-form solution CSV."""
    if not csv_path.is_file():
        raise PrepareError(f"--solution {csv_path} does not exist: it is LOC_val_solution.csv from Kaggle's "
                           f"ImageNet Object Localization Challenge")
    labels: Dict[str, str] = {}
    with open(csv_path, newline="", encoding="utf-8-sig") as handle:  # -sig: tolerate a BOM
        rows = csv.reader(handle)
        header = [cell.strip() for cell in next(rows, [])]
        if header != HEADER:
            raise PrepareError(f"{csv_path}: the header is {','.join(header) or '(empty)'}, expected "
                               f"{','.join(HEADER)} (Kaggle's LOC_val_solution.csv)")
        for line, row in enumerate(rows, start=2):
            if not row:
                continue
            tokens = row[1].split() if len(row) == 2 else []
            if not tokens or not WNID.match(tokens[0]):
                raise PrepareError(f"{csv_path}:{line}: expected `ImageId,<wnid> <box> ...` with a wnid like "
                                   f"n01751748, got {','.join(row)!r}")
            image_id, wnid = row[0].strip(), tokens[0]
            if labels.setdefault(image_id, wnid) != wnid:
                raise PrepareError(f"{csv_path}:{line}: {image_id} is listed as {labels[image_id]} and as {wnid}")
    if not labels:
        raise PrepareError(f"{csv_path} lists no images")
    return labels


def plan_placements(labels: Dict[str, str], val_dir: Path, out: Path) -> List[Placement]:
    """Where every listed image goes; refused when an image is neither in val_dir nor already placed."""
    # One listing of the flat folder, so `.JPEG`, `.jpeg` and `.jpg` files are all found.
    flat = {}
    with os.scandir(val_dir) as entries:
        for entry in entries:
            if entry.is_file():
                flat[os.path.splitext(entry.name)[0]] = Path(entry.path)
    placements, missing = [], []
    for image_id, wnid in sorted(labels.items()):
        source = flat.get(image_id)
        target = out / wnid / (image_id + (source.suffix if source else SUFFIX))
        if source is None and not target.exists():
            missing.append(image_id)
        placements.append(Placement(image_id, wnid, source, target))
    if missing:
        shown = ", ".join(missing[:5]) + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else "")
        raise PrepareError(f"{len(missing)} images listed in the CSV are neither in {val_dir} nor already sorted "
                           f"into {out}: {shown}. Is --val-dir the folder with the ILSVRC2012_val_*.JPEG files?")
    return placements


def _copy_atomically(source: Path, target: Path) -> None:
    partial = target.with_name(target.name + ".partial")
    shutil.copy2(source, partial)
    os.replace(partial, target)


def _move(source: Path, target: Path) -> None:
    try:
        os.replace(source, target)
    except OSError:  # another file system: rename cannot cross it
        _copy_atomically(source, target)
        source.unlink()


def is_pending(placement: Placement, mode: str) -> bool:
    """Whether the image still has to be placed. A move is pending while the flat file exists (an
    interrupted cross-device move may have left both); a copy or link is done once the target exists."""
    if placement.source is None:
        return False
    return mode == "move" or not (placement.target.exists() or placement.target.is_symlink())


def place(placement: Placement, mode: str) -> None:
    """Put one pending image in its class folder."""
    source, target = placement.source, placement.target
    target.parent.mkdir(parents=True, exist_ok=True)
    if mode == "move":
        _move(source, target)
    elif mode == "copy":
        _copy_atomically(source, target)
    else:
        target.symlink_to(source.resolve())


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--val-dir", type=Path, required=True, help="flat folder of ILSVRC2012_val_*.JPEG")
    parser.add_argument("--solution", type=Path, required=True, help="LOC_val_solution.csv (Kaggle form)")
    parser.add_argument("--out", type=Path, default=None,
                        help="where the <wnid>/ folders go (default: inside --val-dir)")
    how = parser.add_mutually_exclusive_group()
    for mode in ("copy", "move", "symlink"):
        how.add_argument(f"--{mode}", dest="mode", action="store_const", const=mode)
    parser.add_argument("--dry-run", action="store_true", help="check and print the summary, change nothing")
    args = parser.parse_args(argv)
    in_place = args.out is None or args.out.resolve() == args.val_dir.resolve()
    args.out = args.val_dir if args.out is None else args.out
    if args.mode is None:
        args.mode = "move" if in_place else "copy"
    elif in_place and args.mode != "move":
        parser.error(f"--{args.mode} needs --out: sorting in place can only move the images")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    try:
        if not args.val_dir.is_dir():
            raise PrepareError(f"--val-dir {args.val_dir} is not a directory")
        placements = plan_placements(read_solution(args.solution), args.val_dir, args.out)
    except PrepareError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    pending = [p for p in placements if is_pending(p, args.mode)]
    if not args.dry_run:
        for placement in pending:
            place(placement, args.mode)
    placed = len(pending)
    classes = Counter(p.wnid for p in placements)
    verb = {"move": "moved", "copy": "copied", "symlink": "linked"}[args.mode]
    print(f"{'dry run: would sort' if args.dry_run else 'sorted'} {len(placements)} images into {len(classes)} "
          f"class folders under {args.out}: {placed} {verb}, {len(placements) - placed} already in place")
    return 0


if __name__ == "__main__":
    sys.exit(main())
