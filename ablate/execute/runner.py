"""``run_study``: pick the backend for a study's trials and drive them, round by round."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ablate.execute.driver import OnEnd, OnNote, drive, in_rounds, sigterm_as_interrupt
from ablate.execute.inprocess import InProcess
from ablate.execute.outcome import Outcome
from ablate.execute.record import OnLog
from ablate.execute.trial import done_before
from ablate.study import Study, Trial
from ablate.track import PlanRuns, Tracker
from ablate.track.claims import new_owner

if TYPE_CHECKING:
    from ablate.execute.ray import RayOptions
    from ablate.execute.ship import ShippedStudy


def run_study(
    study: Study,
    *,
    tracker: Tracker,
    root: Path,
    source: ShippedStudy | None = None,
    workers: int | str | None = "auto",
    ray: RayOptions | None = None,
    on_trial_start: Callable[[Trial, int], None] | None = None,
    on_trial_end: OnEnd | None = None,
    on_log: OnLog | None = None,
    on_round: Callable[[Study], None] | None = None,
    on_workers: Callable[[int], None] | None = None,
    on_note: OnNote | None = None,
) -> tuple[PlanRuns, list[Outcome]]:
    """Train every pending trial of ``study`` and return the plan's runs and each trial's
    outcome (an adaptive study round by round: :func:`~ablate.execute.driver.in_rounds`).

    Where: with ``ray`` (:class:`~ablate.execute.ray.RayOptions`), one Ray task per trial;
    else, with the study's file (``source``) and ``workers`` other than 1, in worker processes
    on this machine (``auto``: the CPUs over the trials' ``train.threads``; a round with fewer
    than 2 pending trials runs in this process), forked from a template process that imported
    torch, MLflow and ablate once (:func:`~ablate.execute.template.start_template`; ``ablate run``
    starts it first thing, :func:`~ablate.execute.template.start_early`); else one after another
    in this process.
    Every runner of the store claims each trial there first (:mod:`ablate.track.claims`), so
    none is trained twice, whatever folder or machine the runners are in. Ctrl-C or SIGTERM
    ends the trials in flight (their runs marked KILLED, resumable) and re-raises.
    """
    owner = new_owner()

    def driven(backend: Any) -> Callable[[Study], tuple[PlanRuns, list[Outcome]]]:
        return lambda current: drive(current, tracker, backend, on_trial_end=on_trial_end,
                                     on_note=on_note, owner=owner)

    here = InProcess(tracker, root, on_trial_start=on_trial_start, on_log=on_log)
    with sigterm_as_interrupt():
        if ray is not None:
            assert source is not None, "the Ray backend needs the study's file"
            from ablate.execute.cluster import check_cluster_storage
            from ablate.execute.ray import RayBackend, connect, resources
            from ablate.execute.ship import check_shipping

            check_cluster_storage(ray.address, tracker.uri, root, ray.allow_local_storage)
            check_shipping(source.path, ray.address)
            module, connected = connect(ray, source)
            try:
                backend = RayBackend(module, source, tracker.uri, root, ray,
                                     resources(module, study.trials, ray))
                return in_rounds(study, tracker, driven(backend), on_round)
            finally:
                if connected:
                    module.shutdown()
        if source is None or workers == 1:
            if workers not in (1, None, "auto"):
                raise ValueError("workers > 1 needs the study's file, for the workers to load "
                                 "it: pass source=ShippedStudy.of(path)")
            return in_rounds(study, tracker, driven(here), on_round)
        from ablate.execute.cluster import absolute_uri
        from ablate.execute.pool import WorkerPool, resolve_workers
        from ablate.execute.template import start_template, stop_template

        pool = WorkerPool(resolve_workers(workers, study.trials, source), source,
                          absolute_uri(tracker.uri), root, on_workers)
        if pool.slots > 1 and len(study.trials) > 1:
            start_template()  # its imports overlap this round's reads (if ablate run has not)

        def round_(current: Study) -> tuple[PlanRuns, list[Outcome]]:
            pending = _pending(current, tracker)
            if min(pool.slots, len(pending)) < 2:  # one trial: here, with its live progress
                if not pool.workers and not study.adaptive:  # no round will want workers
                    stop_template()
                return driven(here)(current)
            pool.announce(len(pending))
            return driven(pool)(current)

        try:
            return in_rounds(study, tracker, round_, on_round)
        finally:
            pool.close()  # idle by now, or stopped mid-trial by an exception
            stop_template()  # at once: its own exit (a teardown of torch, ~1.5 s) would keep
            # the output of `ablate run` open after it ends (the template inherited it), and a
            # caller reading that output to its end (a pipe, a CI log) would wait for it


def _pending(study: Study, tracker: Tracker) -> list[Trial]:
    experiment = tracker.experiment_id(study)
    done = tracker.trial_records(experiment) if experiment is not None else {}
    return [t for t in study.trials if done_before(t, done) is None]
