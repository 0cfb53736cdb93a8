"""Gradient accumulation and dataset.batch_size=auto (issue 18): refusals, the search, exactness, step counts."""
from __future__ import annotations

import json

import pytest
import torch

from resnext.config.batch import accum_for, split
from resnext.config.errors import ConfigError
from resnext.config.schema import check_config
from resnext.models import checkpoint
from resnext.runtime.devices import Device, RankContext
from resnext.training import batch_fit, launch, trainer
from resnext.training.batch_fit import AUTO_BATCH_FILE, largest_fitting
from tests.conftest import cli_in_process, compose_config, train_in_process
from tests.test_train import assert_same_weights, final_weights

# GroupNorm: batch-independent, so micro-batches (or ranks) compute the gradient of the whole batch.
EXACT = ["device=cpu", "model.norm=group", "max_steps_per_epoch=1", "seed=5", "dataset.batch_size=16",
         "optim.lr=0.01", "validate=false"]


def weights_after(overrides, run_dir):
    train_in_process(compose_config([*EXACT, *overrides]), run_dir)
    return final_weights(run_dir)


def assert_close_weights(a, b):
    assert a.keys() == b.keys()
    for name, value in a.items():
        torch.testing.assert_close(b[name], value, rtol=1e-4, atol=1e-5, msg=name)


# ---- refusals: one line, before any work ----

@pytest.mark.parametrize("overrides, words", [
    (["optim.accum_steps=0"], "optim.accum_steps=0 must be at least 1"),
    (["dataset.batch_size=abc"], "dataset.batch_size='abc' must be a positive integer or auto"),
    (["dataset.batch_size=0"], "dataset.batch_size=0 must be at least 1"),
    (["dataset.batch_size=auto", "optim.accum_steps=auto"], "is ambiguous"),
    (["dataset.batch_size=auto", "dataset.max_batch_size=0"], "dataset.max_batch_size=0"),
    (["optim.accum_steps=auto", "dataset.max_batch_size=0"], "optim.accum_steps=auto searches"),
    (["dataset.batch_size=auto", "dataset.auto_memory_gib=0"], "dataset.auto_memory_gib=0"),
])
def test_bad_batch_keys_are_refused_naming_the_key(overrides, words):
    with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace("'", ".")):
        check_config(compose_config(overrides))


@pytest.mark.parametrize("batch, world, accum, words", [
    (20, 1, 3, "dataset.batch_size=18 or 21 (multiples of 3 = 1 rank(s) x optim.accum_steps=3), "
               "or optim.accum_steps=1 or 2 or 4 (dividing 20 per rank)"),
    (4, 1, 8, "leaves a micro-batch of 0: use dataset.batch_size=8"),
    (7, 2, 1, "must divide by the world size 2: use dataset.batch_size=6 or 8"),
])
def test_a_batch_that_does_not_split_names_the_nearest_valid_values(batch, world, accum, words):
    with pytest.raises(ConfigError) as caught:
        split(batch, world, accum)
    assert words in str(caught.value) and "\n" not in str(caught.value)


def test_the_launcher_refuses_a_bad_split_and_the_cli_exits_2_writing_nothing(tmp_path, monkeypatch, caplog):
    with pytest.raises(ConfigError, match="does not split"):
        launch.plan(compose_config(["device=cpu", "dataset.batch_size=16", "optim.accum_steps=3"]))
    code = cli_in_process(monkeypatch, tmp_path, ["device=cpu", "dataset.batch_size=16", "optim.accum_steps=3"])
    assert code == 2
    assert not list(tmp_path.glob("outputs/*/*/*.pth.tar")) and not list(tmp_path.glob("outputs/*/*/metrics.jsonl"))


def test_the_dry_run_plan_shows_micro_steps_and_auto():
    fixed = launch.plan(compose_config(["device=cpu", "dataset.batch_size=16", "optim.accum_steps=4"]))
    assert "global 16 = 16 per rank x 1 rank(s) in 4 micro-steps of 4" in fixed.describe()
    auto = launch.plan(compose_config(["device=cpu", "dataset.batch_size=auto"]))
    assert "global auto = auto per rank" in auto.describe() and "lr auto" in auto.describe()


# ---- the arithmetic of auto ----

@pytest.mark.parametrize("threshold, cap", [(1, 64), (5, 64), (37, 64), (64, 64), (100, 64), (0, 8), (8, 8)])
def test_the_search_finds_the_largest_size_that_fits(threshold, cap):
    tried = []

    def fits(b):
        tried.append(b)
        return b <= threshold

    assert largest_fitting(fits, cap) == min(threshold, cap)
    assert len(tried) <= 2 * cap.bit_length() + 1  # doubling then bisection, not a scan


def test_accum_auto_takes_the_fewest_micro_steps_that_fit():
    assert accum_for(256, 256) == 1
    assert accum_for(256, 100) == 4  # 64 per micro-batch
    assert accum_for(96, 40) == 3  # 32: 96 / 2 = 48 does not fit
    assert accum_for(7, 3) == 7  # a prime per-rank batch: micro-batches of 1
    assert accum_for(8, 0) is None


# ---- accumulation is the full batch ----

@pytest.mark.slow
def test_two_micro_steps_give_the_full_batchs_weights(tmp_path):
    full = weights_after(["optim.accum_steps=1"], tmp_path / "full")
    micro = weights_after(["optim.accum_steps=2"], tmp_path / "micro")
    assert_close_weights(full, micro)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_one_rank_with_two_micro_steps_matches_two_ranks(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # see tests/test_distributed.py: one thread hits a CPU kernel bug
    micro = weights_after(["optim.accum_steps=2"], tmp_path / "micro")
    ranks = weights_after(["distributed=spawn", "device.nprocs=2"], tmp_path / "ranks")
    assert_close_weights(ranks, micro)


@pytest.mark.slow
def test_scheduler_and_ema_count_optimizer_steps_and_results_record_the_batch(tmp_path):
    # 64 samples, global batch 16 in 2 micro-steps of 8: 4 optimizer steps per epoch, cut to 2.
    run = ["device=cpu", "dataset.batch_size=16", "optim.accum_steps=2", "model.ema=true", "model.ema_steps=1",
           "schedule.warmup_epochs=0", "validate=false", "epochs=2", "max_steps_per_epoch=2"]
    train_in_process(compose_config(run), tmp_path)
    state = checkpoint.load_checkpoint(tmp_path / checkpoint.LAST)
    assert state["scheduler"]["last_epoch"] == 4  # 2 epochs x 2 optimizer steps (max_steps_per_epoch counts them)
    assert int(state["ema"]["n_averaged"]) == 4
    assert state["config"]["optim"]["accum_steps"] == 2
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["batch"] == {"global": 16, "per_device": 8, "accum_steps": 2, "world_size": 1, "chosen_by": "config"}


@pytest.mark.slow
def test_a_mid_epoch_resume_with_accumulation_is_exact(tmp_path, monkeypatch):
    # 32 samples: two optimizer steps of 2 micro-batches of 8; stopped after the first.
    run = ["device=cpu", "model.norm=group", "deterministic=true", "dataset.batch_size=16", "optim.accum_steps=2",
           "dataset.train_size=32", "validate=false", "checkpoint.every_steps=1", "schedule.warmup_epochs=0"]
    train_in_process(compose_config(run), tmp_path / "whole")

    class Stop(Exception):
        pass

    real_save = checkpoint.save_checkpoint

    def save_then_stop(state, run_dir, is_best, save="all"):
        real_save(state, run_dir, is_best, save)
        if state["step"] == 1:  # after the first of two optimizer steps: two micro-batches in
            raise Stop

    monkeypatch.setattr(checkpoint, "save_checkpoint", save_then_stop)
    with pytest.raises(Stop):
        train_in_process(compose_config(run), tmp_path / "stopped")
    monkeypatch.setattr(checkpoint, "save_checkpoint", real_save)
    train_in_process(compose_config([*run, f"resume={tmp_path / 'stopped' / checkpoint.LAST}"]), tmp_path / "rest")
    assert_same_weights(final_weights(tmp_path / "whole"), final_weights(tmp_path / "rest"))


# ---- batch_size=auto on the CPU budget ----

def cpu_trial(overrides):
    cfg = compose_config(["device=cpu", *overrides])
    return batch_fit._Trial(cfg, RankContext(0, 0, 1, Device("cpu"), "."))


@pytest.mark.slow
def test_auto_picks_the_largest_batch_under_the_budget_and_a_resume_reuses_it(tmp_path, monkeypatch):
    trial = cpu_trial(["dataset.batch_size=auto", "dataset.auto_memory_gib=1"])
    trial.cpu_fits(1)  # measures the per-sample activations
    budget = trial.fixed + batch_fit.CPU_TRANSIENT * trial.per_sample * 10.5  # room for 10 samples, not 11
    run = ["device=cpu", "dataset.batch_size=auto", f"dataset.auto_memory_gib={budget / 2 ** 30}",
           "dataset.max_batch_size=32", "max_steps_per_epoch=1", "validate=false"]
    train_in_process(compose_config(run), tmp_path)
    record = json.loads((tmp_path / AUTO_BATCH_FILE).read_text())
    assert (record["fits_per_device"], record["dataset.batch_size"], record["chosen_by"]) == (10, 10, "search")
    assert checkpoint.load_checkpoint(tmp_path / checkpoint.LAST)["config"]["dataset"]["batch_size"] == 10

    def no_search(*_):
        raise AssertionError("searched again")

    monkeypatch.setattr(batch_fit, "_search", no_search)
    train_in_process(compose_config([*run, "resume=auto", "epochs=2"]), tmp_path)
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["batch"]["global"] == 10 and result["batch"]["chosen_by"] == "reused"


@pytest.mark.slow
def test_the_cpu_estimate_grows_with_the_batch_and_the_budget_is_shared_by_ranks():
    trial = cpu_trial(["dataset.batch_size=auto", "dataset.auto_memory_gib=2"])
    assert trial.budget == 2 * 2 ** 30
    assert trial.cpu_fits(1) and trial.per_sample > 0
    assert not trial.cpu_fits(10 ** 6)
    two_ranks = batch_fit._cpu_budget(compose_config(["dataset.auto_memory_gib=2"]),
                                      RankContext(0, 0, 2, Device("cpu"), "."))
    assert two_ranks == 2 ** 30
    trial.release()


class FakeAccelerator:
    """torch.cuda's memory calls for a device of 1000 units where a step of b samples peaks at 100 + 50 b."""

    def __init__(self):
        self.peak, self.cleared = 0, 0

    def empty_cache(self):
        self.cleared += 1

    def mem_get_info(self):
        return 1000, 1000

    def memory_allocated(self):
        return 0

    def reset_peak_memory_stats(self):
        self.peak = 0

    def synchronize(self):
        pass

    def max_memory_allocated(self):
        return self.peak


def test_the_accelerator_search_recovers_from_out_of_memory_and_keeps_a_margin(monkeypatch):
    fake = FakeAccelerator()
    trial = object.__new__(batch_fit._Trial)
    trial.accelerator, trial.limit = fake, None
    trial.optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)

    def step(b):
        fake.peak = 100 + 50 * b
        if fake.peak > 1000:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate ...")

    trial.step = step
    # 17 would peak at 950 <= 1000 but above the 90% margin (900): 16 is the answer.
    assert largest_fitting(trial.accelerator_fits, 64) == 16
    assert fake.cleared >= 5  # cached memory released after every try, the out-of-memory ones included

    def other_error(b):
        raise RuntimeError("cuDNN error: CUDNN_STATUS_BAD_PARAM")

    trial.step = other_error
    with pytest.raises(RuntimeError, match="cuDNN"):
        trial.accelerator_fits(1)  # only out-of-memory means "does not fit"


def test_the_sweep_summary_reads_a_searched_batch_from_the_job_directory(tmp_path):
    from resnext.sweeps.results import load_job

    job = tmp_path / "0"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("- dataset.batch_size=auto\n")
    (job / ".hydra" / "config.yaml").write_text("dataset:\n  batch_size: auto\noptim:\n  lr: 0.1\n  lr_scaling: linear\n"
                                                "  reference_batch: 256\n")
    (job / AUTO_BATCH_FILE).write_text(json.dumps({"dataset.batch_size": 512}))
    result = load_job(job, tmp_path)
    assert (result.batch_size, result.effective_lr) == (512, pytest.approx(0.2))


def _agree_on_rank(rank, store_path, out_dir):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store_path}", rank=rank, world_size=2)
    try:
        ctx = RankContext(rank, rank, 2, Device("cpu"), out_dir)
        (out_dir / f"rank{rank}").write_text(str(batch_fit._agree([7, 5][rank], ctx)))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_the_ranks_agree_on_the_smallest_size_any_of_them_found(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_agree_on_rank, args=(tmp_path / "store", tmp_path), nprocs=2)
    assert [(tmp_path / f"rank{r}").read_text() for r in (0, 1)] == ["5", "5"]
