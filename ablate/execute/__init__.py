"""Run a study's pending trials: in this process, in worker processes, or as Ray tasks.

For each trial: take its lock (two ``ablate run`` on one machine never train the same trial at
once), look it up in MLflow (finished and diverged trials are skipped; failed ones retried; a
``running`` one whose process died is resumed from its checkpoint in the same MLflow run),
seed, train, and record the status. One trial's exception never stops the study.

:func:`run_study` trains in this process, or in worker processes on this machine
(:func:`run_study_pool`, ``ablate run --workers N``, by default one per ``train.threads`` CPUs);
:func:`run_study_ray` submits one Ray task per pending trial (``ablate run --executor ray``).
Ray is imported only by the latter. Each runs an adaptive study (``seeds="adaptive"``) round by
round (:func:`in_rounds`), each round one call of the executor over the trials scheduled so far.

Modules: :mod:`~ablate.execute.files` (checkpoint folders, locks), :mod:`~ablate.execute.trial`
(one trial's lifecycle), :mod:`~ablate.execute.tuning` (a variant's own search),
:mod:`~ablate.execute.local` (the in-process executor, rounds), :mod:`~ablate.execute.pool`
(its worker processes), :mod:`~ablate.execute.ray` (the Ray executor),
:mod:`~ablate.execute.ship` (the study file that Ray and pool workers load),
:mod:`~ablate.execute.cluster` (cluster address and storage checks).
"""

from __future__ import annotations

from ablate.execute.cluster import (
    absolute_uri,
    check_address,
    check_cluster_storage,
    filesystem_type,
    is_cluster_address,
)
from ablate.execute.files import (
    DEFAULT_CHECKPOINT_DIR,
    EnvironmentProblem,
    check_checkpoint_root,
    checkpoint_path,
    checkpoint_root,
    file_lock,
)
from ablate.execute.local import in_rounds, next_round, prepare, run_study, sigterm_as_interrupt
from ablate.execute.pool import resolve_workers, run_study_pool, uses_gpu
from ablate.execute.ray import (
    CANCEL_WAIT_S,
    MAX_RETRIES,
    RAY_INSTALL,
    RayOptions,
    TrialResult,
    ray_trial,
    require_ray,
    run_study_ray,
)
from ablate.execute.ship import (
    SHIP_LIMIT_MB,
    StudyFile,
    check_shipping,
    ship_limit,
    shipped_files,
)
from ablate.execute.trial import (
    Outcome,
    TrialRun,
    changed_trials,
    provenance,
    run_trial,
    threads_of,
    update_variant_row,
)
from ablate.execute.tuning import tuned_values

__all__ = [
    "CANCEL_WAIT_S", "DEFAULT_CHECKPOINT_DIR", "MAX_RETRIES", "RAY_INSTALL", "SHIP_LIMIT_MB",
    "EnvironmentProblem", "Outcome", "RayOptions", "StudyFile", "TrialResult", "TrialRun",
    "absolute_uri", "changed_trials", "check_address", "check_checkpoint_root",
    "check_cluster_storage", "check_shipping", "checkpoint_path", "checkpoint_root", "file_lock",
    "filesystem_type", "in_rounds", "is_cluster_address", "next_round", "prepare", "provenance",
    "ray_trial", "require_ray", "resolve_workers", "run_study", "run_study_pool",
    "run_study_ray", "run_trial", "ship_limit", "shipped_files", "sigterm_as_interrupt",
    "threads_of", "tuned_values", "update_variant_row", "uses_gpu",
]
