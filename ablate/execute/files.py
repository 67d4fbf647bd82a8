"""Checkpoint folders and the lock files that keep two processes off one trial or study."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

DEFAULT_CHECKPOINT_DIR = ".ablate/checkpoints"


class EnvironmentProblem(RuntimeError):
    """The environment can't run the study (e.g. an unwritable checkpoint directory)."""


def checkpoint_path(path: str | os.PathLike[str] | None = None) -> Path:
    """``--checkpoint-dir``, else ``ABLATE_CHECKPOINT_DIR``, else ``./.ablate/checkpoints``."""
    return Path(path or os.environ.get("ABLATE_CHECKPOINT_DIR") or DEFAULT_CHECKPOINT_DIR)


def checkpoint_root(path: str | os.PathLike[str] | None = None) -> Path:
    """:func:`checkpoint_path`, created and checked to be writable."""
    root = checkpoint_path(path)
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".write-test-{os.getpid()}"  # unique: Ray workers probe at once
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise _unwritable(root, exc.strerror or str(exc)) from None
    return root


def check_checkpoint_root(path: str | os.PathLike[str] | None = None) -> Path:
    """:func:`checkpoint_path` if it is (or can be created) writable; creates nothing, so a
    study refused later for another reason leaves no folder behind."""
    root = checkpoint_path(path)
    if root.exists():
        return checkpoint_root(root)  # probes with a file it removes at once
    parent = root.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise _unwritable(root, f"{str(parent)!r} is not a folder")
    import tempfile

    try:  # a folder made and removed at once: permissions, read-only mounts, /proc...
        os.rmdir(tempfile.mkdtemp(dir=parent, prefix=".ablate-write-test-"))
    except OSError as exc:
        raise _unwritable(root, f"can't create folders in {str(parent)!r}: "
                                f"{exc.strerror or exc}") from None
    return root


def _unwritable(root: Path, why: str) -> EnvironmentProblem:
    return EnvironmentProblem(
        f"checkpoint directory {str(root)!r} is not writable ({why}). Fix: pass "
        f"--checkpoint-dir DIR (or set ABLATE_CHECKPOINT_DIR) to a writable folder."
    )


@contextmanager
def file_lock(path: Path, *, blocking: bool) -> Iterator[bool]:
    """An exclusive lock on the file ``path`` (``filelock``: ``flock`` on POSIX); yields False
    if not blocking and another process (or another lock object) holds it already.

    The kernel releases it when the process dies, so a killed run never leaves a stale lock.
    """
    from filelock import FileLock, Timeout

    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=-1 if blocking else 0)
    except Timeout:
        yield False
        return
    try:
        yield True
    finally:
        lock.release()
