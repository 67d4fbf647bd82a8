"""What a Ray worker needs to load the study itself: the study file, shipped to every node."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ablate.execute.cluster import is_cluster_address
from ablate.execute.files import EnvironmentProblem
from ablate.source import StudySource
from ablate.study import Study

SHIP_LIMIT_MB = 100  # default for ABLATE_SHIP_LIMIT_MB: most a study's folder may weigh to ship


@dataclass(frozen=True)
class ShippedStudy:
    """What a Ray worker needs to load the study itself.

    A :class:`Study` is never pickled: its functions live in a module only the driver imported.
    The worker imports the file again from the same :class:`~ablate.source.StudySource` (the
    same ``--study``, ``--set``, ``--seeds`` and ``--tune-trials``). On a cluster
    (``--address``) the study's whole folder — the study file and the modules beside it that it
    imports — is shipped to every node as Ray's ``py_modules`` (:meth:`runtime_env`, see
    :func:`check_shipping` for the size limit), and the worker loads the shipped copy; on a
    local Ray instance it loads the file where it is. Either way it checks that it loads the
    bytes the driver read (``digest``).
    """

    source: StudySource  # its path resolved
    digest: str | None = None  # sha256 of the study file as the driver read it

    @classmethod
    def of(cls, source: StudySource | str | os.PathLike[str]) -> ShippedStudy:
        """The study file of ``source`` (a path: the file as written), its path resolved."""
        if not isinstance(source, StudySource):
            source = StudySource(source)
        resolved = Path(source.path).resolve()
        return cls(replace(source, path=str(resolved)), _digest(resolved))

    @property
    def path(self) -> str:
        """The study file's absolute path on the driver."""
        return str(self.source.path)

    @property
    def folder(self) -> Path:
        """The folder shipped to every node: the study file's own."""
        return Path(self.path).parent

    def runtime_env(self) -> dict[str, Any]:
        """Ray's job ``runtime_env`` that ships :attr:`folder` to every node (``py_modules``:
        unpacked under each node's Ray temp dir, the workers' current directory unchanged)."""
        return {"py_modules": [str(self.folder)]}

    def locate(self) -> Path:
        """Where this worker finds the study file the driver read: the shipped copy if there
        is one (``<py_modules dir>/<folder name>/<file>``: Ray unpacks each py_modules package
        into a ``_ray_pkg_<hash>`` folder and puts it on ``sys.path``), else the file at its
        path on this node. :class:`StudyError` if neither holds the same bytes."""
        import sys

        from ablate.validate import StudyError

        original = Path(self.path)
        shipped = [Path(entry) / self.folder.name / original.name for entry in sys.path
                   if Path(entry).name.startswith("_ray_pkg_")]
        for path in [*shipped, original]:
            if path.is_file() and (self.digest is None or _digest(path) == self.digest):
                return path
        why = ("is missing on this node" if not original.is_file()
               else "was edited after `ablate run` started")
        raise StudyError(
            f"a Ray worker can't load the study: {self.path} {why}, and no copy shipped with "
            f"the job matches what the driver read. Fix: run again (with --address, ablate "
            f"ships the study's folder {str(self.folder)!r} to every node); if you call "
            f"ray.init yourself, pass runtime_env={{'py_modules': [{str(self.folder)!r}]}}."
        )

    def load(self) -> Study:
        """The study, loaded from :meth:`locate`'s file (its ``source`` still :attr:`path`)."""
        return self.source.load(self.locate())


def _digest(path: Path) -> str | None:
    import hashlib

    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def ship_limit() -> int:
    """Bytes a study's folder may hold to be shipped to a cluster (``ABLATE_SHIP_LIMIT_MB``,
    default 100 MiB; Ray itself refuses packages of 512 MiB and more)."""
    try:
        return int(float(os.environ.get("ABLATE_SHIP_LIMIT_MB") or SHIP_LIMIT_MB) * 2**20)
    except ValueError:
        return SHIP_LIMIT_MB * 2**20


def shipped_files(folder: Path) -> list[tuple[int, Path]]:
    """(size, path) of each file Ray ships from ``folder``, largest first. Ray's own walk
    decides (it skips what ``.rayignore`` and ``.gitignore`` files in the folder list, unless
    ``RAY_RUNTIME_ENV_IGNORE_GITIGNORE=1``); without it every file counts."""
    files: list[tuple[int, Path]] = []

    def handler(path: Path) -> None:
        try:
            if path.is_file():
                files.append((path.stat().st_size, path))
        except OSError:
            pass

    try:
        from ray._private.runtime_env.packaging import _dir_travel

        gitignore = os.environ.get("RAY_RUNTIME_ENV_IGNORE_GITIGNORE", "0") != "1"
        _dir_travel(folder, [], handler, include_gitignore=gitignore)
    except (ImportError, TypeError, AttributeError):  # another Ray: count everything
        files.clear()
        for dirpath, _, names in os.walk(folder, followlinks=True):
            for name in names:
                handler(Path(dirpath) / name)
    return sorted(files, key=lambda f: (-f[0], str(f[1])))


def check_shipping(path: str | os.PathLike[str], address: str | None) -> None:
    """Refuse, before anything runs, a study whose folder is too large to ship to a cluster.
    Nothing to check for a local Ray instance (the workers read the folder where it is)."""
    if not is_cluster_address(address):
        return
    folder = Path(path).resolve().parent
    files = shipped_files(folder)
    total, limit = sum(size for size, _ in files), ship_limit()
    if total <= limit:
        return
    largest = ", ".join(f"{p.relative_to(folder)} ({_mib(size)})" for size, p in files[:3])
    raise EnvironmentProblem(
        f"--address {address} ships the study's folder {str(folder)!r} to every Ray node (the "
        f"study file and the modules beside it), but it holds {_mib(total)} in {len(files)} "
        f"files, over the limit of {_mib(limit)}; largest: {largest}. Fix: move data out of "
        f"the folder (onto storage every node mounts, and point the study at it), or list what "
        f"the workers don't need in {str(folder / '.rayignore')!r} (gitignore syntax); or "
        f"raise the limit with ABLATE_SHIP_LIMIT_MB (Ray refuses 512 MiB). Nothing was run."
    )


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"
