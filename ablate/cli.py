"""The ``ablate`` command: plan, run, report, ui.

Exit codes (a contract): 0 every trial finished or diverged; 1 some trial failed; 2 invalid
study, usage or environment (nothing was trained); 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ablate.exits import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_INVALID, EXIT_OK
from ablate.plan_view import print_plan
from ablate.runcheck import (
    Stopped,
    StoreLost,
    UsageError,
    changed_code,
    current,
    dry_run,
    new_ids_note,
    store_lost,
)
from ablate.source import StudySource, parse_override
from ablate.study import Study
from ablate.ui import UI_ENV, serve_ui, ui_base, ui_command  # noqa: F401 - UI_ENV: cli.UI_ENV
from ablate.validate import StudyError


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (StudyError, UsageError) as exc:
        print(f"ablate {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except (StoreLost, Stopped) as exc:
        print(f"ablate {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(f"\nablate {args.command}: interrupted.", file=sys.stderr)
        return EXIT_INTERRUPTED


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ablate",
        description="Ablation studies for PyTorch: plan, train (logged to MLflow), report.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def study_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("study_file", metavar="STUDY.py", help="a Python file defining a Study")
        p.add_argument("--study", metavar="NAME", help="which study, if the file defines several")
        p.add_argument(
            "--set",
            dest="overrides",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override a base setting (a Python literal), e.g. --set train.epochs=2",
        )
        p.add_argument("--seeds", type=_seeds, metavar="N|adaptive",
                       help="use seeds 0..N-1, or 'adaptive': seeds added round by round until "
                            "each variant's comparison is decided (the study's min_seeds to "
                            "max_seeds, default 3 to 12)")
        p.add_argument("--min-effect", type=_min_effect, metavar="X",
                       help="the smallest effect that matters, in the metric's units: "
                            "comparisons inside ±X are negligible (changes no variant id)")
        p.add_argument("--tune-trials", type=_positive_int, metavar="N",
                       help="tuning trials per variant, for a study with tuning=")

    p = sub.add_parser("plan", help="print the variants and trials; trains nothing")
    study_args(p)
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("run", help="train every pending trial and log it to MLflow")
    study_args(p)
    tracking_arg(p)
    p.add_argument("--checkpoint-dir", metavar="DIR",
                   help="where trials keep checkpoints (default: $ABLATE_CHECKPOINT_DIR or "
                        "./.ablate/checkpoints)")
    p.add_argument("--dry-run", action="store_true",
                   help="show which trials would run and which are done; train nothing")
    changed = p.add_mutually_exclusive_group()
    changed.add_argument("--rerun-changed", action="store_true",
                         help="train again the finished trials whose code (the model, data or "
                              "train function, or code they use) or data changed since; the old "
                              "runs are kept, tagged ablate.replaced")
    changed.add_argument("--keep-changed", action="store_true",
                         help="reuse finished trials whose code or data changed since; "
                              "remembered (later runs don't ask again until it changes again), "
                              "and the report says which trials came from older code or data")
    p.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="where trials run: local (default) trains them on this machine "
                        "(--workers); ray runs each as a Ray task, in parallel "
                        "(pip install 'ablate-studies[ray]')")
    p.add_argument("--workers", type=_workers, metavar="N|auto",
                   help="local: train N trials at once in worker processes (default: "
                        "$ABLATE_WORKERS, else auto: CPUs / train.threads; 1 on a GPU: one "
                        "after another in this process)")
    ray = p.add_argument_group("with --executor ray")
    ray.add_argument("--address", metavar="ADDR",
                     help="an existing Ray cluster: auto, ray://HOST:10001 or HOST:6379 "
                          "(default: $RAY_ADDRESS, else start a local Ray instance sized to "
                          "this machine)")
    ray.add_argument("--cpus-per-trial", type=_positive_int, metavar="N",
                     help="CPU cores Ray reserves per trial (default: the trial's "
                          "train.threads, which sets torch's thread count in process and on "
                          "Ray alike)")
    ray.add_argument("--gpus-per-trial", type=_gpus, metavar="G",
                     help="GPUs per trial, fractions share a GPU, e.g. 0.5 (default: 1 if the "
                          "cluster has GPUs, else 0)")
    ray.add_argument("--max-parallel", type=_positive_int, metavar="K",
                     help="at most K trials at once (default: as many as the resources allow)")
    ray.add_argument("--allow-local-storage", action="store_true",
                     help="with --address: accept a sqlite/file tracking store and a "
                          "checkpoint directory that is not on shared storage (for a cluster "
                          "whose workers all run on this machine)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("report", help="write reports/<study>/report.md, figures, results.csv "
                                      "and effects.csv/.tex")
    study_args(p)
    tracking_arg(p)
    p.add_argument("--out", metavar="DIR", help="output folder (default: reports/<study>)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("ui", help="start the MLflow UI on the tracking store (127.0.0.1 only)")
    tracking_arg(p)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=5000)
    p.set_defaults(func=cmd_ui)
    return parser


def tracking_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tracking-uri", metavar="URI",
                   help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else MLflow's "
                        "default, a local sqlite file)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
    return value


def _workers(text: str) -> int | str:
    return "auto" if text == "auto" else _positive_int(text)


def _default_workers() -> int | str:
    """``--workers`` when not given: ``$ABLATE_WORKERS`` (N or auto), else auto."""
    text = os.environ.get("ABLATE_WORKERS", "").strip()
    if not text:
        return "auto"
    try:
        return _workers(text)
    except argparse.ArgumentTypeError:
        raise UsageError(f"ABLATE_WORKERS={text!r} is not a number of workers. Fix: set it to "
                         f"a positive integer or 'auto', or unset it.") from None


def _seeds(text: str) -> int | str:
    return "adaptive" if text == "adaptive" else _positive_int(text)


def _min_effect(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def _gpus(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is not a number of GPUs (0 or more)")
    return value


def study_source(args: argparse.Namespace) -> StudySource:
    """The study file named on the command line, with its --study, --set, --seeds and
    --tune-trials."""
    overrides: dict[str, Any] = dict(parse_override(o) for o in args.overrides)
    return StudySource(args.study_file, args.study, overrides, args.seeds, args.tune_trials)


def load(args: argparse.Namespace) -> Study:
    """The study named on the command line, with --set, --seeds and --min-effect applied and
    validated."""
    study = study_source(args).load()
    return study if args.min_effect is None else study.with_overrides(min_effect=args.min_effect)


def cmd_plan(args: argparse.Namespace) -> int:
    study = load(args)
    _check(study)
    print_plan(study)
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    if args.executor != "ray" and not args.dry_run:  # workers' template: its imports overlap ours
        from ablate.execute.template import start_early

        start_early(args.workers or _default_workers())
    study = load(args)
    data = _check(study)  # a wrong setting, a missing file or a wrong data: before any write
    workers = args.workers or _default_workers()
    from ablate.execute import EnvironmentProblem, check_checkpoint_root, run_study
    from ablate.execute.driver import SameFailure
    from ablate.track import Tracker, TrackingError, bound_http_waits, quiet_mlflow, resolve_uri

    bound_http_waits()  # a tracking server that dies mid-study ends it within about a minute
    ray_options = _ray_options(args)
    with quiet_mlflow():
        try:
            if ray_options is not None:  # before anything is written or started
                from ablate.execute import (
                    check_address,
                    check_cluster_storage,
                    check_shipping,
                    require_ray,
                )

                require_ray()
                check_cluster_storage(ray_options.address, resolve_uri(args.tracking_uri),
                                      args.checkpoint_dir, ray_options.allow_local_storage)
                check_shipping(args.study_file, ray_options.address)
                check_address(ray_options.address)
            root = check_checkpoint_root(args.checkpoint_dir)  # before the store is created
            store_was_there = _store_exists(resolve_uri(args.tracking_uri))
            tracker = Tracker(args.tracking_uri)
            tracker.check()
        except (TrackingError, EnvironmentProblem) as exc:
            raise UsageError(str(exc)) from None
        if not args.dry_run:
            _say_where(study, tracker, root, args, store_was_there)
        changed_code(study, tracker, args, data)
        note = new_ids_note(study, tracker)
        if note:
            print(note, flush=True)
        if args.dry_run:
            return dry_run(study, tracker)
        from ablate.progress import StudyProgress

        with StudyProgress(study) as progress, store_lost(tracker.uri):
            from ablate.execute import ShippedStudy

            source = ShippedStudy.of(study_source(args))
            try:
                runs, outcomes = run_study(
                    study,
                    tracker=tracker,
                    root=root,
                    source=source,
                    workers=workers,
                    ray=ray_options,
                    on_trial_start=progress.trial_started,
                    on_trial_end=progress.trial_ended,
                    on_log=progress.logged,
                    on_round=progress.round_started,
                    on_workers=progress.workers_started,
                    on_note=progress.note,
                )
            except EnvironmentProblem as exc:
                raise UsageError(str(exc)) from None
            except SameFailure as exc:
                raise Stopped(str(exc)) from None
            study = current(study, tracker)
            table = tracker.results(study)
    from ablate.progress import print_summary

    print_summary(study, table, outcomes, runs, tracker.uri,
                  report=f"ablate report {args.study_file}{plan_flags(args)}")
    lost = ("failed", "timed out")
    failed = table["status"].isin(lost).any() or any(o.status in lost for o in outcomes)
    return EXIT_FAILED if failed else EXIT_OK


def plan_flags(args: argparse.Namespace) -> str:
    """The flags that define the plan (``--study``, ``--set``, ``--seeds``, ``--min-effect``,
    ``--tune-trials``) and the store (``--tracking-uri``), as the user gave them: every command
    ablate prints for this study repeats them."""
    extra = f" --study {shlex.quote(args.study)}" if args.study else ""
    extra += "".join(f" --set {shlex.quote(o)}" for o in args.overrides)
    extra += f" --seeds {args.seeds}" if args.seeds else ""
    extra += f" --min-effect {args.min_effect:g}" if args.min_effect is not None else ""
    extra += f" --tune-trials {args.tune_trials}" if args.tune_trials else ""
    extra += f" --tracking-uri {shlex.quote(args.tracking_uri)}" if args.tracking_uri else ""
    return extra


def commands(args: argparse.Namespace) -> str:
    """The ``ablate run`` and ``ablate report`` command lines of the parsed ``args``."""
    return (f"ablate run {args.study_file}{plan_flags(args)}\n"
            f"ablate report {args.study_file}{plan_flags(args)}")


def _store_exists(uri: str) -> bool:
    """False for a sqlite store whose file is not there yet (``ablate run`` creates it)."""
    from ablate.track import sqlite_path

    path = sqlite_path(uri)
    return path is None or path.exists()


def _say_where(study: Study, tracker: Any, root: Path, args: argparse.Namespace,
               store_was_there: bool) -> None:
    """Where this run's results go: the tracking store (and whether it was just created, or
    holds no run of this study yet: a run from another folder starts a new store there), the
    checkpoint folder and the report folder."""
    from ablate.track import sqlite_path

    uri, path = tracker.uri, sqlite_path(tracker.uri)
    where = f" at {path.resolve()}" if path is not None and not path.is_absolute() else ""
    if not store_was_there:
        state = (f"new, created now{where}; a study that ran before from another folder has "
                 f"its runs in that folder's store: pass --tracking-uri to use it")
    elif tracker.experiment_id(study) is None:
        state = (f"holds no run of study {study.name!r} yet{where}: its runs start here; if it "
                 f"ran before elsewhere, pass --tracking-uri to that store")
    else:
        state = f"runs of study {study.name!r} found{where}"
    print(f"tracking store: {uri} ({state})\n"
          f"checkpoints: {root} ({root.resolve()})\n"
          f"report: reports/{study.name}/ (`ablate report {args.study_file}{plan_flags(args)}`"
          f" once trained)", flush=True)


def _ray_options(args: argparse.Namespace) -> Any:
    """RayOptions for --executor ray (None for local); Ray flags without it are an error."""
    flags = {"--address": args.address, "--cpus-per-trial": args.cpus_per_trial,
             "--gpus-per-trial": args.gpus_per_trial, "--max-parallel": args.max_parallel,
             "--allow-local-storage": args.allow_local_storage or None}
    if args.executor == "ray" and args.workers is not None:
        raise UsageError("--workers only applies to the local executor. Fix: drop it (with "
                         "--executor ray, --max-parallel K caps the trials at once).")
    if args.executor != "ray":
        given = [k for k, v in flags.items() if v is not None]
        if given:
            raise UsageError(f"{', '.join(given)} only applies to --executor ray. Fix: add "
                             f"--executor ray, or drop {'them' if len(given) > 1 else 'it'}.")
        return None
    from ablate.execute import RayOptions

    address = args.address or os.environ.get("RAY_ADDRESS") or None
    return RayOptions(address=address, cpus_per_trial=args.cpus_per_trial,
                      gpus_per_trial=args.gpus_per_trial, max_parallel=args.max_parallel,
                      allow_local_storage=args.allow_local_storage)


def cmd_report(args: argparse.Namespace) -> int:
    study = load(args)
    from ablate.track import Tracker, TrackingError, quiet_mlflow

    with quiet_mlflow():
        try:
            tracker = Tracker(args.tracking_uri)
            tracker.check()
        except TrackingError as exc:
            raise UsageError(str(exc)) from None
        from ablate.report import write_report
        from ablate.report.collect import NothingToReport, collect, record_verdicts

        out = Path(args.out or Path("reports") / study.name)
        with tempfile.TemporaryDirectory() as tmp:
            try:
                found = collect(study, tracker, command=commands(args),
                                study_file=args.study_file, folder=Path(tmp))
            except NothingToReport as exc:
                raise UsageError(str(exc)) from None
            path = write_report(found.results, found.history, found.spec, out,
                                samples=found.samples, cams=found.cams,
                                cams_missing=found.cams_missing, tuning=found.tuning)
        tracker.log_report(found.runs, out)
        runs = tracker.prepare_view(study, found.runs)
        record_verdicts(tracker, study, runs, found.results, found.spec)
    from ablate.track import ranked_url, runs_url, ui_hint, ui_host

    print(f"report: {path} ({len(found.results)} trial runs; figures, results.csv and the "
          f"tables for a paper (effects.csv, effects.tex) beside it; "
          f"also logged to the study's MLflow run {runs.parent_run_id})")
    print(f"the variants with these verdicts, in MLflow's UI: "
          f"{runs_url(runs, ui_host(tracker.uri))}{ui_hint(tracker.uri)}\n"
          f"  ranked by {study.metric}: {ranked_url(runs, ui_host(tracker.uri))}")
    return EXIT_OK


def cmd_ui(args: argparse.Namespace) -> int:
    from ablate.track import resolve_uri

    uri = resolve_uri(args.tracking_uri)
    try:
        base = ui_base(uri, args.host, args.port)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return serve_ui(ui_command(uri, args.host, args.port), uri, base)


def _check(study: Study) -> dict[str, str]:
    """Build each variant's model and load each distinct data config once (the built-in loop),
    so a wrong model setting, a missing file or a wrong data type fails before any write.
    Returns each variant's data fingerprint (variant id -> ``ablate.data``; {} for a
    ``train=fn`` study)."""
    if not study.uses_builtin_loop:
        return {}
    from ablate.train.build import check_data, check_models

    check_models(study)
    return check_data(study)


def entry() -> None:
    """The ``ablate`` command (and ``python -m ablate.cli``): :func:`main`, then a prompt exit.

    By the time :func:`main` returns, everything ablate writes is committed and closed: runs
    and tags in the store, checkpoints, the report's files. The exit handlers then run as in
    any exit (the user's own, logging's flush, multiprocessing's and Ray's clean-up: 10 ms);
    what is skipped is the interpreter's teardown of torch's and MLflow's modules, 1.5 to 3
    seconds of freeing memory that the process gives back anyway. :func:`main` itself, which
    tests and scripts call, returns normally.
    """
    import atexit

    code = main()
    run_exit_handlers = getattr(atexit, "_run_exitfuncs", None)  # CPython's own exit path
    if run_exit_handlers is None:
        sys.exit(code)
    sys.stdout.flush()
    sys.stderr.flush()
    run_exit_handlers()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    entry()
