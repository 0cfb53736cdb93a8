"""Pictures of one run: curves.png (loss, Acc@1, lr, FPS per epoch), redrawn after every epoch, and
confusion.png for evaluate=true. (sweeps/summary.py writes the sweep summary; this module draws a single run.)

Images are written to a temporary file and renamed, so a viewer never sees half a PNG.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Sequence

import torch

from .base import Sink
from .metrics import read_metrics

# Above this many classes the confusion picture shows only the classes involved in the most mistakes.
CONFUSION_TOP_N = 20

# (panel title, [(metrics.jsonl key, legend label)])
_PANELS = [
    ("loss", [("train_loss", "train"), ("val_loss", "val")]),
    ("Acc@1 %", [("train_acc1", "train"), ("acc1", "val")]),
    ("learning rate", [("lr", "lr at epoch start")]),
    ("throughput (img/s)", [("fps", "FPS@all")]),
]


def _pyplot():
    import matplotlib  # slow to import: only when a picture is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)


def write_curves(run_dir: Path) -> None:
    """curves.png from metrics.jsonl: the whole history, so a resumed run draws its earlier epochs too."""
    records = read_metrics(run_dir)
    if not records:
        return
    plt = _pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharex=True)
    for ax, (title, series) in zip(axes.flat, _PANELS):
        for key, label in series:
            points = [(r["epoch"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, marker="o", label=label)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(loc="best")
    for ax in axes[1]:
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
    best = max((r.get("best_acc1", 0.0) for r in records), default=0.0)
    run = Path(run_dir).resolve()
    fig.suptitle(f"{run.parent.name}/{run.name}: {len(records)} epoch(s), best Acc@1 {best:.2f}")
    fig.tight_layout()
    _save(fig, Path(run_dir) / "curves.png")
    plt.close(fig)


class CurvesSink(Sink):
    """Redraws curves.png after every epoch (MetricsWriter has appended the epoch to metrics.jsonl)."""

    name = "curves"

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)

    def log_epoch(self, epoch: int, values: Dict[str, float]) -> None:
        write_curves(self.run_dir)


def most_confused(matrix: torch.Tensor, top_n: int) -> List[int]:
    """Up to top_n classes with the most mistakes made on them or into them (none without mistakes), in
    class order; at least two classes, so that a perfect run still draws a matrix."""
    wrong = matrix.clone().double()
    wrong.fill_diagonal_(0)
    score = wrong.sum(dim=0) + wrong.sum(dim=1)
    count = min(top_n, max(int((score > 0).sum()), 2))
    return sorted(score.argsort(descending=True, stable=True)[:count].tolist())


def write_confusion(path: Path, matrix: torch.Tensor, class_names: Sequence[str],
                    top_n: int = CONFUSION_TOP_N) -> None:
    """Row-normalised confusion matrix (each true class sums to 100 %); large sets: the top_n most confused."""
    count = matrix.shape[0]
    shown = list(range(count)) if count <= top_n else most_confused(matrix, top_n)
    sub = matrix[shown][:, shown].double()
    rows = matrix[shown].sum(dim=1, keepdim=True).double().clamp(min=1)  # all of each class's samples
    percent = 100.0 * sub / rows
    plt = _pyplot()
    side = max(5.0, 0.45 * len(shown) + 2.5)
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    image = ax.imshow(percent.numpy(), cmap="Blues", vmin=0, vmax=100)
    labels = [str(class_names[i])[:24] for i in shown]
    ax.set_xticks(range(len(shown)), labels, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(shown)), labels, fontsize=8)
    for (r, c), value in zip(((r, c) for r in range(len(shown)) for c in range(len(shown))), percent.flatten()):
        if value >= 0.5:
            ax.text(c, r, f"{value:.0f}", ha="center", va="center", fontsize=7,
                    color="white" if value > 60 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    accuracy = 100.0 * matrix.diag().sum().item() / max(matrix.sum().item(), 1)
    scope = f"all {count} classes" if len(shown) == count else f"the {len(shown)} most confused of {count} classes"
    ax.set_title(f"confusion (% of each true class), {scope}; Acc@1 {accuracy:.2f}", fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    _save(fig, Path(path))
    plt.close(fig)
