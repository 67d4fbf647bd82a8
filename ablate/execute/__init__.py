"""Run a study's pending trials: in this process, in worker processes, or as Ray tasks.

One driver (:mod:`~ablate.execute.driver`) owns the trial loop: it prepares the plan's runs,
skips the trials the store holds as done, claims each pending trial in the store so that no
other runner of the store trains it (:mod:`ablate.track.claims`), submits it to a backend,
waits, collects, retries a trial whose process died, ends a trial past its ``train.timeout``
and finishes the plan's run. The backends only submit, wait and cancel:
:mod:`~ablate.execute.inprocess` (one after another, here), :mod:`~ablate.execute.pool` (worker
processes on this machine, ``ablate run --workers N``) and :mod:`~ablate.execute.ray` (Ray
tasks, ``--executor ray``; Ray is imported only there). :func:`run_study`
(:mod:`~ablate.execute.runner`) picks the backend and runs an adaptive study round by round.

Below them: :mod:`~ablate.execute.outcome` (what a trial yields, shared by all),
:mod:`~ablate.execute.trial` (one trial of the plan, from its record to its end),
:mod:`~ablate.execute.record` (a trial's MLflow run from start to end),
:mod:`~ablate.execute.tuning` (a variant's own search), :mod:`~ablate.execute.files`
(checkpoint folders), :mod:`~ablate.execute.ship` (the study file that workers load) and
:mod:`~ablate.execute.cluster` (cluster address and storage checks).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ablate.execute.cluster import check_address, check_cluster_storage
    from ablate.execute.driver import next_round
    from ablate.execute.files import EnvironmentProblem, check_checkpoint_root, checkpoint_root
    from ablate.execute.outcome import Outcome
    from ablate.execute.pool import resolve_workers
    from ablate.execute.ray import RayOptions, require_ray
    from ablate.execute.runner import run_study
    from ablate.execute.ship import ShippedStudy, check_shipping, shipped_files

# Loaded on first use, so that importing a light module of this package (``template``: what
# ``ablate run`` starts first) does not first import MLflow through the driver.
_LAZY = {
    "check_address": "cluster", "check_cluster_storage": "cluster", "next_round": "driver",
    "EnvironmentProblem": "files", "check_checkpoint_root": "files",
    "checkpoint_root": "files", "Outcome": "outcome", "resolve_workers": "pool",
    "RayOptions": "ray", "require_ray": "ray", "run_study": "runner",
    "ShippedStudy": "ship", "check_shipping": "ship", "shipped_files": "ship",
}

__all__ = ["EnvironmentProblem", "Outcome", "RayOptions", "ShippedStudy",
           "check_address", "check_checkpoint_root", "check_cluster_storage", "check_shipping",
           "checkpoint_root", "next_round", "require_ray", "resolve_workers", "run_study",
           "shipped_files"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(f"ablate.execute.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ablate.execute' has no attribute {name!r}")
