""""Did you mean `optim.lr`?" after Hydra refuses a mistyped key, and one line for a value outside a choice.

Hydra's own error ("Key 'lrr' not in 'OptimConfig'") names the bad key but not the good one. The schema
(resnext/config/schema.py) knows every key, so after Hydra has printed its error and is exiting, the
command line's keys are compared with the schema's and the closest one is suggested. A value outside
an Enum-typed key's choices (resnext/config/choices.py) gets the one line the project gives every refused
option, `model.arch='vgg16' is not one of ...`, and exit code 2 (a configuration problem), as when
check_config refused it. Nothing happens when the run does not fail, so a valid key or value this
walk does not know can never block a run.
"""
from __future__ import annotations

import contextlib
import dataclasses
import difflib
import sys
import typing
from typing import Dict, Iterator, List, Optional, Sequence, Set, Tuple, Type

from .choices import Choice
from .schema import Config, ConfigStore

_CUTOFF = 0.75  # difflib ratio: 'lrr' -> 'lr', 'bach_size' -> 'batch_size', not 'seed' -> 'deterministic'


def _dataclass_of(hint: object) -> Optional[type]:
    for candidate in (hint, *typing.get_args(hint)):  # Optional[X] -> X
        if dataclasses.is_dataclass(candidate):
            return candidate  # type: ignore[return-value]
    return None


Choices = Dict[str, Type[Choice]]  # dotted key -> the Enum its values come from


def _walk(cls: type, prefix: str, keys: Set[str], open_prefixes: Set[str], choices: Choices) -> None:
    for name, hint in typing.get_type_hints(cls).items():
        if name.startswith("_"):
            continue
        key = f"{prefix}{name}"
        keys.add(key)
        inner = _dataclass_of(hint)
        if inner is not None:
            _walk(inner, key + ".", keys, open_prefixes, choices)
        elif isinstance(hint, type) and issubclass(hint, Choice):
            choices[key] = hint
        elif hint is typing.Any or typing.get_origin(hint) is dict:
            open_prefixes.add(key + ".")  # free-form: any sub-key is valid


def schema_keys() -> Tuple[Set[str], Set[str], Choices]:
    """Every dotted key of the schema (with the per-dataset schemas' keys), the free-form prefixes, and the
    keys whose values come from a Choice Enum."""
    keys: Set[str] = set()
    open_prefixes: Set[str] = set()
    choices: Choices = {}
    _walk(Config, "", keys, open_prefixes, choices)
    schemas = ConfigStore.instance().repo.get("resnext_dataset_schema", {})
    for node in schemas.values():  # SyntheticDatasetConfig and any later per-dataset schema
        cls = node.node._metadata.object_type if hasattr(node.node, "_metadata") else None
        if cls is not None and dataclasses.is_dataclass(cls):
            _walk(cls, "dataset.", keys, open_prefixes, choices)
    return keys, open_prefixes, choices


def _overrides(args: Sequence[str]) -> List[Tuple[str, str]]:
    """(key, value) of each command-line override of a config key (not a group, not Hydra's own)."""
    pairs = []
    for arg in args:
        if arg.startswith("-") or "=" not in arg:
            continue  # -m, --cfg job, --config-dir DIR ...
        key, value = arg.split("=", 1)
        key = key.lstrip("+~")
        if key and "/" not in key and not key.startswith("hydra"):  # group paths and Hydra's own keys
            pairs.append((key.split("@", 1)[0], value))
    return pairs


def _plain_values(value: str) -> List[str]:
    """The values a plain override or a comma sweep (amp.mode=fp16,bf16) sets; none for Hydra's functions
    (choice(...), range(...)), interpolations and quoting this walk does not parse."""
    if any(mark in value for mark in "()${}[]'\"") or not value:
        return []
    return [v.strip() for v in value.split(",") if v.strip() and v.strip() != "null"]


def _closest_value(bad: str, allowed: List[str]) -> Optional[str]:
    """A value the bad one begins ('resnext50' -> 'resnext50_32x4d'), else the most similar one."""
    starts = [value for value in allowed if value.startswith(bad)]
    if len(starts) == 1:
        return starts[0]
    close = difflib.get_close_matches(bad, allowed, n=1, cutoff=0.6)
    return close[0] if close else None


def choice_problems(args: Sequence[str], choices: Choices) -> List[str]:
    """One line for each command-line value outside its key's choices, with the closest valid one."""
    lines = []
    for key, value in _overrides(args):
        allowed = choices.get(key)
        for bad in (v for v in _plain_values(value) if allowed and v not in allowed.values()):
            line = f"{key}={bad!r} is not one of {', '.join(allowed.values())}"
            close = _closest_value(bad, allowed.values())
            lines.append(line + (f": did you mean `{close}`?" if close else ""))
    return lines


def suggestion(key: str, keys: Set[str]) -> Optional[str]:
    """The schema key closest to a mistyped one: whole dotted keys first, then the last part alone ('lr')."""
    close = difflib.get_close_matches(key, sorted(keys), n=1, cutoff=_CUTOFF)
    if close:
        return close[0]
    leaf = key.rsplit(".", 1)[-1]
    by_leaf = {}
    for full in sorted(keys):
        by_leaf.setdefault(full.rsplit(".", 1)[-1], full)
    close = difflib.get_close_matches(leaf, sorted(by_leaf), n=1, cutoff=_CUTOFF)
    return by_leaf[close[0]] if close else None


def key_hints(args: Sequence[str], keys: Set[str], open_prefixes: Set[str]) -> List[str]:
    lines = []
    for key, _ in _overrides(args):
        if key in keys or any(key.startswith(p) for p in open_prefixes):
            continue
        best = suggestion(key, keys)
        if best is not None:
            lines.append(f"{key}: did you mean `{best}`?")
    return lines


@contextlib.contextmanager
def suggest_on_error(args: Sequence[str]) -> Iterator[None]:
    """Run the block; when it exits with an error, print a suggestion for each command-line key the schema lacks
    and a line for each value outside its key's choices (then the exit code is 2: a configuration problem)."""
    try:
        yield
    except SystemExit as stop:
        if stop.code in (0, None):
            raise
        keys, open_prefixes, choices = schema_keys()
        bad_values = choice_problems(args, choices)
        for line in key_hints(args, keys, open_prefixes) + bad_values:
            print(line, file=sys.stderr)
        if bad_values:
            raise SystemExit(2) from stop
        raise
