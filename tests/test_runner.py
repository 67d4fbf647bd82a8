"""The runner end to end: real MLflow (sqlite in a temp dir), tiny real training."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from ablate.cli import main
from ablate.source import load_study
from ablate.track import SUMMARY, Tracker

TINY = """
from ablate import Study
from ablate.data import digits
from ablate.models import ConvNet

study = Study(
    "tiny",
    model=ConvNet,
    data=digits,
    config={"model.widths": (4, 8), "data.image_size": 8, "data.batch_size": 256,
            "train.epochs": EPOCHS, "train.lr": 0.05},
    factors={"model.batch_norm": [True, False]},
    seeds=2,
)
"""

USER = """
import math, os
from pathlib import Path
from ablate import Study

def train(config, run):
    state = run.load_checkpoint() or {"epoch": 0, "value": float(run.seed)}
    for epoch in range(state["epoch"], config["opt.epochs"]):
        if config["opt.mode"] == "raise" and epoch == 1:
            raise RuntimeError("boom at epoch 1")
        if config["opt.mode"] == "interrupt" and epoch == 2 and not Path(FLAG).exists():
            Path(FLAG).write_text("interrupted once")
            raise KeyboardInterrupt
        loss = float("nan") if config["opt.mode"] == "nan" and epoch == 1 else 1.0 / (epoch + 1)
        state["value"] += 0.5
        run.log({"loss": loss, "score": state["value"]}, step=epoch)
        run.save_checkpoint({"epoch": epoch + 1, "value": state["value"]})

study = Study(
    "user",
    train=train,
    config={"opt.epochs": 4},
    factors={"opt.mode": MODES},
    seeds=2,
    metric="score",
)
"""


def write(tmp_path: Path, text: str, name: str = "study.py", **subs: object) -> Path:
    for key, value in subs.items():
        text = text.replace(key, repr(value) if not isinstance(value, int) else str(value))
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def uri_of(tmp_path: Path, name: str = "mlflow.db") -> str:
    return f"sqlite:///{tmp_path / name}"


def run(path: Path, uri: str, ckpt: Path, *extra: str) -> int:
    return main(["run", str(path), "--tracking-uri", uri, "--checkpoint-dir", str(ckpt), *extra])


def trial_runs(uri: str, study: str) -> list:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(study)
    runs = client.search_runs([exp.experiment_id])
    return [r for r in runs if r.data.tags.get("ablate.role") == "trial"]


def histories(uri: str, study: str, key: str) -> dict[tuple[str, str], list[tuple[int, float]]]:
    client = MlflowClient(uri)
    out = {}
    for r in trial_runs(uri, study):
        hist = client.get_metric_history(r.info.run_id, key)
        out[(r.data.tags["ablate.variant"], r.data.tags["ablate.seed"])] = sorted(
            (m.step, m.value) for m in hist)
    return out


@pytest.fixture
def tiny(tmp_path):
    return write(tmp_path, TINY, EPOCHS=2)


def test_mlflow_layout_tags_params_and_metrics(tiny, tmp_path):
    uri = uri_of(tmp_path)
    assert run(tiny, uri, tmp_path / "ck") == 0
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("tiny")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("ablate.role") == "study"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = trial_runs(uri, "tiny")
    assert len(children) == 4
    study = load_study(tiny)
    # one top-level run per variant (a row of the UI), the trials nested under it
    variants = {r.data.tags["ablate.variant"]: r for r in runs
                if r.data.tags.get("ablate.role") == "variant"}
    assert set(variants) == {v.id for v in study.variants}
    for v in study.variants:
        row = variants[v.id]
        assert "mlflow.parentRunId" not in row.data.tags and row.info.status == "FINISHED"
        assert row.info.run_name == ("baseline" if v.baseline else "bn=off")
        assert row.data.metrics["finished"] == 2 and row.data.metrics["diverged"] == 0
        finals = [r.data.metrics["final_val_acc"] for r in children
                  if r.data.tags["ablate.variant"] == v.id]
        assert row.data.metrics["val_acc"] == pytest.approx(sum(finals) / 2, rel=1e-3)
        assert "val_acc_ci95" in row.data.metrics
        assert v.label in row.data.tags["mlflow.note.content"]
    assert exp.tags[f"mlflow.sharedViewState.ablate-plan-{study.plan}"]
    by_key = {(r.data.tags["ablate.variant"], int(r.data.tags["ablate.seed"])): r for r in children}
    for trial in study.trials:
        r = by_key[(trial.variant.id, trial.seed)]
        tags = r.data.tags
        assert tags["mlflow.parentRunId"] == variants[trial.variant.id].info.run_id
        assert r.info.run_name == f"{variants[trial.variant.id].info.run_name} s{trial.seed}"
        assert "model.batch_norm" in tags["mlflow.note.content"]  # the full "what changed"
        assert tags["ablate.study"] == "tiny"
        assert tags["ablate.label"] == trial.variant.label
        assert tags["ablate.status"] == "finished"
        assert tags["ablate.baseline"] == ("true" if trial.variant.baseline else "false")
        assert set(r.data.params) == set(trial.variant.config) | {"seed"}
        bn = trial.variant.config["model.batch_norm"]
        assert r.data.params["model.batch_norm"] == str(bn).lower()
        hist = client.get_metric_history(r.info.run_id, "val_acc")
        assert sorted(m.step for m in hist) == [0, 1]
        m = r.data.metrics
        for key in ("final_val_acc", "best_val_acc", "n_params", "flops_per_sample",
                    "train_seconds", "peak_mem_mb", "epochs", "train_loss", "val_loss"):
            assert key in m, key
        assert m["final_val_acc"] == max(hist, key=lambda x: x.step).value
        assert m["best_val_acc"] == max(x.value for x in hist)
        assert m["epochs"] == 2 and m["n_params"] > 0 and m["flops_per_sample"] > 0
        # activation statistics: an artifact, not metrics that would crowd the study metric out
        assert not any(k.startswith(("act_mean/", "act_std/")) for k in m)
        acts = Tracker(uri).activations(r.info.run_id)
        assert {step for key, step, _ in acts if key.startswith("act_std/features.")} == {0, 1}
    history = Tracker(uri).history(study)  # what the report's activation figure reads
    assert set(history.loc[history["key"].str.startswith("act_std/"), "step"]) == {0, 1}


def test_rerun_trains_nothing_and_adds_no_runs(tiny, tmp_path, capsys):
    uri, ck = uri_of(tmp_path), tmp_path / "ck"
    assert run(tiny, uri, ck) == 0
    before = {r.info.run_id: r.data.metrics for r in trial_runs(uri, "tiny")}
    capsys.readouterr()
    assert run(tiny, uri, ck) == 0
    out = capsys.readouterr().out
    assert "trained now 0, already done 4" in out
    after = {r.info.run_id: r.data.metrics for r in trial_runs(uri, "tiny")}
    assert after == before
    assert not list(ck.glob("tiny/*/checkpoint.pt"))  # checkpoints deleted when trials end


def test_same_trial_gives_bitwise_identical_metrics_in_separate_stores(tiny, tmp_path):
    a, b = uri_of(tmp_path, "a.db"), uri_of(tmp_path, "b.db")
    assert run(tiny, a, tmp_path / "ca") == 0
    assert run(tiny, b, tmp_path / "cb") == 0
    for key in ("val_acc", "train_loss", "val_loss"):
        ha, hb = histories(a, "tiny", key), histories(b, "tiny", key)
        assert ha == hb and len(ha) == 4
    # and the variants really differ (the comparison is not vacuous)
    assert len({tuple(v) for v in histories(a, "tiny", "val_loss").values()}) == 4


def test_user_function_nan_diverges_and_exception_fails(tmp_path):
    path = write(tmp_path, USER, MODES=["ok", "nan", "raise"], FLAG=str(tmp_path / "flag"))
    uri = uri_of(tmp_path)
    assert run(path, uri, tmp_path / "ck") == 1  # some trial failed
    runs = trial_runs(uri, "user")
    assert len(runs) == 6
    status = {(r.data.tags["ablate.label"], r.data.tags["ablate.seed"]): r for r in runs}
    client = MlflowClient(uri)
    for seed in ("0", "1"):
        ok, nan, bad = (status[(label, seed)] for label in ("baseline", "mode=nan", "mode=raise"))
        assert ok.data.tags["ablate.status"] == "finished" and ok.info.status == "FINISHED"
        assert ok.data.metrics["final_score"] == int(seed) + 2.0
        assert nan.data.tags["ablate.status"] == "diverged" and nan.info.status == "FINISHED"
        assert [m.step for m in client.get_metric_history(nan.info.run_id, "loss")] == [0, 1]
        assert bad.data.tags["ablate.status"] == "failed" and bad.info.status == "FAILED"
        assert "boom at epoch 1" in bad.data.tags["ablate.error"]
        text = Path(client.download_artifacts(bad.info.run_id, "traceback.txt", str(tmp_path)))
        assert "RuntimeError: boom at epoch 1" in text.read_text()
        assert "Traceback" in text.read_text()


def test_failed_trial_is_retried_in_the_same_run(tmp_path):
    flag = tmp_path / "fixed"
    cond = 'config["opt.mode"] == "raise" and epoch == 1'
    src = USER.replace(cond, f"{cond} and not Path({str(flag)!r}).exists()")
    path = write(tmp_path, src, MODES=["ok", "raise"], FLAG=str(tmp_path / "flag"))
    uri, ck = uri_of(tmp_path), tmp_path / "ck"
    assert run(path, uri, ck) == 1
    failed = {r.info.run_id for r in trial_runs(uri, "user")
              if r.data.tags["ablate.status"] == "failed"}
    assert len(failed) == 2
    flag.write_text("")
    assert run(path, uri, ck) == 0
    runs = trial_runs(uri, "user")
    assert len(runs) == 4 and all(r.data.tags["ablate.status"] == "finished" for r in runs)
    assert failed <= {r.info.run_id for r in runs}  # retried in place, no new run
    # the retry resumed from epoch 1's checkpoint: the same values as a clean run
    assert sorted(r.data.metrics["final_score"] for r in runs) == [2.0, 2.0, 3.0, 3.0]


def test_interrupt_exits_130_and_resumes_in_the_same_run(tmp_path):
    path = write(tmp_path, USER, MODES=["ok", "interrupt"], FLAG=str(tmp_path / "flag"))
    uri, ck = uri_of(tmp_path), tmp_path / "ck"
    assert run(path, uri, ck) == 130
    runs = trial_runs(uri, "user")
    interrupted = [r for r in runs if r.data.tags["ablate.status"] == "running"]
    assert len(interrupted) == 1 and interrupted[0].info.status == "KILLED"
    assert list(ck.glob("user/*/checkpoint.pt"))  # kept for the resume
    assert run(path, uri, ck) == 0
    runs = trial_runs(uri, "user")
    assert len(runs) == 4
    assert interrupted[0].info.run_id in {r.info.run_id for r in runs}
    client = MlflowClient(uri)
    for r in runs:
        assert r.data.tags["ablate.status"] == "finished"
        hist = client.get_metric_history(r.info.run_id, "score")
        assert sorted(m.step for m in hist) == [0, 1, 2, 3]  # no step logged twice
        assert r.data.metrics["final_score"] == int(r.data.tags["ablate.seed"]) + 2.0


def test_metric_never_logged_stops_the_study_with_exit_2(tmp_path, capsys):
    path = write(tmp_path, USER.replace('metric="score"', 'metric="val_acc"'), MODES=["ok", "nan"],
                 FLAG="x")
    assert run(path, uri_of(tmp_path), tmp_path / "ck") == 2
    err = capsys.readouterr().err
    assert "'val_acc' was never logged (logged: loss, score)" in err
    assert len(trial_runs(uri_of(tmp_path), "user")) == 1  # stopped after the first trial


def test_corrupt_and_malicious_checkpoints_are_discarded(tiny, tmp_path):
    clean = uri_of(tmp_path, "clean.db")
    assert run(tiny, clean, tmp_path / "c0") == 0
    study = load_study(tiny)
    ck = tmp_path / "ck"
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    first, second = study.trials[0], study.trials[1]
    (ck / "tiny" / first.key).mkdir(parents=True)
    (ck / "tiny" / first.key / "checkpoint.pt").write_bytes(b"\x00garbage" * 10)
    (ck / "tiny" / second.key).mkdir(parents=True)
    with open(ck / "tiny" / second.key / "checkpoint.pt", "wb") as f:
        pickle.dump({"state": Evil(), "ablate": {}}, f)
    dirty = uri_of(tmp_path, "dirty.db")
    with pytest.warns(UserWarning, match="discarded the unreadable checkpoint") as caught:
        assert run(tiny, dirty, ck) == 0
    texts = [str(w.message) for w in caught if "checkpoint" in str(w.message)]
    assert any("weights_only=True refuses" in t for t in texts)  # the pickled one, explained
    assert not any("Re-running" in t or "weights_only` set to `False" in t for t in texts)
    assert not marker.exists()  # weights_only=True refused to run the payload
    assert histories(clean, "tiny", "val_acc") == histories(dirty, "tiny", "val_acc")


def test_a_slow_tracking_server_is_not_unreachable():
    """A server that accepted the connection but answers after the fail-fast timeout (a busy
    machine, or a server opening its database on its first request) gets a longer second try:
    here its first request is held until the second arrives (failed once on a loaded machine)."""
    import http.server
    import threading

    second = threading.Event()
    calls = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def answer(self):
            calls.append(self.path)
            if len(calls) == 1:
                second.wait(120)  # held: the client's 1 s read timeout expires first
            else:
                second.set()
            body = b'{"experiments": []}'
            try:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except OSError:  # the first client gave up on this connection
                pass

        do_GET = do_POST = answer

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        Tracker(f"http://127.0.0.1:{server.server_address[1]}").check(timeout=1)
    finally:
        second.set()
        server.shutdown()
    assert len(calls) == 2 and all("experiments/search" in c for c in calls)


def test_unreachable_tracking_server_and_unwritable_checkpoints_exit_2(tiny, tmp_path, capsys):
    t0 = time.perf_counter()
    assert run(tiny, "http://127.0.0.1:9", tmp_path / "ck") == 2
    assert "can't reach the MLflow tracking store 'http://127.0.0.1:9'" in capsys.readouterr().err
    assert time.perf_counter() - t0 < 30
    assert run(tiny, f"sqlite:///{tmp_path}/missing/dir/m.db", tmp_path / "ck") == 2
    assert "does not exist" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("")
    uri = uri_of(tmp_path)
    assert run(tiny, uri, blocker / "ck") == 2
    assert "is not writable" in capsys.readouterr().err
    client = MlflowClient(uri)
    assert client.get_experiment_by_name("tiny") is None  # nothing written


def test_dry_run_lists_pending_trials_and_trains_nothing(tiny, tmp_path, capsys):
    uri = uri_of(tmp_path)
    assert run(tiny, uri, tmp_path / "ck", "--dry-run") == 0
    out = capsys.readouterr().out
    assert "0 trials done, 4 would run" in out
    assert MlflowClient(uri).get_experiment_by_name("tiny") is None


def _wait_for(path_glob, root: Path, timeout: float) -> bool:
    end = time.time() + timeout
    while time.time() < end:
        if list(root.glob(path_glob)):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.slow
def test_kill_9_mid_trial_then_rerun_matches_uninterrupted(tmp_path):
    path = write(tmp_path, TINY, EPOCHS=6)
    clean = uri_of(tmp_path, "clean.db")
    assert run(path, clean, tmp_path / "c0") == 0
    uri, ck = uri_of(tmp_path, "killed.db"), tmp_path / "ck"
    cmd = [sys.executable, "-m", "ablate.cli", "run", str(path), "--tracking-uri", uri,
           "--checkpoint-dir", str(ck)]
    for _ in range(2):  # kill twice, each time once some trial has a checkpoint
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        found = _wait_for("tiny/*/checkpoint.pt", ck, 120)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert found
    assert run(path, uri, ck) == 0
    runs = trial_runs(uri, "tiny")
    assert len(runs) == 4  # every trial exactly once
    assert all(r.data.tags["ablate.status"] == "finished" for r in runs)
    for key in ("val_acc", "train_loss"):
        assert histories(uri, "tiny", key) == histories(clean, "tiny", key)


@pytest.mark.slow
def test_two_concurrent_runs_train_every_trial_exactly_once(tmp_path):
    slow = "__import__('time').sleep(0.2); run.save_checkpoint("
    src = USER.replace("run.save_checkpoint(", slow)
    path = write(tmp_path, src, MODES=["ok", "ok2"], FLAG="x")
    uri, ck = uri_of(tmp_path), tmp_path / "ck"
    assert main(["plan", str(path)]) == 0
    cmd = [sys.executable, "-m", "ablate.cli", "run", str(path), "--tracking-uri", uri,
           "--checkpoint-dir", str(ck)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    runs = trial_runs(uri, "user")
    assert len(runs) == 4
    keys = {(r.data.tags["ablate.variant"], r.data.tags["ablate.seed"]) for r in runs}
    assert len(keys) == 4
    assert all(r.data.tags["ablate.status"] == "finished" for r in runs)
    client = MlflowClient(uri)
    (parent,) = [r for r in client.search_runs([runs[0].info.experiment_id])
                 if r.data.tags.get("ablate.role") == "study"]
    assert parent.info.status == "FINISHED"  # not KILLED by the runner that found trials busy
    for r in runs:  # each trial's epochs were logged once: trained by one process only
        assert sorted(m.step for m in client.get_metric_history(r.info.run_id, "score")) == [
            0, 1, 2, 3]


def test_kept_weights_are_a_state_dict_artifact(tiny, tmp_path):
    import torch

    from ablate.models import ConvNet

    uri = uri_of(tmp_path)
    assert run(tiny, uri, tmp_path / "ck", "--set", "train.keep_weights=True") == 0
    client = MlflowClient(uri)
    for r in trial_runs(uri, "tiny"):
        dst = tmp_path / r.info.run_id
        dst.mkdir()
        local = client.download_artifacts(r.info.run_id, "weights.pt", str(dst))
        state = torch.load(local, weights_only=True)
        bn = r.data.params["model.batch_norm"] == "true"
        model = ConvNet(widths=(4, 8), in_channels=1, image_size=8, batch_norm=bn)
        model.load_state_dict(state)  # strict: exactly the trained model's parameters
        # the weights only: class activation maps are train.cams
        assert "cams.npz" not in {f.path for f in client.list_artifacts(r.info.run_id)}


def test_results_and_history_dataframes_come_from_mlflow(tiny, tmp_path, monkeypatch):
    import ablate

    uri = uri_of(tmp_path)
    study = load_study(tiny)
    assert ablate.results(study, uri).empty  # no runs yet: an empty table, not an error
    assert run(tiny, uri, tmp_path / "ck") == 0
    table = ablate.results(study, uri)
    assert len(table) == 4
    assert list(table["label"]) == ["baseline", "baseline", "batch_norm=False", "batch_norm=False"]
    assert list(table["seed"]) == [0, 1, 0, 1] and set(table["status"]) == {"finished"}
    assert table["model.batch_norm"].tolist() == [True, True, False, False]
    assert table["baseline"].tolist() == [True, True, False, False]
    assert (table["device"] == "cpu").all() and (table["n_params"] > 0).all()
    hist = ablate.history(study, uri)
    acc = hist[hist["key"] == "val_acc"]
    assert len(acc) == 4 * 2 and set(acc["step"]) == {0, 1}
    final = acc[acc["step"] == 1].set_index("run_id")["value"]
    assert final.to_dict() == table.set_index("run_id")["final"].to_dict()
    # the batched read gives exactly the rows of one MLflow read per run and key, in that order
    client, tracker = MlflowClient(uri), Tracker(uri)
    (tmp_path / "acts").mkdir()
    skip = {"final_val_acc", "best_val_acc", *SUMMARY}
    rows = []
    for rec in table.itertuples():
        head = (rec.run_id, rec.variant, rec.label, rec.seed)
        for key in client.get_run(rec.run_id).data.metrics:
            if key not in skip:
                rows += [(*head, key, m.step, m.value)
                         for m in client.get_metric_history(rec.run_id, key)]
        if "activations.json" in {f.path for f in client.list_artifacts(rec.run_id)}:
            local = client.download_artifacts(rec.run_id, "activations.json",
                                              str(tmp_path / "acts"))
            acts = json.loads(Path(local).read_text())
            rows += [(*head, key, step, value) for step, row in zip(acts["steps"], acts["values"])
                     for key, value in zip(acts["keys"], row)]
    assert any(key.startswith("act_std/") for key in hist["key"])
    assert list(hist.itertuples(index=False, name=None)) == rows
    store = type(tracker.client._tracking_client.store)
    monkeypatch.delattr(store, "get_metric_history_bulk")  # a store without bulk reads
    assert list(tracker.history(study).itertuples(index=False, name=None)) == rows
