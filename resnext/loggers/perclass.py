"""Per-class evaluation for evaluate=true: a confusion matrix counted on the device during the validation
pass (engine.evaluate's observer hook), summed over ranks, then written as a per-class accuracy table
(per_class.csv, per_class.md) and a picture (confusion.png, via plots.py).
"""
from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import List, Sequence

import torch
import torch.distributed as dist

from ..runtime.devices import RankContext

log = logging.getLogger("resnext")


class ConfusionMeter:
    """matrix[true, predicted] counts; updated on the device, read back once after the pass."""

    def __init__(self, num_classes: int, ctx: RankContext) -> None:
        self.ctx = ctx
        self.num_classes = num_classes
        self.matrix = torch.zeros(num_classes * num_classes, dtype=torch.int64, device=ctx.device.torch_device)

    def add(self, output: torch.Tensor, target: torch.Tensor) -> None:
        cells = target.long() * self.num_classes + output.argmax(dim=1)
        self.matrix += torch.bincount(cells, minlength=self.num_classes ** 2)

    def summed(self) -> torch.Tensor:
        """The [true, predicted] matrix over every rank's shard (a collective: call it on every rank)."""
        if self.ctx.distributed:
            dist.all_reduce(self.matrix, op=dist.ReduceOp.SUM)
        return self.matrix.view(self.num_classes, self.num_classes).cpu()


def class_rows(matrix: torch.Tensor, class_names: Sequence[str]) -> List[dict]:
    """One row per class: samples, correct, accuracy % and the class it is most often mistaken for."""
    rows = []
    for index, name in enumerate(class_names):
        counts = matrix[index]
        total, correct = int(counts.sum()), int(counts[index])
        wrong = counts.clone()
        wrong[index] = 0
        confused = int(wrong.argmax()) if int(wrong.sum()) else None
        rows.append({"class": name, "index": index, "samples": total, "correct": correct,
                     "acc1": round(100.0 * correct / total, 3) if total else None,
                     "most_confused_with": class_names[confused] if confused is not None else ""})
    return rows


def write_class_report(run_dir: Path, matrix: torch.Tensor, class_names: Sequence[str]) -> List[dict]:
    """per_class.csv, per_class.md (worst classes first) and confusion.png in the run directory."""
    from .plots import write_confusion

    rows = class_rows(matrix, class_names)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    (run_dir / "per_class.csv").write_text(out.getvalue())
    ranked = sorted((r for r in rows if r["samples"]), key=lambda r: r["acc1"])
    lines = ["| class | samples | Acc@1 % | most confused with |", "|---|---:|---:|---|"]
    lines += [f"| {r['class']} | {r['samples']} | {r['acc1']:.2f} | {r['most_confused_with']} |" for r in ranked]
    (run_dir / "per_class.md").write_text("\n".join(lines) + "\n")
    write_confusion(run_dir / "confusion.png", matrix, class_names)
    log.info("per-class Acc@1 in %s (worst first), confusion matrix in %s", run_dir / "per_class.md",
             run_dir / "confusion.png")
    return rows
