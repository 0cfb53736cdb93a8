"""python -m resnext.report <sweep dir>: (re)write a Hydra multirun's summary.csv, summary.md and summary.png.

The rows come from resnext.sweep_results (reading the job directories), the plot from
resnext.sweep_plot; this module writes the files, serialising concurrent rebuilds, and is the CLI.
The sweep callback (resnext.sweep) calls `write_summary` after every job.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path
from typing import Iterator, List, Optional, Sequence

from .sweep_plot import plot_summary
from .sweep_results import (JobResult, best_job, collect_jobs, common_overrides, read_json,  # noqa: F401
                            swept_keys, to_csv, to_markdown)

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
        _write_atomic(sweep_dir / "summary.csv", to_csv(jobs).encode())
        _write_atomic(sweep_dir / "summary.md", to_markdown(jobs).encode())
        png = plot_summary(jobs, swept_keys(jobs), best_job(jobs))
        if png is not None:
            _write_atomic(sweep_dir / "summary.png", png)
    return jobs


def _not_a_sweep(path: Path) -> Optional[str]:
    """Why `path` is no sweep directory (checked before anything is written), or None."""
    if not path.is_dir():
        return f"{path}: no such directory"
    if (path / ".hydra").is_dir():
        return (f"{path} is a single run's directory, not a sweep: pass the multirun directory above its jobs "
                "(outputs/multirun/<date>/<time>); a single run's results are its result.json and metrics.jsonl")
    if not collect_jobs(path):
        return f"{path}: no job directories (folders with .hydra/overrides.yaml) found; nothing written"
    return None


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m resnext.report",
        description="Rebuild summary.csv, summary.md and summary.png of a Hydra multirun from its directory.")
    parser.add_argument("sweep_dir", type=Path, help="the sweep directory, e.g. outputs/multirun/2025-01-31/12-00-00")
    args = parser.parse_args(argv)
    problem = _not_a_sweep(args.sweep_dir)
    if problem:
        print(problem, file=sys.stderr)
        return 2 if not args.sweep_dir.is_dir() else 1
    write_summary(args.sweep_dir)
    print((args.sweep_dir / "summary.md").read_text())
    written = [name for name in SUMMARY_FILES if (args.sweep_dir / name).is_file()]
    print("wrote " + ", ".join(str(args.sweep_dir / name) for name in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
