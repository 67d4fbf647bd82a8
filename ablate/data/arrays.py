"""``from_arrays``: classification data from numpy or torch arrays, images or not.

Images become ``ImageData``: uint8 ``[N, H, W, C]`` (C from 1 to 4) or uint8 ``[N, H, W]``
(grayscale) are scaled to [0, 1]; float ``[N, C, H, W]`` are taken as they are; both are then
normalised per channel with the training split's mean/std (for inputs already normalised this
changes nearly nothing). Every other input — tabular ``[N, F]``, sequences ``[N, T]`` or
``[N, T, F]`` — becomes ``ArrayData``, kept exactly as given: floats as float32, integers as int64
(token ids, e.g. for an embedding; convert numeric integer features to float first). Labels are
integer class ids ``[N]`` in ``[0, len(classes))``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ablate.data.images import (
    ClassificationData,
    ImageData,
    _check_positive_int,
    channel_stats,
    epoch_permutation,
    normalised,
)


@dataclass(eq=False)
class ArrayData(ClassificationData):
    """Inputs ``[N, ...]`` (float32 or int64) and int64 labels ``[N]``, kept on one device.

    ``model_kwargs`` gives ``num_classes``, ``in_features`` (the size of the last input
    dimension: features of a row, or of a sequence step) and, for int64 inputs, ``vocab_size``.
    """

    x_train: Tensor = field(repr=False)
    y_train: Tensor = field(repr=False)
    x_val: Tensor = field(repr=False)
    y_val: Tensor = field(repr=False)
    classes: list[str]
    batch_size: int = 256

    def __post_init__(self) -> None:
        _check_positive_int("batch_size", self.batch_size)
        for name in ("x_train", "x_val"):
            x = getattr(self, name)
            if x.ndim < 2 or x.dtype not in (torch.float32, torch.int64):
                raise ValueError(f"{name} must be float32 or int64 [N, ...], got {x.dtype} "
                                 f"{list(x.shape)}")
        if self.x_val.shape[1:] != self.x_train.shape[1:] or self.x_val.dtype != self.x_train.dtype:
            raise ValueError(f"x_val ({self.x_val.dtype} {list(self.x_val.shape[1:])} per sample) "
                             f"differs from x_train ({self.x_train.dtype} "
                             f"{list(self.x_train.shape[1:])})")
        _check_labels({"y_train": (self.y_train, len(self.x_train)),
                       "y_val": (self.y_val, len(self.x_val))}, self.classes)

    @property
    def model_kwargs(self) -> dict[str, int]:
        kwargs = {"num_classes": self.num_classes, "in_features": self.x_train.shape[-1]}
        if self.x_train.dtype == torch.int64:
            kwargs["vocab_size"] = int(max(self.x_train.max(), self.x_val.max())) + 1
        return kwargs

    def to(self, device: torch.device | str) -> ArrayData:
        return replace(
            self,
            x_train=self.x_train.to(device),
            y_train=self.y_train.to(device),
            x_val=self.x_val.to(device),
            y_val=self.y_val.to(device),
        )

    def train_batches(self, *, seed: int, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        """Shuffled batches, reproducible per (seed, epoch) and the same order on every device."""
        perm = epoch_permutation(len(self.x_train), seed=seed, epoch=epoch, device=self.device)
        for start in range(0, len(perm), self.batch_size):
            idx = perm[start : start + self.batch_size]
            yield self.x_train.index_select(0, idx), self.y_train.index_select(0, idx)


def from_arrays(
    x_train: Any,
    y_train: Any,
    x_val: Any,
    y_val: Any,
    *,
    classes: Sequence[str] | None = None,
    batch_size: int = 256,
    augment: bool = False,
) -> ImageData | ArrayData:
    """Classification data from numpy arrays or tensors: ``ImageData`` for images, else
    ``ArrayData`` (see the module docstring for the rules).

    ``classes`` names the classes (default: ``"0"`` .. ``"K-1"`` with K = the largest label + 1).
    ``augment`` (random crops and flips) applies to images only. Raises ``ValueError`` naming
    the array for a wrong number of dimensions or dtype, a length mismatch, labels out of range
    or fewer than two classes.
    """
    xs = {"x_train": _tensor("x_train", x_train), "x_val": _tensor("x_val", x_val)}
    images = _is_image(xs["x_train"])
    if augment and not images:
        raise ValueError("augment=True needs images (uint8 [N, H, W, C] or float [N, C, H, W]); "
                         f"x_train is {xs['x_train'].dtype} {list(xs['x_train'].shape)}")
    inputs = {name: (_chw_images if images else _array_inputs)(name, x) for name, x in xs.items()}
    ys = {"y_train": _tensor("y_train", y_train), "y_val": _tensor("y_val", y_val)}
    names = _class_names(ys, classes)
    labels = {name: y.to(torch.int64) for name, y in ys.items()}
    _check_labels({name: (y, len(x)) for (name, y), x in zip(labels.items(), inputs.values())},
                  names)
    if images:
        return _image_data(inputs, labels, names, batch_size=batch_size, augment=augment)
    return ArrayData(inputs["x_train"], labels["y_train"], inputs["x_val"], labels["y_val"],
                     names, batch_size=batch_size)


def _tensor(name: str, value: Any) -> Tensor:
    if isinstance(value, Tensor):
        return value.detach().cpu()
    array = np.asarray(value)
    if array.dtype == object or array.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be a numeric numpy array or tensor, got dtype {array.dtype}")
    return torch.from_numpy(np.ascontiguousarray(array))


def _class_names(ys: dict[str, Tensor], classes: Sequence[str] | None) -> list[str]:
    for name, y in ys.items():
        if y.ndim != 1 or y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
            raise ValueError(f"{name} must be integer class ids [N], got {y.dtype} "
                             f"{list(y.shape)}. Fix: y.astype(int) / y.long() (one id per sample).")
    if classes is not None:
        return [str(c) for c in classes]
    top = max((int(y.max()) for y in ys.values() if len(y)), default=0)
    return [str(k) for k in range(top + 1)]


def _check_labels(labels: dict[str, tuple[Tensor, int]], classes: list[str]) -> None:
    """Each label tensor is int64 ``[n]`` for its input's ``n``, with ids in range; >= 2 classes."""
    for name, (y, n) in labels.items():
        inputs = name.replace("y_", "x_")
        if y.ndim != 1 or y.dtype != torch.int64:
            raise ValueError(f"{name} must be int64 [N], got {y.dtype} {list(y.shape)}")
        if len(y) != n:
            raise ValueError(f"{name} has {len(y)} labels but {inputs} has {n} samples")
        if n == 0:
            raise ValueError(f"{inputs} is empty")
        low, high = int(y.min()), int(y.max())
        if low < 0 or high >= len(classes):
            raise ValueError(f"{name} has labels in [{low}, {high}], but there are "
                             f"{len(classes)} classes (ids 0..{len(classes) - 1}). Fix: pass "
                             f"classes= naming every class, or relabel to 0..K-1.")
    if len(classes) < 2:
        raise ValueError(f"classification needs at least 2 classes, got {classes}")


def _is_image(x: Tensor) -> bool:
    return (x.dtype == torch.uint8 and x.ndim in (3, 4)) or x.ndim == 4


def _chw_images(name: str, x: Tensor) -> Tensor:
    """uint8 ``[N, C, H, W]`` from uint8 HWC / HW, or float ``[N, C, H, W]`` as it is."""
    uint8 = x.dtype == torch.uint8
    if not (uint8 and x.ndim in (3, 4) or x.is_floating_point() and x.ndim == 4):
        raise ValueError(f"{name}: images must be uint8 [N, H, W, C] or [N, H, W], or float "
                         f"[N, C, H, W]; got {x.dtype} {list(x.shape)}")
    if not uint8:
        if x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
            raise ValueError(f"{name}: float images must be [N, C, H, W]; {list(x.shape)} looks "
                             f"channels-last. Fix: x.permute(0, 3, 1, 2) (numpy: "
                             f"x.transpose(0, 3, 1, 2)).")
        return x
    if x.ndim == 3:
        return x[:, None]
    if not 1 <= x.shape[-1] <= 4:
        raise ValueError(f"{name}: uint8 images must be [N, H, W, C] with 1 to 4 channels, got "
                         f"{list(x.shape)}. Fix: x.permute(0, 2, 3, 1) for channels-first uint8, "
                         f"or pass float [N, C, H, W].")
    return x.permute(0, 3, 1, 2)


def _image_data(
    images: dict[str, Tensor],
    labels: dict[str, Tensor],
    classes: list[str],
    *,
    batch_size: int,
    augment: bool,
) -> ImageData:
    x_train, x_val = images["x_train"], images["x_val"]
    if x_val.dtype != x_train.dtype:
        raise ValueError(f"x_val is {x_val.dtype} but x_train is {x_train.dtype}")
    scale = 255 if x_train.dtype == torch.uint8 else 1
    mean, std = channel_stats(x_train, scale=scale)
    return ImageData(
        x_train=normalised(x_train, mean, std, scale=scale),
        y_train=labels["y_train"],
        x_val=normalised(x_val, mean, std, scale=scale),
        y_val=labels["y_val"],
        classes=classes,
        mean=mean,
        std=std,
        batch_size=batch_size,
        augment=augment,
    )


def _array_inputs(name: str, x: Tensor) -> Tensor:
    if x.ndim not in (2, 3):
        raise ValueError(f"{name} must be [N, F] (tabular), [N, T] or [N, T, F] (sequences), "
                         f"or images; got {list(x.shape)}"
                         + (". Fix: x[:, None] for one feature per sample." if x.ndim == 1 else ""))
    return x.to(torch.float32 if x.is_floating_point() else torch.int64)
