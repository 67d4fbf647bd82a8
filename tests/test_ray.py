"""The Ray executor end to end: a real local Ray instance (started once for this module), real
MLflow stores (sqlite in temp dirs, and one real ``mlflow server`` over HTTP), tiny real
training. Ray results are compared bitwise with the in-process executor's at default settings:
both run each trial with ``train.threads`` torch threads (1 by default)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from importlib.util import find_spec
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from ablate.cli import main
from ablate.execute import EnvironmentProblem
from ablate.execute.cluster import check_cluster_storage, filesystem_type
from tests.conftest import free_port, wait_for
from tests.test_runner import TINY, write

needs_ray = pytest.mark.skipif(find_spec("ray") is None, reason="ray is not installed")
# Every test here starts or joins Ray: the suite's slow part (`python -m pytest -m slow`)
pytestmark = pytest.mark.slow

# A user train function that leaves traces the tests read: CALLS gets one line per call (pid,
# mode, seed, start and end time), RESUMED one line per resume (mode, seed, epoch resumed at),
# PIDS/<mode>-<seed> the worker's pid once the first checkpoint is saved. SLEEP per epoch.
USER = """
import os, time
from pathlib import Path
from ablate import Study

def train(config, run):
    mode, t0 = config["opt.mode"], time.time()
    state = run.load_checkpoint()
    if state is not None:
        with open(RESUMED, "a") as f:
            f.write(f"{mode} {run.seed} {state['epoch']}\\n")
    state = state or {"epoch": 0, "value": float(run.seed)}
    try:
        for epoch in range(state["epoch"], config["opt.epochs"]):
            time.sleep(SLEEP)
            if mode == "raise" and epoch == 1:
                raise RuntimeError("boom at epoch 1")
            state["value"] += 0.5
            run.log({"loss": 1.0 / (epoch + 1), "score": state["value"]}, step=epoch)
            run.save_checkpoint({"epoch": epoch + 1, "value": state["value"]})
            if epoch == 0:  # atomically: a reader never sees a half-written pid
                tmp = Path(PIDS).parent / f".pid-{mode}-{run.seed}"
                tmp.write_text(str(os.getpid()))
                os.replace(tmp, Path(PIDS, f"{mode}-{run.seed}"))
                if mode == HOLD:  # wait to be killed (a resumed trial starts past epoch 0)
                    end = time.time() + 300
                    while time.time() < end:
                        time.sleep(0.05)
    finally:
        with open(CALLS, "a") as f:
            f.write(f"{os.getpid()} {mode} {run.seed} {t0} {time.time()}\\n")

study = Study(
    "user",
    train=train,
    config={"opt.epochs": EPOCHS},
    factors={"opt.mode": MODES},
    seeds=SEEDS,
    metric="score",
)
"""

UNTIMED = ("train_seconds", "peak_mem_mb")  # wall-clock figures: differ run to run


def user_study(tmp_path: Path, modes, *, epochs=4, seeds=2, sleep=0.0,
               hold: str | None = None) -> Path:
    (tmp_path / "pids").mkdir(exist_ok=True)
    return write(tmp_path, USER, MODES=modes, EPOCHS=epochs, SEEDS=seeds, SLEEP=sleep, HOLD=hold,
                 RESUMED=str(tmp_path / "resumed"), CALLS=str(tmp_path / "calls"),
                 PIDS=str(tmp_path / "pids"))


def lines(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def uri_of(tmp_path: Path, name: str = "mlflow.db") -> str:
    return f"sqlite:///{tmp_path / name}"


def run(path: Path, uri: str, ckpt: Path, *extra: str) -> int:
    return main(["run", str(path), "--tracking-uri", uri, "--checkpoint-dir", str(ckpt), *extra])


def run_ray(path: Path, uri: str, ckpt: Path, *extra: str) -> int:
    return run(path, uri, ckpt, "--executor", "ray", *extra)


def all_runs(uri: str, study: str) -> list:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(study)
    return client.search_runs([exp.experiment_id])


def trial_runs(uri: str, study: str) -> list:
    return [r for r in all_runs(uri, study) if r.data.tags.get("ablate.role") == "trial"]


def parent_run(uri: str, study: str):
    (parent,) = [r for r in all_runs(uri, study) if r.data.tags.get("ablate.role") == "study"]
    return parent


def snapshot(uri: str, study: str) -> dict:
    """Per trial: status tags and every metric's full history (steps and values), untimed."""
    client = MlflowClient(uri)
    out = {}
    for r in trial_runs(uri, study):
        hist = {key: sorted((m.step, m.value) for m in client.get_metric_history(r.info.run_id,
                                                                                 key))
                for key in r.data.metrics if key not in UNTIMED}
        out[(r.data.tags["ablate.variant"], r.data.tags["ablate.seed"])] = (
            r.data.tags["ablate.status"], r.info.status, hist)
    return out


def steps(uri: str, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in MlflowClient(uri).get_metric_history(run_id, key))


@pytest.fixture(scope="module")
def ray_local():
    """One real local Ray instance for the module (``ablate run`` joins it, and leaves it up)."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The tiny study trained in process at default settings: (snapshot, study file).

    The process starts with 2 torch threads; the study's train.threads (1 by default) decides."""
    import torch

    folder = tmp_path_factory.mktemp("reference")
    path = write(folder, TINY, EPOCHS=2)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert run(path, uri_of(folder), folder / "ck") == 0
    finally:
        torch.set_num_threads(threads)
    assert {r.data.tags["ablate.env.threads"] for r in trial_runs(uri_of(folder), "tiny")} == {
        "1"}
    snap = snapshot(uri_of(folder), "tiny")
    assert len(snap) == 4 and len({str(h) for _, _, h in snap.values()}) == 4  # not vacuous
    return snap, path


# ------------------------------------------------------------------------- no Ray needed
def test_importing_the_executor_and_cli_does_not_import_ray():
    code = "import sys, ablate.execute, ablate.cli; assert 'ray' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_ray_exits_2_with_the_install_command(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    path = write(tmp_path, TINY, EPOCHS=1)
    assert run_ray(path, uri_of(tmp_path), tmp_path / "ck") == 2
    assert "pip install 'ablate-studies[ray]'" in capsys.readouterr().err
    assert not (tmp_path / "mlflow.db").exists()


def test_ray_flags_without_the_ray_executor_are_refused(tmp_path, capsys):
    path = write(tmp_path, TINY, EPOCHS=1)
    assert run(path, uri_of(tmp_path), tmp_path / "ck", "--max-parallel", "2") == 2
    assert "--max-parallel only applies to --executor ray" in capsys.readouterr().err


@needs_ray
def test_cluster_address_with_a_local_store_is_refused_before_anything_runs(
    tmp_path, capsys, monkeypatch
):
    import ray

    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("tried to connect to Ray"))
    path = write(tmp_path, TINY, EPOCHS=1)
    ck = tmp_path / "ck"
    assert run_ray(path, uri_of(tmp_path), ck, "--address", "ray://head.example:10001") == 2
    err = capsys.readouterr().err
    assert "is a file on this machine" in err and "mlflow server --backend-store-uri " \
        "postgresql://" in err and "--allow-local-storage" in err
    assert not (tmp_path / "mlflow.db").exists() and not ck.exists()  # nothing written
    # a relative checkpoint directory, and a tracking server on loopback, are refused too
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(path), "--executor", "ray", "--address", "auto", "--tracking-uri",
                 "http://127.0.0.1:5000", "--checkpoint-dir", "rel/ck"]) == 2
    err = capsys.readouterr().err
    assert "'rel/ck' is relative" in err and "loopback" in err
    assert not (tmp_path / "rel").exists()
    # a cluster address that does not answer fails fast (ray.init would retry for minutes)
    address = f"127.0.0.1:{free_port()}"
    t0 = time.perf_counter()
    assert run_ray(path, uri_of(tmp_path), ck, "--address", address,
                   "--allow-local-storage") == 2
    assert f"no Ray cluster answers at '{address}'" in capsys.readouterr().err
    assert time.perf_counter() - t0 < 10 and not (tmp_path / "mlflow.db").exists()


def test_cluster_storage_check(tmp_path, monkeypatch):
    import ablate.execute.cluster as ex

    assert filesystem_type(Path("/")) is not None  # Linux: the mount table (psutil)
    check_cluster_storage(None, "sqlite:///x.db", "rel")  # a local Ray instance: anything goes
    check_cluster_storage("local", "file:./mlruns", "rel")
    for uri in ("sqlite:////abs/m.db", "file:///abs/mlruns", "/abs/mlruns", "mlruns",
                "http://localhost:5000"):
        with pytest.raises(EnvironmentProblem, match="runs the trials on a Ray cluster"):
            check_cluster_storage("ray://head:10001", uri, "/shared/ck")
        check_cluster_storage("ray://head:10001", uri, "rel", allow_local_storage=True)
    monkeypatch.setattr(ex, "filesystem_type", lambda path: "nfs4")
    check_cluster_storage("auto", "http://mlflow.internal:5000", "/shared/ck")
    check_cluster_storage("auto", "postgresql://u@db/mlflow", "/shared/ck")
    monkeypatch.setattr(ex, "filesystem_type", lambda path: "ext4")
    with pytest.raises(EnvironmentProblem, match="on a local ext4 filesystem"):
        check_cluster_storage("auto", "http://mlflow.internal:5000", "/scratch/ck")


# ------------------------------------------------------------------------- on a local Ray
@needs_ray
def test_tiny_study_on_ray_matches_in_process_bitwise(ray_local, reference, tmp_path, capsys):
    ref, _ = reference
    path = write(tmp_path, TINY, EPOCHS=2)
    uri, ck = uri_of(tmp_path), tmp_path / "ck"
    assert run_ray(path, uri, ck) == 0
    assert snapshot(uri, "tiny") == ref  # same trials, statuses, bitwise metric histories
    assert {r.data.tags["ablate.env.threads"] for r in trial_runs(uri, "tiny")} == {"1"}
    assert parent_run(uri, "tiny").info.status == "FINISHED"
    assert not list(ck.glob("tiny/*/checkpoint.pt"))
    before = {r.info.run_id for r in trial_runs(uri, "tiny")}
    capsys.readouterr()
    assert run_ray(path, uri, ck) == 0  # nothing left to submit
    assert "trained now 0, already done 4" in capsys.readouterr().out
    assert {r.info.run_id for r in trial_runs(uri, "tiny")} == before


@needs_ray
def test_trial_exception_fails_once_and_the_others_finish(ray_local, tmp_path):
    path = user_study(tmp_path, ["ok", "raise"])
    uri = uri_of(tmp_path)
    assert run_ray(path, uri, tmp_path / "ck", "--max-parallel", "1") == 1
    runs = trial_runs(uri, "user")
    assert len(runs) == 4
    for r in runs:
        mode = r.data.tags["ablate.label"]
        if mode == "baseline":
            assert r.data.tags["ablate.status"] == "finished"
            assert r.data.metrics["final_score"] == int(r.data.tags["ablate.seed"]) + 2.0
        else:
            assert r.data.tags["ablate.status"] == "failed" and r.info.status == "FAILED"
            assert "boom at epoch 1" in r.data.tags["ablate.error"]
    calls = lines(tmp_path / "calls")
    assert sorted((mode, seed) for _, mode, seed, _, _ in calls) == [
        ("ok", "0"), ("ok", "1"), ("raise", "0"), ("raise", "1")]  # each trial called once
    spans = sorted((float(t0), float(t1)) for *_, t0, t1 in calls)
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))  # --max-parallel 1: one at once
    assert parent_run(uri, "user").info.status == "FINISHED"


@needs_ray
def test_killed_worker_is_retried_and_resumes_from_its_checkpoint(ray_local, tmp_path):
    # trial a's first attempt waits after its first checkpoint until it is killed
    path = user_study(tmp_path, ["a", "b"], epochs=6, seeds=1, sleep=0.3, hold="a")
    uri, ck = uri_of(tmp_path), tmp_path / "ck"
    pid_file = tmp_path / "pids" / "a-0"
    killed: list[int] = []

    def killer() -> None:
        if wait_for(pid_file.exists, 300):
            pid = int(pid_file.read_text())
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    assert run_ray(path, uri, ck) == 0
    thread.join()
    assert killed, "the train function never reported its pid"
    runs = trial_runs(uri, "user")
    assert len(runs) == 2  # no duplicate run for the retried trial
    for r in runs:
        assert r.data.tags["ablate.status"] == "finished" and r.info.status == "FINISHED"
        assert steps(uri, r.info.run_id, "score") == [0, 1, 2, 3, 4, 5]  # each step once
        assert r.data.metrics["final_score"] == 3.0  # as if never interrupted
    resumed = lines(tmp_path / "resumed")
    assert len(resumed) == 1 and resumed[0][:2] == ["a", "0"] and int(resumed[0][2]) >= 1
    pids = {pid for pid, mode, *_ in lines(tmp_path / "calls") if mode == "a"}
    assert str(killed[0]) not in pids and len(pids) == 1  # finished by another worker


@needs_ray
def test_worker_dying_more_than_max_retries_fails_the_trial_and_a_rerun_resumes(ray_local,
                                                                                tmp_path):
    from ablate.execute import RayOptions, ShippedStudy, checkpoint_root, run_study
    from ablate.source import load_study
    from ablate.track import Tracker

    path = user_study(tmp_path, ["a", "b"], epochs=5, seeds=1, sleep=0.3, hold="a")
    uri, ck = uri_of(tmp_path), tmp_path / "ck"
    pid_file = tmp_path / "pids" / "a-0"

    def killer() -> None:  # trial a's first attempt waits for it after its first checkpoint
        if wait_for(pid_file.exists, 300):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    ended = []
    runs, outcomes = run_study(
        load_study(path), tracker=Tracker(uri), root=checkpoint_root(ck),
        source=ShippedStudy.of(path), ray=RayOptions(max_retries=0), on_trial_end=ended.append)
    thread.join()
    assert {o.trial.key for o in ended} == {o.trial.key for o in outcomes} and len(ended) == 2
    status = {o.trial.variant.label: o for o in outcomes}
    assert status["mode=b"].status == "finished"
    lost = status["baseline"]
    assert lost.status == "failed" and "worker running this trial died 1 times" in lost.error
    (run_a,) = [r for r in trial_runs(uri, "user") if r.info.run_id == lost.run_id]
    assert run_a.data.tags["ablate.status"] == "failed" and run_a.info.status == "FAILED"
    assert run_ray(path, uri, ck) == 0  # the failed trial is retried from its checkpoint
    runs = trial_runs(uri, "user")
    assert len(runs) == 2 and all(r.data.tags["ablate.status"] == "finished" for r in runs)
    assert steps(uri, lost.run_id, "score") == [0, 1, 2, 3, 4]
    assert [line[:2] for line in lines(tmp_path / "resumed")] == [["a", "0"]]


@needs_ray
def test_metric_never_logged_stops_the_study_with_exit_2(ray_local, tmp_path, capsys):
    path = user_study(tmp_path, ["a", "b"], seeds=1)
    path.write_text(path.read_text().replace('metric="score"', 'metric="val_acc"'))
    assert run_ray(path, uri_of(tmp_path), tmp_path / "ck") == 2
    assert "'val_acc' was never logged (logged: loss, score)" in capsys.readouterr().err
    assert parent_run(uri_of(tmp_path), "user").info.status == "FAILED"  # closed: the study stopped


@needs_ray
def test_ctrl_c_cancels_tasks_marks_the_study_killed_and_resumes(ray_local, tmp_path, request):
    # a shell that starts the tests in the background ignores SIGINT; Ctrl-C must be live here
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    request.addfinalizer(lambda: signal.signal(signal.SIGINT, previous))
    path = user_study(tmp_path, ["a", "b"], epochs=5, seeds=2, sleep=0.3)
    uri, ck = uri_of(tmp_path), tmp_path / "ck"
    pids = tmp_path / "pids"

    def interrupt() -> None:
        if wait_for(lambda: any(pids.iterdir()), 120):
            os.kill(os.getpid(), signal.SIGINT)

    thread = threading.Thread(target=interrupt, daemon=True)
    thread.start()
    assert run_ray(path, uri, ck) == 130
    thread.join()
    assert parent_run(uri, "user").info.status == "KILLED"
    runs = trial_runs(uri, "user")
    assert 1 <= len(runs) <= 2  # the queued trials never started
    for r in runs:  # interrupted, resumable
        assert r.data.tags["ablate.status"] == "running" and r.info.status == "KILLED"
    assert list(ck.glob("user/*/checkpoint.pt"))
    started = {r.info.run_id for r in runs}
    assert run_ray(path, uri, ck) == 0
    runs = trial_runs(uri, "user")
    assert len(runs) == 4 and started <= {r.info.run_id for r in runs}
    for r in runs:
        assert r.data.tags["ablate.status"] == "finished"
        assert steps(uri, r.info.run_id, "score") == [0, 1, 2, 3, 4]
        assert r.data.metrics["final_score"] == int(r.data.tags["ablate.seed"]) + 2.5
    assert lines(tmp_path / "resumed")  # the interrupted trials went on from their checkpoints
    assert parent_run(uri, "user").info.status == "FINISHED"


# --------------------------------------------------------------- through an MLflow server
@needs_ray
def test_workers_log_over_http_to_an_mlflow_server(ray_local, reference, mlflow_server,
                                                   tmp_path):
    ref, _ = reference
    path = write(tmp_path, TINY, EPOCHS=2)
    assert run_ray(path, mlflow_server, tmp_path / "ck") == 0
    assert snapshot(mlflow_server, "tiny") == ref
    assert parent_run(mlflow_server, "tiny").info.status == "FINISHED"


@needs_ray
def test_tuned_study_on_ray_searches_once_per_variant_like_in_process(ray_local, tmp_path):
    from tests.test_tune import PLANTED

    path = tmp_path / "tuning.py"
    path.write_text(PLANTED.replace("trials=12", "trials=6"))
    local, remote = uri_of(tmp_path, "local.db"), uri_of(tmp_path, "ray.db")
    assert run(path, local, tmp_path / "c0") == 0
    assert run_ray(path, remote, tmp_path / "c1") == 0
    for uri in (local, remote):
        runs = all_runs(uri, "tuning")
        assert sum(r.data.tags.get("ablate.role") == "tuning" for r in runs) == 2 * 6

    def chosen(uri):
        return sorted((r.data.tags["ablate.label"], r.data.tags["ablate.seed"],
                       r.data.params["opt.lr"]) for r in trial_runs(uri, "tuning"))

    assert chosen(remote) == chosen(local)  # the same searches, the same tuned values


@needs_ray
def test_a_hung_trial_is_timed_out_on_ray_and_the_study_goes_on(ray_local, tmp_path):
    from tests.test_iterate import HANG, statuses

    path = write(tmp_path, HANG, IGNORE_ALARM=False)
    uri = uri_of(tmp_path)
    assert run_ray(path, uri, tmp_path / "ck") == 1
    assert statuses(uri) == {"baseline": "finished", "mode=hang": "timed out"}
