"""Sweep summary: one row per job of a Hydra multirun, written as summary.csv, summary.md, summary.png.

Everything is rebuilt from what the jobs left on disk (.hydra/, result.json, metrics.jsonl), never
from in-memory sweep state, so the same code serves the sweep callback (resnext.sweep, after every
job, whichever launcher ran it and on whichever machine) and `python -m resnext.report <sweep dir>`
on a sweep that is still running or was interrupted.

A job's status: completed (result.json from the trainer), failed (result.json from the callback,
with the error), incomplete (no result.json yet: running, killed or interrupted; its numbers come
from the epochs metrics.jsonl holds so far).
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import logging
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

from omegaconf import OmegaConf

from .optim import effective_lr

log = logging.getLogger("resnext")

SUMMARY_FILES = ("summary.csv", "summary.md", "summary.png")
LR_KEY = "optim.lr"
BATCH_KEY = "dataset.batch_size"


@dataclass
class JobResult:
    job: str  # the job directory relative to the sweep directory ("0", "1", ...)
    overrides: Dict[str, str] = field(default_factory=dict)  # this job's command-line overrides, in order
    status: str = "incomplete"
    best_acc1: Optional[float] = None
    final_train_loss: Optional[float] = None
    fps: Optional[float] = None
    wall_time_s: Optional[float] = None
    error: Optional[str] = None
    lr: Optional[float] = None  # optim.lr as configured (what the sweep varied)
    lr_scaling: str = "none"
    effective_lr: Optional[float] = None  # what the optimizer used after scaling by the global batch
    batch_size: Optional[int] = None


def _parse_overrides(lines: Sequence[str]) -> Dict[str, str]:
    parsed = {}
    for line in lines:
        key, _, value = str(line).partition("=")
        parsed[key.lstrip("+~")] = value
    return parsed


def read_json(path: Path) -> Optional[dict]:
    """The file's JSON object; None when absent or still being written (read again on the next rebuild)."""
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _last_metrics(path: Path) -> Dict[str, float]:
    """The newest epoch record plus the summed epoch time; a half-written last line is skipped."""
    last: Dict[str, float] = {}
    seconds = 0.0
    if not path.is_file():
        return last
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        last = record
        seconds += record.get("seconds", 0.0)
    return {**last, "seconds_total": seconds} if last else last


def _read_lr_and_batch(job: JobResult, config_path: Path) -> None:
    try:
        cfg = OmegaConf.load(config_path)
        job.lr = OmegaConf.select(cfg, LR_KEY)
        job.batch_size = OmegaConf.select(cfg, BATCH_KEY)
        job.lr_scaling = OmegaConf.select(cfg, "optim.lr_scaling", default="none")
        if job.lr is not None and job.batch_size is not None:
            job.effective_lr = effective_lr(cfg.optim, job.batch_size)
    except Exception as err:  # noqa: BLE001 - one odd job config must not hide the rest of the sweep
        log.warning("%s: lr and batch size unreadable (%s)", config_path, err)


def load_job(job_dir: Path, sweep_dir: Path) -> JobResult:
    job = JobResult(job=job_dir.relative_to(sweep_dir).as_posix())
    hydra_dir = job_dir / ".hydra"
    job.overrides = _parse_overrides(OmegaConf.load(hydra_dir / "overrides.yaml") or [])
    if (hydra_dir / "config.yaml").is_file():
        _read_lr_and_batch(job, hydra_dir / "config.yaml")

    metrics = _last_metrics(job_dir / "metrics.jsonl")
    job.best_acc1 = metrics.get("best_acc1")
    job.final_train_loss = metrics.get("train_loss")
    job.fps = metrics.get("fps")
    job.wall_time_s = metrics.get("seconds_total")
    result = read_json(job_dir / "result.json")
    if result is not None:
        job.status = result.get("status", "completed")
        job.error = result.get("error")
        for key in ("best_acc1", "final_train_loss", "fps", "wall_time_s"):
            if result.get(key) is not None:
                setattr(job, key, result[key])
    return job


def _job_sort_key(job: JobResult):
    # Hydra numbers jobs 0, 1, ... 10: sort numerically where the directory names allow it.
    return (0, int(job.job), "") if job.job.isdigit() else (1, 0, job.job)


def collect_jobs(sweep_dir: Path) -> List[JobResult]:
    """Every job under the sweep directory: any folder holding .hydra/overrides.yaml."""
    sweep_dir = Path(sweep_dir)
    job_dirs = {p.parent.parent for p in sweep_dir.glob("**/.hydra/overrides.yaml")} - {sweep_dir}
    return sorted((load_job(d, sweep_dir) for d in job_dirs), key=_job_sort_key)


def swept_keys(jobs: Sequence[JobResult]) -> List[str]:
    """Override keys whose value differs between jobs, in command-line order."""
    keys: Dict[str, None] = {}
    for job in jobs:
        keys.update(dict.fromkeys(job.overrides))
    return [k for k in keys if len({job.overrides.get(k) for job in jobs}) > 1]


def common_overrides(jobs: Sequence[JobResult]) -> List[str]:
    varying = set(swept_keys(jobs))
    return [f"{k}={v}" for k, v in (jobs[0].overrides.items() if jobs else ()) if k not in varying]


def best_job(jobs: Sequence[JobResult]) -> Optional[JobResult]:
    """The completed job with the highest best Acc@1 (a partial number from a running job does not count)."""
    done = [j for j in jobs if j.status == "completed" and j.best_acc1 is not None]
    return max(done, key=lambda j: j.best_acc1) if done else None


def _fmt(value: Optional[float], digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _status_text(job: JobResult) -> str:
    return f"{job.status}: {job.error}" if job.error else job.status


def to_csv(jobs: Sequence[JobResult]) -> str:
    keys = swept_keys(jobs)
    best = best_job(jobs)
    columns = ["job", "best", *keys, "lr", "lr_scaling", "effective_lr", "batch_size", "best_acc1",
               "final_train_loss", "fps", "wall_time_s", "status", "error", "overrides"]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for job in jobs:
        row = {k: v for k, v in asdict(job).items() if k in columns}
        row.update({k: job.overrides.get(k, "") for k in keys})
        row["best"] = "1" if job is best else ""
        row["overrides"] = " ".join(f"{k}={v}" for k, v in job.overrides.items())
        writer.writerow(row)
    return out.getvalue()


def to_markdown(jobs: Sequence[JobResult]) -> str:
    keys = swept_keys(jobs)
    best = best_job(jobs)
    show_effective = any(j.lr_scaling != "none" for j in jobs)
    header = ["job", *keys, *(["effective lr"] if show_effective else []), "best Acc@1", "final train loss",
              "FPS", "wall time (s)", "status"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for job in jobs:
        mark = job is best
        acc = _fmt(job.best_acc1, 3)
        cells = [f"{job.job} ★" if mark else job.job, *(job.overrides.get(k, "") for k in keys),
                 *([f"{job.effective_lr:g}" if job.effective_lr is not None else ""] if show_effective else []),
                 f"**{acc}**" if mark else acc, _fmt(job.final_train_loss, 4), _fmt(job.fps, 1),
                 _fmt(job.wall_time_s, 1), _status_text(job).replace("|", "\\|").replace("\n", " ")]
        lines.append("| " + " | ".join(cells) + " |")
    counts = {s: sum(j.status == s for j in jobs) for s in ("completed", "failed", "incomplete")}
    intro = f"{len(jobs)} jobs: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n) + "."
    if best is not None:
        intro += f" Best (★): job {best.job}, Acc@1 {best.best_acc1:.3f}."
    common = common_overrides(jobs)
    paragraphs = [intro, *(["Every job: `" + " ".join(common) + "`"] if common else []), "\n".join(lines)]
    return "\n\n".join(paragraphs) + "\n"


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


def _write_atomic(path: Path, data: bytes) -> None:
    # Parallel jobs rewrite the summary as they finish: a reader never sees a half-written file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


@contextlib.contextmanager
def _summary_lock(sweep_dir: Path) -> Iterator[None]:
    """Serialise rebuilds: whoever writes last has read every result written before it."""
    try:
        import fcntl
    except ImportError:  # Windows: no flock; rebuilds may race, the last one still wins
        yield
        return
    with open(sweep_dir / ".summary.lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError:  # a file system without locks (some network mounts)
            pass
        yield


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


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m resnext.report",
        description="Rebuild summary.csv, summary.md and summary.png of a Hydra multirun from its directory.")
    parser.add_argument("sweep_dir", type=Path, help="the sweep directory, e.g. outputs/multirun/2025-01-31/12-00-00")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        print(f"{args.sweep_dir}: no such directory", file=sys.stderr)
        return 2
    jobs = write_summary(args.sweep_dir)
    if not jobs:
        print(f"{args.sweep_dir}: no job directories (folders with .hydra/overrides.yaml) found", file=sys.stderr)
        return 1
    print((args.sweep_dir / "summary.md").read_text())
    written = [name for name in SUMMARY_FILES if (args.sweep_dir / name).is_file()]
    print("wrote " + ", ".join(str(args.sweep_dir / name) for name in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
