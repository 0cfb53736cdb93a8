"""The package's layout is a rule, not a habit: wings import only wings below them, and old checkpoints load.

The rule (README's Layout): the commands at the top of `resnext/` may import any wing; a wing may import
itself and the wings of a lower rank, never a peer of its own rank, a wing above it, or a command.
Every import counts, including the lazy ones inside functions.
"""
from __future__ import annotations

import ast
import gzip
import json
import shutil
from pathlib import Path
from typing import Dict, Iterator, Set, Tuple

import pytest

import resnext
from resnext import export
from tests.conftest import compose_config, needs, train_in_process

PACKAGE = Path(resnext.__file__).parent
COMMANDS = {"train", "export", "predict", "benchmark", "report", "verify_data"}
WING_RANK = {"config": 0, "runtime": 1, "data": 2, "models": 2, "loggers": 2, "training": 3, "sweeps": 4}
COMMAND_RANK = 5
PRE_WINGS = Path(__file__).parent / "data" / "pre_wings"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> Dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if "conf" not in p.relative_to(PACKAGE).parts}


def imports(path: Path, name: str, top_level_only: bool = False) -> Iterator[Tuple[int, str]]:
    """(line, imported resnext module or package) for every import in the file."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    for node in nodes:
        if isinstance(node, ast.Import):
            yield from ((node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "resnext")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "resnext":
                continue
            for alias in node.names:  # `from . import launch` imports the module resnext.training.launch
                sub = f"{target}.{alias.name}"
                yield node.lineno, sub if sub in modules() or (PACKAGE.parent / sub.replace(".", "/")).is_dir() \
                    else target


def wing_of(name: str) -> Tuple[str, int]:
    """The wing (or 'command') a module belongs to, and its rank."""
    parts = name.split(".")
    if len(parts) == 1:
        return "resnext", -1  # the package itself: resnext/__init__.py sets an environment default, imports nothing
    if parts[1] in WING_RANK:
        return parts[1], WING_RANK[parts[1]]
    if parts[1] in COMMANDS:
        return parts[1], COMMAND_RANK
    raise AssertionError(f"{name} is neither a command nor in a wing: put it in the wing of its job "
                         f"({', '.join(WING_RANK)}) or make it a command")


def test_the_package_top_holds_only_commands_and_wings():
    top = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    assert top == COMMANDS
    wings = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()} - {"conf"}
    assert wings == set(WING_RANK)


def test_wings_import_only_the_wings_below_them():
    broken = []
    for name, path in modules().items():
        wing, rank = wing_of(name)
        for line, target in imports(path, name):
            target_wing, target_rank = wing_of(target)
            if target_wing == wing or target_rank == -1:
                continue
            if target_rank == COMMAND_RANK:
                broken.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports the command {target}")
            elif target_rank >= rank:
                broken.append(f"{path.relative_to(PACKAGE.parent)}:{line} ({wing}) imports {target} "
                              f"({target_wing}, {'a peer' if target_rank == rank else 'above it'})")
    assert not broken, "imports against the layout rule:\n" + "\n".join(broken)


def test_the_rule_catches_an_upward_import(tmp_path):
    # The checker itself: a module of data importing training must be reported.
    fake = tmp_path / "loaders.py"
    fake.write_text("def f():\n    from ..training import trainer\n")
    found = list(imports(fake, "resnext.data.loaders"))
    assert found == [(2, "resnext.training.trainer")]
    assert wing_of(found[0][1])[1] > wing_of("resnext.data.loaders")[1]


def test_no_import_cycles_at_module_level():
    graph: Dict[str, Set[str]] = {
        name: {t for _, t in imports(path, name, top_level_only=True) if t in modules() and t != name}
        for name, path in modules().items()}
    state: Dict[str, int] = {}
    stack: list = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)


@pytest.fixture(scope="module")
def pre_wings(tmp_path_factory) -> Path:
    """The checkpoints main wrote before the wings (tests/data/pre_wings/README.md), unpacked."""
    folder = tmp_path_factory.mktemp("pre_wings")
    for name in ("checkpoint.pth.tar", "model_best.pth.tar"):
        with gzip.open(PRE_WINGS / f"{name}.gz", "rb") as src, (folder / name).open("wb") as dst:
            shutil.copyfileobj(src, dst)
    return folder


PRE_WINGS_RUN = ["dataset.train_size=32", "dataset.val_size=20", "max_steps_per_epoch=1"]


@pytest.mark.slow
def test_a_checkpoint_written_before_the_wings_resumes(pre_wings, tmp_path):
    run = tmp_path / "resumed"
    train_in_process(compose_config([*PRE_WINGS_RUN, "epochs=2", f"resume={pre_wings / 'checkpoint.pth.tar'}"]), run)
    epochs = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1]  # epoch 0 came from the old file; only epoch 1 ran


@needs("safetensors", extra="export")
@pytest.mark.slow
def test_a_model_best_written_before_the_wings_evaluates_and_exports(pre_wings, tmp_path, capsys):
    run = tmp_path / "eval"
    train_in_process(compose_config([*PRE_WINGS_RUN, "evaluate=true", f"resume={pre_wings / 'model_best.pth.tar'}"]),
                     run)
    assert json.loads((run / "eval.json").read_text())["val_samples"] == 20
    assert export.main([f"checkpoint={pre_wings / 'model_best.pth.tar'}", "format=safetensors",
                        f"out={tmp_path / 'm.safetensors'}"]) == 0
    assert (tmp_path / "m.safetensors").stat().st_size > 1_000_000
