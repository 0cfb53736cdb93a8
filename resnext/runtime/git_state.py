"""The git state of the code this process imported: the commit of the repository holding the resnext package,
whether its tree was dirty, and the diff that made it so.

Why it asks about the *imported* package rather than the working directory: a run started from another
folder, or with PYTHONPATH pointing at a worktree, ran the code found through `resnext.__file__`, and that is
what a result must be traced back to. A package installed with `pip install .` sits in site-packages: no
repository holds it (or one that ignores it does, as a .venv inside a checkout), and the record says so.

Git must never cost the run: each call has a short timeout, and a missing git, a folder that is not a
repository, a refusal ("dubious ownership") or a timeout become a `reason` in the answer, never an exception.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

GIT_TIMEOUT_S = 5.0  # per call; a status of a large checkout on a slow disk still fits
PACKAGE_DIR = Path(__file__).resolve().parents[1]  # the resnext package this process imported


class GitUnavailable(Exception):
    """git is missing, timed out or refused: the message says which, for the record."""


@dataclass
class GitState:
    """What the record keeps of the repository; `commit` is None with a `reason` when there is none."""

    package: str
    repository: Optional[str] = None
    commit: Optional[str] = None
    dirty: Optional[bool] = None
    untracked: List[str] = field(default_factory=list)
    diff_sha256: Optional[str] = None  # tells two dirty trees on the same commit apart
    reason: Optional[str] = None  # why there is no commit
    outside_git: bool = False  # no repository holds the package (installed): known, unlike a git that failed
    diff: str = field(default="", repr=False)  # `git diff HEAD`, saved beside the record, not inside it


def _git(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    # GIT_OPTIONAL_LOCKS=0: status must not take the index lock, which parallel sweep jobs would fight over.
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C", "GIT_TERMINAL_PROMPT": "0"}
    try:
        return subprocess.run(["git", "-c", "core.quotepath=off", *args], cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=GIT_TIMEOUT_S, errors="replace")
    except FileNotFoundError as err:
        raise GitUnavailable("git is not installed") from err
    except subprocess.TimeoutExpired as err:
        raise GitUnavailable(f"git {args[0]} took over {GIT_TIMEOUT_S:g} s") from err
    except OSError as err:
        raise GitUnavailable(f"git could not run ({err})") from err


def _first_line(text: str) -> str:
    return (text.strip().splitlines() or ["no message"])[-1]


def probe(package_dir: Path = PACKAGE_DIR) -> GitState:
    """The git state of `package_dir`'s repository; never raises."""
    state = GitState(package=str(package_dir))
    try:
        _fill(state, Path(package_dir))
    except GitUnavailable as err:
        state.reason = str(err)
    return state


def _fill(state: GitState, package_dir: Path) -> None:
    found = _git(package_dir, "rev-parse", "--show-toplevel", "HEAD")
    if found.returncode != 0:
        state.outside_git = "not a git repository" in found.stderr  # else git refused: dubious ownership, no HEAD
        what = "the package is in no git repository (an installed package)" if state.outside_git else "git failed"
        state.reason = f"{what}: {_first_line(found.stderr)}"
        return
    repository, commit = found.stdout.splitlines()[:2]
    if _git(package_dir, "check-ignore", "-q", str(package_dir)).returncode == 0:
        state.reason = f"the package is installed inside {repository}, which ignores it: not that repository's code"
        state.outside_git = True
        return
    status = _git(package_dir, "status", "--porcelain=v1")
    if status.returncode != 0:
        state.reason = f"git status failed: {_first_line(status.stderr)}"
        return
    state.repository, state.commit = repository, commit
    lines = status.stdout.splitlines()
    # An untracked module can be imported as well as a modified one: both make the tree dirty.
    state.untracked = [line[3:] for line in lines if line.startswith("?? ")]
    state.dirty = bool(lines)
    if state.dirty:
        state.diff = _git(Path(repository), "diff", "HEAD").stdout
        state.diff_sha256 = hashlib.sha256((state.diff + "\n".join(state.untracked)).encode()).hexdigest()


def diff_file_text(state: GitState) -> str:
    """run_record.diff: a header naming the commit and the untracked files, then `git diff HEAD`.
    The header comes first so that `git apply run_record.diff` still applies the tracked changes."""
    header = [f"# git diff HEAD of {state.repository} at commit {state.commit}"]
    if state.untracked:
        header.append("# untracked files, not ignored (their contents are not in this diff):")
        header += [f"#   {path}" for path in state.untracked]
    return "\n".join(header) + "\n" + state.diff
