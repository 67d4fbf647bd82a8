"""The Ray backend: one Ray task per pending trial, on this machine or a cluster."""

from __future__ import annotations

import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ablate.execute.cluster import check_address, is_cluster_address
from ablate.execute.files import EnvironmentProblem, checkpoint_root
from ablate.execute.outcome import (
    DIED,
    ENVIRONMENT_ERROR,
    MAX_RETRIES,
    STUDY_ERROR,
    Reply,
)
from ablate.execute.record import threads_of
from ablate.execute.ship import ShippedStudy
from ablate.execute.trial import train_trial
from ablate.study import Study, Trial
from ablate.track import PlanRuns

RAY_INSTALL = "pip install 'ablate-studies[ray]'"
CANCEL_WAIT_S = 30.0  # after Ctrl-C: how long to wait for cancelled tasks to end


@dataclass(frozen=True)
class RayOptions:
    """How ``ablate run --executor ray`` runs the trials."""

    address: str | None = None  # an existing cluster (auto, ray://host:10001); None: local
    cpus_per_trial: int | None = None  # Ray CPUs per task; None: the trial's train.threads
    gpus_per_trial: float | None = None  # None: 1 if the cluster has GPUs (and the trial's
    # train.device is not cpu/mps), else 0; fractions share a GPU
    max_parallel: int | None = None  # most trials in flight; None: as many as resources allow
    allow_local_storage: bool = False  # accept a local store/checkpoints with an --address
    max_retries: int = MAX_RETRIES


def ray_trial(
    source: ShippedStudy, key: str, uri: str, root: str, runs: PlanRuns, gpus: float = 0.0,
    timeout: float | None = None,
) -> Reply:
    """The body of one Ray task: load the study, train trial ``key`` with :func:`train_trial`.

    The worker logs its trial's child run straight to the tracking store. An exception inside
    the trial is recorded by ``run_trial`` (status ``failed``); a study or environment problem
    (the study metric never logged, an unwritable checkpoint directory, an unreachable store) is
    returned so that the driver stops the study as in process.
    """
    import torch

    from ablate.track import Tracker, TrackingError, quiet_mlflow
    from ablate.validate import StudyError

    with quiet_mlflow():
        try:
            study = source.load()
            trial = next((t for t in study.trials if t.key == key), None)
            if trial is None:
                raise StudyError(
                    f"trial {key} is not in {source.path} as a Ray worker loaded it (the study "
                    f"file or its imports differ on that node). Fix: make the same study file "
                    f"and packages available on every node."
                )
            # Ray hides no GPU from a task given none: train.device=auto must not take one
            auto = str(trial.variant.config.get("train.device", "auto")) == "auto"
            device = "cpu" if gpus == 0 and auto and torch.cuda.is_available() else None
            outcome = train_trial(study, trial, Tracker(uri), runs, checkpoint_root(root),
                                  device=device, timeout=timeout)
        except StudyError as exc:
            return Reply(STUDY_ERROR, error=str(exc))
        except (TrackingError, EnvironmentProblem) as exc:
            return Reply(ENVIRONMENT_ERROR, error=f"on a Ray worker: {exc}")
    return Reply(outcome.status, outcome.run_id, outcome.value, outcome.error)


def require_ray() -> Any:
    """The ``ray`` module; :class:`EnvironmentProblem` with the install command if missing."""
    try:
        import ray
    except ImportError as exc:
        raise EnvironmentProblem(
            f"--executor ray needs Ray, which is not installed ({exc}). Fix: {RAY_INSTALL}"
        ) from None
    return ray


def _connect(ray: Any, options: RayOptions, runtime_env: dict[str, Any] | None = None) -> bool:
    """Start or join Ray; True if this call connected (and so must disconnect at the end).

    ``runtime_env`` (the study's folder to ship) is the job's, for a cluster only; a Ray that
    the caller started already keeps its own."""
    import logging

    if ray.is_initialized():
        return False
    check_address(options.address)
    try:
        if is_cluster_address(options.address):
            ray.init(address=options.address, logging_level=logging.WARNING,
                     runtime_env=runtime_env)
        else:  # a new local instance sized to this machine: every CPU and GPU it has
            ray.init(address="local", include_dashboard=False, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {options.address!r}" if options.address else "Ray locally"
        fix = ("check the address (`ray status` on the head node), or omit --address to run on "
               "this machine.")
        if "Authentication" in f"{type(exc.__cause__).__name__} {exc.__cause__}":
            fix = ("the cluster uses token authentication: export RAY_AUTH_MODE=token and "
                   "RAY_AUTH_TOKEN_PATH=<the cluster's token file> (or RAY_AUTH_TOKEN=<its "
                   "token>) before `ablate run` (README: Scaling out with Ray, step 2).")
        raise EnvironmentProblem(
            f"can't start or reach {where}: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:300].rstrip('.') if str(exc) else ''}. Fix: {fix}"
        ) from None
    return True


def resources(
    ray: Any, trials: Sequence[Trial], options: RayOptions
) -> dict[str, tuple[int, float]]:
    """(CPUs, GPUs) each trial's task asks for; an impossible request fails before any run."""
    total = ray.cluster_resources()
    cpus_total, gpus_total = float(total.get("CPU", 0)), float(total.get("GPU", 0))
    out: dict[str, tuple[int, float]] = {}
    for trial in trials:
        gpus = options.gpus_per_trial
        if gpus is None:
            device = str(trial.variant.config.get("train.device", "auto"))
            gpus = 1.0 if gpus_total > 0 and not device.startswith(("cpu", "mps")) else 0.0
        out[trial.key] = (options.cpus_per_trial or threads_of(trial), gpus)
    if not is_cluster_address(options.address):  # a fixed-size machine: no autoscaler
        want_cpus = max((c for c, _ in out.values()), default=0)
        want_gpus = max((g for _, g in out.values()), default=0.0)
        if want_cpus > cpus_total or want_gpus > gpus_total:
            raise EnvironmentProblem(
                f"each trial asks for {want_cpus} CPU(s) and {want_gpus:g} GPU(s), but the local "
                f"Ray instance has {cpus_total:g} CPU(s) and {gpus_total:g} GPU(s), so no trial "
                f"could ever start. Fix: lower --cpus-per-trial / --gpus-per-trial."
            )
    return out


class RayBackend:
    """Trials as Ray tasks (a :class:`~ablate.execute.driver.Backend`): at most
    ``max_parallel`` in flight (else as many as the cluster's resources allow). A task whose
    worker process dies is retried by Ray (``max_retries``) and resumes from the trial's last
    checkpoint in the same MLflow run; an exception inside a trial is not retried (the trial is
    ``failed``). Cancelling ends the task's worker process (``force=True``), not with a
    KeyboardInterrupt inside it: an interrupt can land inside an MLflow call and leave a
    long-lived worker holding, e.g., the sqlite store's write lock."""

    bounds_itself = False

    def __init__(self, ray: Any, source: ShippedStudy, uri: str, root: Path, options: RayOptions,
                 resources: dict[str, tuple[int, float]]) -> None:
        self.ray, self.source, self.uri, self.root = ray, source, uri, str(root.resolve())
        self.options, self.resources = options, resources
        self.task = ray.remote(ray_trial)
        self.slots = options.max_parallel or 1 << 30
        self.runs: PlanRuns | None = None
        self.name = ""
        self.submitted: dict[Hashable, float] = {}

    def start(self, study: Study, runs: PlanRuns) -> None:
        self.runs, self.name = runs, study.name

    def submit(self, trial: Trial, timeout: float | None) -> Hashable:
        cpus, gpus = self.resources[trial.key]
        ref = self.task.options(
            num_cpus=cpus, num_gpus=gpus, max_retries=self.options.max_retries,
            retry_exceptions=False, name=f"ablate {self.name} {trial.key}",
        ).remote(self.source, trial.key, self.uri, self.root, self.runs, gpus, timeout)
        self.submitted[ref] = time.monotonic()
        return ref

    def began(self, handle: Hashable) -> float | None:
        """When the task was submitted: Ray says nothing of its start, so the grace period
        covers its wait for resources and its worker's start-up."""
        return self.submitted.get(handle)

    def wait(self, handles: Sequence[Hashable],
             timeout: float | None) -> list[tuple[Hashable, Reply]]:
        from ray.exceptions import RayError, RayTaskError

        ready, _ = self.ray.wait(list(handles), num_returns=1, timeout=timeout)
        replies: list[tuple[Hashable, Reply]] = []
        for ref in ready:
            try:
                reply = self.ray.get(ref)
            except RayTaskError as exc:  # raised outside train_trial's own handling
                reply = Reply(DIED, error=f"the trial's Ray task raised:\n{exc}")
            except RayError as exc:  # the worker (or its node) died more than max_retries
                first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
                reply = Reply(DIED, error=f"the Ray worker running this trial died "
                                          f"{self.options.max_retries + 1} times "
                                          f"({type(exc).__name__}: {first}); its checkpoint is "
                                          f"kept for a rerun")
            replies.append((ref, reply))
        return replies

    def cancel(self, handles: Sequence[Hashable]) -> None:
        """End the tasks' worker processes, and wait (at most CANCEL_WAIT_S; a second Ctrl-C
        stops the waiting) until they are gone."""
        refs = list(handles)
        for ref in refs:
            try:
                self.ray.cancel(ref, force=True)
            except Exception:
                pass
        if refs:
            self.ray.wait(refs, num_returns=len(refs), timeout=CANCEL_WAIT_S)


def connect(options: RayOptions, source: ShippedStudy) -> tuple[Any, bool]:
    """The ``ray`` module, started or joined; and whether this call connected (and so must
    disconnect at the end)."""
    ray = require_ray()
    return ray, _connect(ray, options, source.runtime_env())
