"""launch.probe=true (resnext/training/probe.py) and the ETA (resnext/training/eta.py)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from omegaconf import OmegaConf

from tests.conftest import TINY, cli_in_process, compose_config, find_run_dir, refusal_line, run_cli
from resnext.sweeps import probe_summary
from resnext.training import probe_cache
from resnext.training import eta as eta_room
from resnext.training.probe import MIN_PROBE_STEPS

PROBE = ["launch.probe=true", f"launch.probe_steps={MIN_PROBE_STEPS + 1}"]


def _no_training_outputs(run_dir: Path) -> None:
    assert not list(run_dir.glob("*.pth.tar")), "a probe writes no checkpoint"
    assert not (run_dir / "metrics.jsonl").exists(), "a probe records no epochs"
    assert not list(run_dir.glob(".probe-*")), "the checkpoint written to measure its size is removed"


@pytest.mark.slow
def test_probe_measures_predicts_and_trains_nothing(tmp_path, monkeypatch, capsys):
    assert cli_in_process(monkeypatch, tmp_path, [*TINY, "epochs=3", *PROBE]) == 0
    run_dir = find_run_dir(tmp_path)
    report = json.loads((run_dir / "probe.json").read_text())
    measured, predicted = report["measured"], report["predicted"]
    assert measured["steps"] == MIN_PROBE_STEPS + 1 and measured["timed_steps"] >= 3
    step = measured["step_s"]
    assert 0 < step["min"] <= step["median"] <= step["max"] and step["p10"] <= step["p90"]
    assert measured["images_per_s"]["global"] == pytest.approx(16 / step["mean"])  # batch 16, one rank
    assert measured["loader"]["images_per_s_per_rank"] > 0 and isinstance(report["input"]["input_bound"], bool)
    assert measured["memory"][0]["peak_bytes"] > 10 * 2 ** 20 and measured["memory"][0]["free_bytes"] > 0
    assert measured["val"]["batches"] == 2 and predicted["val_batches_per_rank"] == 2  # 40 images / 20
    # 64 images / 16 = 4 steps per epoch; the epoch is those steps at the measured step time, plus its start.
    assert predicted["steps_per_epoch"] == 4
    assert predicted["epoch_train_s"] == pytest.approx(4 * step["mean"] + measured["epoch_start_s"])
    assert predicted["epoch_s"] == pytest.approx(predicted["epoch_train_s"] + predicted["val_s"])
    assert predicted["val_s"] > 0 and predicted["epoch_s_pm"] >= 0 and predicted["epoch_records_s"] > 0
    assert predicted["total_s"] > 3 * predicted["epoch_s"]  # three epochs, plus set-up
    # model + optimizer momentum of ResNeXt-50 (23M parameters, fp32): about 2 x 92 MB
    assert 150e6 < predicted["checkpoint_bytes"] < 250e6
    assert json.loads((run_dir / "result.json").read_text())["status"] == "probed"
    _no_training_outputs(run_dir)
    assert "probe: resnext50_32x4d 16 px" in capsys.readouterr().out


@pytest.mark.parametrize("args, line", [
    (["launch.dry_run=true"], "launch.probe=true runs real steps on the devices, launch.dry_run=true touches none: "
                              "choose one (drop launch.dry_run to measure, or launch.probe to see the plan only)"),
    (["launch.probe_steps=3"], "launch.probe_steps=3 is too few to measure: use at least 4 (1 warm-up step + 3 timed), "
                               "e.g. the default 20"),
])
def test_probe_refusals_are_one_line_and_write_nothing(tmp_path, monkeypatch, capsys, args, line):
    assert refusal_line(monkeypatch, capsys, tmp_path, [*TINY, "launch.probe=true", *args]).endswith(line)
    assert not (tmp_path / "outputs").exists()


def test_a_probe_goes_through_the_dataset_checks(tmp_path, monkeypatch, capsys):
    missing = tmp_path / "no-data"
    assert cli_in_process(monkeypatch, tmp_path, ["dataset=imagenet", f"dataset.root={missing}", "launch.probe=true",
                                                  "logger=none"]) == 2
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and str(missing) in out[0]
    assert not (tmp_path / "outputs").exists()


@pytest.mark.slow
def test_probe_on_two_gloo_ranks_reports_each_rank(tmp_path, monkeypatch):
    assert cli_in_process(monkeypatch, tmp_path, [*TINY, *PROBE, "device=cpu", "device.nprocs=2",
                                                  "distributed=spawn"]) == 0
    run_dir = find_run_dir(tmp_path)
    report = json.loads((run_dir / "probe.json").read_text())
    assert [m["rank"] for m in report["measured"]["memory"]] == [0, 1]
    assert all(m["peak_bytes"] > 0 for m in report["measured"]["memory"])
    assert report["config"]["world_size"] == 2 and report["predicted"]["steps_per_epoch"] == 4
    per_device, whole = report["measured"]["images_per_s"]["per_device"], report["measured"]["images_per_s"]["global"]
    assert whole == pytest.approx(2 * per_device)
    assert per_device == pytest.approx(8 / report["measured"]["step_s"]["mean"])  # 8 images per rank and step
    _no_training_outputs(run_dir)


@pytest.mark.slow
def test_a_probed_sweep_measures_a_combination_once_and_sums_the_sweep(tmp_path):
    run_cli(["-m", *TINY, *PROBE, "optim.lr=0.1,0.2", "hydra.sweep.dir=sweep"], tmp_path)  # lr: one combination
    sweep_dir = tmp_path / "sweep"
    first, second = (json.loads((sweep_dir / job / "probe.json").read_text()) for job in ("0", "1"))
    assert not first["from_cache"] and second["from_cache"]
    assert second["measured"] == first["measured"]  # reused, not measured again
    assert len(list((sweep_dir / ".probe_cache").glob("*.json"))) == 1
    summary = json.loads((sweep_dir / "probe_summary.json").read_text())
    assert summary["probed"] == 1 and summary["slots"] == 1 and len(summary["jobs"]) == 2
    assert summary["sweep_wall_s"] == pytest.approx(first["predicted"]["total_s"] + second["predicted"]["total_s"])
    assert "Whole sweep" in (sweep_dir / "probe_summary.md").read_text()
    assert not list(sweep_dir.glob("*/*.pth.tar"))


def test_the_cache_key_is_the_combination_that_sets_the_step(tmp_path):
    base = probe_cache.path_for(compose_config(["optim.lr=0.1"]), tmp_path)
    assert probe_cache.path_for(compose_config(["optim.lr=0.2", "epochs=5"]), tmp_path) == base
    for change in ("dataset.batch_size=32", "dataset.image_size=32", "model=resnet50", "amp=bf16"):
        assert probe_cache.path_for(compose_config([change]), tmp_path) != base, change


def test_the_sweep_wall_time_fills_the_parallel_slots(tmp_path):
    assert probe_summary.parallel_slots(OmegaConf.create({"n_jobs": 3})) == 3
    assert probe_summary.parallel_slots(None) == 1
    for job, total in enumerate((10.0, 10.0, 10.0, 30.0)):
        (tmp_path / str(job)).mkdir()
        (tmp_path / str(job) / "probe.json").write_text(json.dumps({
            "from_cache": job > 0, "measured": {"step_s": {"mean": 1.0}, "memory": [{"peak_bytes": 1}]},
            "predicted": {"epoch_s": total, "epoch_s_pm": 0.0, "total_s": total, "total_s_pm": 1.0,
                          "checkpoint_bytes": 5}}))
    summary = probe_summary.write_probe_summary(tmp_path, OmegaConf.create({"n_jobs": 2}))
    assert summary["sum_of_jobs_s"] == 60.0 and summary["sweep_wall_s"] == 40.0  # 10+30 on one slot, 10+10 on the other
    assert probe_summary.write_probe_summary(tmp_path / "0") is None  # no probed jobs: nothing written


# ---- the ETA --------------------------------------------------------------------------------------

def test_eta_counts_down_from_measured_steps_and_epoch_ends(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(eta_room.time, "perf_counter", lambda: now[0])
    eta = eta_room.Eta(steps_left=4, epochs_left=2, warmup_steps=1)
    assert eta.text() == "ETA ?"
    for seconds in (100.0, 10.0):  # a slow warm-up step, then a steady one
        now[0] += seconds
        eta.step()
    assert eta.seconds_left() == pytest.approx(2 * 10.0)  # warm-up left out; no epoch end measured yet
    now[0] += 30.0  # validation and checkpoint
    eta.end_epoch()
    eta.begin_epoch()
    now[0] += 12.0
    eta.step()
    assert eta.seconds_left() == pytest.approx(1 * 11.0 + 1 * 30.0)
    assert eta.text() == "ETA 0:00:41"


def test_the_log_shows_an_eta_that_falls_to_zero(tmp_path, monkeypatch):
    assert cli_in_process(monkeypatch, tmp_path, [*TINY, "epochs=2"]) == 0
    log = (find_run_dir(tmp_path) / "train.log").read_text()
    def seconds(pattern: str):
        found = re.findall(pattern + r" ETA (\d+):(\d\d):(\d\d)", log)
        return [int(h) * 3600 + int(m) * 60 + int(s) for h, m, s in found]

    etas = seconds("")
    assert len(etas) == 6  # step lines (steps 2 and 4 of 4) and the epoch line, two epochs
    assert etas[0] >= etas[-1] == 0  # nothing is left after the last epoch (whole seconds: a fast run shows 0 early)
    second_epoch = seconds(r"Epoch: \[1\]\[\d/4\].*")
    assert len(second_epoch) == 2 and second_epoch[0] >= second_epoch[1]  # two steps fewer to go
    assert re.search(r"Epoch: \[0\] done in [\d.]+ s; ETA \d+:\d\d:\d\d for the 1 epoch\(s\) left", log)
    assert re.search(r"FPS@all [\d.]+\n", log)  # the ModelZoo line still ends with its FPS
