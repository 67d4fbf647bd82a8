import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ablate.data import ImageData, cifar10, digits

N, C, SIZE = 100, 3, 8


def encoded_data(**kwargs) -> ImageData:
    """Every pixel is unique and non-zero and encodes its image index: (value - 1) // 1000."""
    i = torch.arange(N, dtype=torch.float32)[:, None, None, None]
    ch = torch.arange(C)[:, None, None]
    h, w = torch.arange(SIZE)[:, None], torch.arange(SIZE)
    x = i * 1000 + ch * 100 + h * 10 + w + 1
    y = torch.arange(N) % 10
    kwargs = {"batch_size": 32, **kwargs}
    return ImageData(
        x_train=x,
        y_train=y,
        x_val=x[:30].clone(),
        y_val=y[:30].clone(),
        classes=[str(k) for k in range(10)],
        mean=(0.0,) * C,
        std=(1.0,) * C,
        **kwargs,
    )


def source_index(img: torch.Tensor) -> int:
    idx = ((img[img != 0] - 1) // 1000).unique()
    assert len(idx) == 1
    return int(idx)


def crops(img: torch.Tensor):
    """Every crop of the zero-padded (pad 4) image, plain and flipped: ((dy, dx, flip), crop)."""
    padded = F.pad(img, (4, 4, 4, 4))
    for dy in range(9):
        for dx in range(9):
            crop = padded[:, dy : dy + SIZE, dx : dx + SIZE]
            yield (dy, dx, 0), crop
            yield (dy, dx, 1), crop.flip(-1)


def epoch(data: ImageData, seed=0, epoch=0):
    return list(data.train_batches(seed=seed, epoch=epoch))


def order(batches) -> list[int]:
    return [source_index(img) for x, _ in batches for img in x]


def test_batches_cover_each_index_once_and_are_reproducible():
    data = encoded_data()
    batches = epoch(data)
    assert [len(x) for x, _ in batches] == [32, 32, 32, 4] and data.steps_per_epoch == 4
    assert sorted(order(batches)) == list(range(N))
    for x, y in batches:
        assert x.shape[1:] == (C, SIZE, SIZE) and x.dtype == torch.float32
        assert y.dtype == torch.int64
        assert torch.equal(y, torch.tensor([source_index(img) % 10 for img in x]))
    assert order(epoch(data)) == order(batches)
    assert order(epoch(data, seed=1)) != order(batches)
    assert order(epoch(data, epoch=1)) != order(batches)


def test_augmentation_crops_and_flips_with_labels_aligned():
    data = encoded_data(augment=True)
    batches = epoch(data)
    seen, transforms = [], []
    for x, y in batches:
        for img, label in zip(x, y):
            i = source_index(img)
            assert int(label) == i % 10
            matches = [key for key, crop in crops(data.x_train[i]) if torch.equal(img, crop)]
            assert len(matches) == 1
            seen.append(i)
            transforms += matches
    assert sorted(seen) == list(range(N))
    assert 0 < sum(flip for _, _, flip in transforms) < N
    assert len({(dy, dx) for dy, dx, _ in transforms}) > 10
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(batches, epoch(data)))
    assert not torch.equal(batches[0][0], epoch(data, epoch=1)[0][0])
    assert not torch.equal(batches[0][0], epoch(data, seed=1)[0][0])
    assert order(batches) == order(epoch(encoded_data()))  # same order as without augmentation


def test_val_batches_in_order_without_augmentation():
    data = encoded_data(augment=True, batch_size=7)
    xs, ys = zip(*data.val_batches())
    assert torch.equal(torch.cat(xs), data.x_val) and torch.equal(torch.cat(ys), data.y_val)


@pytest.mark.parametrize("augment", [False, True])
def test_to_device_and_channels_last(augment):
    data = encoded_data(augment=augment)
    moved = data.to("cpu", channels_last=True)
    assert moved.device == torch.device("cpu") and moved.channels_last
    assert moved.x_train.is_contiguous(memory_format=torch.channels_last)
    assert not data.channels_last and data.x_train.is_contiguous()
    for (a, ya), (b, yb) in zip(epoch(data), epoch(moved), strict=True):
        assert b.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(a, b) and torch.equal(ya, yb)
    for x, _ in moved.val_batches():
        assert x.is_contiguous(memory_format=torch.channels_last)
    assert moved.to(torch.device("cpu")).x_train.is_contiguous()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_batches_on_cuda():
    data = encoded_data(augment=True)
    batches = epoch(data.to("cuda", channels_last=True))
    assert all(x.is_cuda and y.is_cuda for x, y in batches)
    batches = [(x.cpu(), y.cpu()) for x, y in batches]
    assert order(batches) == order(epoch(data))  # the permutation is the same on every device
    for x, y in batches:
        assert torch.equal(y, torch.tensor([source_index(img) % 10 for img in x]))


def test_constructor_validation():
    with pytest.raises(ValueError, match="batch_size"):
        encoded_data(batch_size=0)
    data = encoded_data()
    with pytest.raises(ValueError, match="y_train"):
        ImageData(
            data.x_train,
            data.y_train[:5],
            data.x_val,
            data.y_val,
            data.classes,
            data.mean,
            data.std,
        )
    with pytest.raises(ValueError, match="mean"):
        ImageData(
            data.x_train, data.y_train, data.x_val, data.y_val, data.classes, (0.0,), data.std
        )
    assert data.model_kwargs == {"num_classes": 10, "in_channels": C, "image_size": SIZE}
    assert data.task == "classification"


def test_import_is_light():
    code = "import sys, ablate.data; print(sorted({'torchvision', 'sklearn'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.fixture(scope="module")
def digit_data() -> ImageData:
    return digits()


def test_digits_split_and_normalisation(digit_data):
    data = digit_data
    assert data.x_train.shape == (1347, 1, 16, 16) and data.x_val.shape == (450, 1, 16, 16)
    assert data.model_kwargs == {"num_classes": 10, "in_channels": 1, "image_size": 16}
    assert abs(data.x_train.mean()) < 1e-4 and abs(data.x_train.std() - 1) < 1e-3
    assert (torch.bincount(data.y_val, minlength=10) >= 43).all()  # stratified: ~45 per class
    again = digits(image_size=12, noise=0.5, split_seed=0)
    assert again.x_train.shape[2:] == (12, 12) and torch.equal(again.y_val, data.y_val)
    assert torch.equal(again.x_train, digits(image_size=12, noise=0.5).x_train)
    assert not torch.equal(digits(split_seed=1).y_val, data.y_val)
    for bad in ({"val_fraction": 1.0}, {"image_size": 0}, {"noise": -1.0}, {"batch_size": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            digits(**bad)


def test_digits_is_learnable_quickly(digit_data):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 4 * 4, 10),
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for e in range(2):
        for x, y in digit_data.train_batches(seed=0, epoch=e):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
    with torch.no_grad():
        correct = sum((model(x).argmax(1) == y).sum() for x, y in digit_data.val_batches())
    assert correct / len(digit_data.y_val) > 0.8


def test_cifar10_loads_pickled_batches(cifar_files):
    tmp_path, batches = cifar_files
    data = cifar10(root=str(tmp_path), download=False, batch_size=8)
    assert data.x_train.shape == (20, 3, 32, 32) and data.x_val.shape == (4, 3, 32, 32)
    assert data.classes == [f"class{k}" for k in range(10)] and data.augment
    train_rows = np.concatenate([batches[f"data_batch_{k}"][0] for k in range(1, 6)])
    train_labels = sum((batches[f"data_batch_{k}"][1] for k in range(1, 6)), [])
    assert data.y_train.tolist() == train_labels
    assert data.y_val.tolist() == batches["test_batch"][1]
    mean, std = torch.tensor(data.mean)[:, None, None], torch.tensor(data.std)[:, None, None]
    pixels = torch.from_numpy(train_rows).view(20, 3, 32, 32) / 255
    assert torch.allclose(data.x_train * std + mean, pixels, atol=1e-5)
    assert torch.allclose(data.x_train.mean((0, 2, 3)), torch.zeros(3), atol=1e-5)
    small = cifar10(root=str(tmp_path), download=False, train_size=6, val_size=2)
    assert len(small.x_train) == 6 and len(small.y_val) == 2 and small.mean == data.mean
    assert torch.equal(small.x_train, data.x_train[:6])


def test_cifar10_missing_files_message(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        cifar10(root=str(tmp_path), download=False)
    message = str(info.value)
    assert str(tmp_path / "cifar-10-batches-py") in message
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in message
    assert "download=True" in message
