"""The Ray executor: one Ray task per pending trial, on this machine or a cluster."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from ablate.execute.cluster import (
    absolute_uri,
    check_address,
    check_cluster_storage,
    is_cluster_address,
)
from ablate.execute.files import EnvironmentProblem, checkpoint_root
from ablate.execute.local import in_rounds, prepare, sigterm_as_interrupt
from ablate.execute.ship import StudyFile, check_shipping
from ablate.execute.trial import Outcome, done_before, run_trial, threads_of
from ablate.study import Study, Trial
from ablate.track import StudyRuns, Tracker

RAY_INSTALL = "pip install 'ablate-studies[ray]'"
MAX_RETRIES = 3  # times a trial whose worker process died is resumed (from its checkpoint)
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


class TrialResult(NamedTuple):
    """What a Ray task sends back: small and picklable."""

    status: str  # an Outcome status, or "study-error" / "environment-error" (stop the study)
    run_id: str | None = None
    value: float | None = None
    error: str | None = None


def ray_trial(
    source: StudyFile, key: str, uri: str, root: str, runs: StudyRuns, gpus: float = 0.0,
) -> TrialResult:
    """The body of one Ray task: load the study, train trial ``key`` with :func:`run_trial`.

    The worker logs its trial's child run straight to the tracking store. An exception inside
    the trial is recorded by ``run_trial`` (status ``failed``); a study or environment problem
    (the study metric never logged, an unwritable checkpoint directory, an unreachable store) is
    returned so that the driver stops the study as the in-process executor does.
    """
    import torch

    from ablate.study import StudyError
    from ablate.track import Tracker, TrackingError, quiet_mlflow

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
            outcome = run_trial(study, trial, Tracker(uri), runs, checkpoint_root(root),
                                device=device)
        except StudyError as exc:
            return TrialResult("study-error", error=str(exc))
        except (TrackingError, EnvironmentProblem) as exc:
            return TrialResult("environment-error", error=str(exc))
    return TrialResult(outcome.status, outcome.run_id, outcome.value, outcome.error)


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
                   "RAY_AUTH_TOKEN=<its token: `ray get-auth-token` on the head> before "
                   "`ablate run`.")
        raise EnvironmentProblem(
            f"can't start or reach {where}: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:300].rstrip('.') if str(exc) else ''}. Fix: {fix}"
        ) from None
    return True


def _resources(
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


def run_study_ray(
    study: Study,
    *,
    tracker: Tracker,
    root: Path,
    source: StudyFile,
    options: RayOptions | None = None,
    on_trial_end: Callable[[Outcome], None] | None = None,
    on_round: Callable[[Study], None] | None = None,
) -> tuple[StudyRuns, list[Outcome]]:
    """Train every pending trial as a Ray task; results as :func:`run_study`'s (an adaptive
    study round by round, each round one :func:`_drive` over its trials: :func:`in_rounds`).

    The driver creates the experiment and parent run, skips finished and diverged trials, then
    submits one task per pending trial (at most ``max_parallel`` in flight). Each task loads the
    study from ``source`` and logs its own child run to ``tracker.uri``. A task whose worker
    process dies is retried (``max_retries``) and resumes from the trial's last checkpoint in
    the same MLflow run; an exception inside a trial is not retried (the trial is ``failed``).
    ``on_trial_end`` is called in completion order. Ctrl-C (or SIGTERM) cancels the outstanding
    tasks, marks the study run KILLED and re-raises: a later run resumes.
    """
    options = options or RayOptions()
    check_cluster_storage(options.address, tracker.uri, root, options.allow_local_storage)
    check_shipping(source.path, options.address)
    ray = require_ray()
    with sigterm_as_interrupt():
        connected = _connect(ray, options, source.runtime_env())
        try:
            resources = _resources(ray, study.trials, options)
            return in_rounds(study, tracker, lambda current: _drive(
                ray, current, tracker, root, source, options, resources, on_trial_end), on_round)
        finally:
            if connected:
                ray.shutdown()


def _drive(ray, study, tracker, root, source, options, resources, on_trial_end):
    runs = prepare(study, tracker, root)
    done = tracker.trial_records(runs.experiment_id)
    outcomes: dict[str, Outcome] = {}

    def ended(outcome: Outcome) -> None:
        outcomes[outcome.trial.key] = outcome
        if on_trial_end is not None:
            on_trial_end(outcome)

    queue: deque[Trial] = deque()
    inflight: dict[Any, Trial] = {}
    interrupted = True
    try:
        for trial in study.trials:
            skipped = done_before(trial, done)
            if skipped is not None:
                ended(skipped)
            else:
                queue.append(trial)
        task = ray.remote(ray_trial)
        args = (source, absolute_uri(tracker.uri), str(root.resolve()), runs)
        limit = options.max_parallel or max(len(queue), 1)
        while queue or inflight:
            while queue and len(inflight) < limit:
                trial = queue.popleft()
                cpus, gpus = resources[trial.key]
                ref = task.options(
                    num_cpus=cpus, num_gpus=gpus, max_retries=options.max_retries,
                    retry_exceptions=False, name=f"ablate {study.name} {trial.key}",
                ).remote(args[0], trial.key, *args[1:], gpus)
                inflight[ref] = trial
            ready, _ = ray.wait(list(inflight), num_returns=1)
            for ref in ready:
                ended(_collect(ray, ref, inflight.pop(ref), tracker, runs, options))
        interrupted = False
    except BaseException:
        _cancel(ray, inflight, tracker, runs)
        raise
    finally:
        tracker.finish_study(runs, study, interrupted)
    return runs, [outcomes[t.key] for t in study.trials if t.key in outcomes]


def _collect(ray, ref, trial, tracker, runs, options) -> Outcome:
    from ray.exceptions import RayError, RayTaskError

    from ablate.study import StudyError

    try:
        result = ray.get(ref)
    except RayTaskError as exc:  # raised outside run_trial's own handling: not retried
        return _lost(trial, tracker, runs, f"the trial's Ray task raised:\n{exc}")
    except RayError as exc:  # the worker (or its node) died more often than max_retries
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        return _lost(trial, tracker, runs,
                     f"the Ray worker running this trial died {options.max_retries + 1} times "
                     f"({type(exc).__name__}: {first}); its checkpoint is kept for a rerun")
    if result.status == "study-error":
        raise StudyError(result.error)
    if result.status == "environment-error":
        raise EnvironmentProblem(f"on a Ray worker: {result.error}")
    return Outcome(trial, result.status, result.run_id, result.value, result.error)


def _lost(trial: Trial, tracker: Tracker, runs: StudyRuns, error: str) -> Outcome:
    """A trial whose task ended without a result: record it as failed (a rerun resumes it)."""
    try:
        record = tracker.trial_record(runs, trial)
        if record is not None and record.status == "running":
            tracker.end_trial(record.run_id, "failed", {}, error)
    except Exception:  # the outcome still says failed; the store keeps the run resumable
        record = None
    return Outcome(trial, "failed", record.run_id if record else None, None, error)


def _cancel(ray: Any, inflight: Mapping[Any, Trial], tracker: Tracker, runs: StudyRuns) -> None:
    """Stop the outstanding tasks and leave their trials resumable.

    Running tasks are stopped by ending their worker processes (``force=True``), not with a
    KeyboardInterrupt inside them: an interrupt can land inside an MLflow call and leave a
    long-lived worker holding, e.g., the sqlite store's write lock. A dead process releases
    its locks; its trial keeps its checkpoint and ``ablate.status=running``, and its run is
    marked KILLED here, as the in-process executor marks an interrupted trial. A second Ctrl-C
    stops the waiting.
    """
    refs = list(inflight)
    for ref in refs:
        try:
            ray.cancel(ref, force=True)
        except Exception:
            pass
    if not refs:
        return
    ray.wait(refs, num_returns=len(refs), timeout=CANCEL_WAIT_S)
    for trial in inflight.values():
        try:
            record = tracker.trial_record(runs, trial)
            if record is not None and record.status == "running":
                tracker.interrupt_trial(record.run_id)
        except Exception:  # best effort: the trial is resumable either way
            pass
