"""``ablate ui``: MLflow's server on a local store, as light as serving the UI allows, and the
address of each study's runs once it answers."""

from __future__ import annotations

import os
import sys
from typing import Any

from ablate.exits import EXIT_FAILED, EXIT_INVALID, EXIT_OK

# `ablate ui` runs MLflow's server as light as serving the UI allows: one web worker (MLflow
# starts four) and none of the background job runners (huey consumers for GenAI jobs, periodic
# tasks) that MLflow starts by default and the runs table never uses.
UI_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
          "MLFLOW_SERVER_JOB_ENABLE_PERIODIC_TASKS": "false"}
UI_READY_TIMEOUT_S = 600.0  # a busy machine can take minutes to start it
# The app it serves: MLflow's own, whose page opens on the model-training view
# (ablate.track.ui.ui_app), given to `mlflow server --app-name` as MLflow's plugins are: an entry
# point of the group "mlflow.app", here in a folder on the server's PYTHONPATH (_app_entry_point)
APP_NAME = "ablate"
APP = "ablate.track.ui:ui_app"
LOG_TAIL_LINES = 30  # of the server's log, shown when it fails to start


def ui_command(uri: str, host: str, port: int) -> list[str]:
    """The ``mlflow server`` command line for a store (run with :data:`UI_ENV`, and the
    entry point of :data:`APP` on its PYTHONPATH)."""
    return [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", host,
            "--port", str(port), "--workers", "1", "--app-name", APP_NAME]


def ui_base(uri: str, host: str, port: int) -> str:
    """The address to reach the UI from this machine; a warning first when ``host`` exposes it
    beyond this machine. ValueError for a store ``ablate ui`` does not serve (a server's)."""
    if "://" not in uri or uri.startswith(("http://", "https://")):
        raise ValueError(f"ablate ui serves a local store (sqlite:/// or file:), not {uri!r}. "
                         f"Fix: open that tracking server's own UI instead.")
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"ablate ui: warning: binding to {host} exposes every run in {uri} to the "
              f"network WITHOUT authentication. Prefer the default 127.0.0.1 with an SSH tunnel, "
              f"or put an authenticating proxy in front.", file=sys.stderr)
    local = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    return f"http://{f'[{local}]' if ':' in local else local}:{port}"


def serve_ui(command: list[str], uri: str, base: str) -> int:
    """Start MLflow's server, its output going to a log file (whose path it prints), say when
    it answers (its /health) and, last, where each study's runs are; then wait for it. Ctrl-C
    or SIGTERM stops it."""
    import shutil
    import signal
    import subprocess
    import tempfile
    import time

    fd, log = tempfile.mkstemp(prefix="ablate-ui-", suffix=".log")
    app_dir = _app_entry_point()
    path = os.pathsep.join(filter(None, (app_dir, os.environ.get("PYTHONPATH"))))
    print(f"starting MLflow's UI for {uri} on {base} (the server's log: {log}) ...", flush=True)
    start = time.monotonic()
    try:
        with os.fdopen(fd, "wb") as out:
            proc = subprocess.Popen(command, env={**os.environ, **UI_ENV, "PYTHONPATH": path},
                                    stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT)
    except BaseException:
        shutil.rmtree(app_dir, ignore_errors=True)
        raise

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        if not _wait_for_health(proc, base, start + UI_READY_TIMEOUT_S):
            code = proc.poll()
            print("ablate ui: error: MLflow's server "
                  + (f"exited (code {code})" if code is not None else
                     f"did not answer within {UI_READY_TIMEOUT_S:.0f} s")
                  + f" before serving {base}. Fix: pick a free --port, or check the store "
                  f"{uri}. The end of its log ({log}):\n" + _tail(log), file=sys.stderr)
            return EXIT_INVALID
        print(f"MLflow UI ready at {base} after {time.monotonic() - start:.0f} s (Ctrl-C to "
              f"stop; the server's log: {log}).", flush=True)
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
        shutil.rmtree(app_dir, ignore_errors=True)


def _app_entry_point() -> str:
    """A new folder holding the entry point ``mlflow.app: ablate = APP`` (a package's metadata,
    as an installed plugin has): on the server's PYTHONPATH, `--app-name ablate` finds it."""
    import tempfile
    from pathlib import Path

    folder = Path(tempfile.mkdtemp(prefix="ablate-ui-app-"))
    meta = folder / "ablate_ui_app-0.dist-info"
    meta.mkdir()
    (meta / "METADATA").write_text("Metadata-Version: 2.1\nName: ablate-ui-app\nVersion: 0\n")
    (meta / "entry_points.txt").write_text(f"[mlflow.app]\n{APP_NAME} = {APP}\n")
    return str(folder)


def _tail(log: str) -> str:
    with open(log, errors="replace") as f:
        return "".join(f.readlines()[-LOG_TAIL_LINES:])


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
    """For each study in the store, the URLs of its current plan's runs and of its variants
    ranked by the metric (where the store has that view: `ablate run` and `ablate report` add
    it)."""
    from ablate.track import Tracker, quiet_mlflow, ranked_url, runs_url
    from ablate.track.ui import VIEW_TAG, ranked_key

    try:
        with quiet_mlflow():
            tracker = Tracker(uri)
            plans = [(name, runs, has_view,
                      tracker.client.get_experiment(runs.experiment_id).tags)
                     for name, runs, has_view in tracker.current_plans()]
    except Exception as exc:  # the UI works without the links
        print(f"  (could not list the studies in {uri}: {type(exc).__name__}: {exc})")
        return
    if not plans:
        print(f"  no ablate study in {uri} yet: `ablate run STUDY.py` (same store) adds one.")
    for name, runs, has_view, tags in plans:
        print(f"  study {name}: {runs_url(runs, base, view=has_view)}", flush=True)
        if VIEW_TAG + ranked_key(runs.plan) in tags:
            metric = tags.get("mlflow.experiment.primaryMetric.name", "the metric")
            print(f"  study {name}, variants ranked by {metric}: {ranked_url(runs, base)}",
                  flush=True)
