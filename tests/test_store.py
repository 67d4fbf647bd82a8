"""The tracking store: created atomically, refused with the fix when it can't be used.

Real processes and real sqlite files in temp folders.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from ablate.cli import main

STUDY = """
from ablate import Study

def train(config, run):
    for epoch in range(2):
        run.log({"loss": 1.0 / (epoch + 1), "score": epoch + run.seed}, step=epoch)

study = Study("store", train=train, factors={"opt.mode": ["a", "b"]}, seeds=2, metric="score")
"""


@pytest.fixture
def study(tmp_path: Path) -> Path:
    path = tmp_path / "store_study.py"
    path.write_text(textwrap.dedent(STUDY))
    return path


def trial_keys(uri: str) -> list[tuple[str, str]]:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("store")
    return sorted((r.data.tags["ablate.variant"], r.data.tags["ablate.seed"])
                  for r in client.search_runs([exp.experiment_id])
                  if r.data.tags.get("ablate.role") == "trial")


@pytest.mark.slow
def test_three_runs_started_together_on_a_new_store_share_it(study, tmp_path):
    """Three `ablate run` at once on a store that does not exist yet, ten times over: no crash,
    no half-created file, every trial exactly once, the parent run FINISHED."""
    for round_ in range(10):
        folder = tmp_path / f"r{round_}"
        folder.mkdir()
        uri = f"sqlite:///{folder / 'mlflow.db'}"
        cmd = [sys.executable, "-m", "ablate.cli", "run", str(study), "--tracking-uri", uri,
               "--checkpoint-dir", str(folder / "ck")]
        procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for _ in range(3)]
        outs = [p.communicate(timeout=300) for p in procs]
        assert [p.returncode for p in procs] == [0, 0, 0], outs
        keys = trial_keys(uri)
        assert len(keys) == 4 and len(set(keys)) == 4, keys  # each trial exactly once
        client = MlflowClient(uri)
        (parent,) = [r for r in client.search_runs(
            [client.get_experiment_by_name("store").experiment_id])
            if r.data.tags.get("ablate.role") == "study"]
        assert parent.info.status == "FINISHED"
        assert not list(folder.glob(".mlflow.db.creating-*"))
    assert main(["run", str(study), "--tracking-uri", uri, "--checkpoint-dir",
                 str(folder / "ck")]) == 0  # the store stays usable


def test_half_created_store_is_refused_with_the_fix(study, tmp_path, capsys):
    db = tmp_path / "mlflow.db"
    con = sqlite3.connect(db)  # what a migration killed half-way leaves behind
    con.execute("CREATE TABLE experiments (experiment_id INTEGER)")
    con.execute("CREATE TABLE _alembic_tmp_experiments (experiment_id INTEGER)")
    con.commit()
    con.close()
    before = db.read_bytes()
    assert main(["run", str(study), "--tracking-uri", f"sqlite:///{db}",
                 "--checkpoint-dir", str(tmp_path / "ck")]) == 2
    err = capsys.readouterr().err
    assert "was left half-created" in err and "'_alembic_tmp_experiments'" in err
    assert f"delete {str(db)!r}" in err
    assert db.read_bytes() == before  # untouched


def read_only(folder: Path, cmd: list[str]) -> list[str]:
    """``cmd`` run with ``folder`` read-only: a read-only bind mount in a private mount
    namespace when we are root (root ignores permission bits), else permission bits."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return cmd
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare (util-linux) to make a read-only folder as root")
    f = shlex.quote(str(folder))
    return ["unshare", "-m", "--propagation", "private", "sh", "-c",
            f"mount --bind {f} {f} && mount -o remount,ro,bind {f} && exec \"$@\"", "sh", *cmd]


@pytest.mark.parametrize("where", ["store folder", "working directory"])
def test_read_only_folder_is_refused_at_once(study, tmp_path, where):
    folder = tmp_path / "ro"
    folder.mkdir()
    uri = [] if where == "working directory" else ["--tracking-uri", f"sqlite:///{folder}/m.db"]
    cmd = read_only(folder, [sys.executable, "-m", "ablate.cli", "run", str(study), *uri,
                             "--checkpoint-dir", str(tmp_path / "ck")])
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    try:
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=folder, capture_output=True, text=True, timeout=300,
                              env=env)
        seconds = time.perf_counter() - t0
    finally:
        folder.chmod(0o755)
    if "mount" in proc.stderr and proc.returncode != 2:
        pytest.skip(f"can't make a read-only mount here: {proc.stderr.strip()[:200]}")
    assert proc.returncode == 2, proc.stderr
    assert "is not writable" in proc.stderr and "Traceback" not in proc.stderr
    assert seconds < 60  # was 115 s of retries; a benchmark-style bound (start-up included)
    assert list(folder.iterdir()) == []


def test_unusable_tracking_uris_exit_2_and_write_nothing(study, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    t0 = time.perf_counter()
    assert main(["run", str(study), "--tracking-uri", "bogus://x",
                 "--checkpoint-dir", str(tmp_path / "ck")]) == 2
    assert time.perf_counter() - t0 < 20  # was 11 s and a raw traceback
    err = capsys.readouterr().err
    assert "'bogus://x'" in err and "Fix:" in err and "Traceback" not in err
    not_db = tmp_path / "notes.db"
    not_db.write_text("these are my notes, not a database")
    assert main(["run", str(study), "--tracking-uri", f"sqlite:///{not_db}",
                 "--checkpoint-dir", str(tmp_path / "ck")]) == 2
    assert "not a readable sqlite database" in capsys.readouterr().err
    assert not_db.read_text() == "these are my notes, not a database"


def test_unwritable_checkpoint_dir_creates_no_store(study, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    db = tmp_path / "m.db"
    assert main(["run", str(study), "--tracking-uri", f"sqlite:///{db}",
                 "--checkpoint-dir", str(blocker / "ck")]) == 2
    assert "is not writable" in capsys.readouterr().err
    assert not db.exists()


def test_store_deleted_mid_study_ends_it_with_the_store_lost_message(tmp_path, capsys):
    db = tmp_path / "m.db"
    path = tmp_path / "deleting.py"
    path.write_text(textwrap.dedent(f"""
        import os
        from ablate import Study

        def train(config, run):
            for epoch in range(3):
                if run.seed == 1 and epoch == 1 and os.path.exists({str(db)!r}):
                    os.remove({str(db)!r})  # as if the user deleted mlflow.db mid-study
                run.log({{"loss": 1.0, "score": float(epoch)}}, step=epoch)

        study = Study("gone", train=train, factors={{"mode": ["a", "b"]}}, seeds=2,
                      metric="score")
    """))
    code = main(["run", str(path), "--tracking-uri", f"sqlite:///{db}",
                 "--checkpoint-dir", str(tmp_path / "ck")])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "tracking store" in err and "failed" in err and "ablate run` again" in err
    assert "Traceback" not in err


def test_a_store_left_with_a_hot_journal_by_a_killed_writer_is_recovered(study, tmp_path):
    """A writer killed mid-transaction leaves a hot journal beside the database; opening the
    store must roll it back (as sqlite does for a read-write connection), not refuse it."""
    db = tmp_path / "m.db"
    uri = f"sqlite:///{db}"
    args = ["run", str(study), "--tracking-uri", uri, "--checkpoint-dir", str(tmp_path / "ck")]
    assert main(args) == 0
    killer = ("import os, sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
              "c.execute('PRAGMA cache_size=1'); c.execute('BEGIN IMMEDIATE'); "
              "c.execute('CREATE TABLE half_done (a)'); "
              "c.executemany('INSERT INTO half_done VALUES (?)', [('x' * 500,)] * 2000); "
              "c.execute('DELETE FROM metrics'); os.kill(os.getpid(), 9)")  # pages spilled
    subprocess.run([sys.executable, "-c", killer, str(db)])
    assert Path(f"{db}-journal").exists()  # hot: the killed transaction is still in it
    assert main(args) == 0  # nothing to train, and the store opens
    assert len(trial_keys(uri)) == 4
    con = sqlite3.connect(db)
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "half_done" not in tables and con.execute("SELECT count(*) FROM metrics").fetchone()[0]
    con.close()


# ------------------------------------------------------------ new stores copy a cached empty one
def test_a_new_store_is_a_copy_of_the_cached_empty_store(tmp_path, monkeypatch):
    """The first new store on a machine migrates the cached empty store once; every later one
    is a copy (MLflow's migrations never run again) that MLflow opens and writes normally, with
    its own Default experiment."""
    from mlflow.store.db import utils

    from ablate.track.store import empty_store, prepare_sqlite_store

    monkeypatch.setenv("ABLATE_CACHE_DIR", str(tmp_path / "cache"))
    prepare_sqlite_store(tmp_path / "a.db", "a")
    (cached,) = (tmp_path / "cache" / "mlflow-stores").glob("empty-mlflow-*.db")
    assert empty_store() == cached

    def no_migrations(engine):
        raise AssertionError("migrations ran for a store the cache could copy")

    monkeypatch.setattr(utils, "_initialize_tables", no_migrations)
    monkeypatch.chdir(tmp_path)
    prepare_sqlite_store(tmp_path / "b.db", "b")
    client = MlflowClient(f"sqlite:///{tmp_path / 'b.db'}")
    assert client.get_experiment("0").artifact_location == str(tmp_path / "mlruns" / "0")
    run = client.create_run(client.create_experiment("e"))
    client.log_metric(run.info.run_id, "m", 1.0)
    assert client.get_run(run.info.run_id).data.metrics == {"m": 1.0}
    assert _experiments(cached) == 0  # the cached store stays empty: only copies are written


def _experiments(db: Path) -> int:
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT count(*) FROM experiments").fetchone()[0]
    finally:
        con.close()


@pytest.mark.parametrize("damage", ["garbage", "empty file", "holds an experiment"])
def test_a_damaged_cached_store_is_made_again(tmp_path, monkeypatch, damage):
    from ablate.track.store import empty_store, prepare_sqlite_store

    monkeypatch.setenv("ABLATE_CACHE_DIR", str(tmp_path / "cache"))
    cached = empty_store()
    assert cached is not None
    if damage == "garbage":
        cached.write_bytes(b"not a database" * 100)
    elif damage == "empty file":
        cached.write_bytes(b"")
    else:
        con = sqlite3.connect(cached)
        con.execute("INSERT INTO experiments (experiment_id, name, lifecycle_stage) "
                    "VALUES (7, 'x', 'active')")
        con.commit()
        con.close()
    prepare_sqlite_store(tmp_path / "s.db", "s")
    assert _experiments(cached) == 0  # made again
    client = MlflowClient(f"sqlite:///{tmp_path / 's.db'}")
    assert [e.name for e in client.search_experiments()] == ["Default"]


def test_an_unwritable_cache_folder_still_gives_a_store(tmp_path, monkeypatch):
    from ablate.track.store import empty_store, prepare_sqlite_store

    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder would be")
    monkeypatch.setenv("ABLATE_CACHE_DIR", str(blocker))
    assert empty_store() is None
    prepare_sqlite_store(tmp_path / "s.db", "s")  # migrated in place
    assert [e.name for e in MlflowClient(f"sqlite:///{tmp_path / 's.db'}")
            .search_experiments()] == ["Default"]
