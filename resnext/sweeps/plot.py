"""summary.png for a sweep: Acc@1 against lr (and an lr x batch heatmap), or one bar per job."""
from __future__ import annotations

import io
from typing import Optional, Sequence

from .results import BATCH_KEY, LR_KEY, JobResult


def plot_summary(jobs: Sequence[JobResult], keys: Sequence[str], best: Optional[JobResult]) -> Optional[bytes]:
    """summary.png as bytes, or None when no job has an Acc@1 yet.

    optim.lr swept: Acc@1 against lr (log axis), one line per batch size, plus an lr x batch heatmap when
    both have several values; when other keys vary too, points are not a function of lr and are drawn
    unconnected. Any other sweep: one bar per job, labelled with its swept values.
    """
    import matplotlib  # slow to import: only when there is something to draw

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = [j for j in jobs if j.best_acc1 is not None]
    if not scored:
        return None
    lrs = sorted({j.lr for j in scored if j.lr is not None})
    batches = sorted({j.batch_size for j in scored if j.batch_size is not None})
    by_lr = LR_KEY in keys and len(lrs) > 1
    heatmap = by_lr and BATCH_KEY in keys and len(batches) > 1
    fig, axes = plt.subplots(1, 2 if heatmap else 1, figsize=(11 if heatmap else 6, 4.2), squeeze=False)
    if by_lr:
        _plot_lines(axes[0][0], scored, batches, connect=set(keys) <= {LR_KEY, BATCH_KEY})
    else:
        _plot_bars(axes[0][0], scored, keys)
    if heatmap:
        _plot_heatmap(fig, axes[0][1], scored, lrs, batches)
    if best is not None:
        fig.suptitle(f"best: job {best.job}, Acc@1 {best.best_acc1:.3f}", fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def _plot_lines(ax, jobs: Sequence[JobResult], batches: Sequence[int], connect: bool) -> None:
    for batch in batches:
        points = sorted((j.lr, j.best_acc1) for j in jobs if j.batch_size == batch and j.lr is not None)
        ax.plot(*zip(*points), marker="o", linestyle="-" if connect else "none", label=f"batch {batch}")
    ax.set_xscale("log")
    lrs = sorted({j.lr for j in jobs if j.lr is not None})
    if len(lrs) <= 8:  # a grid: label its values, not powers of ten
        ax.set_xticks(lrs, [f"{lr:g}" for lr in lrs])
        ax.minorticks_off()
    ax.set_xlabel("optim.lr")
    ax.set_ylabel("best Acc@1")
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)


def _plot_heatmap(fig, ax, jobs: Sequence[JobResult], lrs: Sequence[float], batches: Sequence[int]) -> None:
    import numpy as np

    grid = np.full((len(batches), len(lrs)), np.nan)  # a failed or missing cell stays blank
    for j in jobs:
        if j.lr in lrs and j.batch_size in batches:
            grid[batches.index(j.batch_size), lrs.index(j.lr)] = j.best_acc1
    image = ax.imshow(grid, cmap="viridis", aspect="auto", origin="lower")
    middle = np.nanmin(grid) + (np.nanmax(grid) - np.nanmin(grid)) / 2
    for (row, col), value in np.ndenumerate(grid):
        if not np.isnan(value):  # dark text on the bright (high) end of viridis
            ax.text(col, row, f"{value:.1f}", ha="center", va="center", color="k" if value > middle else "w",
                    fontsize=8)
    ax.set_xticks(range(len(lrs)), [f"{lr:g}" for lr in lrs])
    ax.set_yticks(range(len(batches)), [str(b) for b in batches])
    ax.set_xlabel("optim.lr")
    ax.set_ylabel("dataset.batch_size")
    fig.colorbar(image, ax=ax, label="best Acc@1")


def _plot_bars(ax, jobs: Sequence[JobResult], keys: Sequence[str]) -> None:
    labels = [" ".join(f"{k.rsplit('.', 1)[-1]}={j.overrides.get(k, '')}" for k in keys) or f"job {j.job}"
              for j in jobs]
    ax.bar(range(len(jobs)), [j.best_acc1 for j in jobs])
    ax.set_xticks(range(len(jobs)), labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("best Acc@1")
