"""``from_arrays``: images to ``ImageData``, tabular and sequence inputs to ``ArrayData``."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from ablate.cli import main
from ablate.data import ArrayData, ImageData, from_arrays

RNG = np.random.default_rng(0)


def labels(n: int, k: int = 3) -> np.ndarray:
    return np.arange(n) % k


def test_uint8_hwc_images_become_normalised_image_data():
    x = RNG.integers(0, 256, (12, 5, 4, 3), dtype=np.uint8)
    xv = RNG.integers(0, 256, (6, 5, 4, 3), dtype=np.uint8)
    data = from_arrays(x, labels(12), xv, labels(6), classes=["a", "b", "c"], augment=True)
    assert isinstance(data, ImageData) and data.augment and data.classes == ["a", "b", "c"]
    assert data.x_train.shape == (12, 3, 5, 4) and data.x_train.dtype == torch.float32
    assert data.x_train.is_contiguous() and data.y_train.dtype == torch.int64
    pixels = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255
    mean = pixels.mean((0, 2, 3))
    assert torch.allclose(torch.tensor(data.mean), mean, atol=1e-6)
    std = torch.tensor(data.std)[:, None, None]
    assert torch.allclose(data.x_train * std + mean[:, None, None], pixels, atol=1e-5)
    assert data.model_kwargs == {"num_classes": 3, "in_channels": 3, "image_size": 5}


def test_grayscale_and_float_chw_images():
    gray = from_arrays(RNG.integers(0, 256, (8, 6, 6), dtype=np.uint8), labels(8, 2),
                       RNG.integers(0, 256, (4, 6, 6), dtype=np.uint8), labels(4, 2))
    assert gray.x_train.shape == (8, 1, 6, 6) and gray.classes == ["0", "1"]
    x = torch.rand(10, 2, 4, 4, dtype=torch.float64) * 3 + 1
    data = from_arrays(x, torch.tensor(labels(10, 2)), x[:4], torch.tensor(labels(4, 2)))
    assert isinstance(data, ImageData) and data.x_train.dtype == torch.float32
    assert torch.allclose(data.x_train.mean((0, 2, 3)), torch.zeros(2), atol=1e-5)
    assert x.min() >= 1  # the caller's tensor is left as it was
    again = from_arrays(data.x_train, data.y_train, data.x_val, data.y_val)
    assert torch.allclose(again.x_train, data.x_train, atol=1e-4)  # normalised: nearly unchanged


def test_tabular_and_sequences_become_array_data():
    x = RNG.normal(size=(20, 7))
    data = from_arrays(x, labels(20), x[:5], labels(5))
    assert isinstance(data, ArrayData) and not hasattr(data, "mean")
    assert data.x_train.dtype == torch.float32 and data.x_train.shape == (20, 7)
    assert torch.allclose(data.x_train.double(), torch.from_numpy(x))  # kept as given
    assert data.model_kwargs == {"num_classes": 3, "in_features": 7}
    assert data.task == "classification" and data.steps_per_epoch == 1
    steps = from_arrays(RNG.normal(size=(9, 11, 2)).astype(np.float32), labels(9),
                        np.zeros((3, 11, 2), np.float32), labels(3))
    assert steps.x_train.shape == (9, 11, 2) and steps.model_kwargs["in_features"] == 2
    tokens = from_arrays(RNG.integers(0, 50, (9, 11)), labels(9), np.full((3, 11), 61), labels(3))
    assert tokens.x_train.dtype == torch.int64
    assert tokens.model_kwargs == {"num_classes": 3, "in_features": 11, "vocab_size": 62}


def test_array_batches_are_shuffled_reproducibly_and_move_to_devices():
    x = torch.arange(50, dtype=torch.float32)[:, None].repeat(1, 3)
    data = from_arrays(x, torch.arange(50) % 2, x[:7], torch.arange(7) % 2, batch_size=16)
    batches = list(data.train_batches(seed=0, epoch=0))
    assert [len(b) for b, _ in batches] == [16, 16, 16, 2]
    order = torch.cat([b[:, 0] for b, _ in batches]).long()
    assert sorted(order.tolist()) == list(range(50)) and order.tolist() != list(range(50))
    assert all(torch.equal(y, xb[:, 0].long() % 2) for xb, y in batches)
    again = torch.cat([b[:, 0] for b, _ in data.train_batches(seed=0, epoch=0)]).long()
    other = torch.cat([b[:, 0] for b, _ in data.train_batches(seed=0, epoch=1)]).long()
    assert torch.equal(again, order) and not torch.equal(other, order)
    xs, ys = zip(*data.val_batches())
    assert torch.equal(torch.cat(xs), data.x_val) and torch.equal(torch.cat(ys), data.y_val)
    moved = data.to("cpu")
    assert moved.device == torch.device("cpu") and torch.equal(moved.x_train, data.x_train)


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((np.zeros((5, 3)), labels(4), np.zeros((2, 3)), labels(2)), {},
         "y_train has 4 labels but x_train has 5 samples"),
        ((np.zeros((5, 3)), labels(5), np.zeros((2, 3)), np.array([0, 3])),
         {"classes": ["a", "b", "c"]}, r"y_val has labels in \[0, 3\], but there are 3 classes"),
        ((np.zeros((5, 3)), labels(5), np.zeros((2, 3)), np.array([0, -1])), {},
         r"y_val has labels in \[-1, 0\]"),
        ((np.zeros((5, 3)), labels(5), np.zeros((2, 3)), labels(2)), {"classes": ["a", "b"]},
         "y_train has labels in .* 2 classes"),
        ((np.zeros(5), labels(5), np.zeros(2), labels(2)), {},
         r"x_train must be \[N, F\] .* got \[5\]. Fix: x\[:, None\]"),
        ((np.zeros((5, 3)), labels(5).astype(float), np.zeros((2, 3)), labels(2)), {},
         "y_train must be integer class ids"),
        ((np.zeros((5, 3)), labels(5)[:, None], np.zeros((2, 3)), labels(2)), {},
         "y_train must be integer class ids"),
        ((np.zeros((5, 3)), np.zeros(5, int), np.zeros((2, 3)), np.zeros(2, int)), {},
         "at least 2 classes"),
        ((np.zeros((5, 3)), labels(5), np.zeros((2, 4)), labels(2)), {},
         "x_val .* differs from x_train"),
        ((np.zeros((5, 3)), labels(5), np.zeros((2, 3)), labels(2)), {"augment": True},
         "augment=True needs images"),
        ((np.zeros((5, 3, 8, 8), np.uint8), labels(5), np.zeros((2, 3, 8, 8), np.uint8),
          labels(2)), {}, r"1 to 4 channels.* x.permute\(0, 2, 3, 1\)"),
        ((np.zeros((5, 8, 8, 3), np.float32), labels(5), np.zeros((2, 8, 8, 3), np.float32),
          labels(2)), {}, r"\[5, 8, 8, 3\] looks channels-last. Fix: x.permute\(0, 3, 1, 2\)"),
        ((np.zeros((5, 3, 4, 4), np.int32), labels(5), np.zeros((2, 3, 4, 4), np.int32),
          labels(2)), {}, r"images must be uint8 .* got torch.int32"),
        ((np.array([["a"]] * 5), labels(5), np.zeros((2, 3)), labels(2)), {},
         "numeric numpy array"),
        ((np.zeros((0, 3)), labels(0), np.zeros((2, 3)), labels(2)), {}, "x_train is empty"),
    ],
)
def test_bad_inputs_are_named(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        from_arrays(*args, **kwargs)


STUDY = """
import numpy as np
from torch import nn

from ablate import Study
from ablate.data import from_arrays


def blobs(*, batch_size=32, n=300):
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=3, size=(3, 8))
    y = np.arange(n + 150) % 3
    x = (centres[y] + rng.normal(size=(len(y), 8))).astype(np.float32)
    return from_arrays(x[:n], y[:n], x[n:], y[n:], classes=["a", "b", "c"],
                       batch_size=batch_size)


class MLP(nn.Sequential):
    def __init__(self, *, in_features, num_classes, hidden=16, batch_norm=True):
        norm = nn.BatchNorm1d(hidden) if batch_norm else nn.Identity()
        super().__init__(nn.Linear(in_features, hidden), norm, nn.ReLU(),
                         nn.Linear(hidden, num_classes))


study = Study("tabular", model=MLP, data=blobs,
              config={"train.epochs": 3, "train.optimizer": "adam", "train.lr": 0.01},
              factors={"model.batch_norm": [True, False]}, seeds=1)
"""


def test_builtin_loop_learns_tabular_arrays(tmp_path):
    path = tmp_path / "tabular.py"
    path.write_text(textwrap.dedent(STUDY))
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    assert main(["run", str(path), "--tracking-uri", uri,
                 "--checkpoint-dir", str(tmp_path / "ck")]) == 0
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("tabular")
    runs = [r for r in client.search_runs([exp.experiment_id])
            if r.data.tags.get("ablate.role") == "trial"]
    assert {r.data.tags["ablate.label"] for r in runs} == {"baseline", "batch_norm=False"}
    for r in runs:
        assert r.data.tags["ablate.status"] == "finished"
        assert r.data.metrics["val_acc"] > 0.9  # chance is 1/3
        assert r.data.metrics["n_params"] == 8 * 16 + 16 + 16 * 3 + 3 + (
            32 if r.data.tags["ablate.label"] == "baseline" else 0)
