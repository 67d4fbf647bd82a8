"""``image_folder``: your own images in torchvision's ImageFolder layout, decoded once and cached.

Layout: ``PATH/train/<class>/*.png|jpg|jpeg`` for training and ``PATH/val/<class>/*`` (else
``PATH/test/<class>/*``) for validation. Classes are the training folder's sub-folders sorted by
name, as in torchvision's ``ImageFolder``; images may sit in nested folders of a class. Files with
other extensions, and files and folders whose names start with ``.``, are ignored.

The first call decodes every image (Pillow, in a thread pool) into one cache file of
uint8 tensors, labels, classes and the training images' per-channel statistics, in
``PATH/.ablate-cache/`` (or, when ``PATH`` is not writable, in
``<cache_dir()>/image-folders/<hash of PATH>/``); later calls load that file. The file is named by
a SHA-256 over every image's relative path, size and modification time, not its contents
(reading every image on every call would cost seconds on a large folder). Adding, removing,
renaming or rewriting an image therefore gives a new name and a fresh decode (the stale file is
deleted); an edit that keeps both a file's size and its modification time goes unnoticed.
"""

from __future__ import annotations

import hashlib
import os
import sys
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from ablate.data.cache import cache_dir, write_atomically
from ablate.data.images import (
    ImageData,
    _check_positive_int,
    channel_stats,
    derive_seed,
    normalised,
)

EXTENSIONS = (".png", ".jpg", ".jpeg")
CACHE_FORMAT = 1
_CHUNK = 256  # images per thread-pool task


class ImageFolderError(ValueError):
    """The image folder can't be used as it is; the message names the problem and the fix."""


def image_folder(
    *,
    path: str,
    batch_size: int = 256,
    augment: bool = True,
    train_size: int | None = None,
    val_size: int | None = None,
    seed: int = 0,
    image_size: int | None = None,
    grayscale: bool = False,
) -> ImageData:
    """Images per class folder (``path``/train and ``path``/val or ``path``/test) as ``ImageData``.

    Images are decoded as RGB (``grayscale=True``: one channel); with ``image_size`` each is
    resized (shorter side) and centre-cropped to ``image_size`` x ``image_size``, else all must
    have one size. Normalised with the per-channel mean/std of all training images (before
    ``train_size``); ``train_size``/``val_size`` keep random subsets drawn with ``seed``.
    Raises :class:`ImageFolderError` for a missing split, a single class, class folders that
    differ between splits, an unreadable image or images of different sizes.
    """
    for name, size in (("train_size", train_size), ("val_size", val_size),
                       ("image_size", image_size)):
        if size is not None:
            _check_positive_int(name, size)
    root = Path(path).expanduser()
    cached = _decoded(root, grayscale=grayscale, image_size=image_size)
    mean, std = tuple(cached["mean"]), tuple(cached["std"])
    x_train, y_train = _subset(cached["x_train"], cached["y_train"], train_size, seed, "train")
    x_val, y_val = _subset(cached["x_val"], cached["y_val"], val_size, seed, "val")
    return ImageData(
        x_train=normalised(x_train, mean, std, scale=255),
        y_train=y_train,
        x_val=normalised(x_val, mean, std, scale=255),
        y_val=y_val,
        classes=list(cached["classes"]),
        mean=mean,
        std=std,
        batch_size=batch_size,
        augment=augment,
    )


def _subset(x: Tensor, y: Tensor, size: int | None, seed: int, split: str) -> tuple[Tensor, Tensor]:
    """A random subset of ``size`` samples (in folder order), the same for the same seed."""
    if size is None or size >= len(x):
        return x, y
    generator = torch.Generator().manual_seed(derive_seed(seed, split, "subset"))
    index = torch.randperm(len(x), generator=generator)[:size].sort().values
    return x[index], y[index]


# ----------------------------------------------------------------------------- layout
class _Image(NamedTuple):
    path: str  # relative to the image folder, "/"-separated: "train/cat/001.png"
    label: int
    size: int
    mtime_ns: int


def _scan(root: Path) -> tuple[list[str], dict[str, list[_Image]]]:
    """The classes and the images of each split: ``train``, and ``val`` (``val/`` or ``test/``)."""
    if not root.is_dir():
        where = "" if root.is_absolute() else (
            f" (a relative path, read from the working directory {os.getcwd()}: "
            f"{root.resolve()})")
        raise ImageFolderError(f"image folder '{root}' not found{where}. Fix: set data.path to "
                               f"it (an absolute path works from any folder).")
    if not (root / "train").is_dir():
        raise ImageFolderError(
            f"'{root}' has no train/ folder. Fix: put the training images in "
            f"{root}/train/<class>/ (one folder per class)."
        )
    held_out = next((s for s in ("val", "test") if (root / s).is_dir()), None)
    if held_out is None:
        raise ImageFolderError(
            f"'{root}' has no val/ or test/ folder. Fix: put held-out images in "
            f"{root}/val/<class>/ (or test/), with the same class folders as train/."
        )
    classes = _class_names(root / "train")
    if len(classes) < 2:
        raise ImageFolderError(
            f"{root}/train has {len(classes)} class folder(s) {classes}; classification needs "
            f"at least 2. Fix: put each class's images in its own folder {root}/train/<class>/."
        )
    _check_same_classes(root, classes, held_out, _class_names(root / held_out))
    splits = {"train": _split(root, "train", classes), "val": _split(root, held_out, classes)}
    return classes, splits


def _class_names(split: Path) -> list[str]:
    return sorted(p.name for p in split.iterdir() if p.is_dir() and not p.name.startswith("."))


def _check_same_classes(root: Path, classes: list[str], held_out: str, other: list[str]) -> None:
    if other == classes:
        return
    only_train = sorted(set(classes) - set(other))
    only_other = sorted(set(other) - set(classes))
    raise ImageFolderError(
        f"the class folders of {root}/train and {root}/{held_out} differ: only in train/: "
        f"{only_train}, only in {held_out}/: {only_other}. Fix: give both splits the same "
        f"class folders (labels are assigned by sorted folder name)."
    )


def _split(root: Path, split: str, classes: list[str]) -> list[_Image]:
    images = []
    for label, name in enumerate(classes):
        found = sorted(_files(root / split / name, f"{split}/{name}/"))
        if not found:
            raise ImageFolderError(
                f"class folder {root}/{split}/{name} has no {'/'.join(EXTENSIONS)} images. Fix: "
                f"add images or remove the folder (from every split)."
            )
        images += [_Image(rel, label, st.st_size, st.st_mtime_ns) for rel, st in found]
    return images


def _files(folder: Path, prefix: str) -> list[tuple[str, os.stat_result]]:
    """(relative path, stat) of every image under ``folder``, skipping hidden names."""
    found = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                found += _files(Path(entry.path), f"{prefix}{entry.name}/")
            elif entry.name.lower().endswith(EXTENSIONS) and entry.is_file():
                found.append((prefix + entry.name, entry.stat()))
    return found


def _content_key(splits: dict[str, list[_Image]]) -> str:
    """SHA-256 over each image's relative path, size and modification time (see module doc)."""
    lines = (f"{i.path}\t{i.size}\t{i.mtime_ns}\n" for images in splits.values() for i in images)
    return hashlib.sha256("".join(lines).encode()).hexdigest()


# ------------------------------------------------------------------------------ cache
def _decoded(root: Path, *, grayscale: bool, image_size: int | None) -> dict[str, Any]:
    """The decoded folder: from the cache when its key matches, else decoded and cached."""
    classes, splits = _scan(root)
    key = _content_key(splits)
    prefix = f"v{CACHE_FORMAT}-{'gray' if grayscale else 'rgb'}-{image_size or 'native'}"
    folder = _cache_folder(root)
    file = folder / f"{prefix}-{key[:32]}.pt"
    cached = _load(file, key)
    if cached is not None:
        return cached
    decode = _decoder(grayscale=grayscale, image_size=image_size)
    x_train = _decode_split(root, splits["train"], decode, reference=None)
    reference = (splits["train"][0].path, x_train.shape[1:])
    x_val = _decode_split(root, splits["val"], decode, reference=reference)
    mean, std = channel_stats(x_train, scale=255)
    built = {
        "key": key,
        "classes": classes,
        "x_train": x_train,
        "y_train": torch.tensor([i.label for i in splits["train"]], dtype=torch.int64),
        "x_val": x_val,
        "y_val": torch.tensor([i.label for i in splits["val"]], dtype=torch.int64),
        "mean": list(mean),
        "std": list(std),
    }
    write_atomically(file, lambda f: torch.save(built, f))
    for stale in folder.glob(f"{prefix}-*.pt"):
        if stale != file:
            stale.unlink(missing_ok=True)
    return built


def _cache_folder(root: Path) -> Path:
    """``root/.ablate-cache`` if it can be created and written, else one under ``cache_dir()``."""
    local = root / ".ablate-cache"
    try:
        if not local.exists():
            local.mkdir()
            print(f"image_folder: decoded images are cached in {local} (made now; delete it "
                  f"any time, it is rebuilt when needed)", file=sys.stderr, flush=True)
        if local.is_dir() and os.access(local, os.W_OK):
            return local
    except OSError:
        pass
    name = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    return cache_dir() / "image-folders" / name


def _load(file: Path, key: str) -> dict[str, Any] | None:
    if not file.is_file():
        return None
    try:
        cached = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:  # a damaged cache is rebuilt, never trusted
        warnings.warn(f"ignoring unreadable image cache {file} ({e}); decoding again", stacklevel=3)
        return None
    return cached if isinstance(cached, dict) and cached.get("key") == key else None


# ----------------------------------------------------------------------------- decode
def _decoder(*, grayscale: bool, image_size: int | None) -> Callable[[Path], Tensor]:
    """A function decoding one file to uint8 ``[C, H, W]``, with Pillow (imported here).

    Pillow, as torchvision's ``ImageFolder`` uses, so the pixels (and the conversion of grayscale,
    palette and RGBA images to RGB) are the same; torchvision.io's decoders are deprecated since
    torchvision 0.29.
    """
    from PIL import Image, ImageOps

    mode = "L" if grayscale else "RGB"

    def decode(file: Path) -> Tensor:
        with Image.open(file) as opened:
            image = opened.convert(mode)
        if image_size is not None:
            image = ImageOps.fit(image, (image_size, image_size), Image.Resampling.BILINEAR)
        array = np.array(image)
        return torch.from_numpy(array[:, :, None] if grayscale else array).permute(2, 0, 1)

    return decode


def _decode_file(root: Path, path: str, decode: Callable[[Path], Tensor]) -> Tensor:
    try:
        return decode(root / path)
    except Exception as e:
        raise ImageFolderError(
            f"can't decode {path} in '{root}' ({type(e).__name__}: {e}). "
            f"Fix: replace or delete that file."
        ) from None


def _decode_split(
    root: Path,
    images: list[_Image],
    decode: Callable[[Path], Tensor],
    *,
    reference: tuple[str, torch.Size] | None,
) -> Tensor:
    """All ``images`` as one uint8 ``[N, C, H, W]``, each the shape of ``reference`` (else the
    first image's).

    Decoded in chunks on a thread pool (Pillow's decoders release the GIL).
    """
    first = _decode_file(root, images[0].path, decode)
    ref_path, shape = reference or (images[0].path, first.shape)
    out = torch.empty((len(images), *shape), dtype=torch.uint8)

    def fill(indices: range) -> None:
        for i in indices:
            image = first if i == 0 else _decode_file(root, images[i].path, decode)
            if image.shape != shape:
                raise ImageFolderError(
                    f"images in '{root}' differ in size (width x height): {ref_path} is "
                    f"{_size(shape)}, {images[i].path} is {_size(image.shape)}. Fix: resize them "
                    f"to one size, or set data.image_size=N to resize and centre-crop every "
                    f"image to N x N as it is decoded."
                )
            out[i] = image

    chunks = [range(s, min(s + _CHUNK, len(images))) for s in range(0, len(images), _CHUNK)]
    pool = ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1))
    try:
        list(pool.map(fill, chunks))  # re-raises the first failing chunk's error
    finally:
        pool.shutdown(cancel_futures=True)
    return out


def _size(shape: torch.Size) -> str:
    return f"{shape[2]}x{shape[1]}"
