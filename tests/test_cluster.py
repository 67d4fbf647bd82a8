"""``--executor ray`` on a real multi-node Ray cluster on this machine: a head node (1 CPU) and
a second node (2 CPUs) as separate ``ray start`` processes with their own temp dirs, an ``mlflow
server`` on PostgreSQL with proxied artifacts, and ``ablate run --executor ray --address`` as a
separate process, as a user runs it (see tests/cluster.py and README "Scaling out").

The study imports a module from its own folder (shipped to every node with the study file).
The second node is killed mid-study while it holds two trials: they are retried on the head,
resume from their checkpoints in the same MLflow runs, and the study's metrics equal an
in-process run's bitwise. Everything waits on what the programs do (lines the trials write),
never on a timer."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from importlib.util import find_spec
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from ablate.cli import main
from ablate.execute import EnvironmentProblem, ShippedStudy, check_shipping, shipped_files
from ablate.validate import StudyError
from tests.cluster import (
    PG_INSTALL,
    postgres,
    postgres_bin,
    ray_cluster,
    start_mlflow_server,
    wait_until,
)
from tests.test_ray import parent_run, snapshot, trial_runs, uri_of
from tests.test_runner import write

pytestmark = pytest.mark.slow  # a real two-node Ray cluster: the suite's slow part
needs_ray = pytest.mark.skipif(find_spec("ray") is None,
                               reason="ray is not installed: pip install -e '.[ray]'")
needs_postgres = pytest.mark.skipif(
    postgres_bin() is None,
    reason=f"PostgreSQL's server programs (initdb, pg_ctl) are not installed: {PG_INSTALL}")

# The study's training code lives in a module beside the study file (shipped with it). Each
# attempt writes lines to EVENTS: start/resume/held/end, the trial, the node, the pid, and
# where the module was imported from. A first attempt on node "two" stops after its first
# checkpoint and waits there (the test kills the node); the first one on the head waits there
# too until the test releases it after the kill, so the head's one CPU stays busy and node "two"
# gets two trials.
HELPER = """
import os, time
from pathlib import Path

import torch
import torch.nn.functional as F

NODE = os.environ.get("ABLATE_TEST_NODE", "local")


def event(*words):
    with open(EVENTS, "a") as f:
        f.write(" ".join(str(w) for w in words) + "\\n")


def hold(name):
    flag = Path(CONTROL, name)
    deadline = time.monotonic() + 300
    while not flag.exists():  # the test's next step, not a timer, ends this
        if time.monotonic() > deadline:
            raise RuntimeError(f"{flag} never appeared")
        time.sleep(0.02)


def train(config, run):
    key = f"w{config['opt.width']}-s{run.seed}"
    g = torch.Generator().manual_seed(100 + run.seed)
    x = torch.randn(64, 8, generator=g)
    y = (x.sum(1, keepdim=True) > 0).float()
    width = config["opt.width"]
    model = torch.nn.Sequential(torch.nn.Linear(8, width), torch.nn.Tanh(),
                                torch.nn.Dropout(0.2), torch.nn.Linear(width, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    state = run.load_checkpoint()
    start = 0
    if state is None:
        event("start", key, NODE, os.getpid(), __file__)
    else:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        start = state["epoch"]
        event("resume", key, NODE, os.getpid(), start)
    for epoch in range(start, config["opt.epochs"]):
        model.train()
        for _ in range(4):
            idx = torch.randint(0, 64, (16,))
            loss = F.binary_cross_entropy_with_logits(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            acc = ((model(x) > 0).float() == y).float().mean()
        run.log({"loss": loss.detach(), "acc": acc}, step=epoch)
        run.save_checkpoint({"epoch": epoch + 1, "model": model.state_dict(),
                             "opt": opt.state_dict()})
        if epoch == 0 and state is None and NODE == "two":
            event("held", key, NODE, os.getpid())
            hold("release-two")  # never, in the test: the node is killed here
        if epoch == 0 and state is None and NODE == "head":
            if not Path(CONTROL, "release-head").exists():
                event("held", key, NODE, os.getpid())
                hold("release-head")
    if NODE != "local":  # an artifact, through the server, from whichever node ends it
        run.log_text(f"{key} ended on {NODE}", "node.txt")
    event("end", key, NODE, os.getpid())
"""

STUDY = """
from ablate import Study
from cluster_helper import train  # a module beside this file

study = Study(
    "cluster",
    train=train,
    config={"opt.epochs": 3},
    factors={"opt.width": [4, 8, 16]},
    seeds=2,
    metric="acc",
)
"""


@pytest.fixture(scope="module")
def cluster():
    """PostgreSQL, an MLflow server on it, and a two-node Ray cluster, for this module: the
    head with 1 CPU, node "two" with 2. Yields (RayCluster, MLflow URL, a shared folder)."""
    # not pytest's deep temp dirs: Ray's socket paths under its temp dir must stay short
    folder = Path(tempfile.mkdtemp(prefix="ablate-cl-"))
    try:
        with postgres(durable=False) as store:
            server = start_mlflow_server(store, folder / "mlflow")  # starts while Ray does
            try:
                with ray_cluster(folder, {"head": 1, "two": 2}) as ray:
                    yield ray, server.wait(), folder
            finally:
                server.stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def events(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


# ------------------------------------------------------------------------- no cluster needed
def test_a_study_importing_a_module_beside_it_runs_in_process(tmp_path):
    # its own module name: a process keeps the first module of a name it imports
    write(tmp_path, HELPER, "local_helper.py", EVENTS=str(tmp_path / "events"),
          CONTROL=str(tmp_path))
    path = write(tmp_path, STUDY.replace("cluster_helper", "local_helper")
                 .replace("[4, 8, 16]", "[4, 8]").replace("seeds=2", "seeds=1"))
    assert main(["run", str(path), "--tracking-uri", uri_of(tmp_path),
                 "--checkpoint-dir", str(tmp_path / "ck")]) == 0
    assert len(trial_runs(uri_of(tmp_path), "cluster")) == 2


def test_a_study_folder_too_large_to_ship_is_refused_before_anything_runs(
    tmp_path, capsys, monkeypatch
):
    folder = tmp_path / "study"
    folder.mkdir()
    # its own module name: a process keeps the first module of a name it imports
    path = write(folder, STUDY.replace("cluster_helper", "big_helper"))
    write(folder, HELPER, "big_helper.py", EVENTS=str(tmp_path / "events"), CONTROL="c")
    with open(folder / "corpus.bin", "wb") as f:  # sparse: 150 MiB that take no disk
        f.truncate(150 * 2**20)
    ck = tmp_path / "ck"
    assert main(["run", str(path), "--executor", "ray", "--address", "ray://head.example:10001",
                 "--tracking-uri", uri_of(tmp_path), "--checkpoint-dir", str(ck),
                 "--allow-local-storage"]) == 2
    err = capsys.readouterr().err
    assert f"ships the study's folder '{folder}'" in err and "150.0 MiB in 3 files" in err
    assert "over the limit of 100.0 MiB" in err and "corpus.bin (150.0 MiB)" in err
    assert str(folder / ".rayignore") in err and "Nothing was run" in err
    assert not (tmp_path / "mlflow.db").exists() and not ck.exists()
    # what .rayignore lists is not shipped (Ray's own walk decides), nor counted
    (folder / ".rayignore").write_text("*.bin\n")
    assert sorted(p.name for _, p in shipped_files(folder)) == [
        ".rayignore", "big_helper.py", "study.py"]
    check_shipping(path, "ray://head.example:10001")
    (folder / ".rayignore").unlink()
    check_shipping(path, None)  # a local Ray instance reads the folder where it is
    monkeypatch.setenv("ABLATE_SHIP_LIMIT_MB", "200")
    check_shipping(path, "auto")
    monkeypatch.setenv("ABLATE_SHIP_LIMIT_MB", "0.001")
    (folder / "corpus.bin").unlink()
    with pytest.raises(EnvironmentProblem, match=r"over the limit of 0\.0 MiB"):
        check_shipping(path, "auto")


def test_a_worker_loads_the_shipped_copy_or_says_what_is_missing(tmp_path, monkeypatch):
    folder = tmp_path / "study"
    folder.mkdir()
    path = write(folder, STUDY)
    source = ShippedStudy.of(path)  # (never loaded here)
    assert source.runtime_env() == {"py_modules": [str(folder)]}
    assert source.locate() == path  # nothing shipped: the file where it is
    shipped = tmp_path / "_ray_pkg_0" / "study"  # how Ray unpacks py_modules on a node
    shipped.mkdir(parents=True)
    (shipped / "study.py").write_bytes(path.read_bytes())
    # Ray also puts the driver's working directory on the workers' sys.path: not a copy
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path, str(tmp_path / "_ray_pkg_0")])
    assert source.locate() == shipped / "study.py"
    path.write_text(path.read_text() + "\n# edited\n")
    (shipped / "study.py").unlink()
    with pytest.raises(StudyError, match="was edited after `ablate run` started"):
        source.locate()
    path.unlink()
    with pytest.raises(StudyError, match=r"is missing on this node.*py_modules"):
        source.locate()


# ------------------------------------------------------------------------- on the cluster
@pytest.mark.slow
@needs_ray
@needs_postgres
def test_losing_a_node_mid_study_loses_and_duplicates_nothing(cluster, tmp_path):
    ray, url, base = cluster
    folder = tmp_path / "study"  # the study's folder: the study file and its helper module
    folder.mkdir()
    control, log = tmp_path / "control", tmp_path / "events"
    control.mkdir()
    write(folder, HELPER, "cluster_helper.py", EVENTS=str(log), CONTROL=str(control))
    path = write(folder, STUDY)

    # the reference: the same study in process (one torch thread per trial, as on Ray)
    assert "cluster_helper" not in sys.modules  # (else the import below would reuse it)
    assert main(["run", str(path), "--tracking-uri", uri_of(tmp_path),
                 "--checkpoint-dir", str(tmp_path / "ck-local")]) == 0
    reference = snapshot(uri_of(tmp_path), "cluster")
    assert len(reference) == 6 and len({str(h) for _, _, h in reference.values()}) == 6

    # the cluster run, as a user runs it: a separate `ablate run` process on the head's machine
    env = {**{k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS",
                                                                "MLFLOW_TRACKING_URI")},
           **ray.env}
    cmd = [sys.executable, "-m", "ablate.cli", "run", str(path), "--executor", "ray",
           "--address", ray.address, "--tracking-uri", url,
           "--checkpoint-dir", str(base / "checkpoints"), "--allow-local-storage"]
    out_path = tmp_path / "driver.log"
    with open(out_path, "wb") as out:
        driver = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                  cwd=tmp_path, start_new_session=True)
    try:
        def cluster_events():
            if driver.poll() is not None:
                raise AssertionError(f"ablate run ended early ({driver.returncode}):\n"
                                     f"{out_path.read_text()[-3000:]}")
            return [e for e in events(log) if e[2] != "local"]

        def holding():
            held = [e for e in cluster_events() if e[0] == "held"]
            return sum(e[2] == "two" for e in held) == 2 and sum(e[2] == "head" for e in held)

        wait_until(holding, 240, "node two to hold two trials and the head one", out_path)
        held_on_two = {e[1] for e in events(log) if e[0] == "held" and e[2] == "two"}
        killed_at = time.time()
        killed = ray.kill("two")  # the node is gone: raylet, agents, workers
        (control / "release-head").touch()
        assert driver.wait(timeout=300) == 0, out_path.read_text()[-3000:]
    finally:
        (control / "release-two").touch()
        (control / "release-head").touch()
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    output = out_path.read_text()
    assert "trained now 6, already done 0" in output, output[-3000:]
    mine = [e for e in events(log) if e[2] != "local"]

    # the two trials held on node two were lost with it and resumed on the head, once each
    assert len(held_on_two) == 2 and len(killed) >= 3
    resumed = [e for e in mine if e[0] == "resume"]
    assert sorted(e[1] for e in resumed) == sorted(held_on_two)
    assert all(e[2] == "head" and e[4] == "1" for e in resumed)  # from epoch 1's checkpoint
    ended = [e[1] for e in mine if e[0] == "end"]
    assert sorted(ended) == sorted({e[1] for e in mine if e[0] == "start"})
    assert len(ended) == len(set(ended)) == 6  # every trial ended exactly once
    assert {e[2] for e in mine if e[0] == "end"} == {"head"}
    # the study's folder reached node two by Ray, not by the shared disk: the helper module
    # a node imported is the copy unpacked under that node's own Ray temp dir
    for e in mine:
        if e[0] == "start":
            assert e[4].startswith(str(ray.nodes[e[2]].temp_dir) + "/"), e
            assert "/_ray_pkg_" in e[4] and e[4].endswith("/study/cluster_helper.py"), e

    # MLflow on PostgreSQL: one run per trial, the lost ones continued in their own run
    runs = trial_runs(url, "cluster")
    assert len(runs) == 6
    assert len({(r.data.tags["ablate.variant"], r.data.tags["ablate.seed"]) for r in runs}) == 6
    assert all(r.data.tags["ablate.status"] == "finished" and r.info.status == "FINISHED"
               for r in runs)
    assert parent_run(url, "cluster").info.status == "FINISHED"
    client = MlflowClient(url)
    for r in runs:
        key = f"w{r.data.params['opt.width']}-s{r.data.tags['ablate.seed']}"
        history = sorted((m.step, m.timestamp) for m in client.get_metric_history(
            r.info.run_id, "acc"))
        assert [step for step, _ in history] == [0, 1, 2]  # each epoch logged once
        if key in held_on_two:  # epoch 0 by node two before the kill, the rest after it
            assert history[0][1] <= killed_at * 1000 < history[1][1]
        artifact = client.download_artifacts(r.info.run_id, "node.txt", str(tmp_path / key))
        assert Path(artifact).read_text() == f"{key} ended on head"

    # bitwise: every trial's status and every metric's full history, as in process
    assert snapshot(url, "cluster") == reference
    values = sum(len(h) for _, _, hist in reference.values() for h in hist.values())
    print(f"node two killed ({len(killed)} processes) holding {len(held_on_two)} trials; "
          f"resumed on the head: {len(resumed)}; trials ended: {len(ended)} of 6, duplicated: "
          f"{len(ended) - len(set(ended))}; {values} metric values in "
          f"{sum(len(hist) for _, _, hist in reference.values())} histories equal bitwise")


@pytest.mark.slow
@needs_ray
@needs_postgres
def test_the_tracking_benchmark_measures_a_server_on_postgresql(cluster):
    from tests.benchmarks.bench_tracking import measure, sizing

    _, url, _ = cluster
    row = measure(url, 2, seconds=30, batches=3)  # bounded by count: 2 writers x 3 batches
    assert row["batches"] == 6 and row["errors"] == 0 and row["hung"] == 0
    assert 0 < row["p50_ms"] <= row["p99_ms"] and row["metrics_per_s"] > 0
    slow = row["mean_ms"] / 1000 / 0.01 * 2  # an epoch twice as long as logging needs
    assert sizing([row], slow) == int(row["batches_per_s"] * slow)
    assert sizing([row], slow / 4) == 0  # logging would be over 1% of the epoch
    assert sizing([{**row, "errors": 1}], slow) == 0
