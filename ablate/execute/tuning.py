"""A variant's own hyperparameter search (``Study(tuning=...)``), run or resumed first."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from ablate.execute.files import file_lock
from ablate.execute.record import OnLog, TrialRecorder, failure_text, make_run, train
from ablate.study import Study, Trial
from ablate.track import PlanRuns, Tracker


def tuned_trial(
    study: Study,
    trial: Trial,
    tracker: Tracker,
    runs: PlanRuns,
    root: Path,
    *,
    on_log: OnLog | None = None,
) -> tuple[Trial, str | None]:
    """``trial`` with its variant's best values (:func:`tuned_values`), and None; or ``trial``
    unchanged and the search's traceback if it failed (the trial is then recorded failed)."""
    try:
        best = tuned_values(study, trial.variant, tracker, runs, root, on_log=on_log)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:
        return trial, failure_text(exc)
    return Trial(replace(trial.variant, config={**trial.variant.config, **best}), trial.seed), None


def tuned_values(
    study: Study,
    variant: Any,
    tracker: Tracker,
    runs: PlanRuns,
    root: Path,
    *,
    on_log: OnLog | None = None,
) -> dict[str, Any]:
    """The variant's best values from its own Optuna search, run or resumed here.

    Each tuning trial trains the variant's config with ``study.tuning.settings`` and the suggested
    values on ``study.tuning.seed``, as a child run tagged ``ablate.role=tuning``. The search is
    kept in ``<root>/<study>/<variant>.tune.journal`` under a per-variant lock: a rerun continues
    it, a finished search is only read back, and the seeds of a variant never search twice.
    """
    import optuna

    from ablate.train.search import search

    def objective(params: dict[str, Any], number: int, report: Callable[[float, int], None]):
        config = {**variant.config, **study.tuning.settings, **params}
        trial = Trial(replace(variant, config=config), study.tuning.seed)

        def forward(metrics: dict[str, float], step: int) -> None:
            if on_log is not None:
                on_log(metrics, step)
            if study.metric in metrics:
                report(metrics[study.metric], step)

        life = TrialRecorder.tuning(study, tracker, runs, trial, number)
        run = make_run(study, trial, tracker, life.run_id, root, -1, forward)
        run.checkpoint_dir = root / study.name / "tuning" / f"{variant.id}-t{number}"
        run.clear_checkpoint()  # a tuning trial always starts from scratch
        with life:
            life.run = run
            try:
                life.status = train(study, run)
            except optuna.TrialPruned:
                life.status = "diverged"
        run.clear_checkpoint()
        if life.status == "failed":
            raise RuntimeError(life.error)
        if life.status == "diverged":
            raise optuna.TrialPruned()
        return life.summary[f"final_{study.metric}"]

    with file_lock(root / study.name / f"{variant.id}.tune.lock", blocking=True):
        result = search(
            name=variant.id,
            space=study.tuning.space,
            n_trials=study.tuning.trials,
            seed=study.tuning.seed,
            mode=study.mode,
            storage_path=root / study.name / f"{variant.id}.tune.journal",
            objective=objective,
        )
    return result.best_params
