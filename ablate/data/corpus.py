"""Device-resident character-level language-model data with BPTT batching: a file or a name."""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from ablate.data.cache import cache_dir, download, sha256_file
from ablate.data.images import _check_fraction, _check_positive_int, derive_seed


@dataclass(eq=False)
class TextData:
    """Character ids of a train and a val text, with ``batch_size`` parallel streams each."""

    task: ClassVar[str] = "language_model"

    vocab: list[str]
    train: Tensor = field(repr=False)
    val: Tensor = field(repr=False)
    batch_size: int = 64
    bptt: int = 70
    random_bptt: bool = False

    def __post_init__(self) -> None:
        _check_positive_int("batch_size", self.batch_size)
        _check_positive_int("bptt", self.bptt)
        if not self.vocab:
            raise ValueError("vocab must not be empty")
        for name in ("train", "val"):
            ids = getattr(self, name)
            if ids.ndim != 1 or ids.dtype != torch.int64:
                raise ValueError(f"{name} must be a 1-D int64 tensor, got {ids.dtype} {ids.shape}")
            if len(ids) < 2 * self.batch_size:
                raise ValueError(
                    f"{name} has {len(ids)} characters; batch_size={self.batch_size} streams need "
                    f"at least {2 * self.batch_size} (lower batch_size or use more text)"
                )
        self._index = {ch: i for i, ch in enumerate(self.vocab)}

    @property
    def device(self) -> torch.device:
        return self.train.device

    @property
    def model_kwargs(self) -> dict[str, int]:
        return {"vocab_size": len(self.vocab)}

    @property
    def steps_per_epoch(self) -> int:
        """Exact for a fixed ``bptt``; with ``random_bptt`` an estimate from the mean window."""
        mean_len = 0.975 * self.bptt if self.random_bptt else self.bptt
        return math.ceil((len(self.train) // self.batch_size - 1) / mean_len)

    def to(self, device: torch.device | str) -> TextData:
        return replace(self, train=self.train.to(device), val=self.val.to(device))

    def encode(self, s: str) -> Tensor:
        try:
            return torch.tensor([self._index[ch] for ch in s], dtype=torch.int64)
        except KeyError as e:
            raise ValueError(f"character {e.args[0]!r} is not in the vocabulary") from None

    def decode(self, ids: Tensor | list[int]) -> str:
        ids = ids.tolist() if isinstance(ids, Tensor) else ids
        return "".join(self.vocab[i] for i in ids)

    def _windows(self, ids: Tensor, lengths: Iterator[int]) -> Iterator[tuple[Tensor, Tensor]]:
        """Batch-first streams ``[B, L]``; x = next window, y = x shifted by one character."""
        length = len(ids) // self.batch_size
        streams = ids[: length * self.batch_size].view(self.batch_size, length)
        start = 0
        while start < length - 1:
            end = min(start + next(lengths), length - 1)
            yield streams[:, start:end].contiguous(), streams[:, start + 1 : end + 1].contiguous()
            start = end

    def train_batches(self, *, seed: int, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        """Consecutive windows in stream order; with ``random_bptt`` fast.ai's random lengths."""
        if not self.random_bptt:
            return self._windows(self.train, itertools.repeat(self.bptt))
        rng = random.Random(derive_seed(seed, epoch, "bptt"))

        def lengths() -> Iterator[int]:
            while True:
                bptt = self.bptt if rng.random() < 0.95 else self.bptt / 2
                yield max(5, int(rng.normalvariate(bptt, 5)))

        return self._windows(self.train, lengths())

    def val_batches(self) -> Iterator[tuple[Tensor, Tensor]]:
        return self._windows(self.val, itertools.repeat(self.bptt))


@dataclass(frozen=True)
class Corpus:
    """A text known by name: where it is downloaded from and the SHA-256 it must have."""

    url: str
    sha256: str


# "nietzsche": Beyond Good and Evil (English, public domain), the fast.ai lesson-6 corpus:
# 600,893 characters, 85 distinct.
CORPORA: dict[str, Corpus] = {
    "nietzsche": Corpus(
        url="https://s3.amazonaws.com/text-datasets/nietzsche.txt",
        sha256="23cf69874ab69d3d256099ab530ea4be24d47d9675b673bcc67cbcd6298ec647",
    ),
}


def corpus_file(name: str) -> Path:
    """The cached file of corpus ``name``, downloaded and checked against its SHA-256 if needed.

    A cached copy whose checksum no longer matches is downloaded again.
    """
    if name not in CORPORA:
        raise ValueError(
            f"unknown corpus data.name={name!r}; known: {', '.join(sorted(CORPORA))}. "
            f"Fix: use one of those, or set data.path to a UTF-8 text file."
        )
    corpus = CORPORA[name]
    file = cache_dir() / "text" / f"{name}.txt"
    if file.is_file() and sha256_file(file) == corpus.sha256:
        return file
    try:
        return download(corpus.url, file, sha256=corpus.sha256)
    except ConnectionError as e:
        raise ConnectionError(
            f"corpus {name!r} is not cached in {file.parent}/ and {e}. Fix: connect to the "
            f"internet once, or download it yourself and set data.path to the file."
        ) from e


def text(
    *,
    name: str = "nietzsche",
    path: str | None = None,
    batch_size: int = 64,
    bptt: int = 70,
    random_bptt: bool = False,
    val_fraction: float = 0.1,
    max_chars: int | None = 1_000_000,
) -> TextData:
    """A character corpus (first ``max_chars``): the UTF-8 file ``path``, else the corpus ``name``.

    ``path``, when set, is read instead of the named corpus. Named corpora (``CORPORA``:
    ``"nietzsche"``) are downloaded once into the cache folder (``ablate.data.cache.cache_dir()``)
    and checked against a stored SHA-256. The vocabulary is the sorted distinct characters; the
    last ``val_fraction`` is validation.
    """
    _check_positive_int("batch_size", batch_size)
    _check_positive_int("bptt", bptt)
    _check_fraction("val_fraction", val_fraction)
    if max_chars is not None:
        _check_positive_int("max_chars", max_chars)
    if path is None:
        file, source = corpus_file(name), f"corpus {name!r}"
    else:
        file = Path(path).expanduser()
        if not file.is_file():
            raise FileNotFoundError(f"text file '{file}' not found; set data.path to a text file")
        source = f"'{file}'"
    with file.open(encoding="utf-8") as f:
        corpus = f.read(-1 if max_chars is None else max_chars)
    needed = batch_size * bptt * 2
    if len(corpus) < needed:
        raise ValueError(
            f"{source} has {len(corpus)} characters; batch_size={batch_size} x bptt={bptt} x 2 "
            f"needs at least {needed} (use a longer text or lower data.batch_size/data.bptt)"
        )
    codepoints = np.frombuffer(corpus.encode("utf-32-le"), dtype=np.uint32)
    chars, inverse = np.unique(codepoints, return_inverse=True)
    ids = torch.from_numpy(inverse.astype(np.int64))
    n_val = int(len(ids) * val_fraction)
    return TextData(
        vocab=[chr(c) for c in chars],
        train=ids[: len(ids) - n_val],
        val=ids[len(ids) - n_val :],
        batch_size=batch_size,
        bptt=bptt,
        random_bptt=random_bptt,
    )
