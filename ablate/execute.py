"""Run a study's pending trials: in this process, in the study's order.

For each trial: take its lock (two ``ablate run`` on one machine never train the same trial at
once), look it up in MLflow (finished and diverged trials are skipped; failed ones retried; a
``running`` one whose process died is resumed from its checkpoint in the same MLflow run),
seed, train, and record the status. One trial's exception never stops the study.
"""

from __future__ import annotations

import fcntl
import gc
import os
import signal
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ablate.study import Study, Trial
from ablate.track import StudyRuns, Tracker

DEFAULT_CHECKPOINT_DIR = ".ablate/checkpoints"


class EnvironmentProblem(RuntimeError):
    """The environment can't run the study (e.g. an unwritable checkpoint directory)."""


@dataclass(frozen=True)
class Outcome:
    """What happened to one trial in this invocation."""

    trial: Trial
    status: str  # finished | diverged | failed | skipped (done before) | busy (another process)
    run_id: str | None = None
    value: float | None = None  # final value of the study metric
    error: str | None = None


def checkpoint_root(path: str | os.PathLike[str] | None = None) -> Path:
    """``--checkpoint-dir``, else ``ABLATE_CHECKPOINT_DIR``, else ``./.ablate/checkpoints``."""
    root = Path(path or os.environ.get("ABLATE_CHECKPOINT_DIR") or DEFAULT_CHECKPOINT_DIR)
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise EnvironmentProblem(
            f"checkpoint directory {str(root)!r} is not writable ({exc.strerror or exc}). Fix: "
            f"pass --checkpoint-dir DIR (or set ABLATE_CHECKPOINT_DIR) to a writable folder."
        ) from None
    return root


@contextmanager
def file_lock(path: Path, *, blocking: bool) -> Iterator[bool]:
    """An exclusive ``flock`` on ``path``; yields False if not blocking and already held.

    The kernel releases it when the process dies, so a killed run never leaves a stale lock.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle: IO[Any] = open(path, "a+")  # noqa: SIM115 - closed in finally
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        handle.close()


def prepare(study: Study, tracker: Tracker, root: Path) -> StudyRuns:
    """Create the experiment and parent run once, under the study's lock, before any trial."""
    with file_lock(root / study.name / ".study.lock", blocking=True):
        return tracker.setup_study(study)


def run_trial(
    study: Study,
    trial: Trial,
    tracker: Tracker,
    runs: StudyRuns,
    root: Path,
    *,
    on_log: Callable[[dict[str, float], int], None] | None = None,
) -> Outcome:
    """Train one trial unless it is done or another process holds it."""
    from ablate.train.run import MetricMissing

    with file_lock(root / study.name / f"{trial.key}.lock", blocking=False) as mine:
        if not mine:
            return Outcome(trial, "busy")
        record = tracker.trial_record(runs, trial)
        if record is not None and record.status in ("finished", "diverged"):
            return Outcome(trial, "skipped", record.run_id)
        if record is None:
            run_id, logged_through = tracker.start_trial(study, runs, trial), -1
        else:
            run_id, logged_through = record.run_id, tracker.resume_trial(record.run_id)
        run = None
        try:
            run = _make_run(study, trial, tracker, run_id, root, logged_through, on_log)
            tracker.set_tags(run_id, {"ablate.device": str(run.device)})
            status, error = _train(study, run), None
        except MetricMissing as exc:
            tracker.end_trial(run_id, "failed", run.final_summary() if run else {}, str(exc))
            raise
        except KeyboardInterrupt:
            tracker.interrupt_trial(run_id)
            raise
        except Exception:
            status, error = "failed", traceback.format_exc()
        summary = _summary(run) if run is not None else {}
        tracker.end_trial(run_id, status, summary, error)
        if run is not None and status != "failed":  # a failed trial retries from its checkpoint
            run.clear_checkpoint()
        del run
        _free_memory(collect=status == "failed")
        value = summary.get(f"final_{study.metric}")
        return Outcome(trial, status, run_id, value, error)


def _make_run(study, trial, tracker, run_id, root, logged_through, on_log):
    from ablate.train.run import Run, resolve_device, seed_everything, set_determinism

    config = trial.variant.config
    device = resolve_device(str(config.get("train.device", "auto")))
    set_determinism(bool(config.get("train.deterministic", True)), device)
    seed_everything(trial.seed)
    return Run(
        config=config,
        seed=trial.seed,
        device=device,
        checkpoint_dir=root / study.name / trial.key,
        metric=study.metric,
        mode=study.mode,
        sink=lambda metrics, step: tracker.log_metrics(run_id, metrics, step),
        logged_through=logged_through,
        on_log=on_log,
        artifact_sink=lambda path, folder: tracker.log_artifact(run_id, path, folder),
    )


def _train(study: Study, run: Any) -> str:
    from ablate.train.run import Diverged

    try:
        if study.train is not None:
            study.train(dict(run.config), run)
        else:
            from ablate.train.loop import fit

            fit(run, study.model, study.data)
        run.require_metric()
    except Diverged:
        return "diverged"
    return "finished"


def _summary(run: Any) -> dict[str, float]:
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


def run_study(
    study: Study,
    *,
    tracker: Tracker,
    root: Path,
    on_trial_start: Callable[[Trial, int], None] | None = None,
    on_trial_end: Callable[[Outcome], None] | None = None,
    on_log: Callable[[dict[str, float], int], None] | None = None,
) -> tuple[StudyRuns, list[Outcome]]:
    """Train every pending trial in process, in the study's order."""
    runs = prepare(study, tracker, root)
    done = tracker.trial_records(runs)
    outcomes: list[Outcome] = []
    complete = False
    with sigterm_as_interrupt():
        try:
            for index, trial in enumerate(study.trials):
                record = done.get((trial.variant.id, trial.seed))
                if record is not None and record.status in ("finished", "diverged"):
                    outcome = Outcome(trial, "skipped", record.run_id)
                else:
                    if on_trial_start is not None:
                        on_trial_start(trial, index)
                    outcome = run_trial(study, trial, tracker, runs, root, on_log=on_log)
                outcomes.append(outcome)
                if on_trial_end is not None:
                    on_trial_end(outcome)
            complete = all(o.status != "busy" for o in outcomes)
        finally:
            tracker.finish_study(runs, complete)
    return runs, outcomes
