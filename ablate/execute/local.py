"""The in-process executor, and the rounds of an adaptive study that either executor runs."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ablate.execute.files import file_lock
from ablate.execute.trial import OnLog, Outcome, done_before, run_trial
from ablate.study import Study, Trial
from ablate.track import StudyRuns, Tracker

if TYPE_CHECKING:
    from ablate.execute.ship import StudyFile

Round = Callable[[Study], tuple[StudyRuns, list[Outcome]]]


def prepare(study: Study, tracker: Tracker, root: Path) -> StudyRuns:
    """Create the experiment and parent run once, under the study's lock, before any trial."""
    with file_lock(root / study.name / ".study.lock", blocking=True):
        return tracker.setup_study(study)


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


def in_rounds(
    study: Study, tracker: Tracker, run_round: Round,
    on_round: Callable[[Study], None] | None = None,
) -> tuple[StudyRuns, list[Outcome]]:
    """Run ``study`` through ``run_round`` (one call of an executor over a study's trials).

    A study with fixed seeds is one round. An adaptive study is run round by round: before each,
    its schedule is replayed from the trials recorded in the store
    (:func:`ablate.report.sequential.schedule`), and the round is every trial scheduled so far
    (done ones are skipped as in any rerun), until a round would add no trial. So an
    interrupted adaptive study resumes where it was, whichever executor runs it. Trials that
    failed in an earlier round of this call are not retried in it; the next ``ablate run``
    retries them, as for any study. ``on_round`` gets each round's study before it runs.
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
        failed |= {o.trial.key for o in ended if o.status == "failed"}


def next_round(study: Study, tracker: Tracker, skip: Iterable[str] = ()) -> Study:
    """An adaptive study's current round, from the trials recorded in the store: each variant's
    scheduled seeds, less the trial keys in ``skip``."""
    from ablate.report.sequential import schedule
    from ablate.report.spec import spec_from_study

    plan = schedule(tracker.results(study), spec_from_study(study),
                    [v.id for v in study.variants])
    return study.scheduled(plan.counts, skip)


def run_study(
    study: Study,
    *,
    tracker: Tracker,
    root: Path,
    on_trial_start: Callable[[Trial, int], None] | None = None,
    on_trial_end: Callable[[Outcome], None] | None = None,
    on_log: OnLog | None = None,
    on_round: Callable[[Study], None] | None = None,
    source: StudyFile | None = None,
    workers: int | str | None = "auto",
    on_workers: Callable[[int], None] | None = None,
) -> tuple[StudyRuns, list[Outcome]]:
    """Train every pending trial in process, in the study's order (an adaptive study round by
    round: :func:`in_rounds`); with the study's file (``source``) and ``workers`` other than 1,
    in worker processes (:func:`ablate.execute.pool.run_study_pool`: ``auto`` picks the count)."""
    if source is not None and workers != 1:
        from ablate.execute.pool import run_study_pool

        return run_study_pool(study, tracker=tracker, root=root, source=source, workers=workers,
                              on_trial_start=on_trial_start, on_trial_end=on_trial_end,
                              on_log=on_log, on_round=on_round, on_workers=on_workers)
    if workers not in (1, None, "auto"):
        raise ValueError("workers > 1 needs the study's file, for the workers to load it: "
                         "pass source=StudyFile.of(path)")
    return in_rounds(study, tracker, lambda current: _run_round(
        current, tracker, root, on_trial_start, on_trial_end, on_log), on_round)


def _run_round(
    study: Study,
    tracker: Tracker,
    root: Path,
    on_trial_start: Callable[[Trial, int], None] | None,
    on_trial_end: Callable[[Outcome], None] | None,
    on_log: OnLog | None,
) -> tuple[StudyRuns, list[Outcome]]:
    runs = prepare(study, tracker, root)
    done = tracker.trial_records(runs.experiment_id)
    outcomes: list[Outcome] = []
    interrupted = True
    with sigterm_as_interrupt():
        try:
            for index, trial in enumerate(study.trials):
                outcome = done_before(trial, done)
                if outcome is None:
                    if on_trial_start is not None:
                        on_trial_start(trial, index)
                    outcome = run_trial(study, trial, tracker, runs, root, on_log=on_log)
                outcomes.append(outcome)
                if on_trial_end is not None:
                    on_trial_end(outcome)
            interrupted = False
        finally:
            try:
                tracker.finish_study(runs, study, interrupted)
            except Exception:  # the store is gone; the parent run stays RUNNING, harmlessly
                pass
    return runs, outcomes
