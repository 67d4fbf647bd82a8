"""Per-variant tuning's Optuna search: each variant gets its own, over the same space and budget.

Comparing variants at one shared learning rate is a classic ablation mistake (a net without batch
norm wants a smaller one), so a study with ``tuning=Tuning(...)`` (the settings:
:mod:`ablate.tuning`) first searches each variant's settings, then trains its seeds with the best
values found (:mod:`ablate.execute.tuning` runs this search for a variant).

* TPE, seeded per tuning trial (seed + trial number), so a search gives the same suggestions
  whether it ran straight through or was interrupted and resumed.
* Stored in an Optuna journal file kept with the study's state: a rerun continues the search
  where it stopped and never repeats a finished tuning trial.
* A tuning trial whose loss or metric becomes NaN/inf is pruned (Optuna's ``ThresholdPruner``);
  no performance-based pruning, which would bias which variants look good. A tuning trial that
  raises is recorded as failed and the search goes on.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import optuna.storages.journal  # the file backend's module (not bound by name)

INTERRUPTED = "ablate_interrupted"
Report = Callable[[float, int], None]
Objective = Callable[[dict[str, Any], int, Report], float]


@dataclass(frozen=True)
class TuneResult:
    best_params: dict[str, Any]
    best_value: float
    n_complete: int
    n_pruned: int
    n_failed: int


class NoTrialCompleted(RuntimeError):
    """Every tuning trial of a variant diverged or failed: there is no best value."""


def suggest(trial: optuna.Trial, key: str, space: Any) -> Any:
    if isinstance(space, list):
        return trial.suggest_categorical(key, space)
    kind, low, high = space
    if kind == "int":
        return trial.suggest_int(key, low, high)
    return trial.suggest_float(key, low, high, log=kind == "log")


def search(
    *,
    name: str,
    space: Mapping[str, Any],
    n_trials: int,
    seed: int,
    mode: str,
    storage_path: Path,
    objective: Objective,
) -> TuneResult:
    """Run the variant's search up to ``n_trials`` finished tuning trials and return the best.

    ``objective(params, number, report)`` trains with ``params`` and returns the final metric;
    it calls ``report(value, step)`` after each epoch (raises ``optuna.TrialPruned`` on NaN/inf).
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage_path.parent.mkdir(parents=True, exist_ok=True)
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(storage_path))
    )
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        direction="maximize" if mode == "max" else "minimize",
        pruner=optuna.pruners.ThresholdPruner(lower=-sys.float_info.max,
                                              upper=sys.float_info.max),
        load_if_exists=True,
    )
    states = optuna.trial.TrialState
    for stale in study.get_trials(deepcopy=False, states=(states.RUNNING,)):
        # a search interrupted mid-trial left it running: close it; it does not count
        storage.set_trial_user_attr(stale._trial_id, INTERRUPTED, True)
        storage.set_trial_state_values(stale._trial_id, states.FAIL)
    while (number := _counted(study)) < n_trials:
        # seeded by the count of finished tuning trials: the same suggestions whether or not
        # the search was interrupted (TPE learns only from complete and pruned trials)
        study.sampler = optuna.samplers.TPESampler(seed=seed + number)
        trial = study.ask()
        params = {key: suggest(trial, key, s) for key, s in space.items()}

        def report(value: float, step: int, trial: optuna.Trial = trial) -> None:
            trial.report(value if math.isfinite(value) else math.nan, step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"non-finite value {value} at step {step}")

        try:
            value = objective(params, trial.number, report)
        except optuna.TrialPruned:
            study.tell(trial, state=states.PRUNED)
            continue
        except Exception:
            study.tell(trial, state=states.FAIL)
            continue
        if not math.isfinite(value):
            study.tell(trial, state=states.PRUNED)
        else:
            study.tell(trial, value)
    complete = study.get_trials(deepcopy=False, states=(states.COMPLETE,))
    if not complete:
        raise NoTrialCompleted(
            f"all {n_trials} tuning trials of {name} diverged or failed; widen or move the "
            f"search space (Tuning(space=...))."
        )
    best = study.best_trial
    if best.value is None:  # the best trial is a complete one, which always has a value
        raise RuntimeError(f"optuna's best trial of {name} has no value")
    return TuneResult(
        best_params=dict(best.params),
        best_value=float(best.value),
        n_complete=len(complete),
        n_pruned=len(study.get_trials(deepcopy=False, states=(states.PRUNED,))),
        n_failed=_counted(study) - len(complete)
        - len(study.get_trials(deepcopy=False, states=(states.PRUNED,))),
    )


def _counted(study: optuna.Study) -> int:
    """Finished tuning trials: complete, pruned, or failed by an exception (not interrupted)."""
    states = optuna.trial.TrialState
    done = study.get_trials(deepcopy=False, states=(states.COMPLETE, states.PRUNED, states.FAIL))
    return sum(not t.user_attrs.get(INTERRUPTED) for t in done)
