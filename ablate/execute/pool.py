"""The worker-process backend: pending trials trained in parallel on this machine, without Ray.

Each worker is a Python process of its own that loads the study file itself (as a Ray worker
does), trains one trial at a time and logs its own child run; the driver kills a worker to end
its trial (a trial past its bound, Ctrl-C), never interrupting one inside an MLflow call.

Workers are cheap to start: where the platform has it (Linux, macOS), each is forked from a
*template* process (multiprocessing's forkserver) that has imported, once, what a trial needs
(torch, MLflow and its store, ``ablate``'s training code: :data:`TEMPLATE_MODULES`), and that
``ablate run`` starts first thing (:mod:`ablate.execute.template`), so that its imports overlap the
driver's own loading, planning and checks. The template only imports: it starts no thread of
its own (numpy's BLAS pool and pyarrow's allocator register their own fork handlers), never
touches CUDA and opens no store, so a fork of it is as clean as a fresh process. A worker
takes the driver's environment as it is when the worker starts, loads the study and opens the
store at once (while the driver prepares the plan's runs), and dies with the driver.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ablate.execute.files import EnvironmentProblem
from ablate.execute.outcome import (
    DIED,
    ENVIRONMENT_ERROR,
    STUDY_ERROR,
    TRACKING_ERROR,
    Reply,
)
from ablate.execute.record import threads_of
from ablate.execute.ship import ShippedStudy
from ablate.execute.template import GPU_DEVICE_FILES, cpus, start_method, start_template
from ablate.execute.trial import train_trial
from ablate.study import Study, Trial
from ablate.track import PlanRuns, Tracker, TrackingError
from ablate.validate import StudyError

PR_SET_PDEATHSIG = 1  # linux/prctl.h
WATCH_S = 0.5  # without pidfd_open: how often a worker looks whether its driver is alive

def resolve_workers(workers: int | str | None, trials: Sequence[Trial],
                    source: ShippedStudy | None) -> int:
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
    return max(1, cpus() // max(threads_of(t) for t in trials))


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
_loaded: tuple[ShippedStudy, Study] | None = None
_trackers: dict[str, Tracker] = {}

STARTED = "started"  # what a worker sends when the trial's own code starts (its clock starts)
Note = tuple[str, type, str, int]  # a warning: message, category (its builtin base: one of a
# library's or the study file's own might not unpickle in the driver), file, line


def _serve(conn: Any, driver: int, uri: str, root: str, source: ShippedStudy,
           environ: dict[str, str]) -> None:
    """A worker's life: set up (:func:`_init_worker`), load the study and open the store
    (:func:`_warm`), then train the trials the driver sends (trial key, the plan's runs, its
    bound), one at a time, replying to each."""
    _init_worker(driver, environ)
    notes = _warm(source, uri)
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):  # the driver is gone
            return
        if task is None:
            return
        source, key, runs, timeout = task
        reply, more = pool_trial(source, key, uri, root, runs, timeout,
                                 on_start=lambda: conn.send(STARTED))
        conn.send((reply, notes + more))
        notes = []


def _init_worker(driver: int, environ: dict[str, str]) -> None:
    """A worker takes the driver's environment as it is now (a template forked it, with the
    environment of its own start), ignores Ctrl-C (the driver decides, and kills it) and dies
    with the driver: a ``kill -9`` of ``ablate run`` leaves no worker writing. What it inherits
    from the template is frozen out of the garbage collector's sweeps: they would write to every
    inherited object, copying the template's memory page by page."""
    import gc

    gc.freeze()
    if os.environ != environ:
        os.environ.clear()
        os.environ.update(environ)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):  # dies with its parent (the driver, or the template)
        import ctypes

        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    _watch(driver)


def _watch(driver: int) -> None:
    """Kill this process the moment the driver ends: a thread waits on the driver's pidfd
    (Linux 5.3+), else looks every :data:`WATCH_S` seconds."""
    def die() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    try:
        fd = os.pidfd_open(driver)  # type: ignore[attr-defined,unused-ignore]  # Linux only
    except ProcessLookupError:  # the driver died already
        die()
    except (AttributeError, OSError):  # no pidfd here: look now and then
        def look() -> None:
            while True:
                try:
                    os.kill(driver, 0)
                except ProcessLookupError:
                    die()
                except OSError:
                    pass
                time.sleep(WATCH_S)

        threading.Thread(target=look, name="ablate-driver-watch", daemon=True).start()
        return

    def wait() -> None:
        import select

        select.select([fd], [], [])
        die()

    threading.Thread(target=wait, name="ablate-driver-watch", daemon=True).start()


def _warm(source: ShippedStudy, uri: str) -> list[Note]:
    """Load the study and open the store before the first trial comes (the driver prepares the
    plan's runs meanwhile); the warnings it raised go with the first reply. A problem is left
    for the first trial to meet again and reply (:func:`pool_trial`)."""
    global _loaded
    import warnings

    from ablate.track import quiet_mlflow

    with quiet_mlflow(), warnings.catch_warnings(record=True) as caught:
        try:
            _loaded = (source, source.load())
            _tracker(uri).experiment_id(_loaded[1])  # opens the store: its engine, its schema
        except Exception:
            return []
    return [_note(w) for w in caught]


def _tracker(uri: str) -> Tracker:
    return _trackers.get(uri) or _trackers.setdefault(uri, Tracker(uri))


def pool_trial(source: ShippedStudy, key: str, uri: str, root: str, runs: PlanRuns,
               timeout: float | None = None,
               on_start: Callable[[], None] | None = None) -> tuple[Reply, list[Note]]:
    """One task of a worker: train trial ``key`` of the study in ``source`` (loaded once per
    worker) with :func:`train_trial`; its reply and the warnings it raised, which the driver
    shows. A study problem or a lost tracking store is replied so that the driver stops the
    study as in process."""
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
            outcome = train_trial(study, trial, _tracker(uri), runs, Path(root),
                                  timeout=timeout, on_start=on_start)
            reply = Reply(outcome.status, outcome.run_id, outcome.value, outcome.error)
        except StudyError as exc:
            reply = Reply(STUDY_ERROR, error=str(exc))
        except TrackingError as exc:
            reply = Reply(TRACKING_ERROR, error=str(exc))
        except EnvironmentProblem as exc:  # e.g. an unwritable checkpoint: stop, as in process
            reply = Reply(ENVIRONMENT_ERROR, error=f"in a worker process: {exc}")
    return reply, [_note(w) for w in caught]


def _note(w: Any) -> Note:
    category = next(c for c in w.category.__mro__ if c.__module__ == "builtins")
    return str(w.message), category, w.filename, w.lineno


# ---------------------------------------------------------------------------------- the driver
@dataclass
class _Worker:
    process: Any  # multiprocessing's Process
    conn: Any  # the driver's end of its pipe
    key: str | None = None  # the trial it trains now
    began: float | None = None  # when that trial's own code started (monotonic)


class WorkerPool:
    """The worker processes of one ``ablate run`` (a :class:`~ablate.execute.driver.Backend`):
    at most ``size`` (capped by the trials to train, announced once through ``on_start``), all
    started when the first round is announced (each loads the study and opens the store while
    the driver prepares the plan's runs), reused by later rounds, killed (never interrupted) to
    end a trial or the study. A worker that dies is replaced; its trial comes back
    (:data:`~ablate.execute.outcome.DIED`) and the driver submits it again, to resume from its
    checkpoint. ``method``: how workers start (:func:`start_method` by default)."""

    bounds_itself = False

    def __init__(self, size: int, source: ShippedStudy, uri: str, root: Path,
                 on_start: Callable[[int], None] | None = None,
                 method: str | None = None) -> None:
        self.slots, self.source, self.uri, self.root = size, source, uri, str(root.resolve())
        self.on_start = on_start
        self.method = method or start_method()
        self.announced = False
        self.workers: list[_Worker] = []
        self.runs: PlanRuns | None = None

    def announce(self, pending: int) -> None:
        """At most as many workers as trials to train: said once, when the first round starts,
        and started now."""
        if not self.announced:
            self.slots, self.announced = max(1, min(self.slots, pending)), True
            if self.on_start is not None:
                self.on_start(self.slots)
        while len(self.workers) < self.slots:
            self._spawn()

    def start(self, study: Study, runs: PlanRuns) -> None:
        self.runs = runs

    def submit(self, trial: Trial, timeout: float | None) -> Hashable:
        worker = next((w for w in self.workers if w.key is None), None) or self._spawn()
        try:
            worker.conn.send((self.source, trial.key, self.runs, timeout))
        except (BrokenPipeError, OSError):  # it died idle: a new one
            self._end(worker)
            worker = self._spawn()
            worker.conn.send((self.source, trial.key, self.runs, timeout))
        worker.key, worker.began = trial.key, None
        return trial.key

    def began(self, handle: Hashable) -> float | None:
        return next((w.began for w in self.workers if w.key == handle), None)

    def _spawn(self) -> _Worker:
        import multiprocessing

        if self.method == "forkserver":
            start_template()  # (if ablate run has not already)
        ctx: Any = multiprocessing.get_context(self.method)
        mine, theirs = ctx.Pipe()
        process = ctx.Process(target=_serve, name="ablate-worker", args=(
            theirs, os.getpid(), self.uri, self.root, self.source, dict(os.environ)))
        process.start()
        theirs.close()
        worker = _Worker(process, mine)
        self.workers.append(worker)
        return worker

    def wait(self, handles: Sequence[Hashable],
             timeout: float | None) -> list[tuple[Hashable, Reply]]:
        from multiprocessing.connection import wait

        busy = {w.key: w for w in self.workers if w.key in set(handles)}
        watch: dict[Any, _Worker] = {}
        for worker in busy.values():
            watch[worker.conn] = worker
            watch[worker.process.sentinel] = worker
        replies: list[tuple[Hashable, Reply]] = []
        for worker in {id(w): w for w in (watch[r] for r in wait(list(watch), timeout))}.values():
            key = worker.key
            reply = self._receive(worker)
            if isinstance(reply, str):  # STARTED, not an end: the driver sees its deadline
                continue
            if reply is None:  # died: its trial comes back
                code = worker.process.exitcode
                self._end(worker)
                reply = Reply(DIED, error=f"the worker process running this trial died (exit "
                                          f"code {code}); its checkpoint is kept", retry=True)
            elif not worker.process.is_alive():  # replied, then died: not to be reused
                self._end(worker)
            replies.append((key, reply))
        return replies

    def _receive(self, worker: _Worker) -> Reply | str | None:
        """The worker's reply; :data:`STARTED` (its trial's clock started); None if it died."""
        import warnings

        try:
            if not worker.conn.poll():
                return None
            message = worker.conn.recv()
            if message == STARTED:
                worker.began = time.monotonic()
                return STARTED
            reply, notes = message
        except (EOFError, OSError):
            return None
        worker.key = None
        for message, category, filename, lineno in notes:  # as if raised here, as in process
            warnings.warn_explicit(message, category, filename, lineno)
        return reply

    def cancel(self, handles: Sequence[Hashable]) -> None:
        for worker in [w for w in self.workers if w.key in set(handles)]:
            self._end(worker)

    def _end(self, worker: _Worker) -> None:
        """SIGKILL: a worker stopped inside an MLflow call could leave a store half-written; a
        dead one releases its locks, and its trial stays resumable."""
        worker.process.kill()
        worker.process.join()
        worker.conn.close()
        self.workers.remove(worker)

    def close(self) -> None:
        """End every worker at once, idle ones too: a clean exit of torch and MLflow takes
        seconds."""
        for worker in list(self.workers):
            self._end(worker)
