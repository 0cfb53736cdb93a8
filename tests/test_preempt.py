"""Preemption, kills and full disks, with real processes: signals, resume=auto, mid-epoch exact resume."""
from __future__ import annotations

import errno
import logging
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List

import pytest
import torch

from resnext.models import checkpoint
from resnext.training import launch
from resnext.loggers.metrics import read_metrics
from resnext.runtime.preempt import EXIT_PREEMPTED, Preempted
from resnext.training import trainer
from tests.conftest import TINY, cli_in_process, compose_config, find_run_dir, tiny_for, train_in_process
from tests.test_data import write_image_tree, write_noise_images
from tests.test_train import assert_same_weights, final_weights


def start_cli(args: List[str], cwd: Path) -> subprocess.Popen:
    """`python -m resnext.train <args>` in its own process group, as a scheduler would start it."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "resnext.train", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def wait_for(condition, proc: subprocess.Popen, timeout: float = 240, poll: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (exit {proc.returncode}) before the moment to interrupt it:\n"
                                 f"{proc.stdout.read()}")
        assert time.monotonic() < deadline, "timed out waiting for the run"
        time.sleep(poll)


def log_size(run_dir: Path) -> int:
    return (run_dir / "train.log").stat().st_size if (run_dir / "train.log").exists() else 0


def logged(run_dir: Path, text: str, after: int = 0):
    """True once train.log holds `text` past byte `after` (a requeued run appends to the same log)."""
    log = run_dir / "train.log"
    return lambda: log.exists() and text.encode() in log.read_bytes()[after:]


def finish(proc: subprocess.Popen, timeout: float = 300) -> str:
    out, _ = proc.communicate(timeout=timeout)
    return out


# ---- noise images, random crops and flips in a DataLoader worker: resume must replay the same draws ----

@pytest.fixture(scope="module")
def noisy_run(tmp_path_factory):
    """(overrides, directory) of an uninterrupted 2-epoch run that both resume tests below must end at; it keeps a
    copy of its checkpoint after each epoch (checkpoint.keep_last)."""
    tmp = tmp_path_factory.mktemp("noisy")
    root = write_image_tree(tmp / "data", per_class=8)
    write_noise_images(root)  # every crop and flip differs: the augmentation streams must be restored
    # loader=torch: bit-identical mid-epoch resume is the torch loader's promise (README: DALI's is not).
    overrides = [*tiny_for(["dataset=folder"]), "dataset=folder", f"dataset.root={root}", "dataset.loader=torch",
                 "dataset.image_size=16", "dataset.val_resize=18",
                 "dataset.workers=1", "dataset.batch_size=6", "dataset.val_batch_size=12", "deterministic=true",
                 "epochs=2", "model.norm=group", "print_freq=1"]
    train_in_process(compose_config([*overrides, "checkpoint.keep_last=2"]), tmp / "whole")
    return overrides, tmp / "whole"


@pytest.mark.slow
def test_resume_at_an_epoch_boundary_replays_the_worker_augmentation(noisy_run, tmp_path):
    overrides, whole = noisy_run
    after_epoch_0 = whole / checkpoint.EPOCH_COPY.format(epoch=0)
    train_in_process(compose_config([*overrides, f"resume={after_epoch_0}"]), tmp_path / "resumed")
    assert [r["epoch"] for r in read_metrics(tmp_path / "resumed")] == [1]
    assert_same_weights(final_weights(whole), final_weights(tmp_path / "resumed"))


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sigterm_mid_epoch_then_resume_auto_ends_bit_identical(noisy_run, tmp_path):
    overrides, whole = noisy_run
    run_dir = tmp_path / "run"
    args = [*overrides, "resume=auto", f"hydra.run.dir={run_dir}"]
    proc = start_cli(args, tmp_path)
    wait_for(logged(run_dir, "Epoch: [0][1/4]"), proc)
    proc.send_signal(signal.SIGTERM)
    out = finish(proc)
    assert proc.returncode == EXIT_PREEMPTED, out
    assert "SIGTERM" in out and "resume=auto" in out
    state = checkpoint.load_checkpoint(run_dir / checkpoint.LAST)
    assert state["epoch"] == 0 and 1 <= state["step"] < 4, (state["epoch"], state["step"])

    proc = start_cli(args, tmp_path)
    out = finish(proc)
    assert proc.returncode == 0, out
    assert f"at epoch 0 step {state['step']}" in out
    assert_same_weights(final_weights(whole), final_weights(run_dir))


# ---- SIGTERM to the spawn parent: the ranks checkpoint and leave together ----

@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sigterm_to_the_spawn_parent_checkpoints_and_exits_cleanly(tmp_path):
    run_dir = tmp_path / "run"
    proc = start_cli([*TINY, "device=cpu", "distributed=spawn", "device.nprocs=2", "print_freq=1", "epochs=2",
                      f"hydra.run.dir={run_dir}"], tmp_path)
    wait_for(logged(run_dir, "Epoch: [0][1/4]"), proc)
    os.kill(proc.pid, signal.SIGTERM)  # the parent only, as a scheduler signals the process it started
    out = finish(proc, timeout=120)
    assert proc.returncode == EXIT_PREEMPTED, out
    assert "passing it on to 2 rank(s)" in out and "Traceback" not in out
    state = checkpoint.load_checkpoint(run_dir / checkpoint.LAST)
    assert state["epoch"] == 0 and 1 <= state["step"] < 4


# ---- kill -9 at random moments, during checkpoint writes too ----

@pytest.mark.slow
@pytest.mark.timeout(900)
def test_kill_9_at_random_moments_then_resume_auto_ends_with_the_same_weights(tmp_path):
    run = [*TINY, "deterministic=true", "epochs=2", "print_freq=1"]
    overrides = [*run, "checkpoint.every_steps=1"]
    train_in_process(compose_config(run), tmp_path / "whole")  # no mid-epoch checkpoints: they change nothing either
    run_dir = tmp_path / "run"
    args = [*overrides, "resume=auto", f"hydra.run.dir={run_dir}"]
    rng = random.Random(0)
    for moment in ("during a checkpoint write", "between steps", "during a checkpoint write"):
        offset, stale = log_size(run_dir), set(run_dir.glob("*.tmp"))  # a kill -9 mid-write leaves its temp file

        def overwriting(stale=stale) -> bool:  # a checkpoint is being written over an earlier one right now
            return (run_dir / checkpoint.LAST).exists() and bool(set(run_dir.glob("*.tmp")) - stale)

        proc = start_cli(args, tmp_path)
        if moment == "between steps":
            wait_for(logged(run_dir, "Epoch: [", after=offset), proc)
            time.sleep(rng.uniform(0.0, 2.0))
        else:
            wait_for(overwriting, proc, poll=0.005)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        # Whatever was cut short, the last complete checkpoint loads.
        checkpoint.load_checkpoint(run_dir / checkpoint.LAST)
    proc = start_cli(args, tmp_path)
    out = finish(proc)
    assert proc.returncode == 0, out
    assert out.count("resumed from") == 1
    assert_same_weights(final_weights(tmp_path / "whole"), final_weights(run_dir))
    assert not list(run_dir.glob("*.tmp")), "the resumed run removes the temp files the kills left"


# ---- a full disk ----

def test_a_full_disk_during_a_write_keeps_the_previous_checkpoint_and_says_so(tmp_path, monkeypatch):
    checkpoint.save_checkpoint({"epoch": 1, "w": torch.ones(3)}, tmp_path, False)
    before = (tmp_path / checkpoint.LAST).read_bytes()

    def disk_fills_up(obj, handle):
        handle.write(b"\0" * 4096)  # part of the file made it to disk
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(checkpoint.torch, "save", disk_fills_up)
    with pytest.raises(checkpoint.CheckpointWriteError) as err:
        checkpoint.save_checkpoint({"epoch": 2, "w": torch.zeros(3)}, tmp_path, True)
    message = str(err.value)
    assert "No space left on device" in message and "the disk is full" in message
    assert f"the previous {tmp_path / checkpoint.LAST} is intact" in message
    monkeypatch.undo()
    assert (tmp_path / checkpoint.LAST).read_bytes() == before
    assert checkpoint.load_checkpoint(tmp_path / checkpoint.LAST)["epoch"] == 1
    assert not list(tmp_path.glob("*.tmp")) and not (tmp_path / checkpoint.BEST).exists()


# ---- resume=auto, keep_last, mid-epoch checkpoints in one process ----

@pytest.mark.slow
def test_resume_auto_starts_fresh_then_continues_and_keep_last_keeps_n_copies(tmp_path):
    overrides = ["dataset.train_size=16", "max_steps_per_epoch=1", "checkpoint.keep_last=2", "resume=auto"]
    assert checkpoint.resolve_resume("auto", tmp_path) is None
    train_in_process(compose_config([*overrides, "epochs=2"]), tmp_path)
    assert checkpoint.resolve_resume("auto", tmp_path) == str(tmp_path / checkpoint.LAST)
    train_in_process(compose_config([*overrides, "epochs=3"]), tmp_path)  # the same command, one epoch more
    assert [r["epoch"] for r in read_metrics(tmp_path)] == [0, 1, 2]
    assert sorted(p.name for p in tmp_path.glob("checkpoint_epoch*")) == [
        "checkpoint_epoch0001.pth.tar", "checkpoint_epoch0002.pth.tar"]


@pytest.mark.slow
def test_every_steps_writes_mid_epoch_checkpoints(tmp_path, monkeypatch):
    saved = []
    real_save = checkpoint.save_checkpoint
    monkeypatch.setattr(checkpoint, "save_checkpoint",
                        lambda state, run_dir, is_best, save="all": saved.append((state["epoch"], state["step"]))
                        or real_save(state, run_dir, is_best, save))
    train_in_process(compose_config(["checkpoint.every_steps=2"]), tmp_path)  # 4 steps in the epoch
    assert saved == [(0, 2), (1, 0)]  # step 2 mid-epoch; step 4 is the epoch's own checkpoint


# ---- a rank that stops making progress ----

def stall_rank_1(cfg, ctx):
    """fit, except that rank 1 stops reading data after two batches (a hung file system, say)."""
    from resnext.data import robust
    from resnext.training.trainer import fit

    if ctx.rank == 1:
        reads = {"n": 0}
        real_read = robust.GuardedSamples._read

        def read_then_hang(self, index):
            reads["n"] += 1
            if reads["n"] > 2 * 8:  # two batches of 8 per rank
                time.sleep(3600)
            return real_read(self, index)

        robust.GuardedSamples._read = read_then_hang
    return fit(cfg, ctx)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_stalled_rank_ends_the_job_within_the_timeout_naming_the_rank(tmp_path, capfd):
    cfg = compose_config(["device=cpu", "distributed=spawn", "device.nprocs=2", "distributed.timeout_min=0.1",
                          "print_freq=1"])
    with pytest.raises(launch.HangDetected, match="hang watchdog"):
        launch.run(cfg, launch.plan(cfg), tmp_path, stall_rank_1)
    ended = time.time()
    logs = capfd.readouterr().err + "".join(p.read_text() for p in tmp_path.glob("train*.log"))
    assert "rank 1 made no progress" in logs or "rank 1 (this process) made no progress" in logs, logs
    # Rank 0 logged step 2, then waited for rank 1: the watchdog fired after 90% of the 6 s timeout; the rest
    # is its poll, the log's whole-second stamp and process teardown on a busy 2-core machine. Without the
    # watchdog only the process group's timeout (at least 60 s) would have ended it.
    step_2 = [line for line in logs.splitlines() if "Epoch: [0][2/4]" in line]
    assert step_2, logs
    stamp = time.mktime(time.strptime(step_2[0][1:20], "%Y-%m-%d %H:%M:%S"))
    assert ended - stamp < 20, ended - stamp


# ---- refusals, before any work ----

@pytest.mark.parametrize("override, key", [("checkpoint.every_steps=0", "checkpoint.every_steps"),
                                           ("checkpoint.every_minutes=-1", "checkpoint.every_minutes"),
                                           ("checkpoint.keep_last=-2", "checkpoint.keep_last"),
                                           ("distributed.timeout_min=0", "distributed.timeout_min")])
def test_bad_reliability_settings_are_refused_naming_the_key(override, key):
    from resnext.config.errors import ConfigError
    from resnext.config.schema import check_config

    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        check_config(compose_config([override]))


def test_evaluate_with_resume_auto_and_nothing_to_resume_is_refused(tmp_path):
    from resnext.config.errors import ConfigError

    cfg = compose_config(["evaluate=true", "resume=auto"])
    with pytest.raises(ConfigError, match="evaluate=true with resume=auto.*checkpoint.pth.tar does not exist"):
        checkpoint.check_auto_resume(cfg, tmp_path)
    checkpoint.save_checkpoint({"epoch": 1}, tmp_path, False)
    checkpoint.check_auto_resume(cfg, tmp_path)  # now there is one


def test_a_preempted_run_prints_the_command_that_resumes_it_in_its_directory(monkeypatch, tmp_path, capsys):
    """"run the same command with resume=auto" started a fresh run in a new outputs/<date>/<time>/."""
    from resnext import train

    def preempted(cfg, ctx):
        raise Preempted(f"SIGTERM: stopped at epoch 0 step 3 with a checkpoint (exit code {EXIT_PREEMPTED})")

    monkeypatch.setattr(train, "fit", preempted)
    assert cli_in_process(monkeypatch, tmp_path, [*TINY, "resume=auto", "optim.lr=0.05"]) == EXIT_PREEMPTED
    run_dir = find_run_dir(tmp_path)
    line = next(line for line in capsys.readouterr().out.splitlines() if "SIGTERM" in line)
    command = line.split("to continue: ", 1)[1].split()
    assert command[:3] == ["python", "-m", "resnext.train"] and "optim.lr=0.05" in command
    assert command[-2:] == [f"hydra.run.dir={run_dir}", "resume=auto"] and command.count("resume=auto") == 1


def test_resume_auto_says_when_it_starts_fresh(tmp_path, caplog):
    ctx = type("Ctx", (), {"run_dir": tmp_path, "is_main": True})()
    with caplog.at_level(logging.INFO, logger="resnext"):
        assert trainer._resume_path(compose_config(["resume=auto"]), ctx) is None
    assert f"resume=auto: no checkpoint.pth.tar in {tmp_path}: a fresh start" in caplog.text
    checkpoint.save_checkpoint({"epoch": 1}, tmp_path, False)
    assert trainer._resume_path(compose_config(["resume=auto"]), ctx) == str(tmp_path / checkpoint.LAST)


def test_every_minutes_saves_on_rank_0_when_the_time_is_up(monkeypatch):
    from types import SimpleNamespace

    from resnext.runtime import preempt

    now = {"t": 1000.0}
    monkeypatch.setattr(preempt.time, "monotonic", lambda: now["t"])
    saved = []
    cadence = SimpleNamespace(every_steps=None, every_minutes=0.5)
    guard = preempt.StepGuard(cadence, True, False, lambda epoch, step: saved.append((epoch, step)), lambda: None)
    hook = guard.for_epoch(3)
    hook(1, 10)
    now["t"] += 29
    hook(2, 10)
    now["t"] += 2  # 31 s since the last checkpoint
    hook(3, 10)
    now["t"] += 60
    hook(10, 10)  # the epoch's last step: the epoch checkpoint follows anyway
    assert saved == [(3, 3)]
    other_rank = preempt.StepGuard(cadence, False, False, lambda *a: saved.append(a), lambda: None)
    now["t"] += 60
    other_rank.for_epoch(3)(4, 10)
    assert saved == [(3, 3)]  # only rank 0 writes


def test_resume_auto_inside_a_slurm_job_keeps_the_run_dir_across_requeues(monkeypatch):
    from resnext.runtime import distributed

    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    assert distributed.launcher_run_dir("spawn", "2026/12-00", "auto") == "2026/12-00"
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    assert distributed.launcher_run_dir("spawn", "2026/12-00", "auto") == "slurm-4242"
    assert distributed.launcher_run_dir("none", "2026/12-00", "auto") == "slurm-4242"
    assert distributed.launcher_run_dir("none", "2026/12-00", None) == "2026/12-00"  # no resume: a new dir
