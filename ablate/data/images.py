"""Device-resident image classification data with on-device batching and augmentation."""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"


def derive_seed(*parts: object) -> int:
    """A 63-bit seed that depends only on ``parts`` (stable across runs, processes, machines)."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _check_positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def _check_fraction(name: str, value: float) -> None:
    if not 0 < value < 1:
        raise ValueError(f"{name} must be in (0, 1), got {value!r}")


def epoch_permutation(n: int, *, seed: int, epoch: int, device: torch.device) -> Tensor:
    """The shuffled order of ``n`` samples for (seed, epoch): drawn on the CPU, so it is the same
    on every device, and moved to ``device`` once."""
    generator = torch.Generator().manual_seed(derive_seed(seed, epoch, "perm"))
    return torch.randperm(n, generator=generator).to(device)


def crop_flip(x: Tensor, dy: Tensor, dx: Tensor, flip: Tensor, pad: int) -> Tensor:
    """Per-image crop of the zero-padded batch at offsets (dy, dx) in [0, 2*pad], then flip.

    One gather for the whole batch: output pixel (b, c, i, j) reads padded pixel
    (b, c, dy[b] + i, dx[b] + (w - 1 - j if flip[b] else j)).
    """
    n, c, h, w = x.shape
    padded_w = w + 2 * pad
    padded = F.pad(x, (pad, pad, pad, pad)).reshape(n, c, -1)
    ar_h = torch.arange(h, device=x.device)
    ar_w = torch.arange(w, device=x.device)
    rows = dy[:, None] + ar_h  # [B, H]
    cols = dx[:, None] + torch.where(flip[:, None], w - 1 - ar_w, ar_w)  # [B, W]
    flat = (rows[:, :, None] * padded_w + cols[:, None, :]).view(n, 1, h * w)
    return padded.gather(2, flat.expand(n, c, h * w)).view(n, c, h, w)


class ClassificationData:
    """What the classification data of ablate share: inputs ``x_*`` and int64 labels ``y_*``
    of a train and a validation split on one device, the class names, the batch size, and what
    the built-in loop reads of them (:class:`ablate.protocols.Data`). The subclasses are
    dataclasses declaring these fields, and add how batches are drawn and moved."""

    task: ClassVar[str] = "classification"

    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor
    classes: list[str]
    batch_size: int

    @property
    def device(self) -> torch.device:
        return self.x_train.device

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.x_train) / self.batch_size)

    def val_batches(self) -> Iterator[tuple[Tensor, Tensor]]:
        for start in range(0, len(self.x_val), self.batch_size):
            part = slice(start, start + self.batch_size)
            yield self.x_val[part], self.y_val[part]


@dataclass(eq=False)
class ImageData(ClassificationData):
    """Normalised images ``[N, C, H, W]`` float32 and int64 labels, kept on one device."""

    pad: ClassVar[int] = 4

    x_train: Tensor = field(repr=False)
    y_train: Tensor = field(repr=False)
    x_val: Tensor = field(repr=False)
    y_val: Tensor = field(repr=False)
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    batch_size: int = 256
    augment: bool = False
    channels_last: bool = False

    def __post_init__(self) -> None:
        _check_positive_int("batch_size", self.batch_size)
        for name in ("x_train", "x_val"):
            x = getattr(self, name)
            if x.ndim != 4 or x.dtype != torch.float32:
                raise ValueError(f"{name} must be float32 [N, C, H, W], got {x.dtype} {x.shape}")
        for name, x in (("y_train", self.x_train), ("y_val", self.x_val)):
            y = getattr(self, name)
            if y.ndim != 1 or y.dtype != torch.int64 or len(y) != len(x):
                raise ValueError(f"{name} must be int64 [{len(x)}], got {y.dtype} {y.shape}")
        if len(self.x_train) == 0:
            raise ValueError("x_train is empty")
        if self.x_val.shape[1:] != self.x_train.shape[1:]:
            raise ValueError(
                f"x_val images {list(self.x_val.shape[1:])} differ from x_train "
                f"{list(self.x_train.shape[1:])}"
            )
        if not self.classes:
            raise ValueError("classes must not be empty")
        channels = self.x_train.shape[1]
        if len(self.mean) != channels or len(self.std) != channels:
            raise ValueError(f"mean and std need {channels} values (one per channel)")

    @property
    def model_kwargs(self) -> dict[str, int]:
        _, c, h, _ = self.x_train.shape
        return {"num_classes": self.num_classes, "in_channels": c, "image_size": h}

    def _format(self, x: Tensor) -> Tensor:
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        return x.contiguous(memory_format=fmt)

    def to(self, device: torch.device | str, *, channels_last: bool = False) -> ImageData:
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        return replace(
            self,
            x_train=self.x_train.to(device, memory_format=fmt),
            y_train=self.y_train.to(device),
            x_val=self.x_val.to(device, memory_format=fmt),
            y_val=self.y_val.to(device),
            channels_last=channels_last,
        )

    def train_batches(self, *, seed: int, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        """Shuffled (and, if ``augment``, cropped/flipped) batches; reproducible per (seed, epoch).

        The permutation is drawn on the CPU (so the order is the same on every device) and moved
        once per epoch; the augmentation offsets are drawn once per epoch on the data's device.
        """
        n = len(self.x_train)
        perm = epoch_permutation(n, seed=seed, epoch=epoch, device=self.device)
        if self.augment:
            gen = torch.Generator(self.device).manual_seed(derive_seed(seed, epoch, "augment"))
            dy = torch.randint(0, 2 * self.pad + 1, (n,), generator=gen, device=self.device)
            dx = torch.randint(0, 2 * self.pad + 1, (n,), generator=gen, device=self.device)
            flip = torch.randint(0, 2, (n,), generator=gen, device=self.device).bool()
        for start in range(0, n, self.batch_size):
            idx = perm[start : start + self.batch_size]
            x = self.x_train.index_select(0, idx)
            if self.augment:
                part = slice(start, start + self.batch_size)
                x = crop_flip(x, dy[part], dx[part], flip[part], self.pad)
            yield self._format(x), self.y_train.index_select(0, idx)


def _normalise(x_train: Tensor, x_val: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Normalise both splits in place with the per-channel statistics of ``x_train``."""
    std, mean = torch.std_mean(x_train, dim=(0, 2, 3))
    for x in (x_train, x_val):
        x.sub_(mean[:, None, None]).div_(std[:, None, None])
    return tuple(mean.tolist()), tuple(std.tolist())


def channel_stats(
    x: Tensor, *, scale: float = 1.0, chunk: int = 4096
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of ``x / scale`` for images ``[N, C, H, W]`` of any dtype.

    Accumulated in float64 over chunks of ``chunk`` images, so uint8 images are never converted
    whole. A constant channel gets std 1 (it is only centred).
    """
    total = torch.zeros(x.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for start in range(0, len(x), chunk):
        part = x[start : start + chunk].to(torch.float64).div_(scale)
        total += part.sum(dim=(0, 2, 3))
        squares += part.square().sum(dim=(0, 2, 3))
    count = x.numel() // x.shape[1]
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(0).sqrt()
    std = torch.where(std > 1e-12, std, torch.ones_like(std))
    return tuple(mean.tolist()), tuple(std.tolist())


def normalised(
    x: Tensor, mean: tuple[float, ...], std: tuple[float, ...], *, scale: float = 1.0
) -> Tensor:
    """A new float32 tensor ``(x / scale - mean) / std`` per channel (``x`` is left untouched)."""
    out = x.to(torch.float32, memory_format=torch.contiguous_format, copy=True).div_(scale)
    mean_t, std_t = (torch.tensor(v, device=x.device)[:, None, None] for v in (mean, std))
    return out.sub_(mean_t).div_(std_t)


def _first(t: Tensor, n: int | None) -> Tensor:
    return t if n is None or n >= len(t) else t[:n].clone()


def cifar10(
    *,
    root: str = "~/.cache/ablate/cifar10",
    download: bool = True,
    batch_size: int = 256,
    augment: bool = True,
    train_size: int | None = None,
    val_size: int | None = None,
) -> ImageData:
    """CIFAR-10 via torchvision (50,000 train / 10,000 test images as train / val).

    Normalised with the per-channel mean/std computed from all training images (before
    ``train_size`` truncation). ``train_size``/``val_size`` keep the first N images.
    """
    from torchvision.datasets import CIFAR10

    for name, size in (("train_size", train_size), ("val_size", val_size)):
        if size is not None:
            _check_positive_int(name, size)
    root = os.path.expanduser(root)
    try:
        train = CIFAR10(root, train=True, download=download)
        val = CIFAR10(root, train=False)
    except (OSError, RuntimeError) as e:  # missing/corrupt files, or the download failed
        folder = os.path.join(root, CIFAR10.base_folder)
        raise FileNotFoundError(
            f"CIFAR-10 not found or unusable in {folder}/ ({type(e).__name__}: {e}). "
            f"Run with data.download=True on a machine with internet, or download "
            f"{CIFAR10_URL} and extract it into {root}/ so that {folder}/ holds "
            f"data_batch_1..5, test_batch and batches.meta."
        ) from e

    def tensors(ds) -> tuple[Tensor, Tensor]:
        x = torch.from_numpy(ds.data).permute(0, 3, 1, 2).float().div_(255)
        return x, torch.tensor(ds.targets, dtype=torch.int64)

    (x_train, y_train), (x_val, y_val) = tensors(train), tensors(val)
    mean, std = _normalise(x_train, x_val)
    return ImageData(
        x_train=_first(x_train, train_size),
        y_train=_first(y_train, train_size),
        x_val=_first(x_val, val_size),
        y_val=_first(y_val, val_size),
        classes=list(train.classes),
        mean=mean,
        std=std,
        batch_size=batch_size,
        augment=augment,
    )


def digits(
    *,
    batch_size: int = 128,
    image_size: int = 16,
    augment: bool = False,
    val_fraction: float = 0.25,
    split_seed: int = 0,
    noise: float = 0.0,
) -> ImageData:
    """scikit-learn's bundled 8x8 digits (1797 images, 10 classes), no download needed.

    Pixels are scaled to [0, 1], upsampled (bilinear) to ``image_size``, optionally perturbed by
    fixed Gaussian noise of std ``noise`` (seeded by ``split_seed``), then normalised with the
    training split's mean/std. The split is stratified by class and seeded by ``split_seed``.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    _check_positive_int("image_size", image_size)
    _check_fraction("val_fraction", val_fraction)
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise!r}")
    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32)[:, None] / 16
    x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    if noise:
        gen = torch.Generator().manual_seed(derive_seed(split_seed, "noise"))
        x += noise * torch.randn(x.shape, generator=gen)
    y = torch.from_numpy(data.target).long()
    split_state = derive_seed(split_seed, "split") % 2**32
    train_idx, val_idx = map(
        torch.from_numpy,
        train_test_split(
            np.arange(len(y)), test_size=val_fraction, random_state=split_state, stratify=y
        ),
    )
    x_train, x_val = x[train_idx], x[val_idx]
    mean, std = _normalise(x_train, x_val)
    return ImageData(
        x_train=x_train,
        y_train=y[train_idx],
        x_val=x_val,
        y_val=y[val_idx],
        classes=[str(d) for d in range(10)],
        mean=mean,
        std=std,
        batch_size=batch_size,
        augment=augment,
    )
