"""One trial's whole lifecycle: lock, look-up, (tuning), its MLflow run from start to end."""

from __future__ import annotations

import gc
import json
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ablate.execute.files import file_lock
from ablate.status import is_done
from ablate.study import Study, Trial
from ablate.track import StudyRuns, Tracker, TrackingError, TrialRecord, describe_failure

OnLog = Callable[[dict[str, float], int], None]


@dataclass(frozen=True)
class Outcome:
    """What happened to one trial in this invocation."""

    trial: Trial
    status: str  # finished | diverged | failed | skipped (done before) | busy (another process)
    run_id: str | None = None
    value: float | None = None  # final value of the study metric
    error: str | None = None


class TrialRun:
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
    def open(cls, study: Study, tracker: Tracker, runs: StudyRuns, trial: Trial,
             record: TrialRecord | None, tuned: bool = False) -> TrialRun:
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
                                                  for k in study.tune})})
        return life

    @classmethod
    def tuning(cls, study: Study, tracker: Tracker, runs: StudyRuns, trial: Trial,
               number: int) -> TrialRun:
        """Start tuning trial ``number``'s run (a child run tagged ``ablate.role=tuning``)."""
        return cls(tracker, tracker.start_tuning(study, runs, trial, number))

    def tag(self, tags: Mapping[str, str]) -> None:
        self.tracker.set_tags(self.run_id, tags)

    def __enter__(self) -> TrialRun:
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
        if exc is not None:  # SystemExit from user code too: the trial failed
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


def run_trial(
    study: Study,
    trial: Trial,
    tracker: Tracker,
    runs: StudyRuns,
    root: Path,
    *,
    on_log: OnLog | None = None,
    device: str | None = None,
) -> Outcome:
    """Train one trial unless it is done or another process holds it.

    ``device`` overrides the trial's ``train.device`` (the Ray executor runs an ``auto`` trial
    that was given no GPU on the CPU).
    """
    with file_lock(root / study.name / f"{trial.key}.lock", blocking=False) as mine:
        if not mine:
            return Outcome(trial, "busy")
        record = tracker.trial_record(runs, trial)
        if record is not None and is_done(record):
            return Outcome(trial, "skipped", record.run_id)
        tuning_error = None
        if study.tune:  # the variant's own search first (or its stored result)
            from ablate.execute.tuning import tuned_trial

            trial, tuning_error = tuned_trial(study, trial, tracker, runs, root, on_log=on_log)
        tuned = bool(study.tune) and tuning_error is None
        with TrialRun.open(study, tracker, runs, trial, record, tuned) as life:
            if tuning_error is not None:
                raise RuntimeError(f"tuning this variant failed:\n{tuning_error}")
            life.run = make_run(study, trial, tracker, life.run_id, root, life.logged_through,
                                on_log, device)
            life.tag({"ablate.device": str(life.run.device), "ablate.code": study.fingerprint,
                      **provenance(study, life.run)})
            life.status = train(study, life.run)
        if life.run is not None and life.status != "failed":  # a failed one resumes from it
            life.run.clear_checkpoint()
        life.run = None  # its tensors go before the next trial
        update_variant_row(study, trial, tracker, runs, root)
        _free_memory(collect=life.status == "failed")
        value = life.summary.get(f"final_{study.metric}")
        return Outcome(trial, life.status, life.run_id, value, life.error)


def done_before(trial: Trial, records: Mapping[tuple[str, int], TrialRecord]) -> Outcome | None:
    """A ``skipped`` outcome if ``records`` (the store's) hold ``trial`` as done, else None."""
    record = records.get((trial.variant.id, trial.seed))
    if record is not None and is_done(record):
        return Outcome(trial, "skipped", record.run_id)
    return None


def update_variant_row(
    study: Study, trial: Trial, tracker: Tracker, runs: StudyRuns, root: Path
) -> None:
    """Recompute the ended trial's variant row in MLflow's UI (mean, CI, counts) from the
    store, in the process that trained the trial (in process or on a Ray worker), under a
    per-variant lock so that two of its seeds ending at once write in turn. Best effort: the
    trial is recorded already, and the plan's end writes every row again."""
    import warnings

    try:
        with file_lock(root / study.name / f"{trial.variant.id}.row.lock", blocking=True):
            tracker.update_variant(study, runs, trial.variant)
    except Exception as exc:
        warnings.warn(f"could not update the MLflow row of variant {trial.variant.label!r} "
                      f"({type(exc).__name__}: {str(exc)[:200]}); the study's end retries it.",
                      stacklevel=2)


def changed_trials(study: Study, records: Mapping[tuple[str, int], Any]) -> list[Any]:
    """Finished or diverged trials of the plan whose recorded code fingerprint differs."""
    out = []
    for trial in study.trials:
        record = records.get((trial.variant.id, trial.seed))
        if record is not None and is_done(record) and record.code != study.fingerprint:
            out.append(record)
    return out


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
    )


def threads_of(trial: Trial) -> int:
    """The trial's CPU thread count (``train.threads``)."""
    from ablate.study import RUN_DEFAULTS

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

            fit(run, study.model, study.data)  # type: ignore[arg-type]  # set without train=
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
