"""The summary of a pruning sweep (hydra/sweeper=resnext) as summary.csv and summary.md: one row per trial with
its end (completed, pruned at epoch k, failed), epochs spent and wall time, then what the whole sweep cost.

The trials come from trials.py (read from the job directories and slots.json), importances from importance.py
(the study's storage), the picture from curves.py; summary.py writes the files. The lines above the table answer
what a user asks after a pruning sweep: which trial won, how many epochs pruning saved against running every
trial to the end, whether the slots stood idle, and which parameter mattered.
"""
from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import List, Optional, Sequence

from .importance import Importances, study_importances, study_of
from .results import JobResult, common_overrides, fmt, swept_keys
from .trials import (FINISHED, SLOTS_FILE, EpochTotals, SlotIdle, Trial, best_trial, epoch_totals, load_trials,
                     read_slots, slot_idle, sweep_wall_s)


# The sweeper's own overrides on each job (resnext/sweeps/sweeper.py: storage, study, trial number, slot): they
# tell a job which trial it is, so they differ between trials without being searched; the table leaves them out.
BOOKKEEPING = "sweep.trial."


@dataclass
class TrialSweep:
    trials: List[Trial]
    keys: List[str]  # the overrides that differ between trials (the sampled parameters)
    best: Optional[Trial]
    totals: EpochTotals
    wall_s: Optional[float]
    idle: Optional[SlotIdle]
    importances: Importances


def summarise(sweep_dir: Path, jobs: Sequence[JobResult]) -> TrialSweep:
    trials = load_trials(sweep_dir, jobs)
    runs = read_slots(Path(sweep_dir) / SLOTS_FILE)
    storage, study_name = study_of(trials)
    keys = [k for k in swept_keys(jobs) if not k.startswith(BOOKKEEPING)]
    return TrialSweep(trials=trials, keys=keys, best=best_trial(trials), totals=epoch_totals(trials),
                      wall_s=sweep_wall_s(trials), idle=slot_idle(runs) if runs else None,
                      importances=study_importances(storage, study_name, sweep_dir))


def _short(value: str) -> str:
    """A sampled float as 4 significant digits (0.01234, not 0.012340567891); anything else as written."""
    try:
        number = float(value)
    except ValueError:
        return value
    return value if number.is_integer() or len(value) <= 7 else f"{number:.4g}"


def to_csv(sweep: TrialSweep) -> str:
    columns = ["trial", "best", *sweep.keys, "lr", "batch_size", "best_acc1", "status", "pruned_at_epoch",
               "epochs_run", "epochs_planned", "wall_time_s", "started_at", "ended_at", "final_train_loss", "fps",
               "commit", "error", "job", "overrides"]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for trial in sweep.trials:
        row = {**asdict(trial.job), **{k: v for k, v in asdict(trial).items() if k not in ("job", "curve")}}
        row.update({k: trial.job.overrides.get(k, "") for k in sweep.keys})
        row.update(trial=trial.label, job=trial.job.job, best="1" if trial is sweep.best else "",
                   overrides=" ".join(f"{k}={v}" for k, v in trial.job.overrides.items()))
        writer.writerow(row)
    return out.getvalue()


def _counts(trials: Sequence[Trial]) -> str:
    statuses = [*FINISHED, "incomplete", *sorted({t.status for t in trials} - {*FINISHED, "incomplete"})]
    counts = {s: sum(t.status == s for t in trials) for s in statuses}
    return ", ".join(f"{n} {s}" for s, n in counts.items() if n)


def _cost_lines(sweep: TrialSweep) -> List[str]:
    totals, lines = sweep.totals, []
    if totals.unpruned:
        saved = totals.unpruned - totals.spent
        lines.append(f"Epochs spent: {totals.spent} of the {totals.unpruned} these trials would have cost unpruned "
                     f"({totals.percent:.0f}%; pruning saved {saved})"
                     + (f"; {totals.unknown} trial(s) with unknown planned epochs left out." if totals.unknown
                        else "."))
    if sweep.wall_s is not None:
        lines.append(f"Sweep wall time: {sweep.wall_s:.1f} s (first trial start to last trial end).")
    idle = sweep.idle
    if idle is not None:
        lines.append(f"Slot idle time: {idle.idle_percent:.1f}% ({idle.idle_s:.1f} of {idle.slot_s:.1f} slot-seconds "
                     f"on {idle.slots} slot(s), from {SLOTS_FILE})"
                     + (f"; {idle.open_runs} sweep process(es) still running or killed, counted to their last "
                        "trial's end." if idle.open_runs else "."))
    imp = sweep.importances
    if imp.values:
        lines.append(f"{imp.note[0].upper()}{imp.note[1:]}: "
                     + ", ".join(f"{name} {share:.2f}" for name, share in imp.values.items()) + ".")
    else:
        lines.append(f"{imp.note[0].upper()}{imp.note[1:]}.")
    return lines


def to_markdown(sweep: TrialSweep) -> str:
    trials, best = sweep.trials, sweep.best
    show_commit = any(t.job.commit for t in trials)
    header = ["trial", *sweep.keys, "best Acc@1", "epochs", "wall time (s)", *(["commit"] if show_commit else []),
              "status"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for trial in trials:
        mark = trial is best
        acc = fmt(trial.job.best_acc1, 3)
        epochs = f"{trial.epochs_run}/{trial.epochs_planned}" if trial.epochs_planned else str(trial.epochs_run)
        cells = [f"{trial.label} ★" if mark else trial.label, *(_short(trial.job.overrides.get(k, ""))
                                                                 for k in sweep.keys),
                 f"**{acc}**" if mark else acc, epochs, fmt(trial.job.wall_time_s, 1),
                 *([trial.job.commit] if show_commit else []),
                 trial.status_text().replace("|", "\\|").replace("\n", " ")]
        lines.append("| " + " | ".join(cells) + " |")
    intro = f"{len(trials)} trials: {_counts(trials)}."
    if best is not None:
        intro += f" Best (★): trial {best.label}, Acc@1 {best.job.best_acc1:.3f}."
    study = next(((t.study_name, t.storage) for t in trials if t.study_name), None)
    if study:
        intro += f" Study `{study[0]}` in `{study[1]}`."
    common = [o for o in common_overrides([t.job for t in trials]) if not o.startswith(BOOKKEEPING)]
    paragraphs = [intro, "\n".join(f"- {line}" for line in _cost_lines(sweep)),
                  *(["Every trial: `" + " ".join(common) + "`"] if common else []), "\n".join(lines)]
    return "\n\n".join(paragraphs) + "\n"
