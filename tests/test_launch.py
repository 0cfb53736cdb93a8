"""launch.plan refuses what cannot run before any process starts; dry runs; torchrun/SLURM ranks;
a rank that crashes ends the whole job with its traceback."""
from __future__ import annotations

import logging
import time

import pytest
import torch.distributed as dist

from tests import fake_npu
from tests.conftest import compose_config
from resnext.runtime import devices, distributed
from resnext.training import launch
from resnext.config.errors import ConfigError

TORCHRUN_ENV = {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4",
                "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29400"}
LAUNCHER_VARS = [*TORCHRUN_ENV, "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_JOB_ID", "SLURM_STEP_ID",
                 "SLURM_NTASKS_PER_NODE", "SLURM_JOB_NODELIST", "SLURM_NODELIST", "TORCHELASTIC_RUN_ID"]


@pytest.fixture
def launcher_env(monkeypatch):
    """A clean slate of launcher variables; returns a setter."""
    for name in LAUNCHER_VARS:
        monkeypatch.delenv(name, raising=False)

    def set_env(values):
        for name, value in values.items():
            monkeypatch.setenv(name, value)
    return set_env


def test_loader_workers_are_capped_at_the_cores_per_rank_in_one_line(monkeypatch, caplog, tmp_path):
    """dataset=folder asks for 8 workers per rank; on 2 cores torch warned twice and ran no faster."""
    monkeypatch.setattr(devices, "available_cores", lambda: 2)
    cfg = compose_config(["dataset=folder", "device=cpu"])
    plan = launch.plan(cfg)
    assert plan.workers == 2 and "dataset.workers=8 capped at 2 loader worker(s) per rank" in plan.describe()
    with caplog.at_level(logging.WARNING, logger="resnext"):
        used = launch.run(cfg, plan, tmp_path, lambda rank_cfg, ctx: rank_cfg.dataset.workers)
    assert used == 2 and sum("capped at 2" in record.message for record in caplog.records) == 1
    spawn = compose_config(["dataset=folder", "device=cpu", "distributed=spawn", "device.nprocs=2"])
    assert launch.plan(spawn).workers == 1
    assert launch.plan(compose_config(["dataset=folder", "dataset.workers=2", "device=cpu"])).notes == ()


def test_a_ranks_core_budget_counts_the_ranks_on_its_node_not_the_whole_job(monkeypatch, launcher_env):
    """Two nodes of four ranks on 16 cores: 4 cores per rank, not 16 // 8 = 2 (DALI threads, the probe's advice)."""
    monkeypatch.setattr(devices, "available_cores", lambda: 16)
    assert devices.node_cores_per_rank(world_size=8) == 2  # no launcher says otherwise: all ranks on this node
    launcher_env({"LOCAL_WORLD_SIZE": "4"})
    assert devices.node_cores_per_rank(world_size=8) == 4


def test_fp16_on_cpu_runs_with_a_note_naming_bf16():
    """Slower than fp32 on a CPU (3 img/s against 10-15): said before the run, not refused (seed_1p uses fp16)."""
    [note] = launch.plan(compose_config(["amp=fp16", "device=cpu"])).notes
    assert "amp=fp16 on cpu trains slower than fp32" in note and "amp=bf16" in note and "amp=off" in note
    assert launch.plan(compose_config(["amp=bf16", "device=cpu"])).notes == ()


def test_dry_run_describes_npu_8p_without_cards(monkeypatch):
    fake_npu.uninstall(monkeypatch)
    monkeypatch.setattr(devices, "available_cores", lambda: 192)  # an NPU host: 3 workers per rank fit
    cfg = compose_config(["device=npu_8p", "dataset.batch_size=64", "dataset.workers=3", "launch.dry_run=true"])
    text = launch.plan(cfg).describe()
    for expected in ("world size 8", "hccl at 127.0.0.1:29688", "global 64 = 8 per rank x 8", "lr 0.1",
                     "3 loader worker(s) per rank", "rank 7 (local 7): npu:7", "NOT checked", "torch_npu"):
        assert expected in text, text
    with pytest.raises(ConfigError, match="torch_npu"):  # the same config, for real
        launch.plan(compose_config(["device=npu_8p", "dataset.batch_size=64"]))


@pytest.mark.parametrize("overrides, message", [
    (["distributed=spawn", "device.nprocs=3"], "must divide by the world size 3"),
    (["distributed=spawn", "device.nprocs=2", "distributed.sync_bn=true"], "SyncBatchNorm runs on CUDA/NPU only"),
    (["device.nprocs=2"], "add distributed=spawn"),
    (["distributed.backend=nccl"], "does not run on cpu"),
])
def test_impossible_launches_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        launch.plan(compose_config(["device=cpu", *overrides]))


def test_torchrun_ranks(monkeypatch, launcher_env):
    launcher_env(TORCHRUN_ENV)
    plan = launch.plan(compose_config(["device=cpu", "distributed=env"]))
    assert (plan.first_rank, plan.first_local_rank, plan.world_size) == (5, 1, 8)
    assert (plan.addr, plan.port, plan.backend, plan.per_rank_batch) == ("10.0.0.1", 29400, "gloo", 2)

    fake_npu.install(monkeypatch, cards=8)
    plan = launch.plan(compose_config(["device=npu_8p", "distributed=env", "device.device_list=[4,5,6,7]"]))
    assert [str(d) for d in plan.devices] == ["npu:5"]  # device_list[LOCAL_RANK]
    assert [str(d) for d in launch.plan(compose_config(["device=npu_1p", "distributed=env",
                                                        "device.device_list=null"])).devices] == ["npu:1"]
    with pytest.raises(ConfigError, match="no card for local rank 1"):
        launch.plan(compose_config(["device=npu_1p", "distributed=env"]))


def test_slurm_ranks(launcher_env):
    launcher_env({"SLURM_PROCID": "3", "SLURM_NTASKS": "4", "SLURM_LOCALID": "1", "SLURM_JOB_ID": "1234",
                  "SLURM_NTASKS_PER_NODE": "2(x2)", "MASTER_ADDR": "node-a"})
    ranks = distributed.ranks_from_env()
    assert (ranks.source, ranks.rank, ranks.world_size, ranks.local_rank) == ("slurm", 3, 4, 1)
    assert (ranks.local_world_size, ranks.addr, ranks.port) == (2, "node-a", 15000 + 1234)


def test_env_mode_says_how_to_start_ranks(monkeypatch, launcher_env):
    with pytest.raises(ConfigError, match="torchrun --nproc_per_node"):
        launch.plan(compose_config(["device=cpu", "distributed=env"]))
    launcher_env({"SLURM_PROCID": "0", "SLURM_NTASKS": "2", "SLURM_LOCALID": "0", "SLURM_JOB_ID": "7"})
    monkeypatch.setenv("PATH", "/nonexistent")  # no scontrol to expand the node list
    with pytest.raises(ConfigError, match="export MASTER_ADDR"):
        distributed.ranks_from_env()


def test_env_ranks_share_one_run_dir(launcher_env):
    default = "2026-01-01/12-00-00"
    assert distributed.launcher_run_dir("spawn", default) == default
    launcher_env({"TORCHELASTIC_RUN_ID": "none"})  # torchrun's default id for multi-node: not unique
    assert distributed.launcher_run_dir("env", default) == default
    launcher_env({"TORCHELASTIC_RUN_ID": "job42"})
    assert distributed.launcher_run_dir("env", default) == "torchrun-job42"
    launcher_env({"SLURM_JOB_ID": "99", "SLURM_STEP_ID": "2", "SLURM_PROCID": "0"})
    assert distributed.launcher_run_dir("env", default) == "slurm-99.2"


def crash_on_rank_1(cfg, ctx):
    """Rank 1 dies at start while rank 0 waits for it in a collective, which would never return."""
    if ctx.rank == 1:
        raise RuntimeError("rank 1 failed on purpose")
    dist.barrier()
    return 0.0


@pytest.mark.timeout(120)
@pytest.mark.slow
def test_a_crashing_rank_ends_the_job_with_its_traceback(tmp_path):
    cfg = compose_config(["device=cpu", "distributed=spawn", "device.nprocs=2", "distributed.timeout_min=10"])
    started = time.monotonic()
    with pytest.raises(launch.RankFailed) as err:
        launch.run(cfg, launch.plan(cfg), tmp_path, crash_on_rank_1)
    # The root cause leads, not rank 0's "peer went away" that followed it.
    message = str(err.value)
    assert message.startswith("rank 1 failed first") and "Traceback" in message
    assert "rank 1 failed on purpose" in message.split("the other ranks")[0]
    assert time.monotonic() - started < 100  # not the 10-minute collective timeout
