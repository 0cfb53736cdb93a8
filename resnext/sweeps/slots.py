"""Asynchronous slots: N threads, each starting a new trial the moment its previous one ends.

Why not Hydra's batches: a launcher's `launch(jobs)` returns when all its jobs end, so a batch of N waits
for its slowest (and, with a pruner, its survivors), leaving slots idle. Here each slot launches one job at
a time (`launcher.launch([overrides], initial_job_idx=trial number)`), so no slot waits for another's trial.
Slot k starts k x stagger seconds after slot 0, so N jobs do not import torch and open the dataset together.

While its trials run, a heartbeat thread records them in the storage (Optuna's heartbeat), so another
sweep process can tell a trial of a dead sweep (stale) from one that is still running elsewhere.

slots.json in the sweep directory records the time line for idle-time accounting:
  {"runs": [{"host", "pid", "n_jobs", "stagger_s", "started", "ended",
             "intervals": [{"slot", "trial", "start", "end", "state"}]}]}
one run per sweep process (a resumed or a second process appends its own); times are ISO-8601 UTC with
milliseconds; state is the study's COMPLETE | PRUNED | FAIL (or SURPLUS: asked by a race, never run).
A slot is idle whenever it has no interval open between the run's start and end.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

log = logging.getLogger("resnext")

SLOTS_FILE = "slots.json"
WAIT = "wait"  # what `next_trial` returns when trials of other processes are still running


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # Windows: the last writer wins
        yield
        return
    fd = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


class SlotLog:
    """This process's entry of slots.json, rewritten (under a lock, atomically) after every trial."""

    def __init__(self, sweep_dir: Path, n_jobs: int, stagger_s: float) -> None:
        self.path = Path(sweep_dir) / SLOTS_FILE
        self.key = {"host": socket.gethostname(), "pid": os.getpid(), "started": now_iso()}
        self.entry: Dict[str, Any] = {**self.key, "n_jobs": n_jobs, "stagger_s": stagger_s, "ended": None,
                                      "intervals": []}
        self._lock = threading.Lock()

    def add(self, slot: int, trial: int, start: str, end: str, state: str) -> None:
        with self._lock:
            self.entry["intervals"].append({"slot": slot, "trial": trial, "start": start, "end": end, "state": state})
            self._write()

    def close(self) -> None:
        with self._lock:
            self.entry["ended"] = now_iso()
            self._write()

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with _file_lock(self.path):
            try:
                runs = json.loads(self.path.read_text()).get("runs", [])
            except (OSError, ValueError):
                runs = []
            runs = [r for r in runs if {k: r.get(k) for k in self.key} != self.key] + [self.entry]
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"runs": runs}, indent=2) + "\n")
            os.replace(tmp, self.path)


class Heartbeat:
    """Records a heartbeat for every trial this process runs, every `interval_s` seconds (a daemon thread)."""

    def __init__(self, storage: Any, interval_s: float) -> None:
        self.storage, self.interval_s = storage, interval_s
        self.trial_ids: set = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="resnext-heartbeat", daemon=True)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    def add(self, trial_id: int) -> None:
        self.trial_ids.add(trial_id)
        self.storage.record_heartbeat(trial_id)

    def remove(self, trial_id: int) -> None:
        self.trial_ids.discard(trial_id)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            for trial_id in list(self.trial_ids):
                try:
                    self.storage.record_heartbeat(trial_id)
                except Exception:  # noqa: BLE001 - a missed beat is retried; a long outage makes the trial stale
                    log.warning("could not record the heartbeat of trial id %s", trial_id, exc_info=True)


def run_slots(n_jobs: int, stagger_s: float, poll_s: float, next_trial: Callable[[int], Any],
              run_trial: Callable[[int, Any], str], slot_log: SlotLog) -> List[BaseException]:
    """Run N slots until `next_trial` returns None for each; returns the errors that ended a slot early.

    next_trial(slot) -> a ticket, WAIT (poll again in poll_s) or None (this slot is done);
    run_trial(slot, ticket) -> the trial's final state (a word for slots.json). With one slot no thread is
    started: the basic launcher runs jobs in this (main) thread, which signal handlers need.
    """
    errors: List[BaseException] = []

    def slot_loop(slot: int) -> None:
        time.sleep(slot * stagger_s)
        try:
            while True:
                ticket = next_trial(slot)
                if ticket is None:
                    return
                if ticket == WAIT:
                    time.sleep(poll_s)
                    continue
                start = now_iso()
                state = run_trial(slot, ticket)
                slot_log.add(slot, ticket.number, start, now_iso(), state)
        except BaseException as err:  # noqa: BLE001 - reported by the sweeper once every slot has ended
            log.exception("slot %d stopped", slot)
            errors.append(err)

    try:
        if n_jobs == 1:
            slot_loop(0)
        else:
            threads = [threading.Thread(target=slot_loop, args=(slot,), name=f"resnext-slot-{slot}", daemon=True)
                       for slot in range(n_jobs)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
    finally:
        slot_log.close()
    return errors
