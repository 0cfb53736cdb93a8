"""The logger group: composition, refusals before training, and the real MLflow / W&B packages offline."""
from __future__ import annotations

import csv
import importlib.util
import json
import logging
import socket
from pathlib import Path

import pytest

from resnext.config.errors import ConfigError
from resnext.loggers import check_loggers, chosen, open_sinks, run_tags
from resnext.loggers.base import Guarded, Sink
from resnext.loggers.metrics import MetricsWriter
from resnext.runtime.preempt import Preempted
from tests.conftest import cli_in_process, compose_config, needs, train_in_process
from tests.wandb_records import read_run

MLFLOW = needs("mlflow", extra="mlflow")
WANDB = needs("wandb", extra="wandb")


@pytest.mark.parametrize("overrides, expected", [
    ([], ["tensorboard"]),
    (["logger=[tensorboard,mlflow,csv]"], ["tensorboard", "csv", "mlflow"]),
    (["logger=none"], []),
    (["logger=wandb", "tensorboard=true"], ["wandb", "tensorboard"]),  # the deprecated key still works
    (["logger=[tensorboard,csv]", "tensorboard=false"], ["csv"]),
    (["logger.mlflow.experiment=x"], ["tensorboard"]),  # a setting alone does not switch a sink on
    (["logger=none", "logger.csv.enabled=true"], ["csv"]),
])
def test_logger_group_composes_one_or_several_sinks(overrides, expected):
    cfg = compose_config(overrides, tiny=False)
    assert chosen(cfg) == expected


def test_sink_settings_live_under_their_own_node():
    cfg = compose_config(["logger=[mlflow,wandb]", "logger.mlflow.experiment=exp1", "logger.wandb.project=p1"])
    assert cfg.logger.mlflow.experiment == "exp1" and cfg.logger.wandb.project == "p1"


def test_a_missing_tracking_package_is_refused_with_the_pip_line(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(ConfigError, match=r'logger=mlflow needs the mlflow package.*pip install -e "\.\[mlflow\]"'):
        check_loggers(compose_config(["logger=[csv,mlflow]"]))
    check_loggers(compose_config(["logger=csv"]))  # a run without mlflow is fine


@WANDB
def test_a_bad_wandb_mode_is_refused_naming_the_key():
    with pytest.raises(ConfigError, match="logger.wandb.mode='offlne' is not one of online, offline, disabled"):
        check_loggers(compose_config(["logger=wandb", "logger.wandb.mode=offlne"]))


# What train.main records in the run directory before the ranks start (resnext/runtime/run_record.py); the
# sinks read it from there, so a hand-made one does here.
RECORD = {"git": {"commit": "abc1234" + "0" * 33, "dirty": True}, "versions": {"torch": "2.14.1", "python": "3.11.7"},
          "devices": {"type": "cpu", "used": ["cpu"]}, "env": {"NCCL_DEBUG": "INFO"}, "resumes": []}


def write_record(run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "run_record.json").write_text(json.dumps(RECORD))


@MLFLOW
@pytest.mark.slow
def test_mlflow_local_store_holds_params_metrics_tags_and_artifacts(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default store is MLflow's sqlite:///mlflow.db in the working directory
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = compose_config(["logger=[mlflow,csv]", "epochs=2", "logger.mlflow.experiment=tiny",
                          "logger.mlflow.log_artifacts=true", "max_steps_per_epoch=1"])
    run_dir = tmp_path / "run"
    write_record(run_dir)
    train_in_process(cfg, run_dir)

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["optim.lr"] == "0.1" and run.data.params["dataset.image_size"] == "16"
    assert run.data.tags["run_dir"] == str(run_dir.resolve())
    assert {k: run.data.tags[k] for k in ("run.git_commit", "run.git_dirty", "run.torch", "run.device_used",
                                          "run.env.NCCL_DEBUG")} == {
        "run.git_commit": RECORD["git"]["commit"], "run.git_dirty": "True", "run.torch": "2.14.1",
        "run.device_used": "cpu", "run.env.NCCL_DEBUG": "INFO"}
    history = client.get_metric_history(run.info.run_id, "acc1")
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [(m.step, m.value) for m in history] == [(r["epoch"], r["acc1"]) for r in records]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "model")}
    assert artifacts == {"model/model_best.pth.tar"}
    assert {a.path for a in client.list_artifacts(run.info.run_id, "hydra")} == set()  # no .hydra outside Hydra
    with (run_dir / "metrics.csv").open() as f:
        assert [float(row["acc1"]) for row in csv.DictReader(f)] == [r["acc1"] for r in records]
    assert (run_dir / "curves.png").stat().st_size > 10_000


def _mlflow_runs(tmp_path, experiment):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    return client, client.search_runs([client.get_experiment_by_name(experiment).experiment_id])


@MLFLOW
@pytest.mark.slow
def test_a_resumed_run_continues_its_mlflow_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run_dir = tmp_path / "run"
    common = ["logger=mlflow", "logger.mlflow.experiment=resumed", "max_steps_per_epoch=1"]
    train_in_process(compose_config([*common, "epochs=1"]), run_dir)
    first = json.loads((run_dir / "tracking.json").read_text())["mlflow"]["run_id"]
    train_in_process(compose_config([*common, "epochs=2", f"resume={run_dir / 'checkpoint.pth.tar'}"]), run_dir)
    client, runs = _mlflow_runs(tmp_path, "resumed")
    assert [r.info.run_id for r in runs] == [first]  # one tracked run, not one per process start
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(first, "acc1")] == [0, 1]
    assert run.data.params["epochs"] == "1" and run.data.tags["resumed.epochs"] == "2"  # params are write-once


@MLFLOW
@pytest.mark.parametrize("error, status", [(RuntimeError("boom"), "FAILED"), (Preempted("stopped"), "KILLED")])
@pytest.mark.slow
def test_a_run_that_stops_is_not_left_running_on_the_tracking_server(tmp_path, monkeypatch, error, status):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)

    def stop(*args, **kwargs):
        raise error

    monkeypatch.setattr("resnext.training.trainer.evaluate", stop)  # the first validation, after a training epoch
    cfg = compose_config(["logger=mlflow", "logger.mlflow.experiment=stopped", "max_steps_per_epoch=1"])
    with pytest.raises(type(error)):
        train_in_process(cfg, tmp_path / "run")
    _, runs = _mlflow_runs(tmp_path, "stopped")
    assert [r.info.status for r in runs] == [status]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: nothing listens there


@MLFLOW
@pytest.mark.slow
def test_an_unreachable_tracking_server_warns_once_and_training_goes_on(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    cfg = compose_config(["logger=[mlflow,csv]", "epochs=2", "max_steps_per_epoch=1",
                          f"logger.mlflow.tracking_uri=http://127.0.0.1:{_closed_port()}"])
    with caplog.at_level(logging.WARNING, logger="resnext"):
        best = train_in_process(cfg, tmp_path / "run")
    assert best > 0
    warnings = [r.getMessage() for r in caplog.records if "logger mlflow failed" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 2
    assert len((tmp_path / "run" / "metrics.csv").read_text().splitlines()) == 3  # header + 2 epochs


class _DiesAfterOneEpoch(Sink):
    name = "flaky"

    def __init__(self) -> None:
        self.epochs = []

    def log_epoch(self, epoch, values):
        if self.epochs:
            raise ConnectionError("server went away")
        self.epochs.append(epoch)


def test_a_sink_that_fails_mid_run_is_switched_off_after_one_warning(tmp_path, caplog):
    flaky = _DiesAfterOneEpoch()
    writer = MetricsWriter(tmp_path, [Guarded(flaky)])
    with caplog.at_level(logging.WARNING, logger="resnext"):
        for epoch in range(4):
            writer.write({"epoch": epoch, "acc1": 1.0})
        writer.close()
    assert flaky.epochs == [0]
    assert sum("logger flaky failed" in r.getMessage() for r in caplog.records) == 1
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 4


@WANDB
@pytest.mark.slow
def test_wandb_offline_run_files_hold_config_and_metrics(tmp_path, monkeypatch):
    for var, sub in (("WANDB_CONFIG_DIR", "cfg"), ("WANDB_CACHE_DIR", "cache"), ("WANDB_DATA_DIR", "data")):
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = compose_config(["logger=wandb", "logger.wandb.project=tiny"])
    run_dir = tmp_path / "run"
    write_record(run_dir)
    writer = MetricsWriter(run_dir, open_sinks(cfg, run_dir))
    writer.write_step(3, {"loss": 2.5, "lr": 0.1, "fps": 100.0})
    writer.write({"epoch": 0, "train_loss": 2.0, "acc1": 40.0})
    writer.write({"epoch": 1, "train_loss": 1.0, "acc1": 75.0})
    writer.close()
    (run_file,) = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    run = read_run(run_file)
    assert run["config"]["optim.lr"] == "0.1"
    assert run["config"]["run/run_dir"] == str(run_dir.resolve())
    assert run["config"]["run/git_commit"] == RECORD["git"]["commit"] and run["config"]["run/torch"] == "2.14.1"
    history = [h for h in run["history"] if "epoch" in h or "global_step" in h]
    assert [(h.get("global_step"), h.get("step/loss")) for h in history if "global_step" in h] == [(3, 2.5)]
    assert [(h["epoch"], h["acc1"]) for h in history if "epoch" in h] == [(0, 40), (1, 75)]


@WANDB
@pytest.mark.slow
def test_a_resumed_run_continues_its_wandb_run(tmp_path, monkeypatch):
    for var, sub in (("WANDB_CONFIG_DIR", "cfg"), ("WANDB_CACHE_DIR", "cache"), ("WANDB_DATA_DIR", "data")):
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    first = MetricsWriter(run_dir, open_sinks(compose_config(["logger=wandb", "epochs=1"]), run_dir))
    first.write({"epoch": 0, "acc1": 40.0})
    first.close("KILLED")
    recorded = json.loads((run_dir / "tracking.json").read_text())["wandb"]["id"]
    # Resuming from this directory's checkpoint: the same W&B run id, the config's new values accepted.
    second = MetricsWriter(run_dir, open_sinks(compose_config(["logger=wandb", "epochs=2"]), run_dir,
                                               run_dir / "checkpoint.pth.tar"))
    second.write({"epoch": 1, "acc1": 75.0})
    second.close()
    runs = sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 2 and all(path.name == f"run-{recorded}.wandb" for path in runs)
    assert read_run(runs[-1])["config"]["epochs"] == "2"


@pytest.mark.slow
def test_multirun_jobs_carry_sweep_dir_job_number_and_overrides(tmp_path, monkeypatch):
    assert cli_in_process(monkeypatch, tmp_path, ["-m", "launch.dry_run=true", "seed=1,2"]) == 0
    (job,) = [p.parent.parent for p in tmp_path.glob("outputs/multirun/*/*/1/.hydra/hydra.yaml")]
    tags = run_tags(job)
    assert tags["mode"] == "MULTIRUN" and tags["job_num"] == "1"
    assert tags["sweep_dir"] == str(job.parent.resolve())
    assert tags["overrides"] == "launch.dry_run=True seed=2"  # as Hydra records it
