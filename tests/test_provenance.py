"""run_record.json: what produced a run, and the one warning a resume gives when the code or a version changed.

Git is exercised on small repositories made here; the train command is run in this process with its
training replaced by a stub (what is tested is the record main writes, not the training)."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from resnext import train
from resnext.runtime import git_state, provenance, run_record
from tests import fake_npu
from tests.conftest import TINY, cli_in_process

GIT_ID = ["-c", "user.name=t", "-c", "user.email=t@t"]


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *GIT_ID, *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository holding a package folder `resnext/`, one commit."""
    root = tmp_path / "repo"
    (root / "resnext").mkdir(parents=True)
    (root / "resnext" / "model.py").write_text("WIDTH = 4\n")
    (root / ".gitignore").write_text("venv/\n")
    git(root, "init", "-q")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "first")
    return root


def start(run_dir: Path, package_dir: Path, resumed_from=None) -> dict:
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_record.start(run_dir, ["train.py", "optim.lr=0.2"], ["optim.lr=0.2"], [], "cpu", ["cpu"],
                            resumed_from, package_dir=package_dir)


def test_a_clean_tree_is_recorded_by_its_commit_and_no_diff(repo, tmp_path):
    entry = start(tmp_path / "run", repo / "resnext")
    assert entry["git"]["commit"] == git(repo, "rev-parse", "HEAD") and entry["git"]["dirty"] is False
    assert entry["git"]["repository"] == str(repo.resolve())
    assert not list((tmp_path / "run").glob("*.diff"))


def test_a_dirty_tree_saves_its_diff_and_untracked_files_beside_the_record(repo, tmp_path):
    (repo / "resnext" / "model.py").write_text("WIDTH = 8\n")
    (repo / "resnext" / "new_block.py").write_text("pass\n")
    run_dir = tmp_path / "run"
    entry = start(run_dir, repo / "resnext")
    assert entry["git"]["dirty"] is True and entry["git"]["untracked"] == ["resnext/new_block.py"]
    assert entry["git"]["diff"] == "run_record.diff"
    diff = (run_dir / "run_record.diff").read_text()
    assert "#   resnext/new_block.py" in diff and "-WIDTH = 4\n+WIDTH = 8" in diff
    git(repo, "apply", "--check", "-R", str(run_dir / "run_record.diff"))  # a patch git takes back
    assert run_record.code_label(entry["git"]) == entry["git"]["commit"][:7] + "+dirty"
    # A fresh start in the same directory replaces the record and the earlier start's diff.
    git(repo, "checkout", "-q", "--", ".")
    (repo / "resnext" / "new_block.py").unlink()
    start(run_dir, repo / "resnext")
    assert run_record.read(run_dir)["git"]["dirty"] is False and not (run_dir / "run_record.diff").exists()


def test_resumes_append_to_the_record_and_save_a_diff_only_when_it_changed(repo, tmp_path):
    (repo / "resnext" / "model.py").write_text("WIDTH = 8\n")
    run_dir = tmp_path / "run"
    start(run_dir, repo / "resnext")
    checkpoint = str(run_dir / "checkpoint.pth.tar")
    assert start(run_dir, repo / "resnext", checkpoint)["resumed_from"] == {"checkpoint": checkpoint, "changes": []}
    (repo / "resnext" / "model.py").write_text("WIDTH = 16\n")
    again = start(run_dir, repo / "resnext", checkpoint)
    commit = again["git"]["commit"][:7]
    assert again["resumed_from"]["changes"] == [
        f"the resumed run was made by commit {commit} (dirty), this is {commit} (dirty, another diff)"]
    record = run_record.read(run_dir)
    # A requeue with the same diff points at the earlier file; another diff gets its own.
    assert [e["git"]["diff"] for e in run_record.entries(record)] == [
        "run_record.diff", "run_record.diff", "run_record.resume2.diff"]
    assert "+WIDTH = 16" in (run_dir / "run_record.resume2.diff").read_text()
    # Resuming into a new directory: a new record there, compared with the one beside the checkpoint.
    moved = start(tmp_path / "elsewhere", repo / "resnext", checkpoint)
    assert moved["resumed_from"]["changes"] == [] and run_record.read(tmp_path / "elsewhere")["resumes"] == []


@pytest.mark.parametrize("where", ["no repository", "ignored by the repository"])
def test_a_package_outside_git_says_so(repo, tmp_path, where):
    package = tmp_path / "site-packages" / "resnext" if where == "no repository" else repo / "venv" / "resnext"
    package.mkdir(parents=True)
    git_info = start(tmp_path / "run", package)["git"]
    assert git_info["commit"] is None and git_info["outside_git"] is True
    assert ("in no git repository" if where == "no repository" else "which ignores it") in git_info["reason"]
    assert run_record.code_label(git_info) == "no git"


@pytest.mark.parametrize("error, reason", [(FileNotFoundError("git"), "git is not installed"),
                                           (subprocess.TimeoutExpired("git", 5), "took over 5 s")])
def test_git_missing_or_slow_costs_a_reason_not_the_run(repo, monkeypatch, error, reason):
    def fails(*args, **kwargs):
        raise error

    monkeypatch.setattr(git_state.subprocess, "run", fails)
    state = git_state.probe(repo / "resnext")
    assert state.commit is None and reason in state.reason and not state.outside_git
    assert run_record.code_label({"commit": None, "reason": state.reason}) == "unknown"


def test_the_npu_stack_comes_from_an_imported_torch_npu_and_a_missing_answer_is_left_out(monkeypatch):
    assert not {"cann", "hccl"} & set(provenance.versions())  # torch_npu not imported: not asked
    _, npu = fake_npu.install(monkeypatch, cards=2)
    assert not {"cann", "hccl"} & set(provenance.versions())  # the stand-in has no get_cann_version: left out
    answers = {"CANN": "8.3.RC1", "HCCL": "8.3.RC1.1"}
    monkeypatch.setattr(npu, "utils", SimpleNamespace(get_cann_version=lambda module: answers[module]), raising=False)
    monkeypatch.setattr(npu, "get_device_name", lambda index: "Ascend910B2", raising=False)
    assert {k: provenance.versions()[k] for k in ("cann", "hccl")} == {"cann": "8.3.RC1", "hccl": "8.3.RC1.1"}
    assert provenance.devices("npu", ["npu:1"]) == {"type": "npu", "used": ["npu:1"], "count": 2,
                                                    "names": ["Ascend910B2", "Ascend910B2"]}


def git_info(commit: str, dirty: bool = False, diff: str = None) -> dict:
    return {"commit": commit, "dirty": dirty, "diff_sha256": diff}


@pytest.mark.parametrize("before, now, expected", [
    (git_info("a" * 40), git_info("b" * 40, True, "x"), "the resumed run was made by commit aaaaaaa, this is bbbbbbb (dirty)"),
    (git_info("a" * 40, True, "x"), git_info("a" * 40, True, "y"),
     "the resumed run was made by commit aaaaaaa (dirty), this is aaaaaaa (dirty, another diff)"),
    (git_info("a" * 40, True, "x"), git_info("a" * 40, True, "x"), None),
    ({"commit": None, "reason": "git is not installed"}, {"commit": None, "reason": "git is not installed"}, None),
])
def test_the_code_change_names_both_commits(before, now, expected):
    assert run_record.code_change(before, now) == expected


def test_changes_list_the_code_then_each_version_that_moved():
    before = {"git": git_info("a" * 40), "versions": {"torch": "2.14.1", "wandb": "0.31.0", "cuda": "13.0"}}
    now = {"git": git_info("b" * 40, True, "x"), "versions": {"torch": "2.15.0", "cuda": "13.0", "dali": "2.4.0"}}
    assert run_record.changes(before, now) == ["the resumed run was made by commit aaaaaaa, this is bbbbbbb (dirty)",
                                               "torch 2.14.1 -> 2.15.0", "wandb 0.31.0 -> none", "dali none -> 2.4.0"]
    assert run_record.changes(now, now) == []


def test_the_train_command_records_the_run_and_a_resume_warns_once_what_changed(monkeypatch, tmp_path):
    """A fresh start writes the record; the same command with resume=auto appends its entry and warns."""
    monkeypatch.setattr(train, "fit", lambda cfg, ctx: 12.5)  # main's record, not the training, is tested
    monkeypatch.setenv("NCCL_DEBUG", "INFO")
    monkeypatch.setenv("NCCL_IB_TOKEN", "do-not-record")
    run_dir = tmp_path / "run"
    args = [*TINY, "optim.lr=0.2", "resume=auto", f"hydra.run.dir={run_dir}"]
    assert cli_in_process(monkeypatch, tmp_path, args) == 0
    record = run_record.read(run_dir)
    assert record["command"]["argv"] == ["resnext.train", *args]
    assert record["command"]["overrides"] == args[:-1]  # hydra.run.dir is Hydra's own
    assert f"hydra.run.dir={run_dir}" in record["command"]["hydra_overrides"]
    assert record["versions"]["torch"] == torch.__version__ and {"python", "hydra-core", "omegaconf"} <= set(
        record["versions"])
    assert record["devices"]["type"] == "cpu" and record["devices"]["used"] == ["cpu"]
    assert record["env"]["NCCL_DEBUG"] == "INFO" and "NCCL_IB_TOKEN" not in record["env"]
    assert record["git"]["commit"] or record["git"]["reason"]  # this checkout's commit, or why there is none
    assert record["resumes"] == [] and "resumed_from" not in record
    assert "run record (run_record.json): code " in (run_dir / "train.log").read_text()

    # Make it the record of an earlier run with other code and another torch, leave a checkpoint, go again.
    record.update(git=git_info("0" * 40), versions={**record["versions"], "torch": "2.0.0"})
    (run_dir / "run_record.json").write_text(json.dumps(record))
    (run_dir / "checkpoint.pth.tar").touch()  # what resume=auto looks for; fit is a stub, nothing reads it
    # The empty file would be refused before launch (tests/test_damaged_files.py): this test is about the record.
    monkeypatch.setattr(train.resume, "check_input_files", lambda cfg, run_dir: None)
    assert cli_in_process(monkeypatch, tmp_path, args) == 0
    resumed = run_record.read(run_dir)
    assert len(resumed["resumes"]) == 1 and resumed["git"]["commit"] == "0" * 40  # the first start is kept
    changes = resumed["resumes"][0]["resumed_from"]["changes"]
    assert changes[0].startswith("the resumed run was made by commit 0000000, this is ")
    assert f"torch 2.0.0 -> {torch.__version__}" in changes
    warnings = [line for line in (run_dir / "train.log").read_text().splitlines() if "[WARNING]" in line]
    assert len(warnings) == 1  # one line, naming what differs
    assert warnings[0].endswith(f"resume from {run_dir / 'checkpoint.pth.tar'}: " + "; ".join(changes))
    assert run_record.code_summary(resumed).startswith("0000000 -> ")
    assert run_record.tags(run_dir)["run.torch"] == torch.__version__  # tags follow the code that runs now
