"""The ``ablate`` command: plan, run, report, ui.

Exit codes (a contract): 0 every trial finished or diverged; 1 some trial failed; 2 invalid
study, usage or environment (nothing was trained); 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ablate.study import Study, StudyError, load_study, parse_override, short_names

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(Exception):
    """Bad command-line input or environment, reported with exit code 2."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (StudyError, UsageError) as exc:
        print(f"ablate {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except StoreLost as exc:
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
                       help="tuning trials per variant, for a study with tune=")

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
                         help="train again the finished trials whose code (study file, model, "
                              "data or train function) changed since; the old runs are kept, "
                              "tagged ablate.replaced")
    changed.add_argument("--keep-changed", action="store_true",
                         help="reuse finished trials whose code changed since (the report "
                              "warns that its trials come from different code)")
    p.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="where trials run: local (default) trains them one after another in "
                        "this process; ray runs each as a Ray task, in parallel "
                        "(pip install 'ablate-studies[ray]')")
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

    p = sub.add_parser("report", help="write reports/<study>/report.md, figures and results.csv")
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


def load(args: argparse.Namespace) -> Study:
    """The study named on the command line, with --set, --seeds and --min-effect applied and
    validated."""
    overrides: dict[str, Any] = dict(parse_override(o) for o in args.overrides)
    study = load_study(args.study_file, args.study, overrides, args.seeds, args.tune_trials)
    return study if args.min_effect is None else study.with_overrides(min_effect=args.min_effect)


def cmd_plan(args: argparse.Namespace) -> int:
    study = load(args)
    _check_models(study)
    _check_data(study)
    print_plan(study)
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    study = load(args)
    _check_models(study)
    _check_data(study)  # a missing file or a wrong data type is reported before any write
    from ablate.execute import EnvironmentProblem, check_checkpoint_root, run_study
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
            tracker = Tracker(args.tracking_uri)
            tracker.check()
        except (TrackingError, EnvironmentProblem) as exc:
            raise UsageError(str(exc)) from None
        _changed_code(study, tracker, args)
        if args.dry_run:
            return _dry_run(study, tracker)
        from ablate.progress import StudyProgress

        with StudyProgress(study) as progress, _store_lost(tracker.uri):
            if ray_options is None:
                runs, outcomes = run_study(
                    study,
                    tracker=tracker,
                    root=root,
                    on_trial_start=progress.trial_started,
                    on_trial_end=progress.trial_ended,
                    on_log=progress.logged,
                    on_round=progress.round_started,
                )
            else:
                from ablate.execute import StudyFile, run_study_ray

                overrides = dict(parse_override(o) for o in args.overrides)
                source = StudyFile.of(args.study_file, args.study, overrides, args.seeds,
                                      args.tune_trials)
                try:
                    runs, outcomes = run_study_ray(study, tracker=tracker, root=root,
                                                   source=source, options=ray_options,
                                                   on_trial_end=progress.trial_ended,
                                                   on_round=progress.round_started)
                except EnvironmentProblem as exc:
                    raise UsageError(str(exc)) from None
            study = _current(study, tracker)
            table = tracker.results(study)
    from ablate.progress import print_summary

    print_summary(study, table, outcomes, runs, tracker.uri)
    failed = (table["status"] == "failed").any() or any(o.status == "failed" for o in outcomes)
    return EXIT_FAILED if failed else EXIT_OK


def _current(study: Study, tracker: Any) -> Study:
    """An adaptive study as far as its recorded trials have scheduled it; any other as it is."""
    if not study.adaptive:
        return study
    from ablate.execute import next_round

    return next_round(study, tracker)


def _changed_code(study: Study, tracker: Any, args: argparse.Namespace) -> None:
    """Finished trials trained with other code are reused or retrained only when asked."""
    from ablate.execute import changed_trials

    exp_id = tracker.experiment_id(study)
    if exp_id is None:
        return
    changed = changed_trials(study, tracker.trial_records(exp_id))
    if not changed or args.keep_changed:
        return
    if args.rerun_changed:
        if not args.dry_run:
            tracker.replace_trials(changed)
        print(f"{len(changed)} finished trial(s) were trained with other code: training them "
              f"again (the old runs are kept, tagged ablate.replaced=true).", flush=True)
        return
    raise UsageError(
        f"{len(changed)} of the plan's {len(study.trials)} trials finished with other code "
        f"(code fingerprint {changed[0].code or 'unrecorded'}, now {study.fingerprint}: the study "
        f"file or the source of its model, data or train function changed since). Fix: pass "
        f"--rerun-changed to train them again with the current code (the old runs are kept), "
        f"or --keep-changed to reuse their results. Nothing was trained."
    )


class StoreLost(Exception):
    """The tracking store failed mid-study (exit 1: a trial could not be recorded)."""


@contextlib.contextmanager
def _store_lost(uri: str) -> Iterator[None]:
    """A tracking store that fails mid-study (a server gone, a database file deleted) ends the
    study with one clear message, whichever call noticed it first."""
    from ablate.track import TrackingError

    try:
        yield
    except TrackingError as exc:
        raise StoreLost(str(exc)) from None
    except Exception as exc:
        if not type(exc).__module__.startswith(_STORE_ERRORS):
            raise
        from ablate.track import describe_failure

        raise StoreLost(
            f"the tracking store {uri} failed mid-study ({describe_failure(exc)}). What "
            f"was logged before is kept, and so are the checkpoints: run `ablate run` again when "
            f"the store is back, and interrupted trials resume in their MLflow runs."
        ) from None


_STORE_ERRORS = ("mlflow", "sqlalchemy", "sqlite3", "requests", "urllib3", "psycopg2")


def _ray_options(args: argparse.Namespace) -> Any:
    """RayOptions for --executor ray (None for local); Ray flags without it are an error."""
    flags = {"--address": args.address, "--cpus-per-trial": args.cpus_per_trial,
             "--gpus-per-trial": args.gpus_per_trial, "--max-parallel": args.max_parallel,
             "--allow-local-storage": args.allow_local_storage or None}
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
        results = tracker.results(study)  # exactly the trials of this plan
        left_out = tracker.left_out(study)
        if results.empty:
            raise UsageError(_no_runs(study, tracker.uri, args.study_file, left_out))
        runs = tracker.find_study(study)
        if runs is None:  # every trial was trained under other plans: give this one its run
            runs = tracker.setup_study(study)
            tracker.finish_study(runs, study, interrupted=False)
        from ablate.report import spec_from_study, write_report

        history = tracker.history(study)
        samples = _samples(study, tracker, results)
        spec = spec_from_study(
            study,
            command=_reproduce(args),
            environment=_environment(results),
            notes=_notes(results, left_out),
            mlflow={"tracking URI": _shown_uri(tracker.uri), "experiment id": runs.experiment_id,
                    "study (parent) run id": runs.parent_run_id},
        )
        out = Path(args.out or Path("reports") / study.name)
        with tempfile.TemporaryDirectory() as tmp:
            cams = _cams(study, tracker, results, Path(tmp))
            tuning = tracker.tuning(study) if study.tune else None
            path = write_report(results, history, spec, out, samples=samples, cams=cams,
                                tuning=tuning)
        tracker.log_report(runs, out)
        runs = tracker.prepare_view(study, runs)
        record_verdicts(tracker, study, runs, results, spec)
    from ablate.track import runs_url, ui_hint, ui_host

    print(f"report: {path} ({len(results)} trial runs; figures and results.csv beside it; also "
          f"logged to the study's MLflow run {runs.parent_run_id})")
    print(f"the variants with these verdicts, in MLflow's UI: "
          f"{runs_url(runs, ui_host(tracker.uri))}{ui_hint(tracker.uri)}")
    return EXIT_OK


def record_verdicts(tracker: Any, study: Study, runs: Any, results: Any, spec: Any) -> None:
    """The report's verdict for each variant (its comparison with the baseline, as the
    report's variant table gives it) onto the variant's row in MLflow (tag ablate.verdict)."""
    from ablate.report import compare

    verdicts = {row.variant: str(row.verdict) for row in compare(results, spec).itertuples()}
    verdicts[study.baseline_variant.id] = "baseline"
    tracker.record_verdicts(study, runs, verdicts)


def _shown_uri(uri: str) -> str:
    """A sqlite store inside the current folder as a relative URI: a report names no path of the
    machine that wrote it (a reader's clone has none of them)."""
    from ablate.track import sqlite_path

    path = sqlite_path(uri)
    if path is None or not path.is_absolute():
        return uri
    try:
        return f"sqlite:///{path.relative_to(Path.cwd())}"
    except ValueError:
        return uri


def _no_runs(study: Study, uri: str, study_file: str, left_out: list[tuple[str, int]]) -> str:
    """Why ``ablate report`` has nothing to report, naming the settings that do have runs."""
    if not left_out:
        return (f"study {study.name!r} has no runs in {uri} yet. Fix: run `ablate run "
                f"{study_file}` first (with the same --tracking-uri).")
    groups = "; ".join(f"{what} ({n} run{'s' * (n != 1)})" for what, n in left_out[:5])
    return (f"no run of study {study.name!r} in {uri} matches this plan (its settings, factors "
            f"and seeds). Runs exist that differ in: {groups}. Fix: pass the same --set/--seeds "
            f"as the `ablate run` that trained them, or run this plan first.")


# `ablate ui` runs MLflow's server as light as serving the UI allows: one web worker (MLflow
# starts four) and none of the background job runners (huey consumers for GenAI jobs, periodic
# tasks) that MLflow starts by default and the runs table never uses.
UI_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
          "MLFLOW_SERVER_JOB_ENABLE_PERIODIC_TASKS": "false"}
UI_READY_TIMEOUT_S = 600.0  # a busy machine can take minutes to start it


def ui_command(uri: str, host: str, port: int) -> list[str]:
    """The ``mlflow server`` command line for a store (run with :data:`UI_ENV`)."""
    return [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", host,
            "--port", str(port), "--workers", "1"]


def cmd_ui(args: argparse.Namespace) -> int:
    from ablate.track import resolve_uri

    uri = resolve_uri(args.tracking_uri)
    if "://" not in uri or uri.startswith(("http://", "https://")):
        raise UsageError(f"ablate ui serves a local store (sqlite:/// or file:), not {uri!r}. "
                         f"Fix: open that tracking server's own UI instead.")
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"ablate ui: warning: binding to {args.host} exposes every run in {uri} to the "
              f"network WITHOUT authentication. Prefer the default 127.0.0.1 with an SSH tunnel, "
              f"or put an authenticating proxy in front.", file=sys.stderr)
    local = "127.0.0.1" if args.host in ("0.0.0.0", "::", "") else args.host
    base = f"http://{f'[{local}]' if ':' in local else local}:{args.port}"
    return serve_ui(ui_command(uri, args.host, args.port), uri, base)


def serve_ui(command: list[str], uri: str, base: str) -> int:
    """Start MLflow's server, say when it answers (its /health) and where each study's runs
    are, then wait for it; Ctrl-C or SIGTERM stops it."""
    import signal
    import subprocess
    import time

    print(f"starting MLflow's UI for {uri} on {base} ...", flush=True)
    start = time.monotonic()
    proc = subprocess.Popen(command, env={**os.environ, **UI_ENV})

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        if not _wait_for_health(proc, base, start + UI_READY_TIMEOUT_S):
            code = proc.poll()
            print("ablate ui: error: MLflow's server "
                  + (f"exited (code {code})" if code is not None else
                     f"did not answer within {UI_READY_TIMEOUT_S:.0f} s")
                  + f" before serving {base} (its messages are above). Fix: pick a free "
                  f"--port, or check the store {uri}.", file=sys.stderr)
            return EXIT_INVALID
        print(f"MLflow UI ready at {base} after {time.monotonic() - start:.0f} s (Ctrl-C to "
              f"stop).", flush=True)
        _print_study_urls(uri, base)
        return EXIT_OK if proc.wait() == 0 else EXIT_FAILED
    finally:
        signal.signal(signal.SIGTERM, previous)
        if proc.poll() is None:
            proc.terminate()  # mlflow's command passes it on to its web server
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_for_health(proc: Any, base: str, deadline: float) -> bool:
    """Poll the server's /health until it answers 200; False if it exits or never answers."""
    import time
    import urllib.request

    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=5) as reply:
                if reply.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


def _print_study_urls(uri: str, base: str) -> None:
    """One line per study in the store: the URL of its current plan's runs."""
    from ablate.track import Tracker, quiet_mlflow, runs_url

    try:
        with quiet_mlflow():
            plans = Tracker(uri).current_plans()
    except Exception as exc:  # the UI works without the links
        print(f"  (could not list the studies in {uri}: {type(exc).__name__}: {exc})")
        return
    if not plans:
        print(f"  no ablate study in {uri} yet: `ablate run STUDY.py` (same store) adds one.")
    for name, runs, has_view in plans:
        print(f"  study {name}: {runs_url(runs, base, view=has_view)}", flush=True)


def _cams(study: Study, tracker: Any, results: Any, tmp: Path) -> Path | None:
    """Class activation maps from the kept weights (``train.keep_weights``) of one seed each."""
    if not study.uses_builtin_loop or not study.variants[0].config.get("train.keep_weights"):
        return None
    from ablate.report.cams import study_cams

    weights: dict[str, Path | None] = {}
    for v in study.variants:
        rows = results[(results["variant"] == v.id) & (results["status"] == "finished")]
        run_id = rows.sort_values("seed").iloc[0]["run_id"] if len(rows) else None
        weights[v.label] = tracker.download(run_id, "weights.pt", tmp / v.id) if run_id else None
    return study_cams(study, weights, tmp / "cams.png")


def _samples(study: Study, tracker: Any, results: Any) -> dict[str, str] | None:
    """The last generated text of each variant's first finished seed (language models)."""
    samples = {}
    for v in study.variants:
        rows = results[(results["variant"] == v.id) & (results["status"] != "failed")]
        if len(rows):
            text = tracker.last_text(rows.iloc[0]["run_id"], "samples")
            if text is not None:
                samples[v.label] = text
    return samples or None


def _reproduce(args: argparse.Namespace) -> str:
    extra = "".join(f" --study {args.study}" for _ in [0] if args.study)
    extra += "".join(f" --set {shlex.quote(o)}" for o in args.overrides)
    extra += f" --seeds {args.seeds}" if args.seeds else ""
    extra += f" --min-effect {args.min_effect:g}" if args.min_effect is not None else ""
    extra += f" --tune-trials {args.tune_trials}" if args.tune_trials else ""
    uri = f" --tracking-uri {shlex.quote(args.tracking_uri)}" if args.tracking_uri else ""
    return (f"ablate run {args.study_file}{extra}{uri}\n"
            f"ablate report {args.study_file}{extra}{uri}")


def _notes(results: Any, left_out: list[tuple[str, int]]) -> list[str]:
    """One line each on what the report left out and on trials trained differently."""
    notes = []
    if left_out:
        n = sum(count for _, count in left_out)
        groups = "; ".join(f"{what} ({count})" for what, count in left_out[:4])
        notes.append(f"This report covers the {len(results)} trials of this plan only. Left out: "
                     f"{n} trial run{'s' * (n != 1)} of other plans of this study, which differ "
                     f"in: {groups}{'; ...' if len(left_out) > 4 else ''}.")
    differs = [k for k, v in _environment(results).items() if v.startswith("DIFFERS")]
    if differs:
        notes.append(f"Warning: these trials were trained in different environments or code "
                     f"(different {', '.join(differs)}: see Environment), so a difference "
                     f"between variants may come from there.")
    return notes


def _environment(results: Any) -> dict[str, str]:
    """What the trials were trained with, from their own records (``ablate.env.*`` tags): one
    value per key, or every value with its trial count where the trials differ."""
    env = {}
    for column in [c for c in results.columns if c.startswith("env.")] + ["code"]:
        values = results[column].fillna("").astype(str)
        values = values[values != ""]
        if values.empty:
            continue
        counts = values.value_counts()
        name = "code fingerprint" if column == "code" else column[len("env."):].replace("_", " ")
        env[name] = (counts.index[0] if len(counts) == 1 else
                     "DIFFERS: " + ", ".join(f"{v} ({n} trial{'s' * (n != 1)})"
                                             for v, n in counts.items()))
    return env


def _dry_run(study: Study, tracker: Any) -> int:
    print_plan(study)
    study = _current(study, tracker)
    exp_id = tracker.experiment_id(study)
    done = tracker.trial_records(exp_id) if exp_id is not None else {}
    pending = [t for t in study.trials
               if done.get((t.variant.id, t.seed)) is None
               or not done[(t.variant.id, t.seed)].done]
    print(f"dry run: {len(study.trials) - len(pending)} trials done, {len(pending)} would run "
          f"(tracking store {tracker.uri}); nothing was trained.")
    for t in pending:
        record = done.get((t.variant.id, t.seed))
        state = f"{record.status}, resumes" if record else "new"
        print(f"  {t.variant.label} seed {t.seed} ({t.key}): {state}")
    return EXIT_OK


def _check_data(study: Study) -> None:
    """Load each distinct data config once and check what ``data=`` returns."""
    if study.uses_builtin_loop:
        from ablate.train.build import check_data

        check_data(study)


def _check_models(study: Study) -> None:
    if study.uses_builtin_loop:
        from ablate.train.build import check_models

        check_models(study)


def print_plan(study: Study) -> None:
    from rich.console import Console
    from rich.table import Table

    names = short_names(study.factors)
    table = Table(title=f"study {study.name!r}: {study.design} design", title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("variant")
    table.add_column("label", overflow="fold")
    for key in study.factors:
        table.add_column(names[key])
    for i, v in enumerate(study.variants):
        cells = [_cell(v.levels[k], v.levels[k] != study.baseline[k]) for k in study.factors]
        table.add_row(str(i), v.id, v.label, *cells)
    console = Console() if Console().is_terminal else Console(width=200)
    console.print(table)
    n_var, n_seeds = len(study.variants), len(study.seeds)
    if study.adaptive:
        console.print(_adaptive_plan(study), highlight=False)
    else:
        console.print(
            f"{n_var} variant{'s' * (n_var != 1)} x {n_seeds} seed{'s' * (n_seeds != 1)} "
            f"{list(study.seeds)} = {n_var * n_seeds} trials; metric {study.metric} "
            f"({study.mode})"
        )
    if study.min_effect is not None:
        console.print(f"smallest effect of interest: ±{study.min_effect:g} {study.metric} "
                      f"(min_effect): a comparison whose interval lies inside it is "
                      f"negligible; one that crosses it is undecided", highlight=False)
    if study.tune:
        space = ", ".join(f"{k} {v}" for k, v in study.tune.items())
        console.print(f"tuning: each variant first gets {study.tune_trials} tuning trials "
                      f"(Optuna TPE, seed {study.tune_seed}) over {space}", highlight=False)
    if study.resolution is not None:
        console.print(f"fractional design of resolution {_roman(study.resolution)}; aliases:")
        for effect, aliased in study.aliases.items():
            console.print(f"  {effect} = {' = '.join(aliased)}", highlight=False)


def _adaptive_plan(study: Study) -> str:
    """What ``seeds="adaptive"`` will do, in a few lines."""
    low, high, n_var = study.min_seeds, study.max_seeds, len(study.variants)
    decided = "helps, hurts, negligible" if study.min_effect is not None else "helps, hurts"
    return (
        f"{n_var} variant{'s' * (n_var != 1)}, adaptive seeds: {low} to {high} per variant "
        f"(seeds 0..{high - 1}): {n_var * low} to {n_var * high} trials; metric {study.metric} "
        f"({study.mode})\n"
        f"rule: every variant starts with seeds 0..{low - 1}; after each round each variant is "
        f"compared with the baseline, paired by seed (group-sequential boundaries, Lan-DeMets "
        f"O'Brien-Fleming-type spending over the looks at {low}..{high} seeds, step-down across "
        f"the variants, alpha 0.05); a decided variant ({decided}, unstable) stops, the others "
        f"and the baseline get the next seed, until {high}"
        + ("" if study.min_effect is not None else
           "; without min_effect a variant with no effect is never decided, so it runs to "
           f"{high} seeds (set min_effect to stop it as negligible)"))


def _cell(value: Any, changed: bool) -> str:
    text = value if isinstance(value, str) else repr(value)
    text = text.replace("[", "\\[")
    return f"[bold]{text}[/bold]" if changed else text


def _roman(n: int) -> str:
    return {3: "III", 4: "IV", 5: "V", 6: "VI"}.get(n, str(n))


if __name__ == "__main__":
    sys.exit(main())
