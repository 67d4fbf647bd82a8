"""Where downloaded and decoded data is cached, and how it gets there without half-written files.

The cache folder is ``$ABLATE_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/ablate``, else
``~/.cache/ablate``. Every file is written to a temporary file beside its destination and renamed
into place (``os.replace``) only when complete, so a crash or a failed check never leaves a
partial file where a reader would take it for a good one.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO
from urllib.request import urlopen

from ablate.dirs import cache_dir

__all__ = ["ChecksumError", "cache_dir", "download", "sha256_file", "write_atomically"]

DOWNLOAD_TIMEOUT_S = 60


class ChecksumError(ValueError):
    """A download's SHA-256 differs from the one stored for it; nothing was cached."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_atomically(dest: Path, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write`` on a temporary file beside ``dest``, then rename it to ``dest``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.part")
    try:
        with tmp.open("xb") as f:  # permissions follow the umask, as for any new file
            write(f)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def download(url: str, dest: Path, *, sha256: str) -> Path:
    """Fetch ``url`` to ``dest``, renamed into place only if its SHA-256 is ``sha256``.

    Raises :class:`ChecksumError` on a mismatch and ``ConnectionError`` if the fetch fails;
    either way ``dest`` is left as it was.
    """

    def fetch(out: BinaryIO) -> None:
        digest = hashlib.sha256()
        try:
            with urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
                for block in iter(lambda: response.read(1 << 20), b""):
                    digest.update(block)
                    out.write(block)
        except OSError as e:
            raise ConnectionError(f"could not download {url} ({type(e).__name__}: {e})") from e
        if digest.hexdigest() != sha256:
            raise ChecksumError(
                f"the download of {url} has SHA-256 {digest.hexdigest()}, expected {sha256}; "
                f"nothing was cached. The file at that address changed or the transfer was "
                f"corrupted: retry, or pass a copy you trust as data.path."
            )

    write_atomically(dest, fetch)
    return dest
