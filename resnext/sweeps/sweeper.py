"""hydra/sweeper=resnext: an Optuna search whose trials run in asynchronous slots and may be pruned per epoch.

Hydra instantiates hydra_plugins.resnext_sweeper.ResnextSweeper (plugins must live in hydra_plugins); that thin
class hands everything to `SweeperImpl` here. What it does, in order:

1. refuses, before any job starts and in one line, what cannot work: an unknown sampler or pruner, hyperband
   with a grid, a swept key the config does not have, n_jobs > 1 with the in-process launcher or beyond the
   node's accelerators, a storage it cannot open (naming the missing driver), a study continued with another
   search space or objective, sweep.resume=true (this sweeper resumes by storage + study name);
2. opens or continues the study (resnext/sweeps/study.py) in `storage` (default: sqlite in the sweep dir);
3. runs `n_jobs` slots (resnext/sweeps/slots.py): each asks the study for a trial, launches it as a one-job
   launch numbered by the trial (job directory <sweep dir>/<trial number>), and tells the study how it ended:
   PRUNED when the job's result.json says pruned (resnext/training/trial.py stopped it), FAIL with the error
   when the job failed, else COMPLETE with the job's best Acc@1. Only the process that asked tells, once.

Resume: the same command again continues the study toward n_trials in total. Trials of a dead sweep (RUNNING,
heartbeat stale) are failed and retried with the same parameters by Optuna's RetryHeartbeatStaleTrialCallback; the
retry continues from the dead attempt's checkpoint.pth.tar when it left one (checkpoint.save=last or all).
"""
from __future__ import annotations

import logging
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from omegaconf import DictConfig, OmegaConf, open_dict

from ..config.errors import ConfigError
from ..training.trial import PRUNERS, build_pruner, hide_password, open_storage, storage_for_jobs
from . import slots, study as study_room
from .callback import job_devices, visible_device_count
from .results import read_json

log = logging.getLogger("resnext")

RESUME_FILE = "checkpoint.pth.tar"


@dataclass
class Ticket:
    trial: Any  # optuna.trial.Trial
    number: int
    overrides: List[str]


def _quote(value: str) -> str:
    return "'" + str(value).replace("'", "\\'") + "'"


def _launcher_kind(config: DictConfig) -> str:
    target = str(OmegaConf.select(config, "hydra.launcher._target_", default="")).lower()
    return next((kind for kind in ("joblib", "submitit") if kind in target), "basic")


class SweeperImpl:
    def __init__(self, sampler: str = "tpe", seed: Optional[int] = None, pruner: str = "none", min_epochs: int = 1,
                 reduction_factor: int = 3, warmup_trials: int = 5, direction: str = "maximize",
                 storage: Optional[str] = None, study_name: str = "resnext", n_trials: Optional[int] = 20,
                 n_jobs: int = 1, stagger_s: float = 5.0, heartbeat_s: int = 10,
                 params: Optional[DictConfig] = None) -> None:
        self.sampler_name, self.seed, self.direction = str(sampler), seed, str(direction)
        self.pruner_spec = {"name": str(pruner), "min_epochs": int(min_epochs),
                            "reduction_factor": int(reduction_factor), "warmup_trials": int(warmup_trials)}
        self.storage_url, self.study_name = storage, str(study_name)
        self.n_trials, self.n_jobs = n_trials, int(n_jobs)
        self.stagger_s, self.heartbeat_s = float(stagger_s), int(heartbeat_s)
        self.params = params
        self._lock = threading.Lock()
        self._mine: set = set()

    # ---- Hydra's Sweeper interface ---------------------------------------------------------------

    def setup(self, *, hydra_context: Any, task_function: Any, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.config = config
        self.sweep_dir = Path(str(config.hydra.sweep.dir)).absolute()
        self._check_settings()
        self.launcher_kind = _launcher_kind(config)
        if self.launcher_kind == "joblib" and config.hydra.launcher.n_jobs != self.n_jobs:
            # one job per launch call: the process pool must hold one worker per slot
            with open_dict(config):
                config.hydra.launcher.n_jobs = self.n_jobs
        self.launcher = Plugins.instance().instantiate_launcher(config=config, hydra_context=hydra_context,
                                                                task_function=task_function)

    def sweep(self, arguments: List[str]) -> None:
        params = [f"{key}={value}" for key, value in (self.params or {}).items()]
        self.space = study_room.parse_search_space(params + list(arguments))
        if not self.space.distributions:
            raise ConfigError("hydra/sweeper=resnext has nothing to search: give hydra.sweeper.params (e.g. "
                              "optim.lr='tag(log, interval(1e-3, 1))') or sweep a key on the command line (a=1,2)")
        study_room.check_keys(self.space, self.config)
        if self.sampler_name == "grid":
            grid = study_room.grid_values(self.space)
            size = 1
            for values in grid.values():
                size *= len(values)
            self.n_trials = min(self.n_trials or size, size)
        if not self.n_trials:
            raise ConfigError("hydra.sweeper.n_trials=null: give the number of trials (null is for sampler=grid only)")
        self.pruner_spec["max_epochs"] = int(self.config.epochs)
        self._check_slots_fit()
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        url = self.storage_url or f"sqlite:///{self.sweep_dir / 'optuna.db'}"
        storage = open_storage(url, heartbeat_s=self.heartbeat_s)
        self.storage_url, self.job_storage = url, storage_for_jobs(url)
        sampler = study_room.build_sampler(self.sampler_name, self.seed, self.space)
        self.study = study_room.open_study(storage, self.study_name, sampler, self.pruner_spec, self.direction,
                                           self.space)
        counted, _, _ = study_room.tally(self.study)
        log.info("study '%s' in %s: %s sampler, %s pruner, %d of %d trials already counted; %d slot(s)",
                 self.study_name, hide_password(url), self.sampler_name, self.pruner_spec["name"], counted,
                 self.n_trials, self.n_jobs)
        self.slot_log = slots.SlotLog(self.sweep_dir, self.n_jobs, self.stagger_s)
        with slots.Heartbeat(self.study._storage, self.heartbeat_s) as self.heartbeat:
            errors = slots.run_slots(self.n_jobs, self.stagger_s, max(1.0, self.heartbeat_s / 2), self._next_trial,
                                     self._run_trial, self.slot_log)
        if errors:
            raise errors[0]
        self._write_best()

    # ---- refusals before any job ----------------------------------------------------------------

    def _check_settings(self) -> None:
        if self.config.sweep.resume:
            raise ConfigError("sweep.resume=true is for the basic sweeper; hydra/sweeper=resnext continues its study "
                              "by storage and study name: drop sweep.resume and run the same command again")
        if self.sampler_name not in study_room.SAMPLERS:
            raise ConfigError(f"hydra.sweeper.sampler={self.sampler_name}: choose one of "
                              f"{', '.join(study_room.SAMPLERS)}")
        if self.pruner_spec["name"] not in PRUNERS:
            raise ConfigError(f"hydra.sweeper.pruner={self.pruner_spec['name']}: choose one of {', '.join(PRUNERS)}")
        if self.pruner_spec["name"] == "hyperband" and self.sampler_name == "grid":
            raise ConfigError("hydra.sweeper.pruner=hyperband with sampler=grid: Hyperband's brackets each sample "
                              "their own trials, which a fixed grid cannot: use pruner=asha or median, or "
                              "sampler=tpe|random")
        if self.direction not in ("maximize", "minimize"):
            raise ConfigError(f"hydra.sweeper.direction={self.direction}: maximize or minimize")
        for key, value, least in (("n_jobs", self.n_jobs, 1), ("min_epochs", self.pruner_spec["min_epochs"], 1),
                                  ("reduction_factor", self.pruner_spec["reduction_factor"], 2),
                                  ("warmup_trials", self.pruner_spec["warmup_trials"], 0),
                                  ("heartbeat_s", self.heartbeat_s, 1), ("n_trials", self.n_trials or 1, 1)):
            if value < least:
                raise ConfigError(f"hydra.sweeper.{key}={value} must be at least {least}")
        if not self.config.validate:
            raise ConfigError("validate=false with hydra/sweeper=resnext: trials are scored and pruned by validation "
                              "Acc@1 after every epoch: set validate=true")
        try:
            import optuna  # noqa: F401
        except ImportError:
            raise ConfigError("hydra/sweeper=resnext needs Optuna: pip install -e '.[sweep]'") from None
        build_pruner({**self.pruner_spec, "max_epochs": max(int(self.config.epochs), 1)})

    def _check_slots_fit(self) -> None:
        """n_jobs slots in parallel: only with a launcher that runs jobs apart, and one device group each."""
        if self.n_jobs > 1 and self.launcher_kind == "basic":
            raise ConfigError(f"hydra.sweeper.n_jobs={self.n_jobs} runs trials in parallel, which the basic launcher "
                              "(in-process, one job at a time) cannot: add hydra/launcher=parallel_cpu (or a SLURM "
                              "launcher), or set hydra.sweeper.n_jobs=1")
        self.spread = None
        if self.n_jobs == 1 or self.launcher_kind == "submitit" or self.config.distributed.mode == "env":
            return  # SLURM gives each job its own allocation
        from ..runtime.devices import resolve_type

        kind = resolve_type(self.config.device.type)
        if kind == "cpu":
            return
        listed = list(self.config.device.device_list or [])
        pool = listed if len(listed) > 1 else list(range(visible_device_count(kind)))
        if self.n_jobs > len(pool):
            raise ConfigError(f"hydra.sweeper.n_jobs={self.n_jobs} runs {self.n_jobs} trials at once, but this node has {len(pool)} "
                              f"{kind} device(s) to share ({pool}): set hydra.sweeper.n_jobs<={len(pool)} "
                              "or list more devices in device.device_list")
        job_devices(pool, self.n_jobs, 0, 1 if self.config.distributed.mode == "none" else None)
        if "device.spread_jobs" not in self.space.fixed:
            self.spread = self.n_jobs  # slot k trains on the k-th device group (sweeps/callback.py)

    # ---- the slots' work ------------------------------------------------------------------------

    def _next_trial(self, slot: int) -> Any:
        from optuna.storages import fail_stale_trials
        from optuna.trial import TrialState

        with self._lock:
            try:
                fail_stale_trials(self.study)  # a dead sweep's trials: FAIL, and a retry queued (WAITING)
            except RuntimeError as err:  # another process failed it first
                log.debug("stale trials: %s", err)
            counted, waiting, running = study_room.tally(self.study)
            if not waiting and counted >= self.n_trials:
                return slots.WAIT if set(running) - self._mine else None
            with warnings.catch_warnings():  # Optuna warns that heartbeats are meant for Study.optimize: ours beats
                warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
                trial = self.study.ask(fixed_distributions=self.space.distributions)
            self.heartbeat.add(trial._trial_id)
            self._mine.add(trial.number)
            if study_room.is_surplus(self.study, trial.number, self.n_trials):
                trial.set_user_attr("surplus", True)
                self._told(trial, state=TrialState.FAIL)
                self.heartbeat.remove(trial._trial_id)
                return slots.WAIT
            retry_of = trial.user_attrs.get("job_dir")  # a retry keeps the dead attempt's user attrs
            job_dir = self.sweep_dir / str(trial.number)
            trial.set_user_attr("job_dir", str(job_dir))
            return Ticket(trial, trial.number, self._overrides(trial, slot, retry_of))

    def _overrides(self, trial: Any, slot: int, retry_of: Optional[str]) -> List[str]:
        lines = [f"{key}={value}" for key, value in self.space.fixed.items()]
        lines += [f"{key}={value!r}" if isinstance(value, float) else f"{key}={value}"
                  for key, value in trial.params.items()]
        lines += [f"sweep.trial.storage={_quote(self.job_storage)}",
                  f"sweep.trial.study_name={_quote(self.study_name)}",
                  f"sweep.trial.number={trial.number}", f"sweep.trial.slot={slot}"]
        if self.spread:
            lines.append(f"device.spread_jobs={self.spread}")
        if retry_of and (Path(retry_of) / RESUME_FILE).is_file() and "resume" not in self.space.fixed:
            lines.append(f"resume={_quote(Path(retry_of) / RESUME_FILE)}")
            log.info("trial %d retries the interrupted trial in %s from its checkpoint", trial.number, retry_of)
        return lines

    def _run_trial(self, slot: int, ticket: Ticket) -> str:
        log.info("slot %d: trial %d: %s", slot, ticket.number, ticket.trial.params)
        try:
            ret = self.launcher.launch([ticket.overrides], initial_job_idx=ticket.number)[0]
            error, value = None, None
            try:
                value = ret.return_value  # a failed job re-raises its exception here
            except Exception as err:  # noqa: BLE001 - any failure of the job is the trial's
                error = err
            job_dir = Path(str(ret.hydra_cfg.hydra.runtime.output_dir)) if ret.hydra_cfg else None
        except Exception as err:  # noqa: BLE001 - the launcher itself failed for this job
            error, value, job_dir = err, None, None
        try:
            return self._tell(ticket, value, error, job_dir)
        finally:
            self.heartbeat.remove(ticket.trial._trial_id)

    def _tell(self, ticket: Ticket, value: Any, error: Optional[BaseException], job_dir: Optional[Path]) -> str:
        from optuna.trial import TrialState

        result = read_json(job_dir / "result.json") if job_dir else None
        with self._lock:
            try:
                if error is None and (result or {}).get("status") == "pruned":
                    self._told(ticket.trial, state=TrialState.PRUNED)
                    return "PRUNED"
                if error is None:
                    try:
                        self._told(ticket.trial, float(value))
                        return "COMPLETE"
                    except (TypeError, ValueError) as err:
                        error = ValueError(f"the job returned {value!r}, not a number")
                message = " ".join(f"{type(error).__name__}: {error}".split())
                log.warning("trial %d failed: %s", ticket.number, message)
                ticket.trial.set_user_attr("error", message[:2000])
                self._told(ticket.trial, state=TrialState.FAIL)
                return "FAIL"
            except RuntimeError as err:  # already finished: failed as stale by another process
                log.warning("trial %d: the study did not take its outcome (%s)", ticket.number, err)
                return "FAIL"

    def _told(self, trial: Any, *args: Any, **kwargs: Any) -> None:
        try:
            self.study.tell(trial, *args, **kwargs)
        except RuntimeError as err:
            # Optuna 2's grid sampler calls study.stop() once its grid is used up, which only works inside
            # optimize(); the trial's state is stored all the same (tell sets it in a `finally`).
            if "Study.stop" not in str(err):
                raise

    def _write_best(self) -> None:
        from optuna.trial import TrialState

        done = [t for t in self.study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
        if not done:
            log.warning("study '%s': no trial completed", self.study_name)
            return
        best = self.study.best_trial
        results: Dict[str, Any] = {"name": "resnext", "study_name": self.study_name, "best_trial": best.number,
                                   "best_params": dict(best.params), "best_value": best.value}
        OmegaConf.save(OmegaConf.create(results), self.sweep_dir / "optimization_results.yaml")
        log.info("best: trial %d, Acc@1 %.3f, %s", best.number, best.value, best.params)
