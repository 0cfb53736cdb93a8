"""The sweep summary builder on hand-made job directories: statuses, best row, tables, plot, CLI (fast)."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import pytest
from omegaconf import OmegaConf

from resnext import report
from resnext.sweeps import results, summary


def make_job(sweep_dir: Path, name: str, overrides: Sequence[str], *, lr: float = 0.1, batch: int = 256,
             lr_scaling: str = "none", result: Optional[dict] = None, metrics: Sequence[dict] = (),
             starts: Sequence[dict] = ()) -> Path:
    """A job directory as train.py + Hydra leave it: .hydra/{overrides,config}.yaml, metrics.jsonl, result.json,
    and run_record.json with the `git` of each start (the first, then its resumes)."""
    job_dir = sweep_dir / name
    (job_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(list(overrides)), job_dir / ".hydra" / "overrides.yaml")
    config = {"optim": {"lr": lr, "lr_scaling": lr_scaling, "reference_batch": 256},
              "dataset": {"batch_size": batch}}
    OmegaConf.save(OmegaConf.create(config), job_dir / ".hydra" / "config.yaml")
    if metrics:
        (job_dir / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    if result is not None:
        (job_dir / "result.json").write_text(json.dumps(result))
    if starts:
        record = {"git": starts[0], "resumes": [{"git": git} for git in starts[1:]]}
        (job_dir / "run_record.json").write_text(json.dumps(record))
    return job_dir


def code(commit: Optional[str], dirty: bool = False) -> dict:
    return {"commit": commit, "dirty": dirty} if commit else {"commit": None, "outside_git": True}


def completed(acc1: float, loss: float = 1.0) -> dict:
    return {"status": "completed", "best_acc1": acc1, "final_train_loss": loss, "fps": 100.0, "wall_time_s": 12.0}


def epoch(n: int, acc1: float, loss: float, seconds: float = 5.0) -> dict:
    return {"epoch": n, "train_loss": loss, "fps": 50.0, "acc1": acc1, "best_acc1": acc1, "seconds": seconds}


def read_csv(path: Path) -> List[Dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture
def grid_dir(tmp_path: Path) -> Path:
    """A 2 lr x 2 batch sweep: one job completed best, one completed, one failed, one still running."""
    sweep = tmp_path / "sweep"
    common = ["epochs=2", "dataset=synthetic"]
    make_job(sweep, "0", ["optim.lr=0.1", "dataset.batch_size=128", *common], lr=0.1, batch=128,
             result=completed(40.0), metrics=[epoch(0, 40.0, 2.0)], starts=[code("a" * 40)])
    # Preempted twice: resumed once by the same code, then by another, dirty commit.
    make_job(sweep, "1", ["optim.lr=0.1", "dataset.batch_size=256", *common], lr=0.1, batch=256,
             result=completed(55.5, 1.5), metrics=[epoch(0, 55.5, 1.5)],
             starts=[code("a" * 40), code("a" * 40), code("b" * 40, dirty=True)])
    make_job(sweep, "2", ["optim.lr=0.2", "dataset.batch_size=128", *common], lr=0.2, batch=128,
             result={"status": "failed", "error": "RuntimeError: a | b"}, starts=[code(None)])
    # Running: its partial Acc@1 is higher than any finished job's, but it must not be marked best.
    make_job(sweep, "3", ["optim.lr=0.2", "dataset.batch_size=256", *common], lr=0.2, batch=256,
             metrics=[epoch(0, 50.0, 3.0, seconds=4.0), epoch(1, 70.0, 2.5, seconds=6.0)])
    return sweep


def test_statuses_and_numbers_come_from_result_or_metrics(grid_dir: Path) -> None:
    jobs = {j.job: j for j in results.collect_jobs(grid_dir)}
    assert [j.status for j in jobs.values()] == ["completed", "completed", "failed", "incomplete"]
    assert jobs["1"].best_acc1 == 55.5 and jobs["1"].wall_time_s == 12.0
    assert jobs["2"].error == "RuntimeError: a | b" and jobs["2"].best_acc1 is None
    running = jobs["3"]
    assert (running.best_acc1, running.final_train_loss, running.wall_time_s) == (70.0, 2.5, 10.0)
    assert results.best_job(list(jobs.values())).job == "1"


def test_swept_keys_and_common_overrides(grid_dir: Path) -> None:
    jobs = results.collect_jobs(grid_dir)
    assert results.swept_keys(jobs) == ["optim.lr", "dataset.batch_size"]
    assert results.common_overrides(jobs) == ["epochs=2", "dataset=synthetic"]


def test_write_summary_files(grid_dir: Path) -> None:
    summary.write_summary(grid_dir)
    rows = read_csv(grid_dir / "summary.csv")
    assert [r["job"] for r in rows] == ["0", "1", "2", "3"]
    assert [r["best"] for r in rows] == ["", "1", "", ""]
    assert rows[2]["status"] == "failed" and rows[2]["error"] == "RuntimeError: a | b"
    assert rows[0]["overrides"] == "optim.lr=0.1 dataset.batch_size=128 epochs=2 dataset=synthetic"
    # The code each job ran, from its run_record.json (job 3 predates records: no commit known).
    assert [r["commit"] for r in rows] == ["aaaaaaa", "aaaaaaa -> bbbbbbb+dirty", "no git", ""]

    table = (grid_dir / "summary.md").read_text()
    assert table.count("★") == 2  # the intro line and the best row
    assert "| 1 ★ | 0.1 | 256 | **55.500** |" in table
    assert "| 12.0 | aaaaaaa -> bbbbbbb+dirty | completed |" in table and "| commit | status |" in table
    assert "failed: RuntimeError: a \\| b" in table  # a pipe in an error does not break the table
    assert "effective lr" not in table  # no lr scaling in this sweep
    assert (grid_dir / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_effective_lr_shown_when_scaled(tmp_path: Path) -> None:
    for num, batch in enumerate((128, 512)):
        make_job(tmp_path, str(num), [f"dataset.batch_size={batch}", "optim.lr_scaling=linear"], lr=0.1,
                 batch=batch, lr_scaling="linear", result=completed(10.0 + num))
    summary.write_summary(tmp_path)
    assert [r["effective_lr"] for r in read_csv(tmp_path / "summary.csv")] == ["0.05", "0.2"]
    table = (tmp_path / "summary.md").read_text()
    assert "effective lr" in table and "| 1 ★ | 512 | 0.2 |" in table
    assert "commit" not in table  # no job has a run record: no empty column


def test_jobs_sorted_numerically_and_half_written_files_tolerated(tmp_path: Path) -> None:
    for num in (10, 2, 1):
        make_job(tmp_path, str(num), [f"seed={num}"], metrics=[epoch(0, float(num), 1.0)])
    with open(tmp_path / "10" / "metrics.jsonl", "a") as handle:
        handle.write('{"epoch": 1, "best_ac')  # the writer was interrupted mid-line
    (tmp_path / "2" / "result.json").write_text('{"status": "compl')  # read while being written
    jobs = results.collect_jobs(tmp_path)
    assert [j.job for j in jobs] == ["1", "2", "10"]
    assert jobs[-1].best_acc1 == 10.0
    assert jobs[1].status == "incomplete" and jobs[1].best_acc1 == 2.0


@pytest.mark.parametrize("kind", ["lr_only", "other_keys", "nothing_scored"])
def test_plot_cases(tmp_path: Path, kind: str) -> None:
    for num in range(3):
        overrides = [f"optim.lr={0.1 * 2 ** num}"] if kind == "lr_only" else [f"optim.momentum={0.8 + num / 20}"]
        result = None if kind == "nothing_scored" else completed(float(num))
        make_job(tmp_path, str(num), overrides, lr=0.1 * 2 ** num if kind == "lr_only" else 0.1, result=result)
    summary.write_summary(tmp_path)
    assert (tmp_path / "summary.png").is_file() == (kind != "nothing_scored")
    assert len(read_csv(tmp_path / "summary.csv")) == 3


def test_cli(grid_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert report.main([str(grid_dir)]) == 0
    out = capsys.readouterr().out
    assert "| 1 ★ |" in out and "summary.png" in out
    assert report.main([str(tmp_path / "missing")]) == 2
    (tmp_path / "empty").mkdir()
    assert report.main([str(tmp_path / "empty")]) == 1


def test_a_single_run_directory_is_refused_without_writing_anything(tmp_path: Path, capsys) -> None:
    run_dir = make_job(tmp_path, "run", ["epochs=2"], result=completed(50.0))  # has .hydra/ itself
    before = sorted(p.name for p in run_dir.iterdir())
    assert report.main([str(run_dir)]) == 1
    assert "single run's directory, not a sweep" in capsys.readouterr().err
    assert sorted(p.name for p in run_dir.iterdir()) == before
    (tmp_path / "empty").mkdir()
    assert report.main([str(tmp_path / "empty")]) == 1
    assert not list((tmp_path / "empty").iterdir())


def test_a_rebuild_leaves_no_lock_file(grid_dir: Path) -> None:
    summary.write_summary(grid_dir)
    assert sorted(p.name for p in grid_dir.iterdir() if p.is_file()) == ["summary.csv", "summary.md", "summary.png"]
