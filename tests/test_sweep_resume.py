"""sweep.resume=true: a killed multirun, run again in the same sweep dir, runs only what is left."""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest
from hydra.types import RunMode
from omegaconf import OmegaConf

from resnext.sweeps import resume as sweep_resume
from resnext.config.errors import ConfigError
from tests.test_preempt import finish, start_cli, wait_for
from tests.test_sweep import SWEEP_TINY, summary_rows


def job_result(sweep_dir: Path, num: int) -> dict:
    path = sweep_dir / str(num) / "result.json"
    return json.loads(path.read_text()) if path.exists() else {}


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_sweep_killed_after_its_first_job_resumes_with_only_the_rest(tmp_path):
    sweep_dir = tmp_path / "sweep"
    args = ["-m", *SWEEP_TINY, "optim.lr=0.05,0.1,0.2", f"hydra.sweep.dir={sweep_dir}"]
    proc = start_cli(args, tmp_path)
    wait_for(lambda: job_result(sweep_dir, 0).get("status") == "completed", proc, timeout=400)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first = (sweep_dir / "0" / "result.json").read_text()
    assert job_result(sweep_dir, 2) == {}

    proc = start_cli([*args, "sweep.resume=true"], tmp_path)
    out = finish(proc, timeout=600)
    assert proc.returncode == 0, out
    assert "job 0 completed before" in out and out.count("done: best Acc@1") == 2  # jobs 1 and 2 trained
    assert (sweep_dir / "0" / "result.json").read_text() == first  # job 0 untouched
    rows = summary_rows(sweep_dir)
    assert len(rows) == 3 and {r["status"] for r in rows} == {"completed"}


def test_job_status_reads_what_each_job_left(tmp_path):
    assert sweep_resume.job_status(tmp_path) == "new"
    (tmp_path / "checkpoint.pth.tar").write_bytes(b"")
    assert sweep_resume.job_status(tmp_path) == "interrupted"
    (tmp_path / "result.json").write_text(json.dumps({"status": "failed", "error": "x"}))
    assert sweep_resume.job_status(tmp_path) == "failed"
    (tmp_path / "result.json").write_text(json.dumps({"status": "completed", "best_acc1": 50.0}))
    assert sweep_resume.job_status(tmp_path) == "completed"


@pytest.fixture
def fake_hydra(monkeypatch):
    state = SimpleNamespace(mode=RunMode.MULTIRUN, sweeper=OmegaConf.create({"_target_": "BasicSweeper"}))
    monkeypatch.setattr(sweep_resume, "HydraConfig", SimpleNamespace(get=lambda: state))
    return state


def job_cfg():
    return OmegaConf.create({"sweep": {"resume": True}, "resume": None})


def test_prepare_job_skips_resumes_or_reruns(tmp_path, fake_hydra):
    cfg = job_cfg()
    assert sweep_resume.prepare_job(cfg, tmp_path) is None and cfg.resume is None  # new: as configured
    (tmp_path / "checkpoint.pth.tar").write_bytes(b"")
    assert sweep_resume.prepare_job(cfg, tmp_path) is None and cfg.resume == "auto"  # interrupted: resume
    (tmp_path / "result.json").write_text(json.dumps({"status": "failed", "error": "NaN"}))
    cfg = job_cfg()
    assert sweep_resume.prepare_job(cfg, tmp_path) is None and cfg.resume is None  # failed: from the start
    assert not (tmp_path / "checkpoint.pth.tar").exists() and not (tmp_path / "result.json").exists()
    (tmp_path / "result.json").write_text(json.dumps({"status": "completed", "best_acc1": 61.5}))
    assert sweep_resume.prepare_job(job_cfg(), tmp_path) == 61.5  # completed: skipped


def test_sweep_resume_is_refused_where_it_cannot_work(tmp_path, fake_hydra):
    optuna = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    fake_hydra.sweeper = OmegaConf.create({"_target_": optuna})
    with pytest.raises(ConfigError, match="cannot resume an Optuna search.*hydra.sweeper.storage"):
        sweep_resume.prepare_job(job_cfg(), tmp_path)
    fake_hydra.mode = RunMode.RUN
    with pytest.raises(ConfigError, match="sweep.resume=true continues a multirun.*resume=auto"):
        sweep_resume.prepare_job(job_cfg(), tmp_path)
