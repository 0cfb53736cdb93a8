"""The multirun summary files: summary.csv, summary.md and summary.png in the sweep directory.

The rows come from results.py (reading the job directories), the plot from plot.py; a sweep of the
resnext sweeper (pruned trials, slots) gets its own rows and picture from trial_summary.py and curves.py
instead. This module chooses between them and writes the files, serialising concurrent rebuilds. The
sweep callback calls `write_summary` after every job, and `python -m resnext.report` calls it to rebuild
a summary by hand.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator, List

from . import trial_summary
from .curves import plot_trials
from .plot import plot_summary
from .results import JobResult, best_job, collect_jobs, swept_keys, to_csv, to_markdown
from .trials import is_trial_sweep

SUMMARY_FILES = ("summary.csv", "summary.md", "summary.png")


def _write_atomic(path: Path, data: bytes) -> None:
    # Parallel jobs rewrite the summary as they finish: a reader never sees a half-written file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


@contextlib.contextmanager
def _summary_lock(sweep_dir: Path) -> Iterator[None]:
    """Serialise rebuilds: whoever writes last has read every result written before it.

    The lock is taken on the sweep directory itself (flock on its descriptor), so no lock file is left.
    """
    try:
        import fcntl
    except ImportError:  # Windows: no flock; rebuilds may race, the last one still wins
        yield
        return
    fd = os.open(sweep_dir, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:  # a file system without locks (some network mounts)
            pass
        yield
    finally:
        os.close(fd)  # closing releases the lock


def write_summary(sweep_dir: Path) -> List[JobResult]:
    """(Re)write summary.csv, summary.md and summary.png in the sweep directory; returns the rows."""
    sweep_dir = Path(sweep_dir)
    with _summary_lock(sweep_dir):
        jobs = collect_jobs(sweep_dir)
        if is_trial_sweep(sweep_dir, jobs):
            sweep = trial_summary.summarise(sweep_dir, jobs)
            csv, markdown = trial_summary.to_csv(sweep), trial_summary.to_markdown(sweep)
            png = plot_trials(sweep.trials, sweep.best, sweep.totals, sweep.importances)
        else:
            csv, markdown = to_csv(jobs), to_markdown(jobs)
            png = plot_summary(jobs, swept_keys(jobs), best_job(jobs))
        _write_atomic(sweep_dir / "summary.csv", csv.encode())
        _write_atomic(sweep_dir / "summary.md", markdown.encode())
        if png is not None:
            _write_atomic(sweep_dir / "summary.png", png)
    return jobs
