"""A sweep's jobs as rows: read from what each job left on disk, and rendered as CSV and Markdown tables.

Everything is rebuilt from the job directories (.hydra/, result.json, metrics.jsonl, run_record.json), never from
in-memory sweep state, so the same code serves the sweep callback (resnext.sweeps.callback, after every job,
whichever launcher ran it and on whichever machine) and `python -m resnext.report <sweep dir>` on a
sweep that is still running or was interrupted.

A job's status: completed (result.json from the trainer), failed (result.json from the callback,
with the error), incomplete (no result.json yet: running, killed or interrupted; its numbers come
from the epochs metrics.jsonl holds so far).
"""
from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from omegaconf import OmegaConf

from ..runtime import run_record
from ..training.batch_fit import AUTO_BATCH_FILE
from ..training.optim import effective_lr

log = logging.getLogger("resnext")

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
    commit: str = ""  # the code of each start: 'abc1234', 'abc1234+dirty', 'abc1234 -> def5678' (run_record.json)


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
        if job.batch_size == "auto":  # searched by the job: its choice is in the job directory
            job.batch_size = (read_json(config_path.parent.parent / AUTO_BATCH_FILE) or {}).get(BATCH_KEY)
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
    job.commit = run_record.code_summary(read_json(job_dir / run_record.RECORD_FILE))
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


def fmt(value: Optional[float], digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _status_text(job: JobResult) -> str:
    return f"{job.status}: {job.error}" if job.error else job.status


def to_csv(jobs: Sequence[JobResult]) -> str:
    keys = swept_keys(jobs)
    best = best_job(jobs)
    columns = ["job", "best", *keys, "lr", "lr_scaling", "effective_lr", "batch_size", "best_acc1",
               "final_train_loss", "fps", "wall_time_s", "commit", "status", "error", "overrides"]
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
    show_commit = any(j.commit for j in jobs)  # jobs from before run records have none
    header = ["job", *keys, *(["effective lr"] if show_effective else []), "best Acc@1", "final train loss",
              "FPS", "wall time (s)", *(["commit"] if show_commit else []), "status"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for job in jobs:
        mark = job is best
        acc = fmt(job.best_acc1, 3)
        cells = [f"{job.job} ★" if mark else job.job, *(job.overrides.get(k, "") for k in keys),
                 *([f"{job.effective_lr:g}" if job.effective_lr is not None else ""] if show_effective else []),
                 f"**{acc}**" if mark else acc, fmt(job.final_train_loss, 4), fmt(job.fps, 1),
                 fmt(job.wall_time_s, 1), *([job.commit] if show_commit else []),
                 _status_text(job).replace("|", "\\|").replace("\n", " ")]
        lines.append("| " + " | ".join(cells) + " |")
    counts = {s: sum(j.status == s for j in jobs) for s in ("completed", "failed", "incomplete")}
    intro = f"{len(jobs)} jobs: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n) + "."
    if best is not None:
        intro += f" Best (★): job {best.job}, Acc@1 {best.best_acc1:.3f}."
    common = common_overrides(jobs)
    paragraphs = [intro, *(["Every job: `" + " ".join(common) + "`"] if common else []), "\n".join(lines)]
    return "\n\n".join(paragraphs) + "\n"
