"""The summary of a pruning sweep (hydra/sweeper=resnext) on hand-made trial directories and a real SQLite
Optuna study: each trial's end, epochs spent against unpruned, slot idle time, importances, the picture (fast)."""
from __future__ import annotations

import importlib.util
import json
import math
import shutil
from pathlib import Path
from typing import List, Optional, Sequence

import pytest
from omegaconf import OmegaConf

from resnext import report
from resnext.sweeps import importance, results, summary, trials
from tests.conftest import needs
from tests.test_report import epoch, make_job, read_csv

REPO = Path(__file__).resolve().parent.parent
STUDY = "lr_bs_asha"


def at(seconds: float) -> str:
    """10:00 UTC plus `seconds`, ISO-8601 UTC as the sweeper writes it (milliseconds, Z)."""
    return f"2026-12-03T10:{int(seconds) // 60:02d}:{int(seconds) % 60:02d}.000Z"


def trial_job(sweep: Path, number: int, lr: float, batch: int, accs: Sequence[float], status: Optional[str],
              planned: int = 6, start: float = 0.0, end: float = 60.0, **extra) -> Path:
    """Trial `number`'s job directory as the resnext sweeper leaves it; status None: still running."""
    result = None
    if status is not None:
        result = {"status": status, "best_acc1": max(accs, default=None), "epochs_run": len(accs),
                  "epochs_planned": planned, "started_at": at(start), "ended_at": at(end),
                  "trial": {"number": number, "study_name": STUDY, "storage": f"sqlite:///{sweep / 'optuna.db'}"},
                  **extra}
    metrics = [epoch(k, acc, 2.0 - k / 10) for k, acc in enumerate(accs)]
    bookkeeping = [f"sweep.trial.storage=sqlite:///{sweep / 'optuna.db'}", f"sweep.trial.study_name={STUDY}",
                   f"sweep.trial.number={number}", f"sweep.trial.slot={number % 2}"]  # what the sweeper adds
    job_dir = make_job(sweep, str(number), [f"epochs={planned}", f"optim.lr={lr}", f"dataset.batch_size={batch}",
                                            *bookkeeping], lr=lr, batch=batch, result=result, metrics=metrics)
    config = OmegaConf.load(job_dir / ".hydra" / "config.yaml")
    config.epochs = planned  # what a running trial's plan is read from
    OmegaConf.save(config, job_dir / ".hydra" / "config.yaml")
    return job_dir


def make_study(sweep: Path, completed: int, pruned: int = 0) -> None:
    """A real Optuna study in <sweep>/optuna.db: Acc@1 falls with |log10 lr + 1|, batch size barely matters."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=STUDY, storage=f"sqlite:///{sweep / 'optuna.db'}", direction="maximize")
    space = {"optim.lr": FloatDistribution(1e-3, 1.0, log=True),
             "dataset.batch_size": CategoricalDistribution([32, 64, 128])}
    for k in range(completed + pruned):
        lr, batch = 10 ** (-3 + 3 * k / max(completed + pruned - 1, 1)), (32, 64, 128)[k % 3]
        value = 60 - 12 * (math.log10(lr) + 1) ** 2 + (k % 3) * 0.5
        state = optuna.trial.TrialState.COMPLETE if k < completed else optuna.trial.TrialState.PRUNED
        study.add_trial(optuna.trial.create_trial(params={"optim.lr": lr, "dataset.batch_size": batch},
                                                  distributions=space, value=value if k < completed else None,
                                                  state=state))


@pytest.fixture
def asha_dir(tmp_path: Path) -> Path:
    """Five trials, two slots: completed, pruned at epoch 2, failed after 1 epoch, completed best, running."""
    sweep = tmp_path / "sweep"
    trial_job(sweep, 0, 0.1, 64, [20.0, 30.0, 38.0, 42.0, 45.0, 47.0], "completed", start=0, end=100)
    trial_job(sweep, 1, 0.9, 32, [10.0, 11.0], "pruned", start=5, end=40, pruned_at_epoch=2)
    trial_job(sweep, 2, 0.002, 128, [12.0], "failed", start=100, end=160, error="RuntimeError: out of memory")
    trial_job(sweep, 3, 0.05, 64, [25.0, 35.0, 44.0, 50.0, 55.0, 58.5], "completed", start=40, end=150)
    trial_job(sweep, 4, 0.3, 32, [22.0, 29.0], None)
    intervals = [interval(0, 0, 0, 100), interval(1, 1, 5, 40), interval(1, 3, 40, 150), interval(0, 2, 100, 160)]
    write_slots(sweep, slot_run(2, 0, 160, intervals))
    return sweep


def interval(slot: int, trial: int, start: float, end: float) -> dict:
    return {"slot": slot, "trial": trial, "start": at(start), "end": at(end), "state": "COMPLETE"}


def slot_run(n_jobs: int, started: float, ended: Optional[float], intervals: List[dict]) -> dict:
    """One sweep process's entry of slots.json, as resnext/sweeps/slots.py writes it."""
    return {"host": "node1", "pid": 1, "n_jobs": n_jobs, "stagger_s": 5, "started": at(started),
            "ended": None if ended is None else at(ended), "intervals": intervals}


def write_slots(sweep: Path, *runs: dict) -> Path:
    (sweep / "slots.json").write_text(json.dumps({"runs": list(runs)}))
    return sweep / "slots.json"


def summary_md(sweep: Path) -> str:
    summary.write_summary(sweep)
    return (sweep / "summary.md").read_text()


def test_each_trial_shows_how_it_ended(asha_dir: Path) -> None:
    summary.write_summary(asha_dir)
    rows = {r["trial"]: r for r in read_csv(asha_dir / "summary.csv")}
    assert [rows[n]["status"] for n in "01234"] == ["completed", "pruned", "failed", "completed", "incomplete"]
    assert rows["1"]["pruned_at_epoch"] == "2" and rows["1"]["epochs_run"] == "2"
    assert rows["2"]["error"] == "RuntimeError: out of memory"
    assert rows["4"]["epochs_run"] == "2" and rows["4"]["best_acc1"] == "29.0"  # from metrics.jsonl so far
    assert float(rows["3"]["wall_time_s"]) == 110.0  # ended_at - started_at
    assert [r["best"] for r in rows.values()] == ["", "", "", "1", ""]

    table = (asha_dir / "summary.md").read_text()
    assert "5 trials: 2 completed, 1 pruned, 1 failed, 1 incomplete. Best (★): trial 3, Acc@1 58.500." in table
    assert "| 1 | 0.9 | 32 | 11.000 | 2/6 | 35.0 | pruned at epoch 2 |" in table
    assert "| 3 ★ | 0.05 | 64 | **58.500** | 6/6 | 110.0 | completed |" in table
    assert "| failed: RuntimeError: out of memory |" in table
    assert "Every trial: `epochs=6`" in table


def test_epochs_spent_against_unpruned(asha_dir: Path) -> None:
    totals = trials.epoch_totals(trials.load_trials(asha_dir, results.collect_jobs(asha_dir)))
    assert (totals.spent, totals.unpruned, totals.unknown) == (6 + 2 + 1 + 6 + 2, 5 * 6, 0)
    # The running trial has no result.json yet: its plan comes from its .hydra/config.yaml (epochs).
    assert "Epochs spent: 17 of the 30 these trials would have cost unpruned (57%; pruning saved 13)." \
        in summary_md(asha_dir)


def test_slot_idle_time_from_slots_json(asha_dir: Path) -> None:
    # 0-160 s on 2 slots = 320 slot-seconds; busy 100 + 35 + 110 + 60 = 305: 15 idle, 4.7 %.
    idle = trials.slot_idle(trials.read_slots(asha_dir / "slots.json"))
    assert (idle.slots, idle.slot_s, idle.busy_s, idle.idle_s, idle.wall_s) == (2, 320.0, 305.0, 15.0, 160.0)
    assert "Slot idle time: 4.7% (15.0 of 320.0 slot-seconds on 2 slot(s), from slots.json)." in summary_md(asha_dir)
    (asha_dir / "slots.json").unlink()  # the trials' result.json still make it a trial sweep
    table = summary_md(asha_dir)
    assert "Slot idle time" not in table and "pruned at epoch 2" in table


def test_slot_idle_over_two_sweep_processes(tmp_path: Path) -> None:
    # Two machines on one study: 2 slots x 100 s and 1 slot x 50 s (still running: to its last trial's end).
    first = slot_run(2, 0, 100, [interval(0, 0, 0, 100), interval(1, 1, 10, 100)])
    second = slot_run(1, 20, None, [interval(0, 2, 30, 70)])
    idle = trials.slot_idle(trials.read_slots(write_slots(tmp_path, first, second)))
    assert (idle.slot_s, idle.busy_s, idle.open_runs, idle.wall_s) == (200.0 + 50.0, 190.0 + 40.0, 1, 100.0)
    assert idle.idle_percent == pytest.approx(8.0)


def test_a_bare_list_of_slot_intervals_is_read_too(tmp_path: Path) -> None:
    (tmp_path / "slots.json").write_text(json.dumps([interval(0, 0, 0, 30), interval(1, 1, 0, 20),
                                                     interval(1, 2, 20, 30)]))
    idle = trials.slot_idle(trials.read_slots(tmp_path / "slots.json"))
    assert (idle.slots, idle.idle_percent) == (2, 0.0)


def test_the_picture_is_written(asha_dir: Path) -> None:
    summary.write_summary(asha_dir)
    assert (asha_dir / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@needs("optuna", "sklearn", extra="sweep")
@pytest.mark.parametrize("completed", [importance.MIN_COMPLETED, importance.MIN_COMPLETED - 1])
def test_importances_only_with_enough_completed_trials(asha_dir: Path, completed: int) -> None:
    make_study(asha_dir, completed=completed, pruned=4)
    table = summary_md(asha_dir)
    if completed >= importance.MIN_COMPLETED:
        line = next(line for line in table.splitlines() if line.startswith("- Parameter importances"))
        assert f"over the study's {completed} completed trials" in line
        shares = dict(part.rsplit(" ", 1) for part in line.split("): ")[1].rstrip(".").split(", "))
        assert list(shares) == ["optim.lr", "dataset.batch_size"]  # lr decides Acc@1 here, batch barely
        assert math.isclose(sum(map(float, shares.values())), 1.0, abs_tol=0.02)
    else:
        assert f"need at least {importance.MIN_COMPLETED} completed trials (this study has {completed}" in table
        assert "- Parameter importances (" not in table


def test_a_missing_study_database_is_said_not_created(asha_dir: Path) -> None:
    table = summary_md(asha_dir)  # no optuna.db was made
    assert f"the study's database {asha_dir / 'optuna.db'} is not here" in table
    assert not (asha_dir / "optuna.db").exists()


def test_a_grid_sweep_keeps_its_summary(tmp_path: Path) -> None:
    make_job(tmp_path, "0", ["optim.lr=0.1"], result={"status": "completed", "best_acc1": 10.0})
    make_job(tmp_path, "1", ["optim.lr=0.2"], result={"status": "failed", "error": "RuntimeError: x"})
    jobs = results.collect_jobs(tmp_path)
    assert not trials.is_trial_sweep(tmp_path, jobs)
    assert summary_md(tmp_path) == results.to_markdown(jobs)
    assert "status" in read_csv(tmp_path / "summary.csv")[0] and "pruned_at_epoch" not in read_csv(
        tmp_path / "summary.csv")[0]


def test_report_cli_rebuilds_a_trial_summary(asha_dir: Path, capsys: pytest.CaptureFixture) -> None:
    assert report.main([str(asha_dir)]) == 0
    out = capsys.readouterr().out
    assert "pruned at epoch 2" in out and "summary.png" in out


def test_sweep_benchmark_reads_two_sweeps_into_a_table(asha_dir: Path, tmp_path: Path, capsys) -> None:
    """scripts/sweep_benchmark.py --no-run: the README table from two finished sweeps (here: fixtures)."""
    spec = importlib.util.spec_from_file_location("sweep_benchmark", REPO / "scripts" / "sweep_benchmark.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "bench"
    shutil.copytree(asha_dir, out / "asha")
    shutil.copytree(asha_dir, out / "none")
    for number in (1, 2):  # unpruned: trial 1 trains all 6 epochs
        result = json.loads((out / "none" / str(number) / "result.json").read_text())
        result.update(status="completed", epochs_run=6)
        result.pop("pruned_at_epoch", None)
        (out / "none" / str(number) / "result.json").write_text(json.dumps(result))
    assert script.main(["--no-run", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| asha | 5 (2 / 1 / 1) | 17 of 30 | 160 | 58.5 (3) | 4.7% |" in printed
    assert "- epochs: asha spent 65% of none's (target <= 50%): missed" in printed
    # Batches of 2 in trial order: (100, 35) (60, 110) (10): 200 + 220 + 20 slot-seconds offered, 315 used.
    assert script.batched_idle_percent([100, 35, 60, 110, 10], 2) == pytest.approx(100 * 125 / 440)
    assert "| none | 5 (4 / 0 / 0) | 26 of 30 | 160 | 58.5 (3) | 4.7% | 28.4% |" in printed
    assert "(computed)" in printed and "not run" in printed
