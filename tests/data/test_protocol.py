"""The data contract of the built-in loop (``ablate.protocols.Data``) and the one base class of
the classification data."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from ablate.data import ArrayData, ClassificationData, ImageData, TextData, from_arrays
from ablate.protocols import Data

RNG = np.random.default_rng(0)


def images() -> ImageData:
    data = from_arrays(RNG.integers(0, 256, (10, 4, 4, 3), dtype=np.uint8), np.arange(10) % 2,
                       RNG.integers(0, 256, (5, 4, 4, 3), dtype=np.uint8), np.arange(5) % 2)
    assert isinstance(data, ImageData)
    return data


def arrays() -> ArrayData:
    data = from_arrays(RNG.normal(size=(10, 3)), np.arange(10) % 2, RNG.normal(size=(5, 3)),
                       np.arange(5) % 2, batch_size=4)
    assert isinstance(data, ArrayData)
    return data


def chars() -> TextData:
    ids = torch.arange(40) % 5
    return TextData(vocab=list("abcde"), train=ids, val=ids.clone(), batch_size=4, bptt=3)


@pytest.mark.parametrize("make", [images, arrays, chars])
def test_every_built_in_data_is_what_the_loop_needs(make):
    data = make()
    assert isinstance(data, Data)
    assert isinstance(data.to("cpu"), Data)
    assert data.task in ("classification", "language_model")
    x, y = next(iter(data.train_batches(seed=0, epoch=0)))
    assert x.device == y.device == data.device
    assert len(list(data.train_batches(seed=0, epoch=0))) == data.steps_per_epoch
    assert next(iter(data.val_batches()))[0].device == data.device


def test_something_without_batches_is_not_data():
    assert not isinstance(object(), Data)


@pytest.mark.parametrize("make", [images, arrays])
def test_classification_data_shares_one_base(make):
    data = make()
    assert isinstance(data, ClassificationData) and data.task == "classification"
    assert data.num_classes == 2 and data.device == torch.device("cpu")
    assert data.steps_per_epoch == -(-len(data.x_train) // data.batch_size)
    x_val = torch.cat([x for x, _ in data.val_batches()])
    assert torch.equal(x_val, data.x_val)
    # the base adds no dataclass fields: each subclass declares its own
    names = [f.name for f in dataclasses.fields(data)]
    assert names[:5] == ["x_train", "y_train", "x_val", "y_val", "classes"]
