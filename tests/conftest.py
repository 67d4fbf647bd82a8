"""Shared fixtures: small data the tests write themselves (nothing is downloaded)."""

from __future__ import annotations

import os
import pickle
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

# The suite runs on 2 pytest-xdist workers (pyproject.toml: -n 2 --dist loadgroup): many tests
# wait on subprocesses, servers and Ray start-up, so two at a time roughly halve the wall time on
# 2 cores. Each test file stays on one worker (its module fixtures are built once), and the files
# that start Ray share one worker: two Ray instances at once would double the heaviest start-up.
RAY_FILES = {"test_ray.py", "test_adaptive.py", "test_cluster.py", "test_readme_recipe.py"}

# `ablate run` trains one trial after another in its own process unless a test asks for worker
# processes (tests/test_workers.py): most tests are about what one trial does (interrupts, kills,
# failures in order), and starting workers costs seconds per run. Subprocesses inherit this.
os.environ["ABLATE_WORKERS"] = "1"


def pytest_collection_modifyitems(config, items):
    for item in items:
        name = item.path.name
        group = "ray" if name in RAY_FILES else str(item.path.relative_to(config.rootpath))
        item.add_marker(pytest.mark.xdist_group(group))


def write_cifar(folder, per_batch=4):
    """CIFAR-10's pickle format: uint8 rows of 3072 (R, G, B planes) and a list of labels."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]
    batches = {}
    for k, name in enumerate(names):
        labels = [(k + j) % 10 for j in range(per_batch)]
        batches[name] = (rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8), labels)
        with open(folder / name, "wb") as f:
            pickle.dump({"data": batches[name][0], "labels": labels}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{k}" for k in range(10)]}, f)
    return batches


@pytest.fixture
def cifar_files(tmp_path, monkeypatch):
    """A CIFAR-10 root with tiny fixture batches; returns (root, batches)."""
    root = tmp_path / "cifar"
    batches = write_cifar(root / "cifar-10-batches-py")
    # Fixture files cannot match CIFAR-10's MD5 sums: bypass the check as torchvision's tests do.
    monkeypatch.setattr("torchvision.datasets.cifar.check_integrity", lambda *a, **k: True)
    return root, batches


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float) -> bool:
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def mlflow_server(tmp_path):
    """A real ``mlflow server`` on 127.0.0.1 with its own sqlite store and artifact folder."""
    port = free_port()
    folder = tmp_path / "server"
    (folder / "artifacts").mkdir(parents=True)
    log = open(folder / "server.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{folder / 'store.db'}",
         "--artifacts-destination", str(folder / "artifacts"), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            return proc.poll() is not None  # stop waiting if it died

    try:
        assert wait_for(answers, 120) and proc.poll() is None, (
            folder / "server.log").read_text()[-3000:]
        yield url
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            pass
        log.close()
