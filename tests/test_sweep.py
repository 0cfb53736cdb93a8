"""Hydra multiruns end to end (real jobs in a subprocess) and the sweep helpers (fakes, no devices)."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Dict, List

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import RunMode
from omegaconf import OmegaConf

from tests.conftest import TINY, needs, run_cli
from resnext import report
from resnext.sweeps import summary
from resnext.sweeps import callback as sweep
from resnext.config.errors import ConfigError

# TINY, smaller still, one training step per job. The first job in a process pays for torch's warm-up
# (~10 s on 2 cores); later jobs of a sequential sweep take 1-2 s, each parallel worker pays it again.
_REPLACED = ("dataset.train_size", "dataset.val_size", "dataset.batch_size", "dataset.val_batch_size",
             "fps_warmup_steps")
SWEEP_TINY = [o for o in TINY if o.split("=")[0] not in _REPLACED] + [
    "dataset.train_size=16", "dataset.val_size=10", "dataset.val_batch_size=10", "dataset.workers=0",
    "dataset.batch_size=8", "max_steps_per_epoch=1", "fps_warmup_steps=0"]
PARALLEL = ["hydra/launcher=parallel_cpu", "hydra.launcher.n_jobs=2"]


def tiny_with(*overrides: str) -> List[str]:
    """SWEEP_TINY with the keys that `overrides` set replaced by them: each key once in every job's overrides."""
    keys = {o.split("=")[0] for o in overrides}
    return [o for o in SWEEP_TINY if o.split("=")[0] not in keys] + list(overrides)


def summary_rows(sweep_dir: Path) -> List[Dict[str, str]]:
    with open(sweep_dir / "summary.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def compose_with_hydra(overrides: List[str]):
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="resnext.conf", version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=True)


# ---- a 2 x 2 grid: the ready sweep, its values replaced from the command line ----

@pytest.fixture(scope="module")
def grid_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cwd = tmp_path_factory.mktemp("grid")
    # No -m: sweep=lr_bs sets hydra.mode=MULTIRUN itself.
    run_cli(["sweep=lr_bs", *tiny_with("optim.lr=0.05,0.1", "dataset.batch_size=8,16"), "hydra.sweep.dir=sweep"],
            cwd)
    return cwd / "sweep"


@pytest.mark.slow
def test_grid_sweep_has_one_directory_per_job(grid_sweep: Path) -> None:
    configs = []
    for num in range(4):
        job_dir = grid_sweep / str(num)
        for name in (".hydra/config.yaml", ".hydra/overrides.yaml", "train.log", "metrics.jsonl", "result.json",
                     "model_best.pth.tar"):
            assert (job_dir / name).is_file(), f"{job_dir / name} missing"
        assert not (job_dir / "checkpoint.pth.tar").exists(), "a sweep job keeps model_best only by default"
        cfg = OmegaConf.load(job_dir / ".hydra" / "config.yaml")
        configs.append((cfg.optim.lr, cfg.dataset.batch_size))
    assert sorted(configs) == [(0.05, 8), (0.05, 16), (0.1, 8), (0.1, 16)]
    assert not (grid_sweep / "4").exists()


@pytest.mark.slow
def test_grid_sweep_summary(grid_sweep: Path) -> None:
    rows = summary_rows(grid_sweep)
    assert len(rows) == 4 and {r["status"] for r in rows} == {"completed"}
    assert [(r["optim.lr"], r["dataset.batch_size"]) for r in rows] == [
        ("0.05", "8"), ("0.05", "16"), ("0.1", "8"), ("0.1", "16")]
    best = [r for r in rows if r["best"]]
    assert len(best) == 1 and float(best[0]["best_acc1"]) == max(float(r["best_acc1"]) for r in rows)
    assert (grid_sweep / "summary.md").read_text().count("|") > 4 * 8
    assert (grid_sweep / "summary.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_report_rebuilds_the_same_summary(grid_sweep: Path, tmp_path: Path) -> None:
    written = {name: (grid_sweep / name).read_text() for name in ("summary.csv", "summary.md")}
    for name in summary.SUMMARY_FILES:
        (grid_sweep / name).unlink()
    assert report.main([str(grid_sweep)]) == 0
    assert {name: (grid_sweep / name).read_text() for name in written} == written
    assert (grid_sweep / "summary.png").is_file()


# ---- a failing job, next to a good one, in parallel worker processes ----

@pytest.mark.slow
@needs("hydra_plugins.hydra_joblib_launcher", extra="sweep")
def test_failed_job_is_summarised_and_the_others_kept(tmp_path: Path) -> None:
    # optim.lr=-1 composes but check_config refuses it: a job that fails before training. Hydra's
    # BasicSweeper re-raises the failure before on_multirun_end, so the summary comes from the workers.
    proc = run_cli(["-m", *SWEEP_TINY, *PARALLEL, "optim.lr=0.1,-1", "hydra.sweep.dir=sweep"], tmp_path,
                   check=False)
    assert proc.returncode != 0
    sweep_dir = tmp_path / "sweep"
    ok, failed = summary_rows(sweep_dir)
    assert ok["status"] == "completed" and ok["best"] == "1" and ok["best_acc1"]
    assert (sweep_dir / "0" / "model_best.pth.tar").is_file()
    assert failed["status"] == "failed" and failed["best_acc1"] == ""
    assert failed["error"].startswith("ConfigError: optim.lr=-1.0 must be positive")
    assert json.loads((sweep_dir / "1" / "result.json").read_text())["status"] == "failed"
    assert "failed: ConfigError" in (sweep_dir / "summary.md").read_text()


# ---- Optuna ----

@pytest.mark.slow
@needs("optuna", extra="sweep")
def test_optuna_search_maximises_acc1(tmp_path: Path) -> None:
    run_cli(["sweep=optuna_lr_wd", *SWEEP_TINY, "hydra.sweeper.n_trials=2", "hydra.sweeper.stagger_s=0",
             "hydra.sweep.dir=sweep"], tmp_path)
    sweep_dir = tmp_path / "sweep"
    results = OmegaConf.load(sweep_dir / "optimization_results.yaml")
    rows = summary_rows(sweep_dir)
    assert len(rows) == 2 and {r["status"] for r in rows} == {"completed"}
    assert results.best_value == max(float(r["best_acc1"]) for r in rows)
    assert all(0.01 <= float(r["lr"]) <= 1.0 for r in rows)


# ---- configs that compose without running ----

def test_ready_sweep_composes_with_other_overrides() -> None:
    cfg = compose_with_hydra(["sweep=lr_bs", "epochs=3"])
    assert cfg.hydra.mode == RunMode.MULTIRUN and cfg.epochs == 3
    assert dict(cfg.hydra.sweeper.params) == {"optim.lr": "0.05,0.1,0.2", "dataset.batch_size": "128,256"}
    assert cfg.hydra.callbacks.sweep_summary._target_ == "resnext.sweeps.callback.SweepSummary"


@needs("hydra_plugins.hydra_submitit_launcher", extra="sweep")
def test_slurm_launcher_composes() -> None:
    cfg = compose_with_hydra(["hydra/launcher=slurm_8gpu", "device=cuda_8p", "distributed=env"])
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")
    assert cfg.hydra.launcher.tasks_per_node == cfg.hydra.launcher.gpus_per_node == 8
    assert cfg.distributed.mode == "env"


# ---- the callback outside a multirun ----

def test_callback_does_nothing_in_single_run_mode(tmp_path: Path) -> None:
    config = OmegaConf.create({"hydra": {"mode": "RUN", "runtime": {"output_dir": str(tmp_path)},
                                         "sweep": {"dir": str(tmp_path)}}})
    failed = JobReturn(status=JobStatus.FAILED, _return_value=RuntimeError("boom"))
    sweep.SweepSummary().on_job_end(config, failed)
    assert list(tmp_path.iterdir()) == []


def test_record_outcome(tmp_path: Path) -> None:
    result = tmp_path / "result.json"
    sweep.record_outcome(tmp_path, None)  # ended without result.json (a dry run): completed, no numbers
    assert json.loads(result.read_text()) == {"status": "completed"}
    result.write_text(json.dumps({"status": "completed", "best_acc1": 12.5}))
    sweep.record_outcome(tmp_path, None)
    assert json.loads(result.read_text()) == {"status": "completed", "best_acc1": 12.5}
    sweep.record_outcome(tmp_path, RuntimeError("disk\nfull"))  # failed after writing: keep its numbers
    failed = json.loads(result.read_text())
    assert failed.pop("ended_at") and failed == {"status": "failed", "best_acc1": 12.5,
                                                 "error": "RuntimeError: disk full", "epochs_run": 0}


# ---- device placement for parallel jobs (fake devices and Hydra state) ----

def test_job_devices_rotate_over_disjoint_groups() -> None:
    assert [sweep.job_devices([0, 1, 2, 3], 4, k) for k in range(6)] == [[0], [1], [2], [3], [0], [1]]
    assert [sweep.job_devices(list(range(8)), 2, k) for k in range(3)] == [[0, 1, 2, 3], [4, 5, 6, 7], [0, 1, 2, 3]]
    assert sweep.job_devices([4, 5, 6], 2, 1) == [5]  # the device that fills no whole group stays idle
    assert [sweep.job_devices(list(range(8)), 3, k, group_size=1) for k in range(4)] == [[0], [1], [2], [0]]
    with pytest.raises(ConfigError, match="only 2 devices"):
        sweep.job_devices([0, 1], 4, 0)


@pytest.fixture
def fake_multirun_job(monkeypatch: pytest.MonkeyPatch):
    """Pretend to be job `num` of a multirun on a node with 4 visible CUDA devices."""
    state = SimpleNamespace(mode=RunMode.MULTIRUN, job=SimpleNamespace(num=0))
    monkeypatch.setattr(sweep, "HydraConfig", SimpleNamespace(initialized=lambda: True, get=lambda: state))
    monkeypatch.setattr(sweep, "visible_device_count", lambda kind: 4)
    return state


def device_cfg(mode: str = "none", **device):
    base = {"type": "cuda", "device_list": [0], "port": None, "spread_jobs": 4}
    return OmegaConf.create({"device": {**base, **device}, "distributed": {"mode": mode}})


def test_place_job_on_devices(fake_multirun_job) -> None:
    fake_multirun_job.job.num = 5
    cfg = device_cfg()  # cuda_1p's [0]: rotate over every visible device
    sweep.place_job_on_devices(cfg)
    assert cfg.device.device_list == [1]

    cfg = device_cfg("spawn", device_list=list(range(8)), port=29688)  # cuda_8p split into 4 pairs
    sweep.place_job_on_devices(cfg)
    assert cfg.device.device_list == [2, 3] and cfg.device.port == 29689

    cfg = device_cfg(device_list=[4, 5, 6, 7], spread_jobs=2)  # one device per job from the listed ones
    sweep.place_job_on_devices(cfg)
    assert cfg.device.device_list == [5]


@pytest.mark.parametrize("change", [{"type": "cpu"}, {"spread_jobs": 0}, {"mode": "env"}, {"run": RunMode.RUN}])
def test_place_job_on_devices_leaves_config_alone(fake_multirun_job, change: dict) -> None:
    fake_multirun_job.mode = change.pop("run", RunMode.MULTIRUN)
    fake_multirun_job.job.num = 3
    cfg = device_cfg(**change)
    sweep.place_job_on_devices(cfg)
    assert cfg.device.device_list == [0]
