"""key=value command lines for the small tools (python -m resnext.export / resnext.predict), like the trainer's.

Each tool declares a dataclass; OmegaConf types the values against it, so an unknown key or a wrong type is
one clear line, and a user mistake (ConfigError) ends the tool with exit code 2 and no traceback.
"""
from __future__ import annotations

import sys
from typing import Any, Callable, List, Optional, Sequence, Type

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .errors import ConfigError


def parse(schema: Type[Any], argv: Sequence[str], usage: str) -> Any:
    """The schema filled from key=value arguments; required (MISSING) keys must be given."""
    bad = [arg for arg in argv if "=" not in arg or arg.startswith("-")]
    if bad or not argv:
        raise ConfigError(f"usage: {usage}" + (f" (not key=value: {' '.join(bad)})" if bad else ""))
    try:
        args = OmegaConf.merge(OmegaConf.structured(schema), OmegaConf.from_dotlist(list(argv)))
        missing = sorted(OmegaConf.missing_keys(args))
    except OmegaConfBaseException as err:
        raise ConfigError(f"{str(err).splitlines()[0]} (usage: {usage})") from None
    if missing:
        raise ConfigError(f"{', '.join(missing)} must be given (usage: {usage})")
    return args


def run(main: Callable[[List[str]], int], argv: Optional[Sequence[str]] = None) -> int:
    """Call main(argv); a ConfigError is printed as one line on stderr and exits 2."""
    try:
        return main(list(sys.argv[1:] if argv is None else argv))
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
