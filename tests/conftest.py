"""Shared fixtures: small data the tests write themselves (nothing is downloaded)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest


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
