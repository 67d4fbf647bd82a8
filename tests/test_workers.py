"""The in-process executor's worker processes (``ablate run --workers N``) end to end: real runs of
tiny studies, real MLflow stores (sqlite in temp dirs), real signals. Results are compared
bitwise with the sequential path (``--workers 1``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from ablate.cli import main
from ablate.execute import ShippedStudy, resolve_workers, run_study
from ablate.study import Study
from tests.test_ray import lines, parent_run, snapshot, trial_runs, uri_of, user_study, wait_for
from tests.test_runner import TINY, write


def run(path: Path, uri: str, ckpt: Path, *extra: str) -> int:
    return main(["run", str(path), "--tracking-uri", uri, "--checkpoint-dir", str(ckpt), *extra])


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (an orphan's zombie waits for init to reap it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def worker_pids(folder: Path) -> set[int]:
    """The pids the user train function wrote, one file per trial past its first checkpoint."""
    return {int(p.read_text()) for p in folder.iterdir() if p.read_text()}


def started(tmp_path: Path, path: Path, uri: str, ck: Path) -> tuple[subprocess.Popen, set[int]]:
    """``ablate run --workers 2`` in its own process group (as a terminal's foreground job, with
    Ctrl-C's default handling even when these tests run with SIGINT ignored), returned once two
    worker processes have each saved a trial's first checkpoint: (the driver, the workers' pids).
    Each worker is a child of the driver, or of the template it was forked from, the driver's
    child (:func:`templates`)."""
    cmd = [sys.executable, "-m", "ablate.cli", "run", str(path), "--tracking-uri", uri,
           "--checkpoint-dir", str(ck), "--workers", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))

    def two_training() -> bool:
        assert proc.poll() is None, proc.communicate()
        return len(worker_pids(tmp_path / "pids")) >= 2

    assert wait_for(two_training, 180)
    pids = worker_pids(tmp_path / "pids")
    assert proc.pid not in pids
    assert all(proc.pid in (parent_of(p), parent_of(parent_of(p))) for p in pids)
    return proc, pids


def templates(proc: subprocess.Popen, pids: set[int]) -> set[int]:
    """The template processes the workers ``pids`` of the driver ``proc`` were forked from."""
    return {parent_of(p) for p in pids} - {proc.pid}


def check_complete(uri: str, epochs: int = 4) -> None:
    """Every trial finished once: one run each, every epoch logged exactly once, the values of an
    uninterrupted run."""
    runs = trial_runs(uri, "user")
    assert len(runs) == 4
    client = MlflowClient(uri)
    for r in runs:
        assert r.data.tags["ablate.status"] == "finished" and r.info.status == "FINISHED"
        assert r.data.metrics["final_score"] == int(r.data.tags["ablate.seed"]) + 0.5 * epochs
        steps = [m.step for m in client.get_metric_history(r.info.run_id, "score")]
        assert sorted(steps) == list(range(epochs))


def test_workers_give_bitwise_the_sequential_results(tmp_path, capsys):
    path = write(tmp_path, TINY, EPOCHS=2)
    one, two = uri_of(tmp_path, "one.db"), uri_of(tmp_path, "two.db")
    assert run(path, one, tmp_path / "c1", "--workers", "1") == 0
    assert "worker processes" not in capsys.readouterr().out
    assert run(path, two, tmp_path / "c2", "--workers", "2") == 0
    out = capsys.readouterr().out
    assert "2 worker processes train the pending trials" in out
    assert sorted(line.split("]")[0] for line in out.splitlines() if line.startswith("[")) == [
        f"[{k}/4" for k in range(1, 5)]  # one end line per trial, in completion order
    a, b = snapshot(one, "tiny"), snapshot(two, "tiny")
    assert len(a) == 4 and all(len(hist) >= 5 for _, _, hist in a.values())
    assert a == b  # every metric, every step, bitwise
    assert len({tuple(hist["val_loss"]) for _, _, hist in a.values()}) == 4  # not vacuous
    assert parent_run(two, "tiny").info.status == "FINISHED"
    # nothing pending: no worker is started
    assert run(path, two, tmp_path / "c2") == 0
    out = capsys.readouterr().out
    assert "trained now 0, already done 4" in out and "worker processes" not in out


def test_kill_9_of_the_driver_kills_its_workers_and_a_rerun_finishes_each_trial_once(tmp_path):
    path = user_study(tmp_path, ["a", "b"], epochs=4, seeds=2, sleep=0.5)
    uri, ck = uri_of(tmp_path), tmp_path / "ck"
    proc, pids = started(tmp_path, path, uri, ck)
    pids |= templates(proc, pids)
    try:
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
        assert wait_for(lambda: not any(map(alive, pids)), 30), "a worker outlived its driver"
    finally:
        if any(map(alive, pids)):
            os.killpg(proc.pid, signal.SIGKILL)
    assert [r for r in trial_runs(uri, "user") if r.data.tags["ablate.status"] == "running"]
    assert run(path, uri, ck, "--workers", "2") == 0
    check_complete(uri)
    assert lines(tmp_path / "resumed")  # the killed trials resumed from their checkpoints


def test_ctrl_c_kills_the_workers_exits_130_and_a_rerun_completes(tmp_path):
    path = user_study(tmp_path, ["a", "b"], epochs=4, seeds=2, sleep=0.5)
    uri, ck = uri_of(tmp_path), tmp_path / "ck"
    proc, pids = started(tmp_path, path, uri, ck)
    template = templates(proc, pids)
    try:
        os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole process group
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert not any(map(alive, pids))  # killed and reaped before the driver exited
    assert wait_for(lambda: not any(map(alive, template)), 30)  # it ends with the driver
    stopped = [r for r in trial_runs(uri, "user") if r.data.tags["ablate.status"] == "running"]
    assert stopped and all(r.info.status == "KILLED" for r in stopped)
    assert parent_run(uri, "user").info.status == "KILLED"
    assert run(path, uri, ck) == 0
    check_complete(uri)
    assert {r.info.run_id for r in stopped} <= {r.info.run_id for r in trial_runs(uri, "user")}


def _fn(config, run):  # pragma: no cover - never trained
    pass


@pytest.mark.parametrize("config, workers, cpus, expected", [
    ({}, "auto", 16, 16),
    ({"train.threads": 4}, "auto", 16, 4),
    ({"train.threads": 4}, "auto", 2, 1),
    ({"train.device": "cuda"}, "auto", 16, 1),
    ({"train.device": "cpu"}, None, 16, 16),
    ({}, 3, 16, 3),
])
def test_the_default_number_of_workers(tmp_path, monkeypatch, config, workers, cpus, expected):
    monkeypatch.setattr("ablate.execute.pool.cpus", lambda: cpus)
    study = Study("w", train=_fn, config={"epochs": 1, **config}, seeds=2, metric="score")
    source = ShippedStudy.of(write(tmp_path, "x = 1"))
    assert resolve_workers(workers, study.trials, source) == expected
    assert resolve_workers(workers, study.trials, None) == 1  # not from a file: in process


def test_workers_flag_is_checked(tmp_path, capsys):
    path = write(tmp_path, TINY, EPOCHS=1)
    with pytest.raises(SystemExit) as exc:
        main(["run", str(path), "--workers", "0"])
    assert exc.value.code == 2 and "not a positive integer" in capsys.readouterr().err
    assert run(path, uri_of(tmp_path), tmp_path / "ck", "--workers", "2", "--executor",
               "ray") == 2
    assert "--workers only applies to the local executor" in capsys.readouterr().err


def test_python_api_trains_in_process_unless_given_the_study_file(tmp_path):
    study = Study("w", train=_fn, config={"epochs": 1}, seeds=2, metric="score")
    with pytest.raises(ValueError, match="pass source=ShippedStudy.of"):
        run_study(study, tracker=None, root=tmp_path, workers=2)  # refused before any use


def test_the_default_comes_from_ablate_workers_else_auto(tmp_path, monkeypatch, capsys):
    """The suite sets ABLATE_WORKERS=1 (tests/conftest.py); a user's default is auto."""
    path = write(tmp_path, TINY, EPOCHS=1)  # 2 variants x 2 seeds
    monkeypatch.setattr("ablate.execute.pool.cpus", lambda: 2)
    monkeypatch.setenv("ABLATE_WORKERS", "many")
    assert run(path, uri_of(tmp_path), tmp_path / "ck") == 2
    err = capsys.readouterr().err
    assert "ABLATE_WORKERS='many' is not a number of workers" in err
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "ck").exists()
    monkeypatch.delenv("ABLATE_WORKERS")
    assert run(path, uri_of(tmp_path), tmp_path / "ck") == 0
    assert "2 worker processes train the pending trials" in capsys.readouterr().out
    monkeypatch.setenv("ABLATE_WORKERS", "1")
    assert run(path, uri_of(tmp_path, "again.db"), tmp_path / "ck2") == 0
    assert "worker processes" not in capsys.readouterr().out
