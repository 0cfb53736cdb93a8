"""resnext/runtime/compat.py behaves the same on the installed torch whichever way it goes: torch's own
join(grace_period=...) where it exists (2.6 and up), the shim's wait where it does not (2.4, 2.5)."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
import torch.multiprocessing as mp

from resnext.runtime import compat


def _first_fails_second_finishes(index: int, marker: str) -> None:
    if index == 0:
        sys.exit(3)  # as a preempted rank leaves: an exit code, no traceback
    time.sleep(0.5)  # the peer's last work (a barrier, a log line) takes a moment after the first has gone
    Path(marker).write_text("done")


def _both_finish(index: int, marker: str) -> None:
    Path(f"{marker}.{index}").write_text("done")


def _start(fn, marker: Path) -> mp.ProcessContext:
    # fork: the children only sleep and write a file, so they need no fresh interpreter importing torch.
    return mp.start_processes(fn, args=(str(marker),), nprocs=2, join=False, start_method="fork")


@pytest.fixture(params=["installed torch", "shim"])
def grace_path(request, monkeypatch) -> str:
    """Both branches run on whatever torch is installed; the shim's cannot run only if torch lacks the grace."""
    if request.param == "shim":
        monkeypatch.setattr(compat, "JOIN_TAKES_GRACE", False)
    elif not compat.JOIN_TAKES_GRACE:
        pytest.skip("this torch's ProcessContext.join has no grace_period (torch < 2.6): the shim's branch runs")
    return request.param


def test_a_failed_process_leaves_its_peers_the_grace_period_then_join_raises(tmp_path, grace_path):
    marker = tmp_path / "second"
    context = _start(_first_fails_second_finishes, marker)
    with pytest.raises(mp.ProcessExitedException, match="exit code 3"):
        while not compat.join_processes(context, grace_period=10.0):
            pass
    assert marker.read_text() == "done"  # not terminated in the middle of its last work
    assert [p.exitcode for p in context.processes] == [3, 0]


def test_processes_that_all_succeed_join_to_true(tmp_path, grace_path):
    context = _start(_both_finish, tmp_path / "ok")
    while not compat.join_processes(context, grace_period=1.0):
        pass
    assert compat.join_processes(context, grace_period=1.0)  # callable again once done, as join() is
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.0", "ok.1"]
