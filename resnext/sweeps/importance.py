"""Optuna's parameter importances for a pruning sweep's summary, read from the study's storage.

Why only from MIN_COMPLETED completed trials on: Optuna fits a random forest to the completed trials'
(parameters -> Acc@1) (pruned trials have no final value and are left out by Optuna itself), and with few points
the ranking is noise. Checked on 2026-12-03 (Optuna 5.1.0, scikit-learn 1.9.1) with a known answer (Acc@1 =
60 - 12 (log10 lr + 1)^2 plus 1 point for batch 32 and -1 for 128, noise 2 points; lr in [1e-3, 1] log, batch
in {32, 64, 128}; 30 random-sampled studies per size): with mean decrease impurity lr was ranked first in 19/30
studies from 3 completed trials, 24/30 from 4, 27/30 from 5 and 30/30 from 6, 8, 10 and 12. Below the
threshold the summary says so instead of drawing a ranking.

Why mean decrease impurity and not Optuna's default, fANOVA: on the same check fANOVA ranked lr first in only
25/30 studies from 6 completed trials and 26/30 from 8 (29/30 from 10), and a pruning sweep has few completed
trials; besides, Optuna 2.x's fANOVA can fail with scikit-learn >= 1.3 ("setting an array element with a
sequence"). The summary names the evaluator.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple
from urllib.parse import urlparse


MIN_COMPLETED = 6
SEED = 0  # the forest's seed: the same study gives the same importances on every rebuild


@dataclass
class Importances:
    values: Dict[str, float] = field(default_factory=dict)  # parameter -> share (sums to 1), most important first
    evaluator: str = ""
    completed: int = 0
    note: str = ""  # why there are none, or how they were computed: a sentence for summary.md


def find_storage(storage: str, sweep_dir: Path) -> Tuple[str, Optional[str]]:
    """(the URL to open, the missing database file or None). A sqlite file is looked for where the URL says, then
    beside the sweep (a relative URL names the launch directory; a copied sweep carries its optuna.db along).
    Never opens a missing sqlite file: that would create an empty database."""
    if urlparse(storage).scheme != "sqlite" or not storage.startswith("sqlite:///"):
        return storage, None
    path = Path(storage[len("sqlite:///"):])
    if path.is_file():
        return storage, None
    beside = Path(sweep_dir) / path.name
    if beside.is_file():
        return f"sqlite:///{beside.resolve()}", None
    return storage, str(path)


def _evaluate(study) -> Importances:
    import optuna

    evaluator = optuna.importance.MeanDecreaseImpurityImportanceEvaluator(seed=SEED)
    return Importances(optuna.importance.get_param_importances(study, evaluator=evaluator), "mean decrease impurity")


def study_importances(storage: Optional[str], study_name: Optional[str], sweep_dir: Path,
                      min_completed: int = MIN_COMPLETED) -> Importances:
    """The study's parameter importances, or none with the reason in `note`; never raises for a missing study."""
    if not storage or not study_name:
        return Importances(note="no parameter importances: no Optuna study named in the trials' result.json")
    storage, missing = find_storage(storage, sweep_dir)
    if missing:
        return Importances(note=f"no parameter importances: the study's database {missing} is not here (copy it "
                                "into the sweep directory to rebuild them)")
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except Exception as err:  # noqa: BLE001 - an unreachable or foreign storage must not stop the summary
        return Importances(note=f"no parameter importances: study {study_name} could not be read from {storage} "
                                f"({type(err).__name__}: {' '.join(str(err).split())[:300]})")
    completed = sum(t.state == TrialState.COMPLETE for t in study.trials)
    if completed < min_completed:
        return Importances(completed=completed,
                           note=f"parameter importances need at least {min_completed} completed trials (this study "
                                f"has {completed}; pruned trials have no final Acc@1): below that the ranking is "
                                "noise")
    try:
        found = _evaluate(study)
    except Exception as err:  # noqa: BLE001 - e.g. trials with different search spaces: the summary goes on
        return Importances(completed=completed, note=f"no parameter importances: Optuna could not compute them "
                                                     f"({type(err).__name__}: {' '.join(str(err).split())})")
    found.completed = completed
    found.note = f"parameter importances (Optuna's {found.evaluator} over the study's {completed} completed trials)"
    return found


def study_of(trials: Sequence) -> Tuple[Optional[str], Optional[str]]:
    """(storage, study_name) that the trials name; the first trial naming both wins (one sweep, one study)."""
    for trial in trials:
        if trial.storage and trial.study_name:
            return trial.storage, trial.study_name
    return None, None
