"""Exactly once, wherever the runners are: claims in the store, leases, and a bound on each trial.

Real sqlite stores in temp folders and a real ``mlflow server`` on 127.0.0.1, real ``ablate run``
processes with different checkpoint folders and working directories, a runner killed with
SIGKILL. The runners synchronise on what the program does (marker files a trial writes, lines a
runner prints), never on sleeps.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from ablate.cli import main
from ablate.track.claims import Claims
from tests.test_runner import trial_runs, uri_of, write

# A train=fn study whose trials leave a marker (``STARTED/<variant>-<seed>-<pid>``) when they
# start, and whose first epoch waits (at most 60 s) until RUNNERS distinct processes have started
# some trial: every runner of the test is training at once, so they really contend.
CONTENDED = """
import os, time
from pathlib import Path
from ablate import Study

def train(config, run):
    marks = Path(STARTED)
    (marks / f"{config['opt.mode']}-{run.seed}-{os.getpid()}").write_text("")
    end = time.time() + 60
    while len({p.name.rsplit('-', 1)[1] for p in marks.iterdir()}) < RUNNERS:
        if time.time() > end:
            break
        time.sleep(0.05)
    state = run.load_checkpoint() or {"epoch": 0, "value": float(run.seed)}
    for epoch in range(state["epoch"], 3):
        state["value"] += 0.5
        run.log({"loss": 1.0 / (epoch + 1), "score": state["value"]}, step=epoch)
        run.save_checkpoint({"epoch": epoch + 1, "value": state["value"]})

study = Study("claimed", train=train, factors={"opt.mode": ["a", "b", "c"]}, seeds=2,
              metric="score")
"""


def _cmd(path: Path, uri: str, ckpt: Path) -> list[str]:
    return [sys.executable, "-m", "ablate.cli", "run", str(path), "--tracking-uri", uri,
            "--checkpoint-dir", str(ckpt)]


def _exactly_once(uri: str, trials: int) -> None:
    runs = trial_runs(uri, "claimed")
    keys = [(r.data.tags["ablate.variant"], r.data.tags["ablate.seed"]) for r in runs]
    assert len(keys) == trials and len(set(keys)) == trials, sorted(keys)
    client = MlflowClient(uri)
    for r in runs:  # each trial's epochs logged once: trained by one runner only
        assert r.data.tags["ablate.status"] == "finished"
        assert sorted(m.step for m in client.get_metric_history(r.info.run_id, "score")) == [
            0, 1, 2]
    claims = [k for k in client.get_experiment(runs[0].info.experiment_id).tags
              if k.startswith("ablate.claim.")]
    assert claims == []  # every claim withdrawn when its trial ended


def _race(tmp_path: Path, uri: str, runners: int) -> list[str]:
    """``runners`` processes of one study on one store, each in its own working directory with
    its own checkpoint folder; their outputs."""
    (tmp_path / "started").mkdir()
    path = write(tmp_path, CONTENDED, STARTED=str(tmp_path / "started"), RUNNERS=runners)
    procs = []
    for k in range(runners):
        folder = tmp_path / f"terminal{k}"
        folder.mkdir()
        procs.append(subprocess.Popen(_cmd(path, uri, folder / "ck"), cwd=folder, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    outs = [p.communicate(timeout=400)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * runners, outs
    return outs


def _trained(out: str) -> int:
    return int(out.split("trained now ")[1].split(",")[0])


@pytest.mark.slow
@pytest.mark.parametrize("runners", [2, 3])
def test_runners_with_their_own_checkpoint_folders_train_every_trial_once(tmp_path, runners):
    uri = uri_of(tmp_path)
    outs = _race(tmp_path, uri, runners)
    _exactly_once(uri, 6)
    assert sum(_trained(out) for out in outs) == 6  # nobody trained a trial twice
    assert any("being trained by another runner" in out for out in outs)


@pytest.mark.slow
def test_two_runners_on_one_mlflow_server_train_every_trial_once(tmp_path, mlflow_server):
    outs = _race(tmp_path, mlflow_server, 2)
    _exactly_once(mlflow_server, 6)
    assert sum(_trained(out) for out in outs) == 6


# A study whose trial "a" seed 0 holds (after its first checkpoint) until HOLD appears, so that
# its runner can be killed mid-trial while another runner waits for it.
HELD = """
import os, time
from pathlib import Path
from ablate import Study

def train(config, run):
    state = run.load_checkpoint() or {"epoch": 0, "value": float(run.seed)}
    for epoch in range(state["epoch"], 3):
        state["value"] += 0.5
        run.log({"loss": 1.0 / (epoch + 1), "score": state["value"]}, step=epoch)
        run.save_checkpoint({"epoch": epoch + 1, "value": state["value"]})
        if config["opt.mode"] == "a" and run.seed == 0 and epoch == 0:
            Path(MARK).write_text(str(os.getpid()))
            while not Path(HOLD).exists():
                time.sleep(0.05)

study = Study("claimed", train=train, factors={"opt.mode": ["a", "b", "c"]}, seeds=2,
              metric="score")
"""


@pytest.mark.slow
def test_a_killed_runners_trial_is_taken_over(tmp_path):
    mark, hold = tmp_path / "mark", tmp_path / "hold"
    path = write(tmp_path, HELD, MARK=str(mark), HOLD=str(hold))
    uri = uri_of(tmp_path)
    env = {**os.environ, "ABLATE_CLAIM_LEASE_S": "4"}
    first = subprocess.Popen(_cmd(path, uri, tmp_path / "ck0"), env=env, text=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not mark.exists():  # the first runner is inside trial a, seed 0
            assert first.poll() is None and time.time() < deadline
            time.sleep(0.05)
        hold.write_text("")  # from now on the trial would go on, in any runner
        second = subprocess.Popen(_cmd(path, uri, tmp_path / "ck1"), env=env, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        waiting = ""
        assert second.stdout is not None
        for line in second.stdout:  # the second runner found trial a seed 0 held
            waiting += line
            if "being trained by another runner" in line:
                break
        first.kill()  # mid-trial, its claim unrenewed from now on
        first.wait()
        rest = second.communicate(timeout=300)[0]
        assert second.returncode == 0, waiting + rest
    finally:
        first.kill()
    _exactly_once(uri, 6)  # the trial resumed in its own MLflow run, no step logged twice


def test_a_claim_is_won_once_held_by_a_rival_and_taken_over_when_its_lease_ends(tmp_path):
    client = MlflowClient(uri_of(tmp_path))
    exp = client.create_experiment("claims")
    mine = Claims(client, exp, "mine", lease_s=60)
    rival = Claims(client, exp, "rival", lease_s=60)
    assert mine.take("t1") == ("won", [])
    state, holders = rival.take("t1")
    assert state == "held" and [h.owner for h in holders] == ["mine"]
    mine.release("t1")
    assert rival.take("t1")[0] == "won"
    gone = Claims(client, exp, "gone", lease_s=0.001)  # a runner that died: its lease ends
    assert gone.take("t2")[0] == "won"
    assert mine.take("t2")[0] == "won"


def test_a_claim_of_a_dead_process_on_this_machine_is_taken_over_at_once(tmp_path):
    import socket

    client = MlflowClient(uri_of(tmp_path))
    exp = client.create_experiment("claims")
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead = Claims(client, exp, "dead", lease_s=600)
    dead.where = f"{socket.gethostname()}:{gone.stdout.strip()}"  # that process has exited
    assert dead.take("t")[0] == "won"
    elsewhere = Claims(client, exp, "far", lease_s=600)
    elsewhere.where = f"another-host:{gone.stdout.strip()}"  # can't be checked from here
    assert elsewhere.take("u")[0] == "won"
    mine = Claims(client, exp, "mine", lease_s=600)
    assert mine.take("t")[0] == "won"  # without waiting 600 s
    assert mine.take("u")[0] == "held"  # another machine's runner: its lease decides


def test_two_runners_that_meet_both_withdraw_and_neither_wins(tmp_path):
    client = MlflowClient(uri_of(tmp_path))
    exp = client.create_experiment("claims")
    a, b = Claims(client, exp, "a", lease_s=60), Claims(client, exp, "b", lease_s=60)
    b._write("t")  # b wrote its claim after a's first read: a finds it on its second read
    real = a.rivals
    calls = []

    def first_read_empty(key, holders=None):  # a's step 1 ran before b's write
        calls.append(key)
        return [] if len(calls) == 1 else real(key, holders)

    a.rivals = first_read_empty  # type: ignore[method-assign]
    state, rivals = a.take("t")
    assert state == "contended" and [r.owner for r in rivals] == ["b"]
    assert "t" not in a.mine and [h.owner for h in a.holders()["t"]] == ["b"]  # a withdrew


def test_renewal_extends_the_lease(tmp_path):
    client = MlflowClient(uri_of(tmp_path))
    exp = client.create_experiment("claims")
    claims = Claims(client, exp, "me", lease_s=30)
    claims.take("t")
    before = claims.holders()["t"][0].until
    claims.lease_s = 300
    claims.renew()
    assert claims.holders()["t"][0].until > before + 200


# ----------------------------------------------------------------------------- train.timeout
HANG = """
import signal, time
from ablate import Study

def train(config, run):
    run.log({"score": float(run.seed)}, step=0)
    if config["opt.mode"] == "hang":
        if IGNORE_ALARM:  # a hang no alarm reaches (e.g. inside C code)
            signal.signal(signal.SIGALRM, signal.SIG_IGN)
        time.sleep(10**6)
    run.log({"score": float(run.seed) + 1}, step=1)

study = Study("hung", train=train, factors={"opt.mode": ["ok", "hang"]}, seeds=1,
              metric="score", config={"train.timeout": 3})
"""


def statuses(uri: str) -> dict[str, str]:
    return {r.data.tags["ablate.label"]: r.data.tags["ablate.status"]
            for r in trial_runs(uri, "hung")}


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_hung_trial_is_timed_out_and_the_study_goes_on(tmp_path, capsys, workers):
    path = write(tmp_path, HANG, IGNORE_ALARM=False)
    uri = uri_of(tmp_path)
    start = time.monotonic()
    assert main(["run", str(path), "--tracking-uri", uri, "--checkpoint-dir",
                 str(tmp_path / "ck"), "--workers", workers]) == 1
    assert time.monotonic() - start < 200  # the hang itself would take 11 days
    assert statuses(uri) == {"baseline": "finished", "mode=hang": "timed out"}
    out = capsys.readouterr().out
    assert "mode=hang seed 0: timed out" in out and "status: failed 1, finished 1" in out
    (hung,) = [r for r in trial_runs(uri, "hung") if r.data.tags["ablate.label"] != "baseline"]
    assert hung.info.status == "FAILED" and "train.timeout=3" in hung.data.tags["ablate.error"]
    # a rerun retries it once, under the same bound, instead of hanging
    assert main(["run", str(path), "--tracking-uri", uri, "--checkpoint-dir",
                 str(tmp_path / "ck"), "--workers", workers]) == 1
    out = capsys.readouterr().out
    assert "trained now 1, already done 1" in out
    assert len(trial_runs(uri, "hung")) == 2  # retried in its own MLflow run


def test_a_hang_no_alarm_reaches_is_ended_by_the_driver(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("ablate.execute.driver.KILL_GRACE_S", 2.0)
    path = write(tmp_path, HANG, IGNORE_ALARM=True)
    uri = uri_of(tmp_path)
    assert main(["run", str(path), "--tracking-uri", uri, "--checkpoint-dir",
                 str(tmp_path / "ck"), "--workers", "2"]) == 1
    assert statuses(uri) == {"baseline": "finished", "mode=hang": "timed out"}
    (hung,) = [r for r in trial_runs(uri, "hung") if r.data.tags["ablate.label"] != "baseline"]
    assert "was ended" in hung.data.tags["ablate.error"]


def test_timeout_is_outside_the_variant_ids(tmp_path):
    from ablate.source import load_study

    bound = load_study(write(tmp_path, HANG, IGNORE_ALARM=False))
    free = load_study(write(tmp_path, HANG.replace(', config={"train.timeout": 3}', ""),
                            "free.py", IGNORE_ALARM=False))
    assert [v.id for v in bound.variants] == [v.id for v in free.variants]
    assert bound.timeout == 3 and free.timeout is None
    assert "train.timeout" not in bound.variants[0].config  # nor a param of its runs


# ------------------------------------------------------------------------ where results live
def test_a_run_names_its_store_and_a_new_store_elsewhere_is_said_plainly(tmp_path, monkeypatch,
                                                                         capsys):
    from tests.test_runner import USER

    path = write(tmp_path, USER, MODES=["ok", "nan"], FLAG="x")
    first, other = tmp_path / "project", tmp_path / "elsewhere"
    first.mkdir()
    other.mkdir()
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(first)
    assert main(["run", str(path), "--seeds", "1", "--set", "opt.epochs=2"]) == 0
    out = capsys.readouterr().out
    assert f"sqlite:///{first / 'mlflow.db'} (new, created now" in out
    assert f"checkpoints: .ablate/checkpoints ({first / '.ablate/checkpoints'})" in out
    hint = f"ablate report {path} --set opt.epochs=2 --seeds 1"
    assert f"Report: {hint}" in out  # the hint repeats the flags that define the plan
    assert main(hint.split()[1:]) == 0  # and following it works
    capsys.readouterr()
    assert main(["run", str(path), "--seeds", "1", "--set", "opt.epochs=2"]) == 0
    assert "(runs of study 'user' found" in capsys.readouterr().out
    monkeypatch.chdir(other)  # the same study from another folder: a new store, said so
    assert main(["run", str(path), "--seeds", "1", "--set", "opt.epochs=2"]) == 0
    out = capsys.readouterr().out
    assert f"sqlite:///{other / 'mlflow.db'} (new, created now" in out
    assert "a study that ran before from another folder" in out
    uri = f"sqlite:///{tmp_path / 'empty.db'}"
    MlflowClient(uri).create_experiment("someone-else")  # a store without this study
    assert main(["run", str(path), "--seeds", "1", "--set", "opt.epochs=2",
                 "--tracking-uri", uri]) == 0
    assert "holds no run of study 'user' yet" in capsys.readouterr().out
