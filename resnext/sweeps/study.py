"""The Optuna study behind hydra/sweeper=resnext: its search space, its sampler, opening or continuing it, and
which trials count toward n_trials.

Why a study in an RDB storage and nothing of our own: Optuna's storage already is a distributed engine
(trial numbers, states, intermediate values, heartbeats), so a resumed sweep, a second sweep process or a
SLURM array pointing at the same URL all share one study. What this module adds is the refusals: a study
continued with another search space, direction or metric is refused before any job starts, naming what
differs (the study keeps both in its user attrs).

Search space syntax: Optuna's Hydra sweeper's, parsed with Hydra's own override parser:
`choice(32,64,128)` or `32,64,128` (categorical), `interval(0.1, 1)`, `tag(log, interval(1e-3, 1))`,
`range(1, 5)` (integers); a plain value is fixed for every trial.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from omegaconf import DictConfig, OmegaConf

from ..config.errors import ConfigError
from ..config.suggest import key_fix, schema_keys

log = logging.getLogger("resnext")

SAMPLERS = ("tpe", "random", "grid")
METRIC = "acc1"  # the value a job reports per epoch (validation Acc@1) and returns (its best)


@dataclass
class SearchSpace:
    distributions: Dict[str, Any] = field(default_factory=dict)  # name -> optuna distribution
    fixed: Dict[str, str] = field(default_factory=dict)  # name -> value, the same for every trial

    def describe(self) -> Dict[str, str]:
        """The stable form kept in the study's user attrs: name -> Optuna's JSON of the distribution."""
        from optuna.distributions import distribution_to_json

        return {name: distribution_to_json(d) for name, d in sorted(self.distributions.items())}


def _float(low: float, high: float, log_scale: bool) -> Any:
    from optuna import distributions as dist

    if hasattr(dist, "FloatDistribution"):  # optuna >= 3
        return dist.FloatDistribution(low, high, log=log_scale)
    return dist.LogUniformDistribution(low, high) if log_scale else dist.UniformDistribution(low, high)


def _int(low: int, high: int, log_scale: bool = False, step: int = 1) -> Any:
    from optuna import distributions as dist

    if hasattr(dist, "IntDistribution"):  # optuna >= 3
        return dist.IntDistribution(low, high, log=log_scale, step=step)
    return dist.IntLogUniformDistribution(low, high) if log_scale else dist.IntUniformDistribution(low, high, step)


def _distribution(override: Any) -> Any:
    from hydra.core.override_parser.types import Transformer
    from optuna.distributions import CategoricalDistribution

    value = override.value()
    if override.is_choice_sweep() or (override.is_range_sweep() and value.shuffle):
        return CategoricalDistribution(list(override.sweep_iterator(transformer=Transformer.encode)))
    if override.is_range_sweep():
        if any(isinstance(v, float) for v in (value.start, value.stop, value.step)):
            raise ConfigError(f"{override.input_line}: a float range; use interval(...) or choice(...)")
        return _int(int(value.start), int(value.stop) - 1, step=int(value.step))  # range() excludes its stop
    if override.is_interval_sweep():
        log_scale = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return _int(value.start, value.end, log_scale)
        return _float(float(value.start), float(value.end), log_scale)
    raise ConfigError(f"{override.input_line}: not a search space Optuna can sample (choice, range, interval)")


def parse_search_space(lines: Sequence[str]) -> SearchSpace:
    """hydra.sweeper.params and the command line's overrides ("key=value" lines), later lines winning."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    space = SearchSpace()
    for override in OverridesParser.create().parse_overrides(list(lines)):
        name = override.get_key_element()
        space.distributions.pop(name, None)
        space.fixed.pop(name, None)
        if override.is_sweep_override():
            space.distributions[name] = _distribution(override)
        else:
            space.fixed[name] = override.get_value_element_as_str()
    return space


def check_keys(space: SearchSpace, config: DictConfig) -> None:
    """Every swept key names a key of the config (or a group): `+key` adds one, anything else must exist."""
    missing = object()
    for name in space.distributions:
        if name.startswith(("+", "~")) or name.startswith("hydra."):
            continue
        if OmegaConf.select(config, name, default=missing) is missing:
            raise ConfigError(f"hydra.sweeper.params: {name} is not a key of the config{key_fix(name, schema_keys()[0])}")


def grid_values(space: SearchSpace) -> Dict[str, List[Any]]:
    """The grid sampler's lists: every swept key must be a list of values (choice or range)."""
    from optuna.distributions import CategoricalDistribution

    grid = {}
    for name, distribution in space.distributions.items():
        if isinstance(distribution, CategoricalDistribution):
            grid[name] = list(distribution.choices)
        elif hasattr(distribution, "step") and isinstance(distribution.low, int):
            grid[name] = list(range(distribution.low, distribution.high + 1, distribution.step))
        else:
            raise ConfigError(f"hydra.sweeper.sampler=grid needs a list of values for {name} (choice(...) or a,b,c), "
                              "not a continuous interval: list values or use sampler=tpe or random")
    return grid


def build_sampler(name: str, seed: Optional[int], space: SearchSpace) -> Any:
    import optuna

    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        return optuna.samplers.GridSampler(grid_values(space))
    raise ConfigError(f"hydra.sweeper.sampler={name}: choose one of {', '.join(SAMPLERS)}")


def _differences(kept: Dict[str, Any], now: Dict[str, Any]) -> List[str]:
    out = []
    for key in sorted(set(kept) | set(now)):
        if kept.get(key) != now.get(key):
            out.append(f"{key}: {kept.get(key, 'absent')} -> {now.get(key, 'absent')}")
    return out


def open_study(storage: Any, name: str, sampler: Any, pruner_spec: Dict[str, Any], direction: str,
               space: SearchSpace) -> Any:
    """Create the study, or continue it when its search space, direction and metric are this sweep's."""
    import optuna

    from ..training.trial import build_pruner

    now = {"search_space": space.describe(), "direction": direction, "metric": METRIC}
    try:  # compared before create_study, which would refuse another direction with a ValueError of its own
        kept = dict(optuna.load_study(study_name=name, storage=storage).user_attrs)
    except KeyError:  # no such study yet
        kept = {}
    if "search_space" in kept:
        differ = _differences(kept["search_space"], now["search_space"])
        differ += [f"{key}: {kept.get(key)} -> {now[key]}" for key in ("direction", "metric") if kept.get(key) != now[key]]
        if differ:
            raise ConfigError(f"study '{name}' in this storage was made with another search space or objective "
                              f"({'; '.join(differ)}): run it as it was, or start another study "
                              "(hydra.sweeper.study_name=<new name> or a new hydra.sweep.dir)")
    study = optuna.create_study(storage=storage, study_name=name, sampler=sampler, direction=direction,
                                pruner=build_pruner(pruner_spec), load_if_exists=True)
    if "search_space" not in kept:
        for key, value in now.items():
            study.set_user_attr(key, value)
    study.set_user_attr("pruner", pruner_spec)  # the jobs build their pruner from this (training/trial.py)
    return study


# ---- which trials count toward n_trials --------------------------------------------------------

def counts(trial: Any) -> bool:
    """Finished, pruned, running, queued, or failed by its job (it has an error): one of the n_trials.

    A trial failed because its sweep died (heartbeat stale, no error) does not count: its retry stands in for it.
    """
    from optuna.trial import TrialState

    if trial.state == TrialState.FAIL:
        return "error" in trial.user_attrs
    return True


def tally(study: Any) -> Tuple[int, int, List[int]]:
    """(trials counted, trials waiting to run, running trial numbers)."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    waiting = sum(t.state == TrialState.WAITING for t in trials)
    running = [t.number for t in trials if t.state == TrialState.RUNNING]
    return sum(counts(t) for t in trials), waiting, running


def is_surplus(study: Any, number: int, n_trials: int) -> bool:
    """Two sweep processes may ask at the same time: the trial beyond the first n_trials counted is surplus."""
    earlier = [t for t in study.get_trials(deepcopy=False) if t.number < number and counts(t)]
    return len(earlier) >= n_trials
