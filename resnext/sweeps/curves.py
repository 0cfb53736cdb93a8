"""summary.png for a pruning sweep: every trial's Acc@1 per epoch, and Optuna's parameter importances.

Why curves and not Acc@1 against lr (plot.py's grid picture): a pruner judges trials by their curves, so the
picture shows what it saw. Completed trials are drawn in colour, pruned ones faded with an x where they were
stopped, failed ones dotted, running ones dashed; the best trial is drawn thick and named in the title.
"""
from __future__ import annotations

import io
from typing import Optional, Sequence

from .importance import Importances
from .trials import EpochTotals, Trial

_STYLE = {  # status -> line style; pruned trials are faded so the finished ones stand out
    "completed": dict(linestyle="-", alpha=0.9, linewidth=1.4),
    "pruned": dict(linestyle="-", alpha=0.25, linewidth=1.0, color="0.45"),
    "failed": dict(linestyle=":", alpha=0.6, linewidth=1.0, color="tab:red"),
    "incomplete": dict(linestyle="--", alpha=0.6, linewidth=1.0),
}


def plot_trials(trials: Sequence[Trial], best: Optional[Trial], totals: EpochTotals,
                importances: Importances) -> Optional[bytes]:
    """summary.png as bytes, or None while no trial has a validated epoch."""
    if not any(t.curve for t in trials):
        return None
    import matplotlib  # slow to import: only when there is something to draw

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 2 if importances.values else 1
    fig, axes = plt.subplots(1, panels, figsize=(11 if panels == 2 else 6.5, 4.4), squeeze=False,
                             gridspec_kw={"width_ratios": [3, 1.6][:panels]})
    _plot_curves(axes[0][0], trials, best)
    if importances.values:
        _plot_importances(axes[0][1], importances)
    title = f"{len(trials)} trials, {sum(t.status == 'pruned' for t in trials)} pruned"
    if totals.unpruned:
        title += f"; epochs spent {totals.spent} of {totals.unpruned} unpruned ({totals.percent:.0f}%)"
    if best is not None:
        title += f"\nbest: trial {best.label}, Acc@1 {best.job.best_acc1:.3f}"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def _plot_curves(ax, trials: Sequence[Trial], best: Optional[Trial]) -> None:
    for trial in trials:
        if not trial.curve:
            continue
        xs, ys = zip(*trial.curve)
        style = dict(_STYLE.get(trial.status, _STYLE["incomplete"]))
        if trial is best:
            style.update(linewidth=2.8, alpha=1.0, zorder=3)
        label = f"trial {trial.label}" if trial.status == "completed" or trial is best else None
        ax.plot(xs, ys, marker="o" if len(xs) == 1 else None, label=label, **style)
        if trial.status == "pruned":
            ax.plot(xs[-1], ys[-1], marker="x", color="0.35", alpha=0.6, linestyle="none")
    ax.set_xlabel("epochs trained")
    ax.set_ylabel("validation Acc@1")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, ncol=2, title="completed (pruned: grey, x = stopped)", title_fontsize=7)


def _plot_importances(ax, importances: Importances) -> None:
    names = list(importances.values)[::-1]  # most important on top
    ax.barh(names, [importances.values[n] for n in names], color="tab:blue")
    ax.set_xlim(0, 1)
    ax.set_xlabel("importance (share)")
    ax.set_title(f"importance ({importances.evaluator}), {importances.completed} completed trials", fontsize=9)
    ax.tick_params(axis="y", labelsize=8)
