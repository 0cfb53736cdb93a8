""""Did you mean `optim.lr`?" after Hydra refuses a mistyped key.

Hydra's own error ("Key 'lrr' not in 'OptimConfig'") names the bad key but not the good one. The schema
(resnext/config.py) knows every key, so after Hydra has printed its error and is exiting, the
command line's keys are compared with the schema's and the closest one is suggested. Nothing happens
when the run does not fail, so a valid key this walk does not know can never block a run.
"""
from __future__ import annotations

import contextlib
import dataclasses
import difflib
import sys
import typing
from typing import Iterator, List, Optional, Sequence, Set, Tuple

from .config import Config, ConfigStore

_CUTOFF = 0.75  # difflib ratio: 'lrr' -> 'lr', 'bach_size' -> 'batch_size', not 'seed' -> 'deterministic'


def _dataclass_of(hint: object) -> Optional[type]:
    for candidate in (hint, *typing.get_args(hint)):  # Optional[X] -> X
        if dataclasses.is_dataclass(candidate):
            return candidate  # type: ignore[return-value]
    return None


def _walk(cls: type, prefix: str, keys: Set[str], open_prefixes: Set[str]) -> None:
    for name, hint in typing.get_type_hints(cls).items():
        if name.startswith("_"):
            continue
        key = f"{prefix}{name}"
        keys.add(key)
        inner = _dataclass_of(hint)
        if inner is not None:
            _walk(inner, key + ".", keys, open_prefixes)
        elif hint is typing.Any or typing.get_origin(hint) is dict:
            open_prefixes.add(key + ".")  # free-form: any sub-key is valid


def schema_keys() -> Tuple[Set[str], Set[str]]:
    """Every dotted key of the schema (with the per-dataset schemas' keys), and the free-form prefixes."""
    keys: Set[str] = set()
    open_prefixes: Set[str] = set()
    _walk(Config, "", keys, open_prefixes)
    schemas = ConfigStore.instance().repo.get("resnext_dataset_schema", {})
    for node in schemas.values():  # SyntheticDatasetConfig and any later per-dataset schema
        cls = node.node._metadata.object_type if hasattr(node.node, "_metadata") else None
        if cls is not None and dataclasses.is_dataclass(cls):
            _walk(cls, "dataset.", keys, open_prefixes)
    return keys, open_prefixes


def _override_keys(args: Sequence[str]) -> List[str]:
    keys = []
    for arg in args:
        if arg.startswith("-") or "=" not in arg:
            continue  # -m, --cfg job, --config-dir DIR ...
        key = arg.split("=", 1)[0].lstrip("+~")
        if key and "/" not in key and not key.startswith("hydra"):  # group paths and Hydra's own keys
            keys.append(key.split("@", 1)[0])
    return keys


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


def hints(args: Sequence[str]) -> List[str]:
    keys, open_prefixes = schema_keys()
    lines = []
    for key in _override_keys(args):
        if key in keys or any(key.startswith(p) for p in open_prefixes):
            continue
        best = suggestion(key, keys)
        if best is not None:
            lines.append(f"{key}: did you mean `{best}`?")
    return lines


@contextlib.contextmanager
def suggest_on_error(args: Sequence[str]) -> Iterator[None]:
    """Run the block; when it exits with an error, print a suggestion for each command-line key the schema lacks."""
    try:
        yield
    except SystemExit as stop:
        if stop.code not in (0, None):
            for line in hints(args):
                print(line, file=sys.stderr)
        raise
