"""run_record.json: what produced a run (command, code, versions, devices, host, environment), written by the
process that prepares the run directory, and compared with the run a resume continues.

The file. Its top level is the start that created the directory (a fresh start replaces any earlier record
and its diffs: the directory's results are then that start's). Each later start that resumes from a
checkpoint in the same directory appends the same fields to `resumes`; the newest entry (the last
resume, else the top level) is the code that runs now. A start that resumes has `resumed_from`: the
checkpoint and its `changes` against the newest entry of the record beside that checkpoint (another run
directory's, or this one's). When the tree was dirty, `git diff HEAD` goes beside the record
(run_record.diff; run_record.resume<N>.diff for the N-th resume, unless its diff is the previous start's)
and `git.diff` names it.

Why runtime: the facts are the process's (provenance.py, git_state.py), and the wings above read the record:
the loggers turn it into tags (`tags`, the one place that names them), the sweep summary shows each job's
code (`code_summary`). train.py calls `start` once, on rank 0, before the ranks are launched.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import shlex
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from . import git_state, provenance

log = logging.getLogger("resnext")

RECORD_FILE = "run_record.json"
DIFF_FILE = "run_record.diff"
TAG_CHARS = 5000  # MLflow's limit on a tag value is 8000: keep well inside it
SHORT = 7  # characters of a commit hash, as git shows them


def read(run_dir: Path) -> Optional[Dict[str, Any]]:
    """The directory's record; None when it has none (a run older than records) or it is unreadable."""
    try:
        return json.loads((Path(run_dir) / RECORD_FILE).read_text())
    except (OSError, ValueError):
        return None


def entries(record: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Every start of the run, oldest first: the top level, then each resume."""
    first = {key: value for key, value in record.items() if key != "resumes"}
    return [first, *record.get("resumes", [])]


def newest(record: Dict[str, Any]) -> Dict[str, Any]:
    return entries(record)[-1]


# ---- naming the code ----------------------------------------------------------------------------

def code_label(git: Dict[str, Any]) -> str:
    """'abc1234', 'abc1234+dirty', or what stands for no commit: 'no git' (an installed package), 'unknown'."""
    if git.get("commit"):
        return git["commit"][:SHORT] + ("+dirty" if git.get("dirty") else "")
    return "no git" if git.get("outside_git") else "unknown"


def code_summary(record: Optional[Dict[str, Any]]) -> str:
    """The code of each start, in order and without repeats: 'abc1234' or 'abc1234 -> def5678+dirty'."""
    if record is None:
        return ""
    labels = [code_label(entry.get("git", {})) for entry in entries(record)]
    return " -> ".join(label for i, label in enumerate(labels) if i == 0 or label != labels[i - 1])


def _phrase(git: Dict[str, Any], word: str = "commit ", another_diff: bool = False) -> str:
    if not git.get("commit"):
        return f"code without a commit ({git.get('reason')})"
    marks = "dirty, another diff" if another_diff else "dirty"
    return f"{word}{git['commit'][:SHORT]}" + (f" ({marks})" if git.get("dirty") else "")


def code_change(before: Dict[str, Any], now: Dict[str, Any]) -> Optional[str]:
    """None when the code is the same (or neither side knows its commit); else one phrase naming both."""
    if not before.get("commit") and not now.get("commit"):
        return None
    same_commit = before.get("commit") == now.get("commit")
    same_tree = before.get("dirty") == now.get("dirty") and before.get("diff_sha256") == now.get("diff_sha256")
    if same_commit and same_tree:
        return None
    another_diff = same_commit and before.get("dirty") and now.get("dirty")
    return f"the resumed run was made by {_phrase(before)}, this is {_phrase(now, '', bool(another_diff))}"


def version_changes(before: Dict[str, str], now: Dict[str, str]) -> List[str]:
    """'torch 2.14.1 -> 2.15.0' for each version that differs ('none' where a package is absent)."""
    keys = list(dict.fromkeys([*before, *now]))
    return [f"{key} {before.get(key, 'none')} -> {now.get(key, 'none')}" for key in keys
            if before.get(key) != now.get(key)]


def changes(before: Dict[str, Any], now: Dict[str, Any]) -> List[str]:
    """What differs between two starts that matters to the result: the code, then the versions."""
    code = code_change(before.get("git", {}), now.get("git", {}))
    return ([code] if code else []) + version_changes(before.get("versions", {}), now.get("versions", {}))


# ---- writing ------------------------------------------------------------------------------------

def _write_json(path: Path, content: Dict[str, Any]) -> None:
    # A sweep summary may read it while it is written: replace, never truncate.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(content, indent=2) + "\n")
    os.replace(tmp, path)


def _resumed_from(checkpoint: str, entry: Dict[str, Any]) -> Dict[str, Any]:
    earlier = read(Path(checkpoint).parent)
    if earlier is None:
        return {"checkpoint": checkpoint, "changes": None, "note": f"no {RECORD_FILE} beside the checkpoint"}
    return {"checkpoint": checkpoint, "changes": changes(newest(earlier), entry)}


def _save_diff(run_dir: Path, git: git_state.GitState, own: Optional[Dict[str, Any]]) -> str:
    """The diff file's name: a new one, or the previous start's when the diff is the same (a requeued job)."""
    if own is not None:
        previous = newest(own).get("git", {})
        if previous.get("diff") and previous.get("diff_sha256") == git.diff_sha256:
            return previous["diff"]
    name = DIFF_FILE if own is None else f"run_record.resume{len(own.get('resumes', [])) + 1}.diff"
    (run_dir / name).write_text(git_state.diff_file_text(git))
    return name


def start(run_dir: Path, argv: Sequence[str], overrides: Sequence[str], hydra_overrides: Sequence[str],
          device_type: str, used_devices: Sequence[str], resumed_from: Optional[str] = None,
          package_dir: Path = git_state.PACKAGE_DIR) -> Dict[str, Any]:
    """Record this start in `run_dir` (a new record, or a resume appended to the directory's), save the diff of a
    dirty tree, log the summary line and, for a resume whose code or versions differ, one warning."""
    run_dir = Path(run_dir)
    git = git_state.probe(package_dir)
    entry: Dict[str, Any] = {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                             **provenance.gather(argv, overrides, hydra_overrides, device_type, used_devices),
                             "git": {k: v for k, v in dataclasses.asdict(git).items() if k != "diff"}}
    own = read(run_dir) if resumed_from else None
    if resumed_from:
        entry["resumed_from"] = _resumed_from(resumed_from, entry)
    if own is None:
        for stale in run_dir.glob("run_record*.diff"):  # a fresh start: the earlier start's files go with it
            stale.unlink()
    if git.dirty:
        entry["git"]["diff"] = _save_diff(run_dir, git, own)
    record = {**entry, "resumes": []} if own is None else {**own, "resumes": [*own.get("resumes", []), entry]}
    _write_json(run_dir / RECORD_FILE, record)
    log.info("%s", summary_line(entry))
    if resumed_from and entry["resumed_from"]["changes"]:
        log.warning("resume from %s: %s", resumed_from, "; ".join(entry["resumed_from"]["changes"]))
    return entry


def summary_line(entry: Dict[str, Any]) -> str:
    """train.log's one line: code, main versions, devices, host."""
    git, versions, devices = entry["git"], entry["versions"], entry["devices"]
    code = code_label(git) + (f" (diff in {git['diff']})" if git.get("diff") else "")
    stack = ", ".join(f"{key} {versions[key]}" for key in ("python", "torch", "cuda", "cann") if key in versions)
    names = f" ({devices['names'][0]})" if devices.get("names") else ""
    return (f"run record ({RECORD_FILE}): code {code}; {stack}; {len(devices['used'])} x {devices['type']}{names} "
            f"on host {entry['host']['hostname']}")


# ---- tags for the tracking sinks ----------------------------------------------------------------

# section -> tag prefix: git.commit -> run.git_commit, versions.torch -> run.torch, env.NCCL_DEBUG -> run.env.NCCL_DEBUG
TAG_PREFIXES = {"git": "run.git_", "versions": "run.", "devices": "run.device_", "host": "run.", "command": "run.",
                "env": "run.env."}


def _tag_value(value: Any, join=", ".join) -> str:
    if isinstance(value, list):
        value = join(str(v) for v in value)
    return str(value)[:TAG_CHARS]


def tags(run_dir: Path) -> Dict[str, str]:
    """The newest start of the directory's record as flat string tags ({} without a record)."""
    record = read(run_dir)
    if record is None:
        return {}
    entry = newest(record)
    flat = {"run.created": str(entry.get("created"))}
    for section, prefix in TAG_PREFIXES.items():
        for key, value in (entry.get(section) or {}).items():
            if value is not None and value != []:  # argv and overrides as a shell would take them back
                flat[prefix + key] = _tag_value(value, shlex.join if section == "command" else ", ".join)
    resumed = entry.get("resumed_from")
    if resumed:
        flat["run.resumed_from"] = _tag_value(resumed["checkpoint"])
        flat["run.resumed_changes"] = _tag_value("; ".join(resumed.get("changes") or []))
    return flat
