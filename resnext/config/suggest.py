""""Did you mean `optim.lr`?": the closest valid key, value or group option for a mistyped one.

Hydra's own errors name the bad key but not the good one. The schema (resnext/config/schema.py) knows
every key and every Enum-typed key's choices (resnext/config/choices.py), and Hydra's error knows a
group's options, so each refusal line can end with the closest valid spelling. resnext/config/hydra_errors.py
turns Hydra's errors into such lines; `added_key_problem` refuses what Hydra accepts: `+optim.lrr=0.1`, the
fix Hydra itself suggests for a typo, which adds a key nothing reads.

A hint only ever names a key of the schema, a value of the same key or an option of the same group:
`experiment=tv_v2` is a group choice, never a misspelt `logger.mlflow.experiment`.
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import typing
from importlib import resources
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple, Type

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from .choices import Choice
from .errors import ConfigError
from .schema import DATASET_SCHEMAS, Config, ConfigStore

_CUTOFF = 0.75  # difflib ratio: 'lrr' -> 'lr', 'bach_size' -> 'batch_size', not 'seed' -> 'deterministic'
_WHOLE_KEY_CUTOFF = 0.85
_SHARED_START = 3  # characters a value must share with the typo's start to win by that alone ('fp17' -> 'fp16')


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


def closest_value(bad: str, allowed: Sequence[str]) -> Optional[str]:
    """A value the bad one begins ('resnext50' -> 'resnext50_32x4d'), else the one sharing the longest start
    ('resnext51' -> 'resnext50_32x4d', not the shorter and so more "similar" 'resnet50'), else the most similar."""
    starts = [value for value in allowed if value.startswith(bad)]
    if len(starts) == 1:
        return starts[0]
    shared = {value: len(os.path.commonprefix([bad, value])) for value in allowed}
    longest = max(shared.values(), default=0)
    best = [value for value, length in shared.items() if length == longest]
    if longest >= _SHARED_START and len(best) == 1:
        return best[0]
    close = difflib.get_close_matches(bad, list(allowed), n=1, cutoff=0.6)
    return close[0] if close else None


def did_you_mean(close: Optional[str]) -> str:
    return f": did you mean `{close}`?" if close else ""


def choice_line(key: str, bad: str, allowed: Sequence[str]) -> str:
    """`model.arch='vgg16' is not one of ...`: the line for a value outside its key's choices."""
    return f"{key}={bad!r} is not one of {', '.join(allowed)}" + did_you_mean(closest_value(bad, allowed))


def option_line(group: str, bad: str, options: Sequence[str]) -> str:
    """The line for a group option that does not exist (`model=resnext51`)."""
    close = closest_value(bad, options)
    return (f"{group}={bad}: {group} has no option {bad!r} (options: {', '.join(options)})"
            + did_you_mean(f"{group}={close}" if close else None))


def _closest_leaf(leaf: str, keys: Iterable[str]) -> Optional[str]:
    by_leaf: Dict[str, str] = {}
    for full in sorted(keys):
        by_leaf.setdefault(full.rsplit(".", 1)[-1], full)
    close = difflib.get_close_matches(leaf, sorted(by_leaf), n=1, cutoff=_CUTOFF)
    return by_leaf[close[0]] if close else None


def suggestion(key: str, keys: Set[str]) -> Optional[str]:
    """The schema key closest to a mistyped one: a sibling first ('optim.lrr' -> 'optim.lr'), then the whole
    dotted key ('optm.lr' -> 'optim.lr'), then the last part alone anywhere ('dataset.lr' -> 'optim.lr')."""
    keys = keys - {key}  # a key of another dataset's schema is not its own fix
    parent, _, leaf = key.rpartition(".")
    siblings = [k for k in keys if k.rpartition(".")[0] == parent]
    # A shared "dataset." makes any two dataset keys look alike ('dataset.bogus' -> 'dataset.std' at 0.75):
    # whole keys must be closer than leaves.
    whole = difflib.get_close_matches(key, sorted(keys), n=1, cutoff=_WHOLE_KEY_CUTOFF)
    return _closest_leaf(leaf, siblings) or (whole[0] if whole else None) or _closest_leaf(leaf, keys)


def only_in_preset(key: str) -> Optional[str]:
    """`dataset=synthetic` for dataset.train_size: the preset whose own schema has a key the others lack."""
    owners = [name for name, schema in DATASET_SCHEMAS.items()
              if key.startswith("dataset.") and key[len("dataset."):] in {f.name for f in dataclasses.fields(schema)}]
    return f"dataset={owners[0]}" if owners else None


def key_fix(key: str, keys: Set[str]) -> str:
    """How a line refusing an unknown `key` ends: the preset whose schema has it, or the closest key."""
    preset = only_in_preset(key)
    return f": a key of {preset} only" if preset else did_you_mean(suggestion(key, keys))


def config_groups(config_dirs: Iterable[str] = ()) -> Set[str]:
    """The config groups of the package's conf/ tree and of any --config-dir: `name=option` picks an option."""
    roots = [Path(str(resources.files("resnext.conf"))), *(Path(d) for d in config_dirs)]
    return {p.name for root in roots if root.is_dir() for p in root.iterdir() if p.is_dir() and p.name != "__pycache__"}


def _overrides(args: Sequence[str]) -> List[Tuple[str, str]]:
    """(key, value) of each command-line override of a config key (not a group path, not Hydra's own)."""
    pairs = []
    for arg in args:
        if arg.startswith("-") or "=" not in arg:
            continue  # -m, --cfg job, --config-dir DIR ...
        key, value = arg.split("=", 1)
        key = key.lstrip("+~").split("@", 1)[0]
        if key and "/" not in key and not key.startswith("hydra"):
            pairs.append((key, value))
    return pairs


def _plain_values(value: str) -> List[str]:
    """The values a plain override or a comma sweep (amp.mode=fp16,bf16) sets; none for Hydra's functions
    (choice(...), range(...)), interpolations and quoting this walk does not parse."""
    if any(mark in value for mark in "()${}[]'\"") or not value:
        return []
    return [v.strip() for v in value.split(",") if v.strip() and v.strip() != "null"]


def other_mistakes(args: Sequence[str], groups: Set[str], reported: str) -> List[str]:
    """One line for each other unknown key or value outside its choices on the command line, so that one
    refusal shows every typo; `reported` is the key Hydra's error already named, groups pick options."""
    keys, open_prefixes, choices = schema_keys()
    lines = []
    for key, value in _overrides(args):
        if key == reported or key in groups:
            continue
        allowed = choices.get(key)
        if allowed is not None:
            lines += [choice_line(key, bad, allowed.values()) for bad in _plain_values(value)
                      if bad not in allowed.values()]
        elif key not in keys and not any(key.startswith(p) for p in open_prefixes):
            close = suggestion(key, keys)
            lines += [f"{key}: not a key of the config" + did_you_mean(close)] if close else []
    return lines


def added_key_problem(cfg: DictConfig, overrides: Sequence[str], groups: Set[str]) -> Optional[str]:
    """`+optim.lrr=0.1` (Hydra's suggested fix for a typo) adds a key that nothing reads: the line refusing it.

    Checked on the composed config, against the schema of the node the key was added to (so a key of
    dataset=synthetic's schema is refused on dataset=imagenet too). `+group=option` adds a group default.
    """
    for override in overrides:
        key = override.split("=", 1)[0]
        if not key.startswith("+"):
            continue
        key = key.lstrip("+").split("@", 1)[0]
        if key in groups or "/" in key or key.startswith("hydra"):
            continue
        parent_key, _, leaf = key.rpartition(".")
        parent: Any = OmegaConf.select(cfg, parent_key) if parent_key else cfg
        schema = OmegaConf.get_type(parent) if isinstance(parent, DictConfig) else None
        if schema is None or not dataclasses.is_dataclass(schema):
            continue  # a free-form node: any key is valid
        if leaf not in {f.name for f in dataclasses.fields(schema)}:
            return (f"{override}: Key '{leaf}' not in '{schema.__name__}'; a + override adds a key that nothing "
                    "reads" + key_fix(key, schema_keys()[0]))
    return None


def check_added_keys(cfg: DictConfig) -> None:
    """Refuse a `+key=value` that nothing reads, on the command line that composed `cfg` (inside @hydra.main)."""
    hydra_cfg = HydraConfig.get()
    problem = added_key_problem(cfg, hydra_cfg.overrides.task, set(hydra_cfg.runtime.choices))
    if problem:
        raise ConfigError(problem)
