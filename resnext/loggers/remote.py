"""Sinks that send the run to a tracking service: MLflow (local store or server) and Weights & Biases.

Both connect lazily, in log_params, so that a server which cannot be reached costs one warning (through
base.Guarded) instead of stopping the run. Parameter and metric names are the flattened config keys and
the metrics.jsonl keys; per-step scalars are named step/<key>.

A resumed training run continues the tracked run it started (`previous`: the identity() the interrupted
run recorded) rather than opening a second one, so one run's curves stay in one place.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..runtime.preempt import EXIT_PREEMPTED
from .base import FAILED, FINISHED, KILLED, Sink, scalars

log = logging.getLogger("resnext")

MLFLOW_BATCH = 100  # MLflow's limit on params (and metrics) per log_batch request
MLFLOW_PARAM_CHARS = 6000  # longest param value MLflow stores


class MlflowSink(Sink):
    name = "mlflow"

    def __init__(self, lcfg: Any, run_name: str, previous: Optional[Dict[str, str]] = None) -> None:
        self.cfg = lcfg
        self.run_name = lcfg.run_name or run_name
        self.previous = previous or {}
        self.client: Any = None
        self.run_id: Optional[str] = None

    def identity(self) -> Optional[Dict[str, str]]:
        if self.run_id is None:
            return None
        return {"run_id": self.run_id, "tracking_uri": self.client.tracking_uri}

    def _continued_run(self) -> Optional[Any]:
        """The interrupted run to continue, from the same store; None (with a warning if one was expected)."""
        run_id = self.previous.get("run_id")
        if not run_id:
            return None
        if self.previous.get("tracking_uri") != self.client.tracking_uri:
            log.warning("mlflow: the resumed run was tracked at %s, this one at %s: a new MLflow run is opened",
                        self.previous.get("tracking_uri"), self.client.tracking_uri)
            return None
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_run(run_id)
        except MlflowException as err:
            log.warning("mlflow: cannot continue run %s (%s): a new MLflow run is opened", run_id, err.message)
            return None

    def log_params(self, params: Dict[str, str], tags: Dict[str, str]) -> None:
        from mlflow import MlflowClient
        from mlflow.entities import Param, RunTag

        self.client = MlflowClient(tracking_uri=self.cfg.tracking_uri)
        run = self._continued_run()
        logged: Dict[str, str] = {}
        if run is not None:
            self.run_id, logged = run.info.run_id, dict(run.data.params)
            self.client.update_run(self.run_id, status="RUNNING")
            self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        else:
            experiment = self.client.get_experiment_by_name(self.cfg.experiment)
            experiment_id = (experiment.experiment_id if experiment is not None
                             else self.client.create_experiment(self.cfg.experiment))
            self.run_id = self.client.create_run(experiment_id, run_name=self.run_name, tags=tags).info.run_id
        values = {k: str(v)[:MLFLOW_PARAM_CHARS] for k, v in params.items()}
        # MLflow params are write-once: a resume that changed a key (epochs, resume, ...) records it as a tag.
        items = [Param(k, v) for k, v in values.items() if k not in logged]
        changed = [RunTag(f"resumed.{k}", v) for k, v in values.items() if k in logged and logged[k] != v]
        for start in range(0, len(items), MLFLOW_BATCH):
            self.client.log_batch(self.run_id, params=items[start:start + MLFLOW_BATCH])
        for start in range(0, len(changed), MLFLOW_BATCH):
            self.client.log_batch(self.run_id, tags=changed[start:start + MLFLOW_BATCH])

    def _metrics(self, values: Dict[str, float], step: int, prefix: str) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(prefix + k, v, now, step) for k, v in scalars(values).items() if k != "epoch"]
        for start in range(0, len(metrics), MLFLOW_BATCH):
            self.client.log_batch(self.run_id, metrics=metrics[start:start + MLFLOW_BATCH])

    def log_epoch(self, epoch: int, values: Dict[str, float]) -> None:
        self._metrics(values, epoch, "")

    def log_step(self, step: int, values: Dict[str, float]) -> None:
        self._metrics(values, step, "step/")

    def close(self, run_dir: Path, status: str = FINISHED) -> None:
        if self.cfg.log_artifacts and status == FINISHED:  # an interrupted run uploads when it completes
            best = run_dir / "model_best.pth.tar"
            if best.is_file():
                self.client.log_artifact(self.run_id, str(best), "model")
            if (run_dir / ".hydra").is_dir():
                self.client.log_artifacts(self.run_id, str(run_dir / ".hydra"), "hydra")
        self.client.set_terminated(self.run_id, status)


class WandbSink(Sink):
    """One W&B run per training run; files under <run dir>/wandb (offline runs: wandb/offline-run-*)."""

    name = "wandb"

    def __init__(self, lcfg: Any, run_name: str, run_dir: Path, previous: Optional[Dict[str, str]] = None) -> None:
        self.cfg = lcfg
        self.run_name = run_name
        self.run_dir = run_dir
        self.previous = previous or {}
        self.run: Any = None
        self.epoch_keys: set = set()

    def identity(self) -> Optional[Dict[str, str]]:
        return None if self.run is None else {"id": self.run.id}

    def log_params(self, params: Dict[str, str], tags: Dict[str, str]) -> None:
        import wandb

        group = self.cfg.group or tags.get("sweep_dir")
        labels: List[str] = [f"{k}={v}"[:64] for k, v in tags.items() if k in ("job_num", "mode")]
        # resume="allow": W&B continues the interrupted run with this id, or opens it if it never reached the server;
        # allow_val_change: the resume may change keys (epochs, resume, ...), the config shows the latest values.
        continued = ({"id": self.previous["id"], "resume": "allow", "allow_val_change": True}
                     if self.previous.get("id") else {})
        # Tags go into the config under run/ (run.git_commit -> run/git_commit): W&B tags are short labels.
        self.run = wandb.init(project=self.cfg.project, entity=self.cfg.entity, group=group, name=self.run_name,
                              dir=str(self.run_dir), mode=self.cfg.mode, tags=labels,
                              config={**params, **{f"run/{k.removeprefix('run.')}": v for k, v in tags.items()}},
                              **continued)
        self.run.define_metric("global_step")
        self.run.define_metric("step/*", step_metric="global_step")
        self.run.define_metric("epoch")

    def log_epoch(self, epoch: int, values: Dict[str, float]) -> None:
        numbers = scalars(values)
        for key in numbers.keys() - self.epoch_keys - {"epoch"}:
            self.run.define_metric(key, step_metric="epoch")
            self.epoch_keys.add(key)
        self.run.log({**numbers, "epoch": epoch})

    def log_step(self, step: int, values: Dict[str, float]) -> None:
        self.run.log({**{f"step/{k}": v for k, v in scalars(values).items()}, "global_step": step})

    def close(self, run_dir: Path, status: str = FINISHED) -> None:
        if self.cfg.log_artifacts and status == FINISHED and (run_dir / "model_best.pth.tar").is_file():
            import wandb

            artifact = wandb.Artifact(f"model-{self.run.id}", type="model")
            artifact.add_file(str(run_dir / "model_best.pth.tar"))
            self.run.log_artifact(artifact)
        if status == KILLED:
            self.run.mark_preempting()  # shown as preempted, to be resumed, rather than crashed
        self.run.finish(exit_code=0 if status == FINISHED else 1 if status == FAILED else EXIT_PREEMPTED)
