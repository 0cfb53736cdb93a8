"""The job's side of a pruning sweep: report validation Acc@1 to its Optuna trial after every epoch, and stop
at the epoch boundary where the study's pruner says so.

Why here, in the training wing: the trainer asks after each epoch, and a wing imports only downward, so the
pieces the job needs (open the storage, build the pruner the sweeper chose, the reporter) live here and the
sweeper (resnext/sweeps/sweeper.py) imports them. The job only reports and asks; the sweeper process that
asked for the trial is the one that tells the study how it ended (COMPLETE, PRUNED or FAIL), once.

The pruner is not kept in Optuna's storage, so the sweeper writes its spec into the study's user attrs
("pruner") and every job builds the same pruner from there, whichever machine it runs on. Under DDP rank 0
alone talks to the storage; its decision is broadcast so every rank leaves the loop at the same epoch.
"""
from __future__ import annotations

import logging
import os
import time
import warnings
from pathlib import Path
from typing import Any, Dict, Optional

from ..config.errors import ConfigError

log = logging.getLogger("resnext")

PRUNERS = ("none", "median", "asha", "hyperband")
# SQLAlchemy dialect driver module -> what to pip install when it is missing (postgresql:// means psycopg
# since SQLAlchemy 2.1, psycopg2 before)
_DRIVERS = {"psycopg": "'psycopg[binary]'", "psycopg2": "psycopg2-binary", "pymysql": "PyMySQL", "MySQLdb": "mysqlclient", "pg8000": "pg8000",
            "asyncpg": "asyncpg", "cx_Oracle": "cx_Oracle", "pyodbc": "pyodbc"}


def build_pruner(spec: Dict[str, Any]) -> Any:
    """An Optuna pruner from {"name", "min_epochs", "reduction_factor", "warmup_trials", "max_epochs"}.

    Steps are epochs trained (1-based), so min_epochs is the fewest epochs a trial trains before it may stop.
    """
    import optuna

    name = spec.get("name", "none")
    min_epochs = int(spec.get("min_epochs", 1))
    factor = int(spec.get("reduction_factor", 3))
    if name == "none":
        return optuna.pruners.NopPruner()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=int(spec.get("warmup_trials", 5)),
                                           n_warmup_steps=min_epochs, interval_steps=1)
    if name == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=min_epochs, reduction_factor=factor)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=min_epochs, max_resource=int(spec["max_epochs"]),
                                              reduction_factor=factor)
    raise ConfigError(f"hydra.sweeper.pruner={name}: choose one of {', '.join(PRUNERS)}")


def hide_password(url: str) -> str:
    """The URL as it may be written into files and logs: postgresql://user:***@host/db."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL SQLAlchemy parses: the storage check names the problem
        return url


# The storage URL with its password, handed from the sweeper to its jobs through the environment: a job's
# overrides are written to its .hydra/ files, so they carry the URL with the password hidden.
STORAGE_ENV = "RESNEXT_SWEEP_STORAGE"


def storage_for_jobs(url: str) -> str:
    """What the jobs' `sweep.trial.storage` override says: the URL without its password; the whole URL goes
    into this process's environment, which the in-process, joblib and submitit launchers pass on."""
    shown = hide_password(url)
    if shown != url:
        os.environ[STORAGE_ENV] = url
    return shown


def job_storage_url(url: str) -> str:
    """The storage a job opens: the sweeper's whole URL from the environment when it is this URL with its
    password hidden; otherwise `url` as given."""
    handed = os.environ.get(STORAGE_ENV)
    if handed and hide_password(handed) == url:
        return handed
    password_hidden = "***" in url and hide_password(url) == url
    if not password_hidden:
        return url
    why = f"{STORAGE_ENV} in this job's environment names another storage" if handed else \
        f"{STORAGE_ENV} is not in this job's environment"
    raise ConfigError(f"sweep.trial.storage={url}: its password is hidden and {why}: launch the job from its "
                      "sweep (the sweep's launcher passes the environment on)")


def open_storage(url: str, heartbeat_s: Optional[int] = None) -> Any:
    """Optuna's RDB storage at `url`, or ConfigError in one line: the missing driver, or why it cannot be opened.

    SQLite waits up to a minute for a lock (jobs and sweepers of several processes write to one file).
    """
    import optuna

    kwargs: Dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    if heartbeat_s:
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats are still marked experimental
        kwargs.update(heartbeat_interval=int(heartbeat_s), grace_period=3 * int(heartbeat_s),
                      heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3))
    try:
        return _rdb_storage(url, kwargs)
    except ImportError as err:  # the dialect's driver; Optuna re-raises it without the name, which its cause has
        missing = _missing_module(err)
        fix = f": pip install {_DRIVERS.get(missing, missing)}" if missing else ""
        raise ConfigError(f"hydra.sweeper.storage={hide_password(url)}: its database driver is not installed "
                          f"(no module named {missing!r}){fix}") from None
    except Exception as err:  # noqa: BLE001 - SQLAlchemy's ArgumentError, OperationalError ...: one line
        first = next((line for line in str(err).splitlines() if line.strip()), type(err).__name__)
        raise ConfigError(f"hydra.sweeper.storage={hide_password(url)} cannot be opened: {first}") from None


def _rdb_storage(url: str, kwargs: Dict[str, Any], tries: int = 3) -> Any:
    """RDBStorage, tried again when another process was creating the same fresh database at that moment (its
    tables or alembic_version row appear between our check and our insert: an IntegrityError or "already
    exists"); the second try finds them made."""
    import optuna
    from sqlalchemy.exc import IntegrityError, OperationalError

    for attempt in range(tries - 1):
        try:
            return optuna.storages.RDBStorage(url, **kwargs)
        except (IntegrityError, OperationalError) as err:
            if not (isinstance(err, IntegrityError) or "already exists" in str(err)):
                raise
            time.sleep(0.5 + attempt)
    return optuna.storages.RDBStorage(url, **kwargs)


def _missing_module(err: BaseException) -> Optional[str]:
    while err is not None:
        if isinstance(err, ImportError) and err.name:
            return err.name.split(".")[0]
        err = err.__cause__ or err.__context__
    return None


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


class TrialReporter:
    """Created once per rank by the trainer; a no-op unless the job runs a trial of hydra/sweeper=resnext."""

    def __init__(self, trial_cfg: Any, ctx: Any) -> None:
        self.ctx = ctx
        self.active = trial_cfg is not None and trial_cfg.storage is not None
        self.info = ({"number": int(trial_cfg.number), "study_name": str(trial_cfg.study_name),
                      "storage": hide_password(str(trial_cfg.storage))} if self.active else None)
        self._trial = None
        if self.active and ctx.is_main:
            self._trial = self._load(trial_cfg)

    @staticmethod
    def _load(trial_cfg: Any) -> Any:
        import optuna

        storage = open_storage(job_storage_url(str(trial_cfg.storage)))
        study = optuna.load_study(study_name=str(trial_cfg.study_name), storage=storage)
        study.pruner = build_pruner(study.user_attrs.get("pruner", {"name": "none"}))
        trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, int(trial_cfg.number))
        return optuna.trial.Trial(study, trial_id)

    def should_stop(self, epochs_done: int, value: Optional[float], epochs_planned: int) -> bool:
        """Report this epoch's value (step = epochs trained) and ask the pruner; every rank gets rank 0's answer.

        After the last planned epoch the pruner is not asked: stopping there saves nothing, and a trial that ran
        to its end is complete (it may be the best) whatever the rung says.
        """
        if not self.active:
            return False
        stop = False
        if self._trial is not None and value is not None:
            self._trial.report(float(value), epochs_done)
            stop = epochs_done < epochs_planned and bool(self._trial.should_prune())
        if self.ctx.distributed:
            stop = _broadcast_flag(stop, self.ctx)
        if stop and self.ctx.is_main:
            log.info("trial %s pruned after epoch %d (Acc@1 %.3f): the run ends here", self.info["number"],
                     epochs_done, value)
        return stop

    def result_fields(self, started: float, start_epoch: int, epochs_done: int, epochs_planned: int,
                      resumed_from: Any, run_dir: Path, pruned_at: Optional[int]) -> Dict[str, Any]:
        """What result.json says of every run: times, epochs run and planned; pruned runs and trials besides."""
        # Epochs this directory trained: all of them when it continues its own checkpoint, else the new ones.
        own = resumed_from is not None and Path(resumed_from).resolve().parent == Path(run_dir).resolve()
        fields: Dict[str, Any] = {"epochs_run": epochs_done - (0 if own or resumed_from is None else start_epoch),
                                  "epochs_planned": epochs_planned, "started_at": _iso(started),
                                  "ended_at": _iso(time.time())}
        if pruned_at is not None:
            fields.update(status="pruned", pruned_at_epoch=pruned_at)
        if self.info is not None:
            fields["trial"] = dict(self.info)
        return fields


def _broadcast_flag(flag: bool, ctx: Any) -> bool:
    import torch
    import torch.distributed as dist

    tensor = torch.tensor([1 if flag else 0], dtype=torch.int32, device=ctx.device.torch_device)
    dist.broadcast(tensor, src=0)
    return bool(tensor.item())
