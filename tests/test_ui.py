"""`ablate ui`: a real MLflow UI on 127.0.0.1, and a warning before exposing it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from ablate import cli


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
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline, status = time.time() + 90, None
        while time.time() < deadline and status is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as r:
                    status = r.status
            except OSError:
                time.sleep(0.5)
        assert status == 200
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
