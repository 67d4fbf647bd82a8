"""Shared fixtures: small data the tests write themselves (nothing is downloaded)."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

# The suite runs on 2 pytest-xdist workers (pyproject.toml: -n 2 --dist loadgroup): many tests
# wait on subprocesses, servers and Ray start-up, so two at a time roughly halve the wall time on
# 2 cores. Each test file stays on one worker (its module fixtures are built once), and the files
# that start Ray share one worker: two Ray instances at once would double the heaviest start-up.
RAY_FILES = {"test_ray.py", "test_adaptive.py", "test_cluster.py"}

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
