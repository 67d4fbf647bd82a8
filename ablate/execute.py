"""Run a study's pending trials: in this process, in the study's order, or as Ray tasks.

For each trial: take its lock (two ``ablate run`` on one machine never train the same trial at
once), look it up in MLflow (finished and diverged trials are skipped; failed ones retried; a
``running`` one whose process died is resumed from its checkpoint in the same MLflow run),
seed, train, and record the status. One trial's exception never stops the study.

:func:`run_study` trains in this process; :func:`run_study_ray` submits one Ray task per pending
trial (``ablate run --executor ray``). Ray is imported only by the latter. Either runs an
adaptive study (``seeds="adaptive"``) round by round (:func:`in_rounds`), each round one call
of the executor over the trials scheduled so far.
"""

from __future__ import annotations

import fcntl
import gc
import json
import os
import re
import signal
import traceback
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any, NamedTuple
from urllib.parse import urlparse

from ablate.study import Study, Trial
from ablate.track import StudyRuns, Tracker, TrackingError, describe_failure

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


def checkpoint_path(path: str | os.PathLike[str] | None = None) -> Path:
    """``--checkpoint-dir``, else ``ABLATE_CHECKPOINT_DIR``, else ``./.ablate/checkpoints``."""
    return Path(path or os.environ.get("ABLATE_CHECKPOINT_DIR") or DEFAULT_CHECKPOINT_DIR)


def checkpoint_root(path: str | os.PathLike[str] | None = None) -> Path:
    """:func:`checkpoint_path`, created and checked to be writable."""
    root = checkpoint_path(path)
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".write-test-{os.getpid()}"  # unique: Ray workers probe at once
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise _unwritable(root, exc.strerror or str(exc)) from None
    return root


def check_checkpoint_root(path: str | os.PathLike[str] | None = None) -> Path:
    """:func:`checkpoint_path` if it is (or can be created) writable; creates nothing, so a
    study refused later for another reason leaves no folder behind."""
    root = checkpoint_path(path)
    if root.exists():
        return checkpoint_root(root)  # probes with a file it removes at once
    parent = root.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise _unwritable(root, f"{str(parent)!r} is not a folder")
    import tempfile

    try:  # a folder made and removed at once: permissions, read-only mounts, /proc...
        os.rmdir(tempfile.mkdtemp(dir=parent, prefix=".ablate-write-test-"))
    except OSError as exc:
        raise _unwritable(root, f"can't create folders in {str(parent)!r}: "
                                f"{exc.strerror or exc}") from None
    return root


def _unwritable(root: Path, why: str) -> EnvironmentProblem:
    return EnvironmentProblem(
        f"checkpoint directory {str(root)!r} is not writable ({why}). Fix: pass "
        f"--checkpoint-dir DIR (or set ABLATE_CHECKPOINT_DIR) to a writable folder."
    )


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
    device: str | None = None,
) -> Outcome:
    """Train one trial unless it is done or another process holds it.

    ``device`` overrides the trial's ``train.device`` (the Ray executor runs an ``auto`` trial
    that was given no GPU on the CPU).
    """
    from ablate.train.run import MetricMissing

    with file_lock(root / study.name / f"{trial.key}.lock", blocking=False) as mine:
        if not mine:
            return Outcome(trial, "busy")
        record = tracker.trial_record(runs, trial)
        if record is not None and record.done:
            return Outcome(trial, "skipped", record.run_id)
        tuning_error = None
        if study.tune:  # the variant's own search first (or its stored result)
            try:
                best = tuned_values(study, trial.variant, tracker, runs, root, on_log=on_log)
                trial = Trial(replace(trial.variant, config={**trial.variant.config, **best}),
                              trial.seed)
            except KeyboardInterrupt:
                raise
            except BaseException as exc:
                tuning_error = _failure(exc)
        if record is None:
            run_id, logged_through = tracker.start_trial(study, runs, trial), -1
        else:  # also completes the params and tags of a run created just before a kill
            run_id = record.run_id
            logged_through = tracker.resume_trial(study, runs, trial, run_id)
        if study.tune and tuning_error is None:
            tracker.set_tags(run_id, {"ablate.tuned": json.dumps(
                {k: trial.variant.config[k] for k in study.tune})})
        run = None
        try:
            if tuning_error is not None:
                raise RuntimeError(f"tuning this variant failed:\n{tuning_error}")
            run = _make_run(study, trial, tracker, run_id, root, logged_through, on_log, device)
            tracker.set_tags(run_id, {"ablate.device": str(run.device), "ablate.code":
                                      study.fingerprint, **provenance(study, run)})
            status, error = _train(study, run), None
        except MetricMissing as exc:
            tracker.end_trial(run_id, "failed", run.final_summary() if run else {}, str(exc))
            raise
        except KeyboardInterrupt:
            tracker.interrupt_trial(run_id)
            raise
        except BaseException as exc:  # SystemExit from user code too: the trial failed
            status, error = "failed", _failure(exc)
        summary = _summary(run) if run is not None else {}
        try:
            tracker.end_trial(run_id, status, summary, error)
        except Exception as exc:  # the store went away mid-study: stop, keep the checkpoint
            raise TrackingError(
                f"the tracking store {tracker.uri} failed while recording trial "
                f"{trial.variant.label!r} seed {trial.seed} ({describe_failure(exc)}). What "
                f"was logged before "
                f"is kept, and so is the trial's checkpoint: run `ablate run` again when the "
                f"store is back, and the trial resumes in the same MLflow run."
            ) from None
        if run is not None and status != "failed":  # a failed trial retries from its checkpoint
            run.clear_checkpoint()
        del run
        update_variant_row(study, trial, tracker, runs, root)
        _free_memory(collect=status == "failed")
        value = summary.get(f"final_{study.metric}")
        return Outcome(trial, status, run_id, value, error)


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


def tuned_values(
    study: Study,
    variant: Any,
    tracker: Tracker,
    runs: StudyRuns,
    root: Path,
    *,
    on_log: Callable[[dict[str, float], int], None] | None = None,
) -> dict[str, Any]:
    """The variant's best values from its own Optuna search, run or resumed here.

    Each tuning trial trains the variant's config with ``study.tune_config`` and the suggested
    values on ``study.tune_seed``, as a child run tagged ``ablate.role=tuning``. The search is
    kept in ``<root>/<study>/<variant>.tune.journal`` under a per-variant lock: a rerun continues
    it, a finished search is only read back, and the seeds of a variant never search twice.
    """
    import optuna

    from ablate.train.tune import search

    def objective(params: dict[str, Any], number: int, report: Callable[[float, int], None]):
        config = {**variant.config, **study.tune_config, **params}
        trial = Trial(replace(variant, config=config), study.tune_seed)
        run_id = tracker.start_tuning(study, runs, trial, number)

        def forward(metrics: dict[str, float], step: int) -> None:
            if on_log is not None:
                on_log(metrics, step)
            if study.metric in metrics:
                report(metrics[study.metric], step)

        run = _make_run(study, trial, tracker, run_id, root, -1, forward)
        run.checkpoint_dir = root / study.name / "tuning" / f"{variant.id}-t{number}"
        run.clear_checkpoint()  # a tuning trial always starts from scratch
        error = None
        try:
            status = _train(study, run)
        except optuna.TrialPruned:
            status = "diverged"
        except KeyboardInterrupt:
            tracker.interrupt_trial(run_id)
            raise
        except BaseException as exc:
            status, error = "failed", _failure(exc)
        summary = _summary(run)
        tracker.end_trial(run_id, status, summary, error)
        run.clear_checkpoint()
        if status == "failed":
            raise RuntimeError(error)
        if status == "diverged":
            raise optuna.TrialPruned()
        return summary[f"final_{study.metric}"]

    with file_lock(root / study.name / f"{variant.id}.tune.lock", blocking=True):
        result = search(
            name=variant.id,
            space=study.tune,
            n_trials=study.tune_trials,
            seed=study.tune_seed,
            mode=study.mode,
            storage_path=root / study.name / f"{variant.id}.tune.journal",
            objective=objective,
        )
    return result.best_params


def _make_run(study, trial, tracker, run_id, root, logged_through, on_log, device=None):
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


def changed_trials(study: Study, records: Mapping[tuple[str, int], Any]) -> list[Any]:
    """Finished or diverged trials of the plan whose recorded code fingerprint differs."""
    out = []
    for trial in study.trials:
        record = records.get((trial.variant.id, trial.seed))
        if record is not None and record.done and record.code != study.fingerprint:
            out.append(record)
    return out


def _failure(exc: BaseException) -> str:
    """The traceback of a failed trial; ``sys.exit(n)`` in training code says what it was."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    if isinstance(exc, SystemExit):
        text += (f"SystemExit: the training code called sys.exit({exc.code!r}); a trial can't "
                 f"end the study. Fix: raise an exception, or return from train().\n")
    return text


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


Round = Callable[[Study], tuple[StudyRuns, list[Outcome]]]


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


def next_round(study: Study, tracker: Tracker, skip: Sequence[str] = ()) -> Study:
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
    on_log: Callable[[dict[str, float], int], None] | None = None,
    on_round: Callable[[Study], None] | None = None,
) -> tuple[StudyRuns, list[Outcome]]:
    """Train every pending trial in process, in the study's order (an adaptive study round by
    round: :func:`in_rounds`)."""
    return in_rounds(study, tracker, lambda current: _run_round(
        current, tracker, root, on_trial_start, on_trial_end, on_log), on_round)


def _run_round(
    study: Study,
    tracker: Tracker,
    root: Path,
    on_trial_start: Callable[[Trial, int], None] | None,
    on_trial_end: Callable[[Outcome], None] | None,
    on_log: Callable[[dict[str, float], int], None] | None,
) -> tuple[StudyRuns, list[Outcome]]:
    runs = prepare(study, tracker, root)
    done = tracker.trial_records(runs.experiment_id)
    outcomes: list[Outcome] = []
    interrupted = True
    with sigterm_as_interrupt():
        try:
            for index, trial in enumerate(study.trials):
                record = done.get((trial.variant.id, trial.seed))
                if record is not None and record.done:
                    outcome = Outcome(trial, "skipped", record.run_id)
                else:
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


# ================================================================================ Ray executor
RAY_INSTALL = "pip install 'ablate-studies[ray]'"
MAX_RETRIES = 3  # times a trial whose worker process died is resumed (from its checkpoint)
CANCEL_WAIT_S = 30.0  # after Ctrl-C: how long to wait for cancelled tasks to end

# Filesystems that are certainly private to one machine (a checkpoint directory on one of these
# can't be read by a retry on another node). Anything else (nfs, lustre, gpfs, fuse...) passes.
_LOCAL_FS = frozenset({
    "ext2", "ext3", "ext4", "xfs", "btrfs", "bcachefs", "zfs", "f2fs", "jfs", "reiserfs",
    "tmpfs", "ramfs", "devtmpfs", "overlay", "squashfs", "vfat", "exfat", "ntfs", "ntfs3",
    "apfs", "hfs", "hfsplus", "fuse.fuse-overlayfs",
})


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


@dataclass(frozen=True)
class StudyFile:
    """What a Ray worker needs to load the study itself.

    A :class:`Study` is never pickled: its functions live in a module only the driver imported.
    The worker imports the file again (``load_study``) with the same ``--study``, ``--set`` and
    ``--seeds``. On a cluster (``--address``) the study's whole folder — the study file and the
    modules beside it that it imports — is shipped to every node as Ray's ``py_modules``
    (:meth:`runtime_env`, see :func:`check_shipping` for the size limit), and the worker loads
    the shipped copy; on a local Ray instance it loads the file where it is. Either way it
    checks that it loads the bytes the driver read (``digest``).
    """

    path: str
    name: str | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)
    seeds: int | Sequence[int] | None = None
    digest: str | None = None  # sha256 of the study file as the driver read it
    tune_trials: int | None = None

    @classmethod
    def of(
        cls,
        path: str | os.PathLike[str],
        name: str | None = None,
        overrides: Mapping[str, Any] | None = None,
        seeds: int | Sequence[int] | None = None,
        tune_trials: int | None = None,
    ) -> StudyFile:
        resolved = Path(path).resolve()
        return cls(str(resolved), name, dict(overrides or {}), seeds, _digest(resolved),
                   tune_trials)

    @property
    def folder(self) -> Path:
        """The folder shipped to every node: the study file's own."""
        return Path(self.path).parent

    def runtime_env(self) -> dict[str, Any]:
        """Ray's job ``runtime_env`` that ships :attr:`folder` to every node (``py_modules``:
        unpacked under each node's Ray temp dir, the workers' current directory unchanged)."""
        return {"py_modules": [str(self.folder)]}

    def locate(self) -> Path:
        """Where this worker finds the study file the driver read: the shipped copy if there
        is one (``<py_modules dir>/<folder name>/<file>``: Ray unpacks each py_modules package
        into a ``_ray_pkg_<hash>`` folder and puts it on ``sys.path``), else the file at its
        path on this node. :class:`StudyError` if neither holds the same bytes."""
        import sys

        from ablate.study import StudyError

        original = Path(self.path)
        shipped = [Path(entry) / self.folder.name / original.name for entry in sys.path
                   if Path(entry).name.startswith("_ray_pkg_")]
        for path in [*shipped, original]:
            if path.is_file() and (self.digest is None or _digest(path) == self.digest):
                return path
        why = ("is missing on this node" if not original.is_file()
               else "was edited after `ablate run` started")
        raise StudyError(
            f"a Ray worker can't load the study: {self.path} {why}, and no copy shipped with "
            f"the job matches what the driver read. Fix: run again (with --address, ablate "
            f"ships the study's folder {str(self.folder)!r} to every node); if you call "
            f"ray.init yourself, pass runtime_env={{'py_modules': [{str(self.folder)!r}]}}."
        )

    def load(self) -> Study:
        from ablate.study import load_study

        study = load_study(self.locate(), self.name, self.overrides, self.seeds,
                           self.tune_trials)
        study.source = self.path
        return study


def _digest(path: Path) -> str | None:
    import hashlib

    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


SHIP_LIMIT_MB = 100  # default for ABLATE_SHIP_LIMIT_MB: most a study's folder may weigh to ship


def ship_limit() -> int:
    """Bytes a study's folder may hold to be shipped to a cluster (``ABLATE_SHIP_LIMIT_MB``,
    default 100 MiB; Ray itself refuses packages of 512 MiB and more)."""
    try:
        return int(float(os.environ.get("ABLATE_SHIP_LIMIT_MB") or SHIP_LIMIT_MB) * 2**20)
    except ValueError:
        return SHIP_LIMIT_MB * 2**20


def shipped_files(folder: Path) -> list[tuple[int, Path]]:
    """(size, path) of each file Ray ships from ``folder``, largest first. Ray's own walk
    decides (it skips what ``.rayignore`` and ``.gitignore`` files in the folder list, unless
    ``RAY_RUNTIME_ENV_IGNORE_GITIGNORE=1``); without it every file counts."""
    files: list[tuple[int, Path]] = []

    def handler(path: Path) -> None:
        try:
            if path.is_file():
                files.append((path.stat().st_size, path))
        except OSError:
            pass

    try:
        from ray._private.runtime_env.packaging import _dir_travel

        gitignore = os.environ.get("RAY_RUNTIME_ENV_IGNORE_GITIGNORE", "0") != "1"
        _dir_travel(folder, [], handler, include_gitignore=gitignore)
    except (ImportError, TypeError, AttributeError):  # another Ray: count everything
        files.clear()
        for dirpath, _, names in os.walk(folder, followlinks=True):
            for name in names:
                handler(Path(dirpath) / name)
    return sorted(files, key=lambda f: (-f[0], str(f[1])))


def check_shipping(path: str | os.PathLike[str], address: str | None) -> None:
    """Refuse, before anything runs, a study whose folder is too large to ship to a cluster.
    Nothing to check for a local Ray instance (the workers read the folder where it is)."""
    if not is_cluster_address(address):
        return
    folder = Path(path).resolve().parent
    files = shipped_files(folder)
    total, limit = sum(size for size, _ in files), ship_limit()
    if total <= limit:
        return
    largest = ", ".join(f"{p.relative_to(folder)} ({_mib(size)})" for size, p in files[:3])
    raise EnvironmentProblem(
        f"--address {address} ships the study's folder {str(folder)!r} to every Ray node (the "
        f"study file and the modules beside it), but it holds {_mib(total)} in {len(files)} "
        f"files, over the limit of {_mib(limit)}; largest: {largest}. Fix: move data out of "
        f"the folder (onto storage every node mounts, and point the study at it), or list what "
        f"the workers don't need in {str(folder / '.rayignore')!r} (gitignore syntax); or "
        f"raise the limit with ABLATE_SHIP_LIMIT_MB (Ray refuses 512 MiB). Nothing was run."
    )


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


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


def is_cluster_address(address: str | None) -> bool:
    """True for an existing cluster (``auto``, ``ray://...``, ``host:port``), False for a Ray
    instance that this run starts on this machine (no address, or ``local``)."""
    return address not in (None, "", "local")


def check_cluster_storage(
    address: str | None,
    uri: str,
    checkpoint_dir: str | os.PathLike[str] | None,
    allow_local_storage: bool = False,
) -> None:
    """Refuse (before anything runs) a tracking store or checkpoint directory that the nodes of
    a Ray cluster can't share. Nothing to check for a local Ray instance."""
    if not is_cluster_address(address) or allow_local_storage:
        return
    problems = []
    parsed = urlparse(uri)
    scheme = parsed.scheme.lower()
    if scheme in ("", "file", "sqlite") or len(scheme) == 1:  # len 1: a Windows drive letter
        problems.append(
            f"the tracking store {uri!r} is a file on this machine: the workers on other nodes "
            f"can't reach it (and sqlite is not safe for writers on several machines). Fix: run "
            f"an MLflow tracking server every node can reach, e.g. `mlflow server "
            f"--backend-store-uri postgresql://USER@DBHOST/mlflow --artifacts-destination "
            f"s3://BUCKET/mlflow --host 0.0.0.0 --port 5000`, and pass --tracking-uri "
            f"http://SERVER:5000."
        )
    elif scheme in ("http", "https") and _is_loopback(parsed.hostname or ""):
        problems.append(
            f"the tracking server {uri!r} is on this machine's loopback address, which on every "
            f"other node means that node itself. Fix: start the server with --host 0.0.0.0 and "
            f"pass --tracking-uri http://SERVER-HOSTNAME:PORT."
        )
    ck = checkpoint_path(checkpoint_dir)
    if not ck.is_absolute():
        problems.append(
            f"the checkpoint directory {str(ck)!r} is relative: each node would resolve it in "
            f"its own working directory, so a trial retried on another node could not resume. "
            f"Fix: pass --checkpoint-dir /PATH on storage that every node mounts (NFS, Lustre, "
            f"...), or set ABLATE_CHECKPOINT_DIR."
        )
    else:
        fs = filesystem_type(ck)
        if fs in _LOCAL_FS:
            problems.append(
                f"the checkpoint directory {str(ck)!r} is on a local {fs} filesystem: a trial "
                f"retried on another node could not resume from it. Fix: pass --checkpoint-dir "
                f"/PATH on storage that every node mounts (NFS, Lustre, ...)."
            )
    if problems:
        raise EnvironmentProblem(
            f"--address {address} runs the trials on a Ray cluster, but\n  - "
            + "\n  - ".join(problems)
            + "\nNothing was run. If every Ray worker runs on this machine, pass "
              "--allow-local-storage."
        )


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host.lower() in ("localhost", "0.0.0.0", "::"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def filesystem_type(path: Path) -> str | None:
    """The type of the filesystem holding ``path`` (Linux ``/proc/self/mounts``), else None."""
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return None
    target = Path(os.path.abspath(path))
    while not target.exists() and target.parent != target:
        target = target.parent
    real = os.path.realpath(target)
    best, fstype = "", None
    for line in mounts:
        parts = line.split()
        if len(parts) < 3:
            continue
        mount = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), parts[1])
        inside = real == mount or real.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best):  # the longest (and, on ties, last) mount wins
            best, fstype = mount, parts[2]
    return fstype


def absolute_uri(uri: str) -> str:
    """A tracking URI that means the same file in any working directory."""
    parsed = urlparse(uri)
    if uri.startswith("sqlite:///"):
        rest = uri[len("sqlite:///"):]
        if rest and not rest.startswith(("/", ":memory:")):
            return "sqlite:///" + str(Path(rest).resolve())
    elif parsed.scheme == "file" and not parsed.netloc and not parsed.path.startswith("/"):
        return Path(parsed.path).resolve().as_uri()
    elif parsed.scheme == "" and uri:
        return str(Path(uri).resolve())
    return uri


def check_address(address: str | None, timeout: float = 5.0) -> None:
    """Fail fast if a ``host:port`` or ``ray://host:port`` cluster address does not answer
    (``ray.init`` would otherwise retry for minutes). ``auto`` is left to Ray."""
    if not is_cluster_address(address) or address == "auto":
        return
    assert address is not None
    parsed = urlparse(address if "://" in address else f"tcp://{address}")
    try:
        host, port = parsed.hostname, parsed.port
    except ValueError:
        host = port = None
    if not host or not port:
        raise EnvironmentProblem(
            f"--address {address!r} is not a Ray cluster address. Fix: auto, "
            f"ray://HEAD:10001 (Ray Client) or HEAD:6379 (on a node of the cluster)."
        )
    import socket

    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        raise EnvironmentProblem(
            f"no Ray cluster answers at {address!r} ({exc.strerror or exc}). Fix: check the "
            f"address and that the head node is up (`ray status` on it); nothing was run."
        ) from None


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
            record = done.get((trial.variant.id, trial.seed))
            if record is not None and record.done:
                ended(Outcome(trial, "skipped", record.run_id))
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
