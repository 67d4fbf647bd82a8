"""`ablate ui`: a real MLflow UI on 127.0.0.1, and a warning before exposing it; the saved views
and links that keep a study in MLflow's model-training view; MLflow's run links silenced."""

from __future__ import annotations

import importlib.metadata
import inspect
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request

import pytest

from ablate import Study, cli, ui
from ablate.track import PlanRuns, quiet_mlflow, ranked_url, runs_url
from ablate.track.ui import UI_DEFAULTS, ranked_state, ui_app, ui_page, view_state


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ui_serves_the_store_on_loopback(tmp_path):
    port = free_port()
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    proc = subprocess.Popen([sys.executable, "-m", "ablate.cli", "ui", "--tracking-uri", uri,
                             "--port", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, "TMPDIR": str(tmp_path)})  # its server's log
    try:
        deadline, status, page = time.time() + 90, None, ""
        while time.time() < deadline and status is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as r:
                    status, page = r.status, r.read().decode()
            except OSError:
                time.sleep(0.5)
        assert status == 200
        assert "mlflow.workflowType_v1" in page  # ablate's app: MLflow's page with its defaults
    finally:  # the UI's server and its workers form one process group
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        time.sleep(1)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_ui_warns_before_binding_beyond_loopback(tmp_path, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(cli, "serve_ui", lambda cmd, uri, base: calls.append((cmd, base)) or 0)
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    assert cli.main(["ui", "--tracking-uri", uri]) == 0
    command, base = calls[-1]
    assert command[command.index("--host") + 1] == "127.0.0.1"
    assert base == "http://127.0.0.1:5000"
    assert "WITHOUT authentication" not in capsys.readouterr().err
    assert cli.main(["ui", "--tracking-uri", uri, "--host", "0.0.0.0"]) == 0
    assert "WITHOUT authentication" in capsys.readouterr().err
    assert calls[-1][1] == "http://127.0.0.1:5000"  # where to reach it from this machine
    assert cli.main(["ui", "--tracking-uri", "http://127.0.0.1:5000"]) == 2


def test_ui_runs_the_lightest_server():
    """One web worker and no background job runners: what serving the runs table needs."""
    command = cli.ui_command("sqlite:///m.db", "127.0.0.1", 5000)
    assert command[command.index("--workers") + 1] == "1"
    assert cli.UI_ENV["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"


def test_ui_serves_ablates_app_through_mlflows_plugin_entry_point():
    """`mlflow server --app-name ablate` finds the app as it finds an installed plugin's: an
    entry point of the group mlflow.app, in the folder `ablate ui` puts on its PYTHONPATH; the
    app is a factory (uvicorn --factory), MLflow's own app with its page through ui_page."""
    command = cli.ui_command("sqlite:///m.db", "127.0.0.1", 5000)
    assert command[command.index("--app-name") + 1] == ui.APP_NAME
    folder = ui._app_entry_point()
    try:
        points = [p for d in importlib.metadata.distributions(path=[folder])
                  for p in d.entry_points if p.group == "mlflow.app"]
        assert [(p.name, p.value) for p in points] == [(ui.APP_NAME, ui.APP)]
        assert points[0].load() is ui_app and inspect.isfunction(ui_app)
    finally:
        shutil.rmtree(folder)


def test_ui_page_stores_the_training_view_and_a_closed_assistant_before_mlflows_code():
    page = ('<!doctype html><html><head><meta charset="utf-8"/><script defer="defer" '
            'src="static-files/static/js/main.js"></script></head><body></body></html>')
    out = ui_page(page)
    script = out[out.index("<head>") + len("<head>"):out.index("</script>") + len("</script>")]
    assert out.index(script) < out.index("main.js")  # before MLflow's code reads them
    assert '"mlflow.workflowType_v1": "machine_learning"' in script
    assert '"mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": true' in script
    assert "localStorage.getItem(k)===null" in script  # a user's own choice is kept
    assert set(UI_DEFAULTS) == {"mlflow.workflowType_v1",
                                "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1"}
    assert out.replace(script, "") == page


def _train(config, run):
    run.log({"loss": 1.0}, step=0)


@pytest.mark.parametrize("mode", ["max", "min"])
def test_saved_views_put_the_verdict_and_metric_first_and_rank_the_variants(mode):
    study = Study("views", train=_train, factors={"opt.lr": [0.1, 0.01]}, seeds=2,
                  metric="loss", mode=mode)
    verdict, metric = "tags.`ablate.verdict`", "metrics.`loss`"
    runs, ranked = view_state(study), ranked_state(study)
    for state in (runs, ranked):
        assert state["selectedColumns"][:2] == [verdict, metric]
        assert state["columnOrder"][:3] == ["attributes.`Run Name`", verdict, metric]
        assert "params.`opt.lr`" in state["selectedColumns"]
        assert f"plan-{study.plan}" in state["searchFilter"]
    # the runs: every run of the plan, by creation (MLflow nests the seeds only then)
    assert runs["orderByKey"] == "attributes.start_time" and runs["orderByAsc"] is True
    assert "ablate.role" not in runs["searchFilter"]
    # ranked: the variants alone, by the metric, best first
    assert "tags.`ablate.role` = 'variant'" in ranked["searchFilter"]
    assert ranked["orderByKey"] == metric
    assert ranked["orderByAsc"] is (mode == "min")
    plan = PlanRuns("7", "r", study.plan)
    assert ranked_url(plan, "http://h:1") == (
        f"http://h:1/#/experiments/7/runs?workflowType=machine_learning"
        f"&viewStateShareKey=ablate-ranked-{study.plan}")
    assert runs_url(plan, "http://h:1").endswith(f"&viewStateShareKey=ablate-plan-{study.plan}")


def test_quiet_mlflow_turns_off_mlflows_run_links_and_restores_the_setting(monkeypatch):
    from mlflow.environment_variables import MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT as links

    monkeypatch.delenv(links.name, raising=False)
    with quiet_mlflow():
        assert links.get() is True
        with quiet_mlflow():
            assert links.get() is True
        assert links.get() is True
    assert links.name not in os.environ


SERVED = """
from ablate import Study

def train(config, run):
    for epoch in range(2):
        run.log({"score": config["opt.level"] * (epoch + 1)}, step=epoch)

study = Study("served", train=train, factors={"opt.level": [1.0, 2.0]}, seeds=2,
              metric="score", mode="max")
"""


@pytest.mark.slow
def test_a_run_on_a_tracking_server_prints_ablates_links_not_mlflows(tmp_path, mlflow_server,
                                                                      capsys):
    """MLflow prints "View run / View experiment" links (to its GenAI view) whenever a run on a
    tracking server ends; `ablate run` and `ablate report` print only theirs, which open the
    model-training view: the runs and the variants ranked by the metric."""
    path = tmp_path / "served.py"
    path.write_text(textwrap.dedent(SERVED))
    common = ["--tracking-uri", mlflow_server]
    assert cli.main(["run", str(path), *common, "--checkpoint-dir", str(tmp_path / "ck")]) == 0
    assert cli.main(["report", str(path), *common, "--out", str(tmp_path / "report")]) == 0
    out = capsys.readouterr().out
    assert "View run" not in out and "View experiment" not in out
    assert out.count("workflowType=machine_learning&viewStateShareKey=ablate-ranked-") == 2
    assert f"{mlflow_server}/#/experiments/" in out
