"""The one driver of a study's trials; backends only submit, wait and cancel.

:func:`drive` owns a round's trial loop, whatever trains the trials: it prepares the plan's runs,
skips the trials the store holds as done, claims each pending trial in the store (so that no
other runner of the store trains it: :mod:`ablate.track.claims`), submits it to the backend,
waits, collects, retries a trial whose process died, ends a trial that runs past its
``train.timeout``, marks what was in flight when interrupted, and finishes the plan's run.
:func:`in_rounds` runs an adaptive study round by round. A backend (:class:`Backend`) is one of
:class:`~ablate.execute.inprocess.InProcess`, :class:`~ablate.execute.pool.WorkerPool` and
:class:`~ablate.execute.ray.RayBackend`; none imports another.
"""

from __future__ import annotations

import random
import signal
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from ablate.execute.files import EnvironmentProblem
from ablate.execute.outcome import (
    DIED,
    ENVIRONMENT_ERROR,
    MAX_RETRIES,
    STUDY_ERROR,
    TIMED_OUT,
    TRACKING_ERROR,
    Outcome,
    Reply,
    timeout_message,
    timeout_of,
)
from ablate.execute.trial import done_before
from ablate.study import Study, Trial
from ablate.track import PlanRuns, Tracker, TrackingError
from ablate.track.claims import Claims, Renewer, ensure_experiment
from ablate.validate import StudyError

OnEnd = Callable[[Outcome], None]
OnNote = Callable[[str], None]
KILL_GRACE_S = 30.0  # past its deadline, a trial that did not stop itself has its process ended
POLL_S = 5.0  # how often trials held by another runner are looked at again


class Backend(Protocol):
    """Where trials train. ``slots``: trials at once; ``bounds_itself``: the backend ends a
    trial at its ``train.timeout`` in place (else the driver ends its process)."""

    slots: int
    bounds_itself: bool

    def start(self, study: Study, runs: PlanRuns) -> None:
        """A round begins: the study and its runs, for the trials submitted in it."""

    def submit(self, trial: Trial, timeout: float | None) -> Hashable:
        """Start training ``trial``; a handle to wait on."""

    def wait(self, handles: Sequence[Hashable],
             timeout: float | None) -> list[tuple[Hashable, Reply]]:
        """The replies of the handles that ended, after at most ``timeout`` seconds (None:
        until one ends); possibly none."""

    def cancel(self, handles: Sequence[Hashable]) -> None:
        """End these trials' processes now (a trial past its bound, or Ctrl-C)."""

    def began(self, handle: Hashable) -> float | None:
        """When the trial's own code started (``time.monotonic()``), if known yet: its clock."""


@dataclass
class _Job:
    trial: Trial
    bound: float | None  # train.timeout, enforced by the driver (None: by the backend, or none)

    def deadline(self, backend: Backend, handle: Hashable) -> float | None:
        """When the driver ends the trial's process: past its bound and a grace period in which
        the trial's own alarm should have stopped it."""
        began = backend.began(handle) if self.bound is not None else None
        return None if began is None or self.bound is None else began + self.bound + KILL_GRACE_S


def prepare(study: Study, tracker: Tracker, owner: str | None = None) -> tuple[PlanRuns, Claims]:
    """The plan's runs, created once whichever runner comes first (under a claim in the
    store, so two runners in two folders never make two), and this runner's claims."""
    experiment = ensure_experiment(tracker.client, study.name)
    claims = Claims(tracker.client, experiment, owner)
    key = f"setup-{study.plan}"
    while claims.take(key)[0] != "won":  # another runner is setting the plan up: seconds
        time.sleep(random.uniform(0.2, 1.0))
    try:
        runs = tracker.setup_study(study)
    finally:
        claims.release(key)
    return runs, claims


def drive(
    study: Study,
    tracker: Tracker,
    backend: Backend,
    *,
    on_trial_end: OnEnd | None = None,
    on_note: OnNote | None = None,
    owner: str | None = None,
) -> tuple[PlanRuns, list[Outcome]]:
    """Train every pending trial of ``study`` with ``backend``; its runs and each trial's
    outcome in the study's order. ``on_trial_end`` gets each outcome as it comes (skipped ones
    first); ``on_note`` a line for the user (a trial held by another runner, a timeout)."""
    runs, claims = prepare(study, tracker, owner)
    done = tracker.trial_records(runs.experiment_id)
    outcomes: dict[str, Outcome] = {}
    say = on_note or (lambda line: None)

    first_errors: dict[str, str] = {}  # variant id -> how its first trial ended here, if failed

    def ended(outcome: Outcome) -> None:
        outcomes[outcome.trial.key] = outcome
        if on_trial_end is not None:
            on_trial_end(outcome)
        if outcome.status in ("skipped", "elsewhere"):
            return
        variant = outcome.trial.variant.id
        if outcome.status == "failed" and variant not in first_errors:
            first_errors[variant] = _last_line(outcome.error)
        _same_failure(study, outcomes.values(), first_errors)

    queue: deque[Trial] = deque()
    for trial in study.trials:
        skipped = done_before(trial, done)
        if skipped is not None:
            ended(skipped)
        else:
            queue.append(trial)
    inflight: dict[Hashable, _Job] = {}
    held: dict[str, Trial] = {}  # claimed by another live runner: looked at again later
    deaths: dict[str, int] = {}
    order = {t.key: i for i, t in enumerate(study.trials)}
    backend.start(study, runs)
    interrupted, closed = True, False
    try:
        with Renewer(claims):
            next_look = time.monotonic() + POLL_S
            while queue or inflight or held:
                while queue and len(inflight) < backend.slots:
                    trial = queue.popleft()
                    job = _claim(study, trial, tracker, runs, claims, held, ended, say)
                    if job is not None:
                        job.bound = None if backend.bounds_itself else job.bound
                        inflight[backend.submit(trial, timeout_of(study))] = job
                if not inflight:
                    if held and not queue:
                        time.sleep(max(0.0, min(POLL_S, next_look - time.monotonic())))
                if held and time.monotonic() >= next_look:
                    _look_again(held, queue, tracker, runs, claims, ended)
                    next_look = time.monotonic() + POLL_S
                if not inflight:
                    continue
                wait_s = _wait_for(inflight, backend, bool(held), next_look)
                replies = backend.wait(list(inflight), wait_s)
                for handle, reply in sorted(replies, key=lambda r: order[inflight[r[0]].trial.key]):
                    job = inflight.pop(handle)
                    outcome = _collect(reply, job.trial, tracker, runs, deaths)
                    if outcome is None:  # its process died: again, from its checkpoint (the
                        queue.appendleft(job.trial)  # claim stays ours)
                    else:
                        ended(outcome)
                        claims.release(job.trial.key)
                now = time.monotonic()
                overdue = [h for h, j in inflight.items()
                           if (end := j.deadline(backend, h)) is not None and now > end]
                if overdue:
                    backend.cancel(overdue)
                    for handle in overdue:
                        job = inflight.pop(handle)
                        ended(_timed_out(study, job.trial, tracker, runs))
                        claims.release(job.trial.key)
            interrupted = False
    except StudyError as exc:  # found only by training (a metric never logged): stop, and
        closed = True  # close every run of the plan as failed (the next run opens them again)
        backend.cancel(list(inflight))
        for job in inflight.values():
            lost(job.trial, tracker, runs, f"stopped: {exc}")
        _stop(tracker, runs, study)
        raise
    except SameFailure:  # the trials in flight stay resumable; the summaries are written
        interrupted = False
        if inflight:
            backend.cancel(list(inflight))
            _interrupt([j.trial for j in inflight.values()], tracker, runs)
        raise
    except BaseException as exc:
        if inflight:
            backend.cancel(list(inflight))
            if not isinstance(exc, TrackingError):  # else the store is gone: nothing to mark
                _interrupt([j.trial for j in inflight.values()], tracker, runs)
        raise
    finally:
        claims.release_all()
        try:
            if not closed:
                tracker.finish_study(runs, study, interrupted)
        except Exception:  # the store is gone; the parent run stays RUNNING, harmlessly
            pass
    return runs, [outcomes[t.key] for t in study.trials if t.key in outcomes]


class SameFailure(Exception):
    """The first trial of several variants failed with the same error and none finished: the
    cause is the study's or the machine's, not one variant's. The study stops (exit 1) with one
    message instead of repeating it in every trial; the failed trials are retried by the next
    ``ablate run``, the untried ones trained."""


SAME_FAILURES = 3  # first trials of this many variants failing alike stop the study


def _last_line(error: str | None) -> str:
    lines = (error or "").strip().splitlines()
    return lines[-1][:500] if lines else ""


def _same_failure(study: Study, outcomes: Iterable[Outcome],
                  first_errors: dict[str, str]) -> None:
    """Raise :class:`SameFailure` when the first trials of ``SAME_FAILURES`` variants (all of
    them, in a smaller study) failed with one error and no trial trained here has finished."""
    ended = [o for o in outcomes if o.status not in ("skipped", "elsewhere")]
    if any(o.status in ("finished", "diverged") for o in ended):
        return
    need = min(SAME_FAILURES, len(study.variants))
    errors = set(first_errors.values())
    if len(first_errors) >= need and len(errors) == 1 and need > 1:
        (error,) = errors
        raise SameFailure(
            f"the first trial of {len(first_errors)} variants failed with the same error, and "
            f"none finished: {error}\nThe cause is likely the study's or this machine's, not a "
            f"variant's, so the study stops here rather than repeat it in every trial. Fix it "
            f"(each failed trial's traceback is its MLflow run's artifact traceback.txt) and run "
            f"again: the failed trials are retried and the others trained."
        )


def _stop(tracker: Tracker, runs: PlanRuns, study: Study) -> None:
    """A study error found by training: the plan's run and its unfinished variant rows are
    closed as failed (the next ``ablate run`` opens them again)."""
    try:
        tracker.stop_study(runs, study)
    except Exception:  # the store is gone: nothing more to close
        pass


def _claim(study: Study, trial: Trial, tracker: Tracker, runs: PlanRuns, claims: Claims,
           held: dict[str, Trial], ended: OnEnd, say: OnNote) -> _Job | None:
    """Claim ``trial`` in the store: a job to submit, or None (held by another runner: set
    aside; done meanwhile: ended as skipped)."""
    state, rivals = claims.take(trial.key)
    if state == "contended":  # met another runner claiming it at once: both withdrew
        time.sleep(random.uniform(0.05, 0.5))
        state, rivals = claims.take(trial.key)
    if state != "won":
        if trial.key not in held:
            where = ", ".join(sorted({r.where for r in rivals})) or "another runner"
            say(f"{trial.variant.label} seed {trial.seed}: being trained by another runner of "
                f"this store ({where}); waiting for it (taken over if that runner stops "
                f"renewing its claim for {claims.lease_s:g} s)")
        held[trial.key] = trial
        return None
    record = tracker.trial_record(runs, trial)  # another runner may have ended it meanwhile
    if record is not None and record.done:
        claims.release(trial.key)
        ended(Outcome(trial, "skipped", record.run_id))
        return None
    return _Job(trial, timeout_of(study))


def _look_again(held: dict[str, Trial], queue: deque[Trial], tracker: Tracker, runs: PlanRuns,
                claims: Claims, ended: OnEnd) -> None:
    """Trials held by other runners: ended there (``elsewhere``), or free again (their runner
    finished with them unfinished, or died and its lease ran out): queued to train here."""
    records = tracker.trial_records(runs.experiment_id)
    holders = claims.holders()
    for key, trial in list(held.items()):
        record = records.get((trial.variant.id, trial.seed))
        if record is not None and record.done:
            del held[key]
            ended(Outcome(trial, "elsewhere", record.run_id))
        elif not claims.rivals(key, holders):
            del held[key]
            queue.append(trial)


def _wait_for(inflight: dict[Hashable, _Job], backend: Backend, looking: bool,
              next_look: float) -> float | None:
    """How long the backend may block: until the nearest deadline, or the next look at held
    trials; None when there is neither. (A bounded trial whose clock has not started yet is
    looked at again when it starts: the backend's wait returns then.)"""
    ends = [end for h, j in inflight.items() if (end := j.deadline(backend, h)) is not None]
    if looking:
        ends.append(next_look)
    if not ends:
        return None
    return max(0.0, min(ends) - time.monotonic())


def _collect(reply: Reply, trial: Trial, tracker: Tracker, runs: PlanRuns,
             deaths: dict[str, int]) -> Outcome | None:
    """The trial's outcome from its backend's reply; None to train it again (its process
    died, at most MAX_RETRIES times: it resumes from its checkpoint in the same MLflow run)."""
    if reply.status == STUDY_ERROR:
        raise StudyError(reply.error)
    if reply.status == TRACKING_ERROR:
        raise TrackingError(reply.error)
    if reply.status == ENVIRONMENT_ERROR:
        raise EnvironmentProblem(reply.error)
    if reply.status == DIED:
        deaths[trial.key] = deaths.get(trial.key, 0) + 1
        if reply.retry and deaths[trial.key] <= MAX_RETRIES:
            return None
        return lost(trial, tracker, runs, reply.error or "its process died")
    return Outcome(trial, reply.status, reply.run_id, reply.value, reply.error)


def lost(trial: Trial, tracker: Tracker, runs: PlanRuns, error: str,
         status: str = "failed") -> Outcome:
    """A trial whose process ended without a result: recorded ``status`` (a rerun retries it,
    from its checkpoint, in the same MLflow run)."""
    try:
        record = tracker.trial_record(runs, trial)
        if record is not None and record.status == "running":
            tracker.end_trial(record.run_id, status, {}, error)
    except Exception:  # the outcome still says so; the store keeps the run resumable
        record = None
    return Outcome(trial, status, record.run_id if record else None, None, error)


def _timed_out(study: Study, trial: Trial, tracker: Tracker, runs: PlanRuns) -> Outcome:
    bound = timeout_of(study) or 0.0
    return lost(trial, tracker, runs, timeout_message(bound) + f" (its process did not stop "
                f"by itself within {KILL_GRACE_S:g} s of the bound and was ended)", TIMED_OUT)


def _interrupt(trials: Iterable[Trial], tracker: Tracker, runs: PlanRuns) -> None:
    """Mark the runs of trials stopped in flight KILLED: each stays ``ablate.status=running``
    with its checkpoint, and a rerun resumes it."""
    for trial in trials:
        try:
            record = tracker.trial_record(runs, trial)
            if record is not None and record.status == "running":
                tracker.interrupt_trial(record.run_id)
        except Exception:  # best effort: the trial is resumable either way
            pass


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM stops the study like Ctrl-C: the current trial is left resumable."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


Round = Callable[[Study], tuple[PlanRuns, list[Outcome]]]


def in_rounds(
    study: Study, tracker: Tracker, run_round: Round,
    on_round: Callable[[Study], None] | None = None,
) -> tuple[PlanRuns, list[Outcome]]:
    """Run ``study`` through ``run_round`` (one :func:`drive` over a study's trials).

    A study with fixed seeds is one round. An adaptive study is run round by round: before each,
    its schedule is replayed from the trials recorded in the store (:func:`next_round`), and
    the round is every trial scheduled so far (done ones are skipped as in any rerun), until a
    round would add no trial. So an interrupted adaptive study resumes where it was, whichever
    backend runs it. Trials that failed in an earlier round of this call are not retried in
    it; the next ``ablate run`` retries them, as for any study. ``on_round`` gets each round's
    study before it runs.
    """
    if not study.adaptive:
        return run_round(study)
    outcomes: dict[str, Outcome] = {}
    ran: set[str] = set()
    failed: set[str] = set()
    runs = None
    while True:
        current = next_round(study, tracker, failed)
        keys = {t.key for t in current.trials}
        if runs is not None and keys <= ran:
            return runs, list(outcomes.values())
        if on_round is not None:
            on_round(current)
        runs, ended = run_round(current)
        ran |= keys
        for outcome in ended:
            if outcome.status != "skipped" or outcome.trial.key not in outcomes:
                outcomes[outcome.trial.key] = outcome
        failed |= {o.trial.key for o in ended if o.status in ("failed", TIMED_OUT)}


def next_round(study: Study, tracker: Tracker, skip: Iterable[str] = ()) -> Study:
    """An adaptive study's current round, from the trials recorded in the store: each variant's
    scheduled seeds, less the trial keys in ``skip``."""
    from ablate.stats.sequential import schedule
    from ablate.stats.spec import spec_from_study

    plan = schedule(tracker.results(study), spec_from_study(study),
                    [v.id for v in study.variants])
    return study.scheduled(plan.counts, skip)
