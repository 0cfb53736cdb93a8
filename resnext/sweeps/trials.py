"""A pruning sweep's trials as the user needs to judge it: each trial's end, the epochs pruning saved, slot use.

Why a module beside results.py and not more columns there: a grid sweep's jobs either finish or fail, while a
trial of the resnext sweeper (hydra/sweeper=resnext) may also be stopped early by its pruner, so what matters is
different (epochs spent against epochs planned, each trial's Acc@1 curve, idle slots). The grid summary stays as
it was; this one is chosen when the sweep directory shows the sweeper's marks (see `is_trial_sweep`).

Everything is read from disk, like results.py: each job directory's result.json (status completed | pruned |
failed, pruned_at_epoch, epochs_run, epochs_planned, started_at, ended_at, trial {number, study_name, storage}),
its metrics.jsonl (one record per epoch: the Acc@1 curve) and the sweep's slots.json. A job without
result.json is still running or was killed: incomplete, its numbers from metrics.jsonl so far.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from omegaconf import OmegaConf

from .results import JobResult, read_json

SLOTS_FILE = "slots.json"
FINISHED = ("completed", "pruned", "failed")


@dataclass
class Trial:
    job: JobResult  # the columns a grid row has too: overrides, best Acc@1, lr, batch size, commit, ...
    number: Optional[int] = None
    pruned_at_epoch: Optional[int] = None  # epochs trained when the pruner stopped it (1-based)
    epochs_run: int = 0
    epochs_planned: Optional[int] = None
    started_at: Optional[str] = None
    ended_at: Optional[str] = None
    study_name: Optional[str] = None
    storage: Optional[str] = None
    curve: List[Tuple[int, float]] = field(default_factory=list)  # (epochs trained, validation Acc@1)

    @property
    def status(self) -> str:
        return self.job.status

    @property
    def label(self) -> str:
        return str(self.number) if self.number is not None else self.job.job

    def status_text(self) -> str:
        if self.status == "pruned" and self.pruned_at_epoch is not None:
            return f"pruned at epoch {self.pruned_at_epoch}"
        return f"{self.status}: {self.job.error}" if self.job.error else self.status


def parse_time(text: Optional[str]) -> Optional[datetime]:
    """An ISO-8601 time as an aware datetime (a naive one is taken as UTC); None when absent or unreadable."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _curve(path: Path) -> List[Tuple[int, float]]:
    """(epochs trained, Acc@1) per validated epoch; a resumed run's repeated epoch keeps its last record."""
    points: Dict[int, float] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a half-written last line
                continue
            if isinstance(record.get("acc1"), (int, float)) and isinstance(record.get("epoch"), int):
                points[record["epoch"] + 1] = float(record["acc1"])  # metrics.jsonl counts epochs from 0
    return sorted(points.items())


def _planned_epochs(job_dir: Path) -> Optional[int]:
    config = job_dir / ".hydra" / "config.yaml"
    if not config.is_file():
        return None
    epochs = OmegaConf.select(OmegaConf.load(config), "epochs")
    return int(epochs) if isinstance(epochs, int) else None


def load_trial(job: JobResult, sweep_dir: Path) -> Trial:
    job_dir = sweep_dir / job.job
    result = read_json(job_dir / "result.json") or {}
    trial = Trial(job=job, curve=_curve(job_dir / "metrics.jsonl"))
    about = result.get("trial") or {}
    trial.number = about.get("number", int(job.job) if job.job.isdigit() else None)
    trial.study_name, trial.storage = about.get("study_name"), about.get("storage")
    trial.pruned_at_epoch = result.get("pruned_at_epoch")
    trial.epochs_run = result.get("epochs_run", len(trial.curve))
    trial.epochs_planned = result.get("epochs_planned") or _planned_epochs(job_dir)
    trial.started_at, trial.ended_at = result.get("started_at"), result.get("ended_at")
    start, end = parse_time(trial.started_at), parse_time(trial.ended_at)
    if start and end:  # the trial's whole life, set-up and validation included (wall_time_s may be training only)
        job.wall_time_s = (end - start).total_seconds()
    return trial


def is_trial_sweep(sweep_dir: Path, jobs: Sequence[JobResult]) -> bool:
    """Whether the resnext sweeper ran this sweep: it writes slots.json and a `trial` into each result.json."""
    if (Path(sweep_dir) / SLOTS_FILE).is_file():
        return True
    return any("trial" in (read_json(Path(sweep_dir) / j.job / "result.json") or {}) for j in jobs)


def load_trials(sweep_dir: Path, jobs: Sequence[JobResult]) -> List[Trial]:
    return sorted((load_trial(j, Path(sweep_dir)) for j in jobs),
                  key=lambda t: (t.number is None, t.number if t.number is not None else 0, t.job.job))


def best_trial(trials: Sequence[Trial]) -> Optional[Trial]:
    """The completed trial with the highest best Acc@1, as Optuna's best_trial: a pruned trial never wins."""
    done = [t for t in trials if t.status == "completed" and t.job.best_acc1 is not None]
    return max(done, key=lambda t: t.job.best_acc1) if done else None


@dataclass
class EpochTotals:
    spent: int  # epochs every trial trained, pruned and failed ones included
    unpruned: int  # what the same trials would have cost run to the end: the sum of epochs_planned
    unknown: int  # trials whose planned epochs are unknown (left out of both sums)

    @property
    def percent(self) -> Optional[float]:
        return 100.0 * self.spent / self.unpruned if self.unpruned else None


def epoch_totals(trials: Sequence[Trial]) -> EpochTotals:
    known = [t for t in trials if t.epochs_planned]
    return EpochTotals(spent=sum(t.epochs_run for t in known), unpruned=sum(t.epochs_planned for t in known),
                       unknown=len(trials) - len(known))


# ---- slots.json: which slot ran which trial when ----

@dataclass
class SlotUse:
    slot: int
    trial: int
    start: datetime
    end: datetime


@dataclass
class SlotRun:
    """One sweep process's slots: `slots` of them from `start` to `end` (None: still running or killed)."""
    slots: int
    start: Optional[datetime]
    end: Optional[datetime]
    uses: List[SlotUse]


def _uses(intervals: object) -> List[SlotUse]:
    uses = [SlotUse(int(u["slot"]), int(u["trial"]), parse_time(u.get("start")), parse_time(u.get("end")))
            for u in (intervals if isinstance(intervals, list) else []) if isinstance(u, dict) and "slot" in u]
    return [u for u in uses if u.start is not None and u.end is not None]


def read_slots(path: Path) -> Optional[List[SlotRun]]:
    """slots.json as one SlotRun per sweep process; None when absent or unreadable. The one place that knows
    the file's format (resnext/sweeps/slots.py writes it): {"runs": [{"n_jobs", "started", "ended",
    "intervals": [{"slot", "trial", "start", "end", "state"}]}]}, one run per sweep process (a resumed sweep or a
    second machine adds its own). A bare list of intervals is read as one run of as many slots as it names."""
    data = read_json(path) if path.is_file() else None
    if isinstance(data, list):
        uses = _uses(data)
        return [SlotRun(len({u.slot for u in uses}), None, None, uses)] if uses else None
    if not isinstance(data, dict) or not isinstance(data.get("runs"), list):
        return None
    runs = [SlotRun(int(r.get("n_jobs") or 1), parse_time(r.get("started")), parse_time(r.get("ended")),
                    _uses(r.get("intervals"))) for r in data["runs"] if isinstance(r, dict)]
    return [r for r in runs if r.uses or (r.start and r.end)] or None


@dataclass
class SlotIdle:
    slots: int  # the most slots any one run had
    slot_s: float  # slot-seconds on offer: each run's slots x its wall time, summed over runs
    busy_s: float  # slot-seconds spent running trials
    wall_s: float  # the sweep's wall time: first run's start to last run's end
    open_runs: int  # runs without an end (still running, or killed): counted to their last trial's end

    @property
    def idle_s(self) -> float:
        return max(self.slot_s - self.busy_s, 0.0)

    @property
    def idle_percent(self) -> float:
        """Idle slot-seconds as a share of the slot-seconds on offer: how much of the sweep's wall time a slot
        stood idle, on average (between trials, waiting to start, or with nothing left to run)."""
        return 100.0 * self.idle_s / self.slot_s if self.slot_s > 0 else 0.0


def slot_idle(runs: Sequence[SlotRun]) -> Optional[SlotIdle]:
    """Idle slot time over the runs' wall time; a run's window defaults to its first start and last end."""
    windows, busy = [], 0.0
    for run in runs:
        start = run.start or min((u.start for u in run.uses), default=None)
        end = run.end or max((u.end for u in run.uses), default=None)
        if start is None or end is None:
            continue
        windows.append((run.slots, start, end))
        busy += sum((min(u.end, end) - max(u.start, start)).total_seconds() for u in run.uses if u.end > start)
    if not windows:
        return None
    return SlotIdle(slots=max(w[0] for w in windows),
                    slot_s=sum(n * (end - start).total_seconds() for n, start, end in windows), busy_s=busy,
                    wall_s=(max(w[2] for w in windows) - min(w[1] for w in windows)).total_seconds(),
                    open_runs=sum(r.end is None for r in runs))


def sweep_wall_s(trials: Sequence[Trial]) -> Optional[float]:
    """First trial start to last trial end, from result.json's times; None before any trial has both."""
    starts = [parse_time(t.started_at) for t in trials]
    ends = [parse_time(t.ended_at) for t in trials]
    starts, ends = [s for s in starts if s], [e for e in ends if e]
    return (max(ends) - min(starts)).total_seconds() if starts and ends else None
