"""One trial of the plan, from its record in the store to its recorded end, wherever it runs.

The driver (:mod:`~ablate.execute.driver`) has claimed the trial in the store before any
backend calls :func:`train_trial`, so no other runner of the store trains it meanwhile.
"""

from __future__ import annotations

import gc
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from ablate.execute.files import file_lock
from ablate.execute.outcome import Outcome, TrialTimeout
from ablate.execute.record import OnLog, TrialRecorder, make_run, provenance, train
from ablate.status import is_done
from ablate.study import Study, Trial
from ablate.track import PlanRuns, Tracker, TrialRecord


def train_trial(
    study: Study,
    trial: Trial,
    tracker: Tracker,
    runs: PlanRuns,
    root: Path,
    *,
    on_log: OnLog | None = None,
    device: str | None = None,
    timeout: float | None = None,
    on_start: Callable[[], None] | None = None,
) -> Outcome:
    """Train one trial unless the store holds it as done: resume its MLflow run if it has one
    (from its checkpoint), else start it; record how it ended.

    ``device`` overrides the trial's ``train.device`` (the Ray executor runs an ``auto`` trial
    that was given no GPU on the CPU). ``timeout``: end the training after so many seconds
    (``timed out``; in the main thread of a process, through an alarm); the clock starts when
    the trial's own code does (``on_start`` is called then), not while torch is imported.
    """
    record = tracker.trial_record(runs, trial)
    if record is not None and is_done(record):
        return Outcome(trial, "skipped", record.run_id)
    tuning_error = None
    if study.tuning.space:  # the variant's own search first (or its stored result)
        from ablate.execute.tuning import tuned_trial

        trial, tuning_error = tuned_trial(study, trial, tracker, runs, root, on_log=on_log)
    tuned = bool(study.tuning.space) and tuning_error is None
    with TrialRecorder.open(study, tracker, runs, trial, record, tuned) as life:
        if tuning_error is not None:
            raise RuntimeError(f"tuning this variant failed:\n{tuning_error}")
        life.run = make_run(study, trial, tracker, life.run_id, root, life.logged_through,
                            on_log, device)
        life.tag({"ablate.device": str(life.run.device), "ablate.code": study.fingerprint,
                  **provenance(study, life.run)})
        if on_start is not None:
            on_start()
        with time_limit(timeout):
            life.status = train(study, life.run)
    if life.run is not None and life.status in ("finished", "diverged"):
        life.run.clear_checkpoint()  # a failed or timed-out one resumes from it
    life.run = None  # its tensors go before the next trial
    update_variant_row(study, trial, tracker, runs, root)
    _free_memory(collect=life.status not in ("finished", "diverged"))
    value = life.summary.get(f"final_{study.metric}")
    return Outcome(trial, life.status, life.run_id, value, life.error)


@contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raise :class:`TrialTimeout` in this thread after ``seconds`` (SIGALRM; only in a
    process's main thread, on systems that have it — elsewhere the driver's own deadline
    ends the trial's process)."""
    usable = (seconds and hasattr(signal, "setitimer")
              and threading.current_thread() is threading.main_thread())
    if not usable:
        yield
        return
    assert seconds is not None

    def alarm(signum: int, frame: object) -> None:
        raise TrialTimeout(seconds)

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def done_before(trial: Trial, records: Mapping[tuple[str, int], TrialRecord]) -> Outcome | None:
    """A ``skipped`` outcome if ``records`` (the store's) hold ``trial`` as done, else None."""
    record = records.get((trial.variant.id, trial.seed))
    if record is not None and is_done(record):
        return Outcome(trial, "skipped", record.run_id)
    return None


ROW_EVERY_S = 5.0  # a process writes variant rows at most so often (see update_variant_row)
_rows_due: dict[str, float] = {}  # plan -> when its rows are due (this process's clock)
_rows_stale: dict[str, dict[str, Trial]] = {}  # plan -> variant id -> a trial of it that ended
# since its row was written


def update_variant_row(
    study: Study, trial: Trial, tracker: Tracker, runs: PlanRuns, root: Path,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Recompute the ended trial's variant row in MLflow's UI (mean, CI, counts) from the
    store, in the process that trained the trial, under a per-variant lock so that two of its
    seeds ending at once on this machine write in turn. A process writes its rows at most
    every :data:`ROW_EVERY_S` seconds: a row missed meanwhile is written with the next (the
    row is for people watching; a study of 4,096 one-second trials would spend a third of its
    time rewriting rows). Best effort: the trial is recorded already, and the plan's end
    writes every row again."""
    import warnings

    _rows_stale.setdefault(runs.plan, {})[trial.variant.id] = trial
    now = clock()
    if now < _rows_due.get(runs.plan, 0.0):
        return
    _rows_due[runs.plan] = now + ROW_EVERY_S
    for ended in _rows_stale.pop(runs.plan).values():
        try:
            with file_lock(root / study.name / f"{ended.variant.id}.row.lock", blocking=True):
                tracker.update_variant(study, runs, ended.variant)
        except Exception as exc:
            warnings.warn(f"could not update the MLflow row of variant {ended.variant.label!r} "
                          f"({type(exc).__name__}: {str(exc)[:200]}); the study's end retries "
                          f"it.", stacklevel=2)


def _free_memory(collect: bool) -> None:
    """Return a finished trial's memory before the next one starts.

    Tensors are freed by reference counting as the trial's objects go out of scope; a full
    ``gc.collect()`` (about 0.3 s with torch and MLflow loaded) is needed only for reference
    cycles, e.g. an exception's traceback holding frames after a failure, and before returning
    cached blocks to the GPU.
    """
    import torch

    if collect or torch.cuda.is_available():
        gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
