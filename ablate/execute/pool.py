"""The in-process executor's worker processes: pending trials trained in parallel, without Ray."""

from __future__ import annotations

import os
import signal
import sys
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from ablate.execute.cluster import absolute_uri
from ablate.execute.files import EnvironmentProblem
from ablate.execute.local import _run_round, in_rounds, prepare, sigterm_as_interrupt
from ablate.execute.ray import MAX_RETRIES, TrialResult, _lost
from ablate.execute.ship import StudyFile
from ablate.execute.trial import OnLog, Outcome, done_before, run_trial, threads_of
from ablate.study import Study, StudyError, Trial
from ablate.track import StudyRuns, Tracker, TrackingError

PR_SET_PDEATHSIG = 1  # linux/prctl.h
GPU_DEVICE_FILES = ("/dev/nvidiactl", "/dev/kfd", "/dev/dxg")  # NVIDIA, ROCm, WSL


def resolve_workers(workers: int | str | None, trials: Sequence[Trial],
                    source: StudyFile | None) -> int:
    """How many worker processes train ``trials``: ``workers`` if a number, else (``auto``,
    None) the machine's CPUs over the trials' ``train.threads``; 1 for a study that doesn't
    come from a file (``source`` None) or whose trials use a GPU (``train.device`` cuda or
    mps, or ``auto`` on a machine with one). Capped later by the trials pending."""
    if source is None:
        return 1
    if workers not in (None, "auto"):
        return max(1, int(workers))
    if not trials or uses_gpu(trials):
        return 1
    return max(1, _cpus() // max(threads_of(t) for t in trials))


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))  # the CPUs this process may use (containers, taskset)
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def uses_gpu(trials: Sequence[Trial]) -> bool:
    """True if some trial trains on a GPU: ``train.device`` cuda or mps, or ``auto`` on a
    machine with one (torch is imported only where a GPU driver may be present)."""
    devices = {str(t.variant.config.get("train.device", "auto")) for t in trials}
    if any(d.startswith(("cuda", "mps")) for d in devices):
        return True
    if "auto" not in devices:
        return False
    if sys.platform.startswith("linux") and not any(map(os.path.exists, GPU_DEVICE_FILES)):
        return False
    from ablate.train.run import resolve_device

    return resolve_device("auto").type != "cpu"


# ------------------------------------------------------------------------- in a worker process
_loaded: tuple[StudyFile, Study] | None = None
_trackers: dict[str, Tracker] = {}


def _init_worker(driver: int) -> None:
    """A worker ignores Ctrl-C (the driver decides, and kills it) and, on Linux, dies with the
    driver (``PR_SET_PDEATHSIG``: a ``kill -9`` of ``ablate run`` leaves no worker writing).

    The signal follows the *thread* that started the process: ProcessPoolExecutor starts
    workers in ``submit`` (never in its manager thread, without ``max_tasks_per_child``), and
    only the driving thread submits, for the pool's whole life."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if os.getppid() != driver:  # the driver died before prctl took effect
        os._exit(1)


def pool_trial(source: StudyFile, key: str, uri: str, root: str,
               runs: StudyRuns) -> tuple[TrialResult, list[Note]]:
    """One task of a worker: train trial ``key`` of the study in ``source`` (loaded once per
    worker) with :func:`run_trial`; its result and the warnings it raised, which the driver
    shows. A study problem or a lost tracking store is returned so that the driver stops the
    study as the sequential executor does."""
    global _loaded
    import warnings

    from ablate.track import quiet_mlflow

    with quiet_mlflow(), warnings.catch_warnings(record=True) as caught:
        try:
            if _loaded is None or _loaded[0] != source:
                _loaded = (source, source.load())
            study = _loaded[1]
            trial = next((t for t in study.trials if t.key == key), None)
            if trial is None:
                raise StudyError(f"trial {key} is not in {source.path} as a worker loaded it "
                                 f"(the study file changed?). Fix: run again.")
            tracker = _trackers.get(uri) or _trackers.setdefault(uri, Tracker(uri))
            outcome = run_trial(study, trial, tracker, runs, Path(root))
            result = TrialResult(outcome.status, outcome.run_id, outcome.value, outcome.error)
        except StudyError as exc:
            result = TrialResult("study-error", error=str(exc))
        except TrackingError as exc:
            result = TrialResult("tracking-error", error=str(exc))
        except EnvironmentProblem as exc:  # e.g. an unwritable checkpoint: stop, as in process
            result = TrialResult("environment-error", error=str(exc))
    return result, [_note(w) for w in caught]


Note = tuple[str, type, str, int]  # a warning: message, category (its builtin base: one of a
# library's or the study file's own might not unpickle in the driver), file, line


def _note(w: Any) -> Note:
    category = next(c for c in w.category.__mro__ if c.__module__ == "builtins")
    return str(w.message), category, w.filename, w.lineno


# ---------------------------------------------------------------------------------- the driver
class Workers:
    """The worker processes of one ``ablate run``: started at the first round that needs
    them, reused by later rounds, killed (never interrupted) on Ctrl-C."""

    def __init__(self, size: int, on_start: Callable[[int], None] | None = None) -> None:
        self.size, self.on_start = size, on_start
        self.pool: ProcessPoolExecutor | None = None
        self.announced = False

    def get(self, pending: int) -> ProcessPoolExecutor:
        if self.pool is None:
            import multiprocessing

            if not self.announced:  # at most as many workers as trials to train
                self.size, self.announced = min(self.size, pending), True
                if self.on_start is not None:
                    self.on_start(self.size)
            self.pool = ProcessPoolExecutor(self.size, multiprocessing.get_context("spawn"),
                                            initializer=_init_worker, initargs=(os.getpid(),))
        return self.pool

    def kill(self) -> None:
        """End every worker at once (SIGKILL): a worker stopped inside an MLflow call could
        leave a store half-written; a dead one releases its locks, its trial stays resumable.
        Idle workers too, at the end: a clean exit of torch and MLflow takes seconds."""
        if self.pool is None:
            return
        pool, self.pool = self.pool, None
        for process in list((getattr(pool, "_processes", None) or {}).values()):
            process.kill()  # CPython's pid -> Process map of the pool's workers
        pool.shutdown(wait=True, cancel_futures=True)  # reaps them


def run_study_pool(
    study: Study,
    *,
    tracker: Tracker,
    root: Path,
    source: StudyFile,
    workers: int | str | None = "auto",
    on_trial_start: Callable[[Trial, int], None] | None = None,
    on_trial_end: Callable[[Outcome], None] | None = None,
    on_log: OnLog | None = None,
    on_round: Callable[[Study], None] | None = None,
    on_workers: Callable[[int], None] | None = None,
) -> tuple[StudyRuns, list[Outcome]]:
    """Train every pending trial in up to ``workers`` worker processes (:func:`resolve_workers`)
    and return :func:`~ablate.execute.local.run_study`'s results; an adaptive study round by
    round, each round one drive of the same workers (:func:`in_rounds`).

    A round with fewer than 2 pending trials, or one worker, runs in this process exactly as
    the sequential executor does (live per-epoch progress included). Otherwise each worker
    loads the study from ``source`` and trains one trial at a time; ``on_trial_end`` is called
    in completion order; ``on_workers`` gets the number of workers when they start. Ctrl-C or
    SIGTERM kills the workers, marks their trials' runs KILLED (resumable) and the study run
    KILLED, and re-raises. Results equal the sequential executor's bitwise: each trial seeds
    itself and sets its own ``train.threads``.
    """
    size = resolve_workers(workers, study.trials, source)
    pool = Workers(size, on_workers)

    def round_(current: Study) -> tuple[StudyRuns, list[Outcome]]:
        pending = _pending(current, tracker)
        if min(pool.size, len(pending)) < 2:
            return _run_round(current, tracker, root, on_trial_start, on_trial_end, on_log)
        return _drive(current, tracker, root, source, pool, len(pending), on_trial_end)

    with sigterm_as_interrupt():
        try:
            return in_rounds(study, tracker, round_, on_round)
        finally:
            pool.kill()  # idle by now, or stopped mid-trial by an exception


def _pending(study: Study, tracker: Tracker) -> list[Trial]:
    experiment = tracker.experiment_id(study)
    done = tracker.trial_records(experiment) if experiment is not None else {}
    return [t for t in study.trials if done_before(t, done) is None]


def _drive(study, tracker, root, source, pool, pending, on_trial_end):
    runs = prepare(study, tracker, root)
    done = tracker.trial_records(runs.experiment_id)
    outcomes: dict[str, Outcome] = {}

    def ended(outcome: Outcome) -> None:
        outcomes[outcome.trial.key] = outcome
        if on_trial_end is not None:
            on_trial_end(outcome)

    queue: deque[Trial] = deque()
    inflight: dict[Future[Any], Trial] = {}
    deaths: dict[str, int] = {}
    interrupted = True
    try:
        for trial in study.trials:
            skipped = done_before(trial, done)
            if skipped is not None:
                ended(skipped)
            else:
                queue.append(trial)
        args = (absolute_uri(tracker.uri), str(root.resolve()), runs)
        order = {t.key: i for i, t in enumerate(study.trials)}
        while queue or inflight:
            executor = pool.get(pending)
            while queue and len(inflight) < pool.size:
                trial = queue.popleft()
                inflight[executor.submit(pool_trial, source, trial.key, *args)] = trial
            ready, _ = wait(list(inflight), return_when=FIRST_COMPLETED)
            again: list[Trial] = []
            broken = False
            while ready:
                for future in sorted(ready, key=lambda f: order[inflight[f].key]):
                    broken |= isinstance(future.exception(), BrokenProcessPool)
                    trial = inflight.pop(future)
                    outcome = _collect(future, trial, tracker, runs, deaths)
                    if outcome is None:
                        again.append(trial)
                    else:
                        ended(outcome)
                # a dead worker breaks the pool: every trial in flight comes back at once
                ready = wait(list(inflight))[0] if broken else set()
            if broken:  # new workers train the trials again, from their checkpoints
                pool.kill()
                queue.extendleft(reversed(again))
        interrupted = False
    except BaseException as exc:
        pool.kill()
        if not isinstance(exc, TrackingError):  # else the store is gone: nothing to mark
            _interrupt(inflight.values(), tracker, runs)
        raise
    finally:
        try:
            tracker.finish_study(runs, study, interrupted)
        except Exception:  # the store is gone; the parent run stays RUNNING, harmlessly
            pass
    return runs, [outcomes[t.key] for t in study.trials if t.key in outcomes]


def _collect(future: Future[Any], trial: Trial, tracker: Tracker, runs: StudyRuns,
             deaths: dict[str, int]) -> Outcome | None:
    """The trial's outcome; None to train it again (its worker died, at most MAX_RETRIES
    times, e.g. killed for memory: it resumes from its checkpoint in the same MLflow run)."""
    try:
        result, notes = future.result()
    except BrokenProcessPool as exc:
        deaths[trial.key] = deaths.get(trial.key, 0) + 1
        if deaths[trial.key] <= MAX_RETRIES:
            return None
        return _lost(trial, tracker, runs,
                     f"the worker process running this trial died {MAX_RETRIES + 1} times "
                     f"({exc}); its checkpoint is kept for a rerun")
    except Exception as exc:  # raised outside run_trial's own handling
        import traceback

        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        return _lost(trial, tracker, runs, f"the trial's worker process raised:\n{text}")
    import warnings

    for message, category, filename, lineno in notes:  # as if raised here, as in process
        warnings.warn_explicit(message, category, filename, lineno)
    if result.status == "study-error":
        raise StudyError(result.error)
    if result.status == "tracking-error":
        raise TrackingError(result.error)
    if result.status == "environment-error":
        raise EnvironmentProblem(f"in a worker process: {result.error}")
    return Outcome(trial, result.status, result.run_id, result.value, result.error)


def _interrupt(trials: Any, tracker: Tracker, runs: StudyRuns) -> None:
    """Mark the runs of the killed workers' trials KILLED, as Ray's ``_cancel`` does: each
    stays ``ablate.status=running`` with its checkpoint, and a rerun resumes it."""
    for trial in trials:
        try:
            record = tracker.trial_record(runs, trial)
            if record is not None and record.status == "running":
                tracker.interrupt_trial(record.run_id)
        except Exception:  # best effort: the trial is resumable either way
            pass
