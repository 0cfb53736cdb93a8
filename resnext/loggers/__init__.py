"""The run's tracking sinks (the `logger` config group): which ones the config asks for, whether their
packages are installed, and the parameters and tags every sink receives.

Only rank 0 opens sinks. metrics.jsonl (written by metrics.MetricsWriter) and curves.png are always
written; the sinks chosen with logger=... come on top, each behind base.Guarded so that a tracking
service that fails costs a warning, never the run.

tracking.json in the run directory records each remote sink's run (MLflow run id, W&B run id). A run that
resumes from a checkpoint reads the file beside that checkpoint and continues those runs.
"""
from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path
from typing import Any, Dict, List, Optional

from omegaconf import DictConfig, OmegaConf

from ..config.errors import ConfigError
from ..runtime import run_record
from .base import Guarded, Sink
from .local import CsvSink, TensorBoardSink
from .remote import MlflowSink, WandbSink

# logger option -> (python package, the pip extra that installs it)
_PACKAGES = {"mlflow": ("mlflow", "mlflow"), "wandb": ("wandb", "wandb")}
WANDB_MODES = ("online", "offline", "disabled")
TRACKING_FILE = "tracking.json"  # {sink name: its identity()}, beside the run's checkpoints

log = logging.getLogger("resnext")


def chosen(cfg: DictConfig) -> List[str]:
    """The sinks that are on: the logger group's enabled nodes, adjusted by the deprecated `tensorboard` key."""
    names = [name for name, node in cfg.logger.items() if node.enabled]
    if cfg.get("tensorboard") is False and "tensorboard" in names:
        names.remove("tensorboard")
    if cfg.get("tensorboard") is True and "tensorboard" not in names:
        names.append("tensorboard")
    return names


def check_loggers(cfg: DictConfig) -> None:
    """Refuse, before anything starts, a sink whose package is missing or whose settings cannot work."""
    for name in chosen(cfg):
        if name in _PACKAGES:
            package, extra = _PACKAGES[name]
            if importlib.util.find_spec(package) is None:
                raise ConfigError(f"logger={name} needs the {package} package, which is not installed: "
                                  f"pip install -e \".[{extra}]\" (or choose another logger=...)")
    wandb_cfg = cfg.logger.wandb
    if "wandb" in chosen(cfg) and wandb_cfg.mode is not None and wandb_cfg.mode not in WANDB_MODES:
        raise ConfigError(f"logger.wandb.mode={wandb_cfg.mode!r} is not one of {', '.join(WANDB_MODES)} "
                          "(or null to follow $WANDB_MODE)")


def flatten(node: Any, prefix: str = "") -> Dict[str, str]:
    """{"optim.lr": "0.1", ...}: every leaf of the resolved config as a dotted key and a string."""
    if isinstance(node, DictConfig):
        node = OmegaConf.to_container(node, resolve=True, enum_to_str=True)
    if not isinstance(node, dict):
        return {prefix: str(node)}
    flat: Dict[str, str] = {}
    for key, value in node.items():
        flat.update(flatten(value, f"{prefix}{key}." if isinstance(value, dict) else f"{prefix}{key}"))
    return flat


def run_tags(run_dir: Path) -> Dict[str, str]:
    """What identifies the run: its directory, what produced it (run_record.json's newest start as run.* tags:
    run.git_commit, run.torch, ...), and for a multirun job the sweep directory, job number and overrides, read
    from the .hydra/hydra.yaml Hydra wrote (the ranks never see HydraConfig)."""
    tags = {"run_dir": str(Path(run_dir).resolve()), "mode": "RUN", **run_record.tags(run_dir)}
    hydra_yaml = Path(run_dir) / ".hydra" / "hydra.yaml"
    if not hydra_yaml.is_file():
        return tags
    hydra = OmegaConf.load(hydra_yaml).hydra
    overrides = [str(o) for o in OmegaConf.select(hydra, "overrides.task", default=[]) or []]
    tags["overrides"] = " ".join(overrides)
    if str(OmegaConf.select(hydra, "mode", default="RUN")).endswith("MULTIRUN"):
        tags.update(mode="MULTIRUN", sweep_dir=str(Path(run_dir).resolve().parent),
                    job_num=str(OmegaConf.select(hydra, "job.num", default="")))
    return tags


def _run_name(tags: Dict[str, str]) -> str:
    run_dir = Path(tags["run_dir"])
    if tags["mode"] == "MULTIRUN":
        return f"{Path(tags['sweep_dir']).name}-job{tags['job_num']}"
    return f"{run_dir.parent.name}_{run_dir.name}"


def _build(name: str, cfg: DictConfig, run_dir: Path, run_name: str, previous: Dict[str, Dict[str, str]]) -> Sink:
    lcfg = cfg.logger[name]
    if name == "tensorboard":
        return TensorBoardSink(run_dir, lcfg.dir)
    if name == "csv":
        return CsvSink(run_dir, lcfg.file)
    if name == "mlflow":
        return MlflowSink(lcfg, run_name, previous.get(name))
    return WandbSink(lcfg, run_name, run_dir, previous.get(name))


def previous_runs(resumed_from: Optional[Path]) -> Dict[str, Dict[str, str]]:
    """The tracked runs recorded beside the checkpoint a run resumes from ({} for a fresh run or none recorded)."""
    if resumed_from is None:
        return {}
    path = Path(resumed_from).parent / TRACKING_FILE
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError) as err:
        log.warning("%s is unreadable (%s): tracking sinks open new runs", path, err)
        return {}


def open_sinks(cfg: DictConfig, run_dir: Path, resumed_from: Optional[Path] = None) -> List[Sink]:
    """The chosen sinks, opened, each already given the flattened config and the run's tags; when resuming from
    a checkpoint, MLflow and W&B continue the runs recorded beside it."""
    from .plots import CurvesSink  # matplotlib: imported only where a run writes pictures

    run_dir = Path(run_dir)
    tags = run_tags(run_dir)
    previous = previous_runs(resumed_from)
    sinks: List[Sink] = [Guarded(_build(name, cfg, run_dir, _run_name(tags), previous)) for name in chosen(cfg)]
    sinks.append(Guarded(CurvesSink(run_dir)))
    params = flatten(cfg)
    for sink in sinks:
        sink.log_params(params, tags)
    identities = {sink.name: sink.identity() for sink in sinks}
    identities = {name: identity for name, identity in identities.items() if identity}
    if identities:
        (run_dir / TRACKING_FILE).write_text(json.dumps(identities, indent=2) + "\n")
    return sinks
