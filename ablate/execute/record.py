"""A trial's MLflow run from its start (or resume) to its recorded end, and the Run it trains.

Used by :mod:`~ablate.execute.trial` (a trial of the plan) and :mod:`~ablate.execute.tuning`
(a tuning trial); it imports neither."""

from __future__ import annotations

import json
import traceback
from collections.abc import Callable, Mapping
from typing import Any

from ablate.execute.outcome import TIMED_OUT, TrialTimeout, timeout_message
from ablate.study import Study, Trial
from ablate.track import PlanRuns, Tracker, TrackingError, TrialRecord, describe_failure

OnLog = Callable[[dict[str, float], int], None]


class TrialRecorder:
    """A trial's MLflow run from its start (or resume) to its recorded end, as a context.

    Made by :meth:`open` (a trial of the plan) or :meth:`tuning` (a tuning trial), which start
    the run. The body sets :attr:`run` (the :class:`ablate.train.run.Run`) and :attr:`status`
    (``finished`` or ``diverged``); leaving it records the end with the run's summary. An
    exception in the body makes the trial ``failed`` with its traceback and is swallowed,
    except Ctrl-C (the run is marked KILLED, the trial stays resumable, and it propagates) and,
    for a trial of the plan, a study metric that was never logged (recorded ``failed``; it
    propagates and stops the study). After the block: :attr:`status`, :attr:`summary`,
    :attr:`error`.
    """

    def __init__(self, tracker: Tracker, run_id: str, logged_through: int = -1,
                 trial: Trial | None = None) -> None:
        self.tracker, self.run_id, self.logged_through = tracker, run_id, logged_through
        self.trial = trial  # None for a tuning trial: its failure is the search's to handle
        self.run: Any = None
        self.status = "failed"
        self.summary: dict[str, float] = {}
        self.error: str | None = None

    @classmethod
    def open(cls, study: Study, tracker: Tracker, runs: PlanRuns, trial: Trial,
             record: TrialRecord | None, tuned: bool = False) -> TrialRecorder:
        """Start ``trial``'s run, or resume the one in ``record`` (which also completes the
        params and tags of a run created just before a kill); ``tuned``: tag the values its
        search chose (``ablate.tuned``)."""
        if record is None:
            life = cls(tracker, tracker.start_trial(study, runs, trial), -1, trial)
        else:
            logged = tracker.resume_trial(study, runs, trial, record.run_id)
            life = cls(tracker, record.run_id, logged, trial)
        if tuned:
            life.tag({"ablate.tuned": json.dumps({k: trial.variant.config[k]
                                                  for k in study.tuning.space})})
        return life

    @classmethod
    def tuning(cls, study: Study, tracker: Tracker, runs: PlanRuns, trial: Trial,
               number: int) -> TrialRecorder:
        """Start tuning trial ``number``'s run (a child run tagged ``ablate.role=tuning``)."""
        return cls(tracker, tracker.start_tuning(study, runs, trial, number))

    def tag(self, tags: Mapping[str, str]) -> None:
        self.tracker.set_tags(self.run_id, tags)

    def __enter__(self) -> TrialRecorder:
        return self

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> bool:
        from ablate.train.run import MetricMissing

        if isinstance(exc, KeyboardInterrupt):
            self.tracker.interrupt_trial(self.run_id)
            return False
        if isinstance(exc, MetricMissing) and self.trial is not None:
            summary = self.run.final_summary() if self.run is not None else {}
            self.tracker.end_trial(self.run_id, "failed", summary, str(exc))
            return False
        if isinstance(exc, TrialTimeout):  # past train.timeout: a failure outcome of its own
            self.status, self.error = TIMED_OUT, timeout_message(exc.args[0])
        elif exc is not None:  # SystemExit from user code too: the trial failed
            self.status, self.error = "failed", failure_text(exc)
        self.summary = summary_of(self.run) if self.run is not None else {}
        self._end()
        return True

    def _end(self) -> None:
        if self.trial is None:
            self.tracker.end_trial(self.run_id, self.status, self.summary, self.error)
            return
        try:
            self.tracker.end_trial(self.run_id, self.status, self.summary, self.error)
        except Exception as exc:  # the store went away mid-study: stop, keep the checkpoint
            raise TrackingError(
                f"the tracking store {self.tracker.uri} failed while recording trial "
                f"{self.trial.variant.label!r} seed {self.trial.seed} "
                f"({describe_failure(exc)}). What was logged before "
                f"is kept, and so is the trial's checkpoint: run `ablate run` again when the "
                f"store is back, and the trial resumes in the same MLflow run."
            ) from None


def make_run(study, trial, tracker, run_id, root, logged_through, on_log, device=None):
    """The trial's :class:`ablate.train.run.Run`, logging to ``run_id``, seeded and set up."""
    import torch

    from ablate.train.run import Run, resolve_device, seed_everything, set_determinism

    config = trial.variant.config
    device = resolve_device(device or str(config.get("train.device", "auto")))
    set_determinism(bool(config.get("train.deterministic", True)), device)
    torch.set_num_threads(threads_of(trial))  # the same in process and on Ray: same numbers
    seed_everything(trial.seed)
    return Run(
        config=config,
        seed=trial.seed,
        device=device,
        checkpoint_dir=root / study.name / trial.key,
        metric=study.metric,
        mode=study.mode,
        sink=lambda metrics, step: tracker.log_metrics(run_id, metrics, step, study.metric),
        logged_through=logged_through,
        on_log=on_log,
        artifact_sink=lambda path, folder: tracker.log_artifact(run_id, path, folder),
        tag_sink=lambda tags: tracker.set_tags(run_id, tags),
    )


def threads_of(trial: Trial) -> int:
    """The trial's CPU thread count (``train.threads``)."""
    from ablate.config import RUN_DEFAULTS

    return int(trial.variant.config.get("train.threads", RUN_DEFAULTS["train.threads"]))


def provenance(study: Study, run: Any) -> dict[str, str]:
    """The ``ablate.env.*`` tags of a trial: what it is trained with, read where it trains."""
    import torch

    from ablate.train.env import environment

    env = {**environment(study.source, run.device), "threads": str(torch.get_num_threads())}
    return {f"ablate.env.{k}": v for k, v in env.items()}


def failure_text(exc: BaseException) -> str:
    """The traceback of a failed trial; ``sys.exit(n)`` in training code says what it was."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    if isinstance(exc, SystemExit):
        text += (f"SystemExit: the training code called sys.exit({exc.code!r}); a trial can't "
                 f"end the study. Fix: raise an exception, or return from train().\n")
    return text


def train(study: Study, run: Any) -> str:
    """Train ``run`` (the study's ``train`` function, else the built-in loop); its status."""
    from ablate.train.run import Diverged

    try:
        if study.train is not None:
            study.train(dict(run.config), run)
        else:
            from ablate.train.loop import fit

            # the task's model and data functions, else the study's (set without train=)
            fit(run, study.model_for(run.config),  # type: ignore[arg-type]
                study.data_for(run.config))  # type: ignore[arg-type]
        run.require_metric()
    except Diverged:
        return "diverged"
    return "finished"


def summary_of(run: Any) -> dict[str, float]:
    """The summary metrics an ended trial records."""
    summary = run.final_summary()
    summary["train_seconds"] = run.train_seconds
    summary["epochs"] = float(run.last_step + 1)
    return summary
