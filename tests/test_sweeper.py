"""hydra/sweeper=resnext (issue 17): Optuna study, pruned trials, asynchronous slots, resume, cooperating sweeps.

The helpers are tested against a real SQLite study (fast); the sweeps run real tiny jobs (marked slow).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List

import pytest

from tests.conftest import cli_in_process, needs
from tests.test_sweep import PARALLEL, device_cfg, fake_multirun_job, tiny_with  # noqa: F401 (a fixture)
from resnext.config.errors import ConfigError

pytestmark = needs("optuna", extra="sweep")


SWEEPER = ["hydra/sweeper=resnext", "hydra.sweeper.stagger_s=0", "hydra.sweeper.heartbeat_s=1"]


def _study(sweep_dir: Path, name: str = "resnext"):
    import optuna

    return optuna.load_study(study_name=name, storage=f"sqlite:///{sweep_dir.absolute() / 'optuna.db'}")


def _states(study) -> List[str]:
    return [t.state.name for t in sorted(study.trials, key=lambda t: t.number)]


# ---- helpers, no jobs ---------------------------------------------------------------------------

def test_search_space_syntax_is_optunas() -> None:
    from optuna.distributions import CategoricalDistribution

    from resnext.sweeps.study import parse_search_space

    space = parse_search_space(["optim.lr=tag(log, interval(1e-3, 1))", "dataset.batch_size=choice(32,64,128)",
                                "optim.momentum=0.8,0.9", "epochs=6", "dataset.workers=range(1,10,3)"])
    lr = space.distributions["optim.lr"]
    assert (lr.low, lr.high) == (1e-3, 1.0) and getattr(lr, "log", type(lr).__name__ == "LogUniformDistribution")
    assert space.distributions["dataset.batch_size"] == CategoricalDistribution([32, 64, 128])
    assert space.distributions["optim.momentum"].choices == (0.8, 0.9)
    assert space.fixed == {"epochs": "6"}
    from resnext.sweeps.study import grid_values

    space.distributions.pop("optim.lr")  # a continuous interval: no grid
    assert grid_values(space)["dataset.workers"] == [1, 4, 7]


@pytest.mark.parametrize("name", ["none", "median", "asha", "hyperband"])
def test_every_pruner_builds(name: str) -> None:
    from resnext.training.trial import build_pruner

    assert build_pruner({"name": name, "min_epochs": 1, "reduction_factor": 3, "max_epochs": 6}) is not None


def test_unknown_pruner_is_refused() -> None:
    from resnext.training.trial import build_pruner

    with pytest.raises(ConfigError, match="pruner=asa: choose one of none, median, asha, hyperband"):
        build_pruner({"name": "asa"})


def test_a_storage_without_its_driver_names_it_and_hides_the_password() -> None:
    from resnext.training.trial import open_storage

    import importlib.util

    if importlib.util.find_spec("psycopg2") or importlib.util.find_spec("psycopg"):
        pytest.skip("a PostgreSQL driver is installed here")
    with pytest.raises(ConfigError) as refused:
        open_storage("postgresql://me:secret@localhost/optuna")
    # SQLAlchemy 2.1 reads postgresql:// as psycopg (3), 2.0 as psycopg2: the driver it asked for, with its pip name
    assert "its database driver is not installed (no module named 'psycopg" in str(refused.value)
    assert "pip install psycopg2-binary" in str(refused.value) or "pip install 'psycopg[binary]'" in str(refused.value)
    assert "secret" not in str(refused.value)


def test_the_storage_password_reaches_the_job_through_the_environment_not_its_files(monkeypatch) -> None:
    """A job's overrides land in its .hydra/ files: they carry the URL with *** and the job gets the whole URL
    from the sweeper's environment, only when it is the same URL; without it, one clear line."""
    from resnext.training.trial import STORAGE_ENV, job_storage_url, storage_for_jobs

    monkeypatch.delenv(STORAGE_ENV, raising=False)
    url = "postgresql://me:secret@db.example:5432/optuna"
    shown = storage_for_jobs(url)
    assert shown == "postgresql://me:***@db.example:5432/optuna" and job_storage_url(shown) == url
    with pytest.raises(ConfigError, match=f"{STORAGE_ENV} in this job's environment names another storage"):
        job_storage_url("postgresql://me:***@other.example/optuna")  # another URL never gets this password
    sqlite = "sqlite:////shared/optuna.db"
    assert storage_for_jobs(sqlite) == sqlite and job_storage_url(sqlite) == sqlite  # nothing to hide
    monkeypatch.delenv(STORAGE_ENV)
    with pytest.raises(ConfigError, match=f"its password is hidden and {STORAGE_ENV} is not in this job's env"):
        job_storage_url(shown)


def test_a_changed_search_space_is_refused(tmp_path: Path) -> None:
    from resnext.sweeps.study import open_study, parse_search_space
    from resnext.training.trial import open_storage

    storage = open_storage(f"sqlite:///{tmp_path / 'optuna.db'}")
    spec = {"name": "none"}
    open_study(storage, "s", None, spec, "maximize", parse_search_space(["optim.lr=choice(0.1,0.2)"]))
    open_study(storage, "s", None, spec, "maximize", parse_search_space(["optim.lr=choice(0.1,0.2)"]))  # same: fine
    with pytest.raises(ConfigError, match=r"another search space or objective \(optim.lr: .* -> .*\)"):
        open_study(storage, "s", None, spec, "maximize", parse_search_space(["optim.lr=choice(0.1,0.3)"]))
    with pytest.raises(ConfigError, match="direction: maximize -> minimize"):
        open_study(storage, "s", None, spec, "minimize", parse_search_space(["optim.lr=choice(0.1,0.2)"]))


def test_a_trial_worse_than_the_median_is_told_to_stop(tmp_path: Path) -> None:
    """The job side alone: a trial reporting below a finished trial's curve is pruned by the median pruner."""
    import optuna
    from types import SimpleNamespace

    from resnext.sweeps.study import open_study, parse_search_space
    from resnext.training.trial import TrialReporter, open_storage

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = open_study(open_storage(url), "s", None, {"name": "median", "min_epochs": 1, "warmup_trials": 1},
                       "maximize", parse_search_space(["optim.lr=choice(0.1,0.2)"]))
    good = study.ask()
    for step in (1, 2):
        good.report(90.0, step)
    study.tell(good, 90.0)
    trial = study.ask()
    cfg = SimpleNamespace(storage=url, study_name="s", number=trial.number)
    reporter = TrialReporter(cfg, SimpleNamespace(is_main=True, distributed=False))
    assert reporter.should_stop(1, 10.0, epochs_planned=2)
    # At its last planned epoch a trial is reported but never stopped: pruning there would save nothing.
    assert not reporter.should_stop(2, 10.0, epochs_planned=2)
    assert optuna.load_study(study_name="s", storage=url).trials[1].intermediate_values == {1: 10.0, 2: 10.0}


def test_a_slot_owns_its_devices_whatever_the_trial_number(fake_multirun_job) -> None:
    """Trial numbers do not follow the slots (trial 5 may run in slot 0): the slot picks the device group."""
    from omegaconf import OmegaConf

    from resnext.sweeps import callback

    fake_multirun_job.job.num = 5  # the trial number
    cfg = device_cfg(spread_jobs=2)
    cfg = OmegaConf.merge(cfg, {"sweep": {"trial": {"slot": 0}}})
    callback.place_job_on_devices(cfg)
    assert cfg.device.device_list == [0]


# ---- refusals before any job --------------------------------------------------------------------

REFUSED = [
    (["hydra.sweeper.pruner=asa"], "hydra.sweeper.pruner=asa: choose one of none, median, asha, hyperband"),
    (["hydra.sweeper.sampler=cmaes"], "hydra.sweeper.sampler=cmaes: choose one of tpe, random, grid"),
    (["hydra.sweeper.sampler=grid", "hydra.sweeper.pruner=hyperband"], "pruner=hyperband with sampler=grid"),
    (["hydra.sweeper.sampler=grid", "optim.lr=interval(0.1,1)"], "sampler=grid needs a list of values for optim.lr"),
    (["optim.lrr=0.1,0.2"], "hydra.sweeper.params: optim.lrr is not a key of the config"),
    (["hydra.sweeper.n_jobs=2"], "hydra.sweeper.n_jobs=2 runs trials in parallel, which the basic launcher"),
    ([*PARALLEL, "hydra.sweeper.n_jobs=2", "device.type=cuda"],
     "hydra.sweeper.n_jobs=2 runs 2 trials at once, but this node has"),
    (["sweep.resume=true"], "sweep.resume=true is for the basic sweeper"),
    (["hydra.sweeper.storage=nosuchdb://x"], "hydra.sweeper.storage=nosuchdb://x cannot be opened"),
]


@pytest.mark.parametrize("extra,line", REFUSED, ids=[r[1].split(":")[0][:40] for r in REFUSED])
def test_bad_sweeper_input_is_one_line_before_any_job(extra: List[str], line: str, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture) -> None:
    if "trials at once" in line:
        import torch

        if torch.cuda.device_count() >= 2:
            pytest.skip("this node has 2 GPUs for 2 slots")
    args = ["-m", *SWEEPER, "optim.lr=choice(0.1,0.2)", *extra, "hydra.sweep.dir=sweep"]
    assert cli_in_process(monkeypatch, tmp_path, args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and line in err[0], err
    assert not list((tmp_path / "sweep").glob("*/result.json")), "no job may start"


# ---- sweeps of real tiny jobs -------------------------------------------------------------------

JOB = tiny_with("epochs=2", "checkpoint.save=best")


@pytest.mark.slow
def test_a_pruned_trial_is_pruned_in_the_study_and_in_result_json(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A finished trial with a high curve is put in the study first: the median pruner then stops the sweep's trial
    after its first epoch, deterministically, on both of its ranks."""
    import optuna

    from resnext.sweeps.study import open_study, parse_search_space
    from resnext.training.trial import open_storage

    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    spec = {"name": "median", "min_epochs": 1, "warmup_trials": 1, "reduction_factor": 3, "max_epochs": 2}
    study = open_study(open_storage(f"sqlite:///{sweep_dir / 'optuna.db'}"), "resnext", None, spec, "maximize",
                       parse_search_space(["optim.lr=choice(0.1,0.2)"]))
    study.add_trial(optuna.trial.create_trial(
        params={"optim.lr": 0.1}, distributions={"optim.lr": optuna.distributions.CategoricalDistribution([0.1, 0.2])},
        value=100.0, intermediate_values={1: 100.0, 2: 100.0}))
    # Two DDP ranks (gloo): rank 0 asks the pruner, rank 1 must stop at the same epoch or the job would hang.
    args = ["-m", *SWEEPER, "hydra.sweeper.pruner=median", "hydra.sweeper.warmup_trials=1",
            "hydra.sweeper.n_trials=2", "optim.lr=choice(0.1,0.2)", *JOB, "distributed=spawn", "device.type=cpu",
            "device.nprocs=2", "hydra.sweep.dir=sweep"]
    assert cli_in_process(monkeypatch, tmp_path, args) == 0
    assert _states(_study(sweep_dir)) == ["COMPLETE", "PRUNED"]
    job = sweep_dir / "1"
    result = json.loads((job / "result.json").read_text())
    assert result["status"] == "pruned" and result["pruned_at_epoch"] == 1
    assert (result["epochs_run"], result["epochs_planned"]) == (1, 2)
    assert result["trial"] == {"number": 1, "study_name": "resnext", "storage": f"sqlite:///{sweep_dir / 'optuna.db'}"}
    assert result["started_at"] <= result["ended_at"]
    assert len((job / "metrics.jsonl").read_text().splitlines()) == 1 and (job / "model_best.pth.tar").is_file()
    assert (job / "train_rank1.log").is_file(), "the job ran two ranks"


def test_the_presets_choose_this_sweeper() -> None:
    from tests.test_sweep import compose_with_hydra

    cfg = compose_with_hydra(["sweep=asha_lr_bs"])
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_ == "hydra_plugins.resnext_sweeper.resnext_sweeper.ResnextSweeper"
    assert (sweeper.pruner, sweeper.sampler, sweeper.n_trials) == ("asha", "tpe", 16)
    assert dict(sweeper.params) == {"optim.lr": "tag(log, interval(1e-3, 1))", "dataset.batch_size": "choice(32,64,128)"}
    assert compose_with_hydra(["sweep=median_lr_wd"]).hydra.sweeper.pruner == "median"


@pytest.mark.slow
def test_a_free_slot_starts_the_next_trial_while_the_other_runs(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Two slots, three trials of 1, 2 and 3 epochs (a grid): the third starts as soon as the first trial ends,
    while the other slot's longer trial is still running."""
    args = ["-m", *SWEEPER, *PARALLEL, "hydra.sweeper.n_jobs=2", "hydra.sweeper.sampler=grid",
            *tiny_with("checkpoint.save=best", "epochs=1,2,3"), "hydra.sweep.dir=sweep"]
    assert cli_in_process(monkeypatch, tmp_path, args) == 0
    sweep_dir = tmp_path / "sweep"
    assert _states(_study(sweep_dir)) == ["COMPLETE"] * 3
    run, = json.loads((sweep_dir / "slots.json").read_text())["runs"]
    intervals = sorted(run["intervals"], key=lambda i: i["start"])
    assert {i["slot"] for i in intervals} == {0, 1} and len(intervals) == 3
    first, second, third = intervals
    assert third["start"] < max(first["end"], second["end"]), "the third trial waited for both slots"
    other = second if third["slot"] == first["slot"] else first
    assert other["start"] < third["start"] < other["end"]
    for number in range(3):
        assert json.loads((sweep_dir / str(number) / "result.json").read_text())["status"] == "completed"


def _sweep_process(cwd: Path, extra: List[str]) -> subprocess.Popen:
    args = [sys.executable, "-m", "resnext.train", "-m", *SWEEPER, "optim.lr=choice(0.05,0.1,0.2,0.4)", *JOB,
            "epochs=1", "hydra.sweep.dir=sweep", *extra]
    return subprocess.Popen(args, cwd=cwd, env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _wait_for(path: Path, process: subprocess.Popen, timeout: float = 240) -> None:
    end = time.time() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()[0][-3000:]
        assert time.time() < end, f"{path} did not appear"
        time.sleep(0.5)


@pytest.mark.slow
def test_a_killed_sweep_run_again_continues_to_n_trials(tmp_path: Path) -> None:
    """Killed after trial 1's first epoch: run again, trial 1 is retried as trial 2 from its checkpoint."""
    sweep_dir = tmp_path / "sweep"
    job = ["hydra.sweeper.n_trials=2", "epochs=3", "checkpoint.save=last"]
    first = _sweep_process(tmp_path, job)
    _wait_for(sweep_dir / "0" / "result.json", first)
    _wait_for(sweep_dir / "1" / "checkpoint.pth.tar", first)
    finished = (sweep_dir / "0" / "result.json").stat().st_mtime_ns
    os.killpg(first.pid, signal.SIGKILL)  # the sweep and its in-process job die mid-trial
    first.communicate()
    assert not (sweep_dir / "1" / "result.json").exists(), "trial 1 ended before the kill: nothing to retry"
    again = _sweep_process(tmp_path, job)
    output = again.communicate(timeout=600)[0]
    assert again.returncode == 0, output[-3000:]
    study = _study(sweep_dir)
    states = _states(study)
    assert states[:2] == ["COMPLETE", "FAIL"] and "error" not in study.trials[1].user_attrs  # died, not failed
    assert states == ["COMPLETE", "FAIL", "COMPLETE"], states
    assert study.trials[2].params == study.trials[1].params, "the interrupted trial is retried"
    retry = json.loads((sweep_dir / "2" / "result.json").read_text())
    assert f"resume='{sweep_dir / '1' / 'checkpoint.pth.tar'}'" in (sweep_dir / "2" / ".hydra" / "overrides.yaml").read_text()
    assert (retry["status"], retry["epochs_planned"]) == ("completed", 3) and retry["epochs_run"] < 3, retry
    assert (sweep_dir / "0" / "result.json").stat().st_mtime_ns == finished, "a finished job was touched"
    assert sorted(p.name for p in sweep_dir.iterdir() if p.name.isdigit()) == ["0", "1", "2"]


@pytest.mark.slow
def test_two_sweep_processes_share_one_study(tmp_path: Path) -> None:
    processes = [_sweep_process(tmp_path, ["hydra.sweeper.n_trials=3"]) for _ in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], [o[-2000:] for o in outputs]
    sweep_dir = tmp_path / "sweep"
    study = _study(sweep_dir)
    assert [t.state.name for t in study.trials if "surplus" not in t.user_attrs] == ["COMPLETE"] * 3
    runs = json.loads((sweep_dir / "slots.json").read_text())["runs"]
    assert len(runs) == 2 and sum(len(r["intervals"]) for r in runs) >= 3
    done = [n for r in runs for i in r["intervals"] if i["state"] == "COMPLETE" for n in [i["trial"]]]
    assert sorted(done) == [t.number for t in study.trials if t.state.name == "COMPLETE"]
