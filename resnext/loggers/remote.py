"""Sinks that send the run to a tracking service: MLflow (local store or server) and Weights & Biases.

Both connect lazily, in log_params, so that a server which cannot be reached costs one warning (through
base.Guarded) instead of stopping the run. Parameter and metric names are the flattened config keys and
the metrics.jsonl keys; per-step scalars are named step/<key>.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from .base import Sink, scalars

MLFLOW_BATCH = 100  # MLflow's limit on params (and metrics) per log_batch request
MLFLOW_PARAM_CHARS = 6000  # longest param value MLflow stores


class MlflowSink(Sink):
    name = "mlflow"

    def __init__(self, lcfg: Any, run_name: str) -> None:
        self.cfg = lcfg
        self.run_name = lcfg.run_name or run_name
        self.client: Any = None
        self.run_id: Optional[str] = None

    def log_params(self, params: Dict[str, str], tags: Dict[str, str]) -> None:
        from mlflow import MlflowClient
        from mlflow.entities import Param

        self.client = MlflowClient(tracking_uri=self.cfg.tracking_uri)
        experiment = self.client.get_experiment_by_name(self.cfg.experiment)
        experiment_id = (experiment.experiment_id if experiment is not None
                         else self.client.create_experiment(self.cfg.experiment))
        run = self.client.create_run(experiment_id, run_name=self.run_name, tags=tags)
        self.run_id = run.info.run_id
        items = [Param(k, str(v)[:MLFLOW_PARAM_CHARS]) for k, v in params.items()]
        for start in range(0, len(items), MLFLOW_BATCH):
            self.client.log_batch(self.run_id, params=items[start:start + MLFLOW_BATCH])

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

    def close(self, run_dir: Path) -> None:
        if self.cfg.log_artifacts:
            best = run_dir / "model_best.pth.tar"
            if best.is_file():
                self.client.log_artifact(self.run_id, str(best), "model")
            if (run_dir / ".hydra").is_dir():
                self.client.log_artifacts(self.run_id, str(run_dir / ".hydra"), "hydra")
        self.client.set_terminated(self.run_id, "FINISHED")


class WandbSink(Sink):
    """One W&B run per training run; files under <run dir>/wandb (offline runs: wandb/offline-run-*)."""

    name = "wandb"

    def __init__(self, lcfg: Any, run_name: str, run_dir: Path) -> None:
        self.cfg = lcfg
        self.run_name = run_name
        self.run_dir = run_dir
        self.run: Any = None
        self.epoch_keys: set = set()

    def log_params(self, params: Dict[str, str], tags: Dict[str, str]) -> None:
        import wandb

        group = self.cfg.group or tags.get("sweep_dir")
        labels: List[str] = [f"{k}={v}"[:64] for k, v in tags.items() if k in ("job_num", "mode")]
        self.run = wandb.init(project=self.cfg.project, entity=self.cfg.entity, group=group, name=self.run_name,
                              dir=str(self.run_dir), mode=self.cfg.mode, tags=labels,
                              config={**params, **{f"run/{k}": v for k, v in tags.items()}})
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

    def close(self, run_dir: Path) -> None:
        if self.cfg.log_artifacts and (run_dir / "model_best.pth.tar").is_file():
            import wandb

            artifact = wandb.Artifact(f"model-{self.run.id}", type="model")
            artifact.add_file(str(run_dir / "model_best.pth.tar"))
            self.run.log_artifact(artifact)
        self.run.finish()
