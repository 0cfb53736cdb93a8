"""Hydra's refusals of a command line as the project's own: one line naming the key and the fix, exit 2.

Hydra reports a mistyped group option, an unknown key or a wrong type in 6-13 lines (the message, the
options, the config search path, a hint about HYDRA_FULL_ERROR) and exits 1, the code of a crash. Every
other refusal of this project is one line and exit 2 (README's exit codes), so a job script can tell a
typo from a failed run. Here Hydra is asked to raise its error instead of printing it (HYDRA_FULL_ERROR,
for the duration of the command only), and the error becomes that line, with the closest valid spelling
(resnext/config/suggest.py), plus one line for each other typo on the same command line.

An error raised inside the task function (a multirun job that failed) is not a composition problem: its
traceback is printed and the exit code stays 1. A user who sets HYDRA_FULL_ERROR gets Hydra's own report.
"""
from __future__ import annotations

import contextlib
import os
import sys
import traceback
from types import CodeType
from typing import Callable, Iterator, List, NoReturn, Optional, Sequence, Tuple

from hydra.errors import HydraException, MissingConfigException
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from .errors import ConfigError
from .suggest import choice_line, config_groups, key_fix, option_line, other_mistakes, schema_keys

FULL_ERROR = "HYDRA_FULL_ERROR"


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), text)


def _key_line(cause: OmegaConfBaseException) -> str:
    """An OmegaConf refusal of one key: unknown (with the closest key), outside its choices, or of a wrong type."""
    key, message = cause.full_key, _first_line(cause.msg or str(cause))
    keys, _, choices = schema_keys()
    if isinstance(cause, (ConfigKeyError, ConfigAttributeError)):  # "Key 'lrr' not in 'OptimConfig'"
        return f"{key}: {message}" + key_fix(key, keys)
    if key in choices and cause.value is not None:
        return choice_line(key, str(cause.value), choices[key].values())
    return f"{key}={cause.value}: {message}" if cause.value is not None else f"{key}: {message}"


def error_line(err: BaseException) -> Tuple[str, Optional[str]]:
    """One line for Hydra's error, and the key or group it names (None: neither)."""
    missing = getattr(err, "missing_cfg_file", None) or ""
    if isinstance(err, MissingConfigException) and err.options and "/" in missing:
        group, option = missing.rsplit("/", 1)
        return option_line(group, option, err.options), group
    cause = err.__cause__
    if isinstance(cause, OmegaConfBaseException) and cause.full_key:
        return _key_line(cause), cause.full_key
    return _first_line(str(err)), None


def _raised_in(err: BaseException, code: CodeType) -> bool:
    frame = err.__traceback__
    while frame is not None:
        if frame.tb_frame.f_code is code:
            return True
        frame = frame.tb_next
    return False


def _config_dirs(args: Sequence[str]) -> List[str]:
    """The --config-dir / -cd directories of a command line: their groups are groups too."""
    dirs = [arg.split("=", 1)[1] for arg in args if arg.startswith("--config-dir=")]
    return dirs + [args[i + 1] for i, arg in enumerate(args[:-1]) if arg in ("--config-dir", "-cd")]


def refusal_lines(err: BaseException, args: Sequence[str]) -> List[str]:
    line, key = error_line(err)
    return [line, *other_mistakes(args, config_groups(_config_dirs(args)), key)]


@contextlib.contextmanager
def one_line_refusals(args: Sequence[str], task: Callable) -> Iterator[None]:
    """Run the block (a @hydra.main function); a composition error ends it with refusal lines and exit 2.

    `task` is the function @hydra.main decorates: an error raised inside it is the run's, not the command line's.
    """
    if os.environ.get(FULL_ERROR):
        yield  # the user asked for Hydra's full report
        return
    os.environ[FULL_ERROR] = "1"
    try:
        yield
    except (HydraException, OmegaConfBaseException) as err:
        if _raised_in(err, task.__code__):
            _report_failure(err)
        for line in refusal_lines(err, args):
            print(line, file=sys.stderr)
        raise SystemExit(2) from None
    except ConfigError as err:  # a sweeper's refusal before any job (hydra/sweeper=resnext): one line
        if _raised_in(err, task.__code__):
            _report_failure(err)
        print(err, file=sys.stderr)
        raise SystemExit(2) from None
    except Exception as err:
        _report_failure(err)
    finally:
        os.environ.pop(FULL_ERROR, None)


def _report_failure(err: BaseException) -> NoReturn:
    """What Hydra does with an error it does not know as its own: the traceback, exit code 1."""
    traceback.print_exception(type(err), err, err.__traceback__)
    raise SystemExit(1) from None
