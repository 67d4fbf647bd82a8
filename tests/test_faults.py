"""Faults a long study meets on a shared machine: signals, out-of-memory, kills at random points.

Real processes, real MLflow (sqlite in a temp dir), tiny real training.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from ablate.cli import main

SLOW_USER = """
import time
from ablate import Study

def train(config, run):
    state = run.load_checkpoint() or {"epoch": 0, "value": float(run.seed)}
    for epoch in range(state["epoch"], 6):
        time.sleep(config["opt.pause"])
        if config["opt.mode"] == "oom":
            import torch
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        state["value"] += 0.25
        run.log({"loss": 1.0 / (epoch + 1), "score": state["value"]}, step=epoch)
        run.save_checkpoint({"epoch": epoch + 1, "value": state["value"]})

study = Study("faults", train=train, config={"opt.pause": PAUSE},
              factors={"opt.mode": MODES}, seeds=2, metric="score")
"""


def write(tmp_path: Path, pause: float, modes: list[str]) -> Path:
    path = tmp_path / "faults.py"
    path.write_text(textwrap.dedent(SLOW_USER).replace("PAUSE", repr(pause))
                    .replace("MODES", repr(modes)))
    return path


def trial_runs(uri: str) -> list:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("faults")
    return [r for r in client.search_runs([exp.experiment_id])
            if r.data.tags.get("ablate.role") == "trial"]


def cli(path: Path, uri: str, ck: Path) -> list[str]:
    return [sys.executable, "-m", "ablate.cli", "run", str(path), "--tracking-uri", uri,
            "--checkpoint-dir", str(ck)]


def test_out_of_memory_fails_the_trial_and_the_next_one_runs(tmp_path):
    path = write(tmp_path, 0.0, ["ok", "oom"])
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    assert main(["run", str(path), "--tracking-uri", uri, "--checkpoint-dir",
                 str(tmp_path / "ck")]) == 1
    runs = {(r.data.tags["ablate.label"], r.data.tags["ablate.seed"]): r for r in trial_runs(uri)}
    assert len(runs) == 4
    for seed in ("0", "1"):
        oom = runs[("mode=oom", seed)]
        assert oom.data.tags["ablate.status"] == "failed"
        assert "OutOfMemoryError" in oom.data.tags["ablate.error"]
        assert runs[("baseline", seed)].data.tags["ablate.status"] == "finished"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_ctrl_c_stop_cleanly_with_130_and_resume(tmp_path, sig):
    path = write(tmp_path, 0.3, ["ok", "ok2"])
    uri, ck = f"sqlite:///{tmp_path / 'm.db'}", tmp_path / "ck"
    # SIGINT as a terminal sends it, even when these tests were started with SIGINT ignored
    proc = subprocess.Popen(cli(path, uri, ck), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while not list(ck.glob("faults/*/checkpoint.pt")) and time.time() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    (stopped,) = [r for r in trial_runs(uri) if r.data.tags["ablate.status"] == "running"]
    assert stopped.info.status == "KILLED"
    assert main(["run", str(path), "--tracking-uri", uri, "--checkpoint-dir", str(ck)]) == 0
    runs = trial_runs(uri)
    assert len(runs) == 4 and stopped.info.run_id in {r.info.run_id for r in runs}
    client = MlflowClient(uri)
    for r in runs:
        assert r.data.metrics["final_score"] == int(r.data.tags["ablate.seed"]) + 1.5
        steps = [m.step for m in client.get_metric_history(r.info.run_id, "score")]
        assert sorted(steps) == list(range(6))  # every epoch exactly once


KILL_USER = """
import os
from ablate import Study

def mark(what):  # progress the kill test waits for: one line per point reached
    with open(EVENTS, "a") as f:
        f.write(f"{os.getpid()} {what}\\n")

def train(config, run):
    state = run.load_checkpoint() or {"epoch": 0, "value": float(run.seed)}
    for epoch in range(state["epoch"], 6):
        mark("epoch")
        state["value"] += 0.25
        run.log({"loss": 1.0 / (epoch + 1), "score": state["value"]}, step=epoch)
        mark("logged")
        run.save_checkpoint({"epoch": epoch + 1, "value": state["value"]})
        mark("saved")

study = Study("faults", train=train, factors={"opt.mode": ["ok", "ok2"]}, seeds=2,
              metric="score")
"""


def wait_for(predicate, proc: subprocess.Popen, what: str, timeout: float = 300) -> bool:
    """Poll ``predicate`` until it holds (True) or ``proc`` ended (False)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            return False
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.002)
    return True


@pytest.mark.slow
def test_kill_9_at_random_points_loses_and_duplicates_nothing(tmp_path):
    """Kill `ablate run` with SIGKILL at seeded random points of its progress (while MLflow
    creates the new store, mid-epoch, between logging and checkpointing, just after a
    checkpoint), restart it each time; the finished study equals a clean run.

    Kill points are counted in events the program reports (lines the study appends to a file,
    the store's temporary file appearing), never in seconds, so the test holds on a loaded or
    a quiet machine alike.
    """
    events = tmp_path / "events.txt"
    path = tmp_path / "faults.py"
    path.write_text(textwrap.dedent(KILL_USER).replace("EVENTS", repr(str(events))))
    clean = f"sqlite:///{tmp_path / 'clean.db'}"
    assert main(["run", str(path), "--tracking-uri", clean, "--checkpoint-dir",
                 str(tmp_path / "c0")]) == 0
    events.unlink()
    uri, ck = f"sqlite:///{tmp_path / 'm.db'}", tmp_path / "ck"
    rng = random.Random(7)

    def seen() -> int:
        return len(events.read_text().splitlines()) if events.exists() else 0

    def start() -> subprocess.Popen:
        return subprocess.Popen(cli(path, uri, ck), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)

    # the first kill lands while MLflow migrates the new store (its temporary file exists)
    proc = start()
    creating = wait_for(lambda: any(tmp_path.glob(".m.db.creating-*")), proc, "store creation")
    assert creating, "the run ended before it created the store"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "m.db").exists()  # nothing half-created is left under the real name
    kills = 1
    for _ in range(8):  # then after a seeded number of progress events (3 per epoch, 72 in all)
        before, target = seen(), rng.randint(1, 8)
        proc = start()
        if not wait_for(lambda: seen() >= before + target, proc, f"{target} events"):
            break
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        kills += 1
    assert kills >= 6  # each round kills within 8 events, far fewer than the study needs
    assert main(["run", str(path), "--tracking-uri", uri, "--checkpoint-dir", str(ck)]) == 0
    runs = trial_runs(uri)
    assert len(runs) == 4  # every trial exactly once
    client = MlflowClient(uri)
    reference = {(r.data.tags["ablate.variant"], r.data.tags["ablate.seed"]): r
                 for r in trial_runs(clean)}
    for r in runs:
        ref = reference[(r.data.tags["ablate.variant"], r.data.tags["ablate.seed"])]
        assert r.data.tags["ablate.status"] == "finished"
        assert r.data.metrics["final_score"] == ref.data.metrics["final_score"]
        history = sorted((m.step, m.value) for m in
                         client.get_metric_history(r.info.run_id, "score"))
        ref_history = sorted((m.step, m.value) for m in
                             MlflowClient(clean).get_metric_history(ref.info.run_id, "score"))
        assert history == ref_history  # nothing lost, nothing logged twice


def start_server(folder: Path, port: int) -> subprocess.Popen:
    """A real ``mlflow server`` on 127.0.0.1 (its own sqlite store), answering /health."""
    import urllib.request

    (folder / "artifacts").mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{folder / 'store.db'}",
         "--artifacts-destination", str(folder / "artifacts"), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.3)
    raise AssertionError("mlflow server did not start")


def stop_server(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


@pytest.mark.slow
def test_tracking_server_lost_mid_study_stops_cleanly_and_resumes(tmp_path, monkeypatch,
                                                                  capsys):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    folder = tmp_path / "server"
    server = start_server(folder, port)
    flag = tmp_path / "killed"
    # the second trial kills the server at the start of its epoch 2, once
    src = textwrap.dedent(SLOW_USER).replace("PAUSE", "0.0").replace("MODES", "['ok', 'ok2']")
    kill = (f"        if run.seed == 1 and epoch == 2 and not os.path.exists({str(flag)!r}):\n"
            f"            open({str(flag)!r}, 'w').close()\n"
            f"            os.killpg({server.pid}, 9)\n")
    src = "import os\n" + src.replace('        state["value"] += 0.25',
                                      kill + '        state["value"] += 0.25')
    path = tmp_path / "faults.py"
    path.write_text(src)
    for key in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
                "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        monkeypatch.delenv(key, raising=False)  # ablate's own bounded waits apply
    uri, ck = f"http://127.0.0.1:{port}", tmp_path / "ck"
    try:
        t0 = time.perf_counter()
        assert main(["run", str(path), "--tracking-uri", uri, "--checkpoint-dir", str(ck)]) == 1
        assert time.perf_counter() - t0 < 300  # it hung for 9.5+ minutes; now ~10 s of retries
        err = capsys.readouterr().err
        assert "failed while recording trial 'baseline' seed 1" in err
        assert "resumes in the same MLflow run" in err
        assert list(ck.glob("faults/*/checkpoint.pt"))  # kept for the resume
        server = start_server(folder, port)  # the store is back
        assert main(["run", str(path), "--tracking-uri", uri, "--checkpoint-dir", str(ck)]) == 0
        runs = trial_runs(uri)
        assert len(runs) == 4  # nothing duplicated
        client = MlflowClient(uri)
        for r in runs:
            assert r.data.tags["ablate.status"] == "finished"
            assert r.data.metrics["final_score"] == int(r.data.tags["ablate.seed"]) + 1.5
            steps = sorted(m.step for m in client.get_metric_history(r.info.run_id, "score"))
            assert steps == list(range(6))  # nothing lost, nothing logged twice
    finally:
        stop_server(server)
