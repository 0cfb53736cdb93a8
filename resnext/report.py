"""python -m resnext.report <sweep dir>: (re)write a Hydra multirun's summary.csv, summary.md and summary.png.

The CLI only: the files are written by resnext/sweeps/summary.py, which the sweep callback also
calls after every job.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from .sweeps.results import collect_jobs
from .sweeps.summary import SUMMARY_FILES, write_summary


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
