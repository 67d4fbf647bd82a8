"""Where the tracking store is and whether it can be used: URIs, sqlite creation, failures."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


class TrackingError(RuntimeError):
    """The tracking store can't be used; nothing was trained."""


def resolve_uri(uri: str | None) -> str:
    """``--tracking-uri``, else ``MLFLOW_TRACKING_URI``, else MLflow's default."""
    import mlflow

    return uri or os.environ.get("MLFLOW_TRACKING_URI") or mlflow.get_tracking_uri()


# How long a study waits for a tracking server that stopped answering, unless the user set
# these: 3 retries 1, 2 and 4 s apart, 30 s per request (MLflow's defaults wait minutes per
# call, so a study whose server died seemed to hang).
HTTP_WAITS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
              "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}


def bound_http_waits() -> None:
    """Apply :data:`HTTP_WAITS` to this process (and the Ray workers it starts)."""
    for key, value in HTTP_WAITS.items():
        os.environ.setdefault(key, value)


def sqlite_path(uri: str) -> Path | None:
    """The file of a ``sqlite:///`` tracking URI (None for other stores and in-memory ones)."""
    if not uri.startswith("sqlite:///"):
        return None
    rest = uri[len("sqlite:///"):].split("?", 1)[0]
    return None if not rest or rest.startswith(":memory:") else Path(rest)


def prepare_sqlite_store(path: Path, uri: str) -> None:
    """Make sure ``path`` is a complete MLflow sqlite store, or say exactly what is wrong.

    A new store is created and migrated in a temporary file beside ``path``, under a lock that
    every ``ablate`` process on this machine takes for that file, and renamed into place only
    when MLflow's migrations are done: another process, or a kill during the migrations, can
    never see or leave a half-created store. An existing store that is half-created (by an
    older version, or by MLflow itself) is refused with the fix. Raises :class:`TrackingError`.
    """
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise TrackingError(
            f"tracking store {uri!r}: folder {str(folder)!r} does not exist. Fix: create it, or "
            f"pass another --tracking-uri. Nothing was written."
        )
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise TrackingError(
            f"tracking store {uri!r}: {'the file' if path.exists() else 'its folder'} "
            f"{str(path if path.exists() else folder)!r} is not writable (sqlite writes its "
            f"journal beside the file). Fix: pass --tracking-uri sqlite:////WRITABLE/PATH/"
            f"mlflow.db or run from a writable folder. Nothing was written."
        )
    if _complete_store(path, uri):
        return
    from filelock import FileLock

    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    lock = Path(tempfile.gettempdir()) / f"ablate-store-{digest}.lock"
    with FileLock(str(lock)):
        if _complete_store(path, uri):  # another process created it while we waited
            return
        for stale in folder.glob(f".{path.name}.creating-*"):  # left by a killed creator
            stale.unlink(missing_ok=True)
        _write_beside(path, _create_tables)


def _complete_store(path: Path, uri: str) -> bool:
    """True for a complete store; False for none (no file, an empty file, no tables)."""
    import sqlite3

    if not path.exists() or path.stat().st_size == 0:
        return False
    try:
        con = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=30)  # rw: a killed
        # writer may have left a hot journal, which only a read-write connection rolls back
        try:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master "
                                                "WHERE type = 'table'")}
            runs = (con.execute("SELECT count(*) FROM runs").fetchone()[0]
                    if "runs" in tables else 0)
        finally:
            con.close()
    except sqlite3.Error as exc:
        raise TrackingError(
            f"tracking store {uri!r} is not a readable sqlite database ({exc}). Fix: pass "
            f"another --tracking-uri, or move {str(path)!r} away if it is not an MLflow store. "
            f"Nothing was written."
        ) from None
    if not tables:
        return False
    half = sorted(t for t in tables if t.startswith("_alembic_tmp_"))
    if half or "alembic_version" not in tables:
        found = f"table {half[0]!r}" if half else "no 'alembic_version' table"
        raise TrackingError(
            f"tracking store {uri!r} was left half-created: MLflow's table creation was "
            f"interrupted there ({found}; {runs} run(s) recorded). Fix: if you need none of its "
            f"runs, delete {str(path)!r} and run again (ablate creates a new store safely); "
            f"otherwise repair it with `mlflow db upgrade {uri}` on a backup copy. Nothing was "
            f"written."
        )
    return True


def _create_tables(path: Path) -> None:
    """MLflow's schema, migrated to the installed version, in the new file ``path``: a copy of
    the cached empty store of this MLflow (:func:`empty_store`), else migrated in place."""
    import shutil

    template = empty_store()
    if template is None:
        _migrate(path)
    else:
        shutil.copyfile(template, path)


def empty_store() -> Path | None:
    """An empty store migrated to the installed MLflow's schema, made once per machine and
    MLflow version in the cache folder (``ablate.dirs.cache_dir()/mlflow-stores``).

    MLflow creates a store by running each of its ~60 schema migrations (several seconds); a
    new store is a copy of this one instead. It holds only the schema: MLflow adds its
    ``Default`` experiment, with the new store's own artifact folder, when it first opens the
    copy. The file is named by MLflow's version and its list of migrations, so a store is never
    copied from another schema; it is written to a temporary file and renamed into place, so a
    crash never leaves a half-made one. None when the cache folder can't be written (each new
    store is then migrated in place).
    """
    import mlflow
    from mlflow.store.db import utils

    from ablate.dirs import cache_dir

    migrations = Path(utils.__file__).parent.parent / "db_migrations" / "versions"
    names = sorted(p.name for p in migrations.glob("*.py")) if migrations.is_dir() else []
    digest = hashlib.sha256("\n".join(names).encode()).hexdigest()[:12]
    folder = cache_dir() / "mlflow-stores"
    path = folder / f"empty-mlflow-{mlflow.__version__}-{digest}.db"
    if _is_empty_store(path):
        return path
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _write_beside(path, _migrate)
    except OSError:
        return None
    return path if _is_empty_store(path) else None


def _write_beside(path: Path, make: Callable[[Path], None]) -> None:
    """``make`` a store in a temporary file beside ``path`` (``.NAME.creating-*``), then rename
    it into place: no reader ever sees a half-made one, and a crash leaves only the temporary
    file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.creating-")
    os.close(fd)
    try:
        make(Path(tmp))
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _is_empty_store(path: Path) -> bool:
    """True for a complete store (migrated: ``alembic_version`` set) that holds nothing."""
    import sqlite3

    if not path.is_file() or path.stat().st_size == 0:
        return False
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        try:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master "
                                                "WHERE type = 'table'")}
            if "alembic_version" not in tables or "experiments" not in tables or any(
                    t.startswith("_alembic_tmp_") for t in tables):
                return False
            version = con.execute("SELECT count(*) FROM alembic_version").fetchone()[0]
            experiments = con.execute("SELECT count(*) FROM experiments").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return False
    return version == 1 and experiments == 0


def _migrate(path: Path) -> None:
    """MLflow's own creation of a new store's tables: every migration, in the file ``path``."""
    import sqlalchemy
    from mlflow.store.db.utils import _initialize_tables  # what MLflow runs for a new store

    engine = sqlalchemy.create_engine(f"sqlite:///{path}")
    try:
        _initialize_tables(engine)
    finally:
        engine.dispose()


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else ""


def describe_failure(exc: BaseException) -> str:
    """``Type: message`` of the root cause of a store error (MLflow wraps SQLAlchemy, which
    wraps the driver: the driver's words say what happened, e.g. a read-only database)."""
    root = exc
    for _ in range(20):  # a chain is short; the bound only guards against a pathological one
        nxt = root.__cause__ or root.__context__
        if nxt is None:
            break
        root = nxt
    for candidate in (root, exc):
        line = first_line(candidate)
        if line and not line.startswith("(raised as a result of"):
            return f"{type(candidate).__name__}: {line}"
    return type(exc).__name__


# What MLflow would print during a study, off: its per-run "View run / View experiment" links
# (written to stdout when a run on a tracking server ends, in every process that ends one: Ray
# workers too; they open MLflow's GenAI view, ablate prints its own links) and its progress bars.
QUIET_ENV = {"MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
             "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}


@contextmanager
def quiet_mlflow() -> Iterator[None]:
    """Silence MLflow's INFO chatter (database migrations), its run links and progress bars
    during a study (:data:`QUIET_ENV`)."""
    import logging

    names = {"mlflow": logging.WARNING, "alembic": logging.WARNING,
             # logs every failed query with its traceback; ablate reports the failure itself
             "mlflow.store.db.utils": logging.CRITICAL}
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg, level in zip(loggers, names.values()):
        lg.setLevel(level)
    saved = {key: os.environ.get(key) for key in QUIET_ENV}
    os.environ.update(QUIET_ENV)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
