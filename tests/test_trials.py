"""Trials that end in unusual ways, through the CLI: sys.exit, several logs per step, a kill
between a run's creation and its params. Real MLflow stores in temp folders."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from ablate.cli import main
from ablate.source import parse_override
from ablate.study import Study
from ablate.track import Tracker

STUDY = """
import sys
from ablate import Study

def train(config, run):
    for epoch in range(3):
        if config["mode"] == "exit" and epoch == 1:
            sys.exit(3)
        run.log({"loss": 1.0 / (epoch + 1)}, step=epoch)  # two calls for one step: merged
        run.log({"score": epoch + 0.5 * run.seed}, step=epoch)

study = Study("trials", train=train, factors={"mode": MODES}, seeds=2, metric="score")
"""


def write(tmp_path: Path, modes: list[str]) -> Path:
    path = tmp_path / "trials_study.py"
    path.write_text(textwrap.dedent(STUDY).replace("MODES", repr(modes)))
    return path


def run(path: Path, tmp_path: Path) -> int:
    return main(["run", str(path), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}",
                 "--checkpoint-dir", str(tmp_path / "ck")])


def trial_runs(tmp_path: Path) -> dict[tuple[str, str], object]:
    client = MlflowClient(f"sqlite:///{tmp_path / 'm.db'}")
    exp = client.get_experiment_by_name("trials")
    return {(r.data.tags["ablate.label"], r.data.tags["ablate.seed"]): r
            for r in client.search_runs([exp.experiment_id])
            if r.data.tags.get("ablate.role") == "trial"}


def test_sys_exit_in_a_trial_fails_that_trial_and_the_study_goes_on(tmp_path, capsys):
    path = write(tmp_path, ["exit", "ok"])  # the baseline calls sys.exit(3), first of all
    for _ in range(2):  # a rerun retries it, and still trains nothing else twice
        assert run(path, tmp_path) == 1
        runs = trial_runs(tmp_path)
        assert len(runs) == 4
        for seed in ("0", "1"):
            failed = runs[("baseline", seed)]
            assert failed.data.tags["ablate.status"] == "failed"
            assert "sys.exit(3)" in failed.data.tags["ablate.error"]
            assert failed.info.status == "FAILED"
            assert runs[("mode=ok", seed)].data.tags["ablate.status"] == "finished"
    out = capsys.readouterr().out
    assert "trained now 2, already done 2" in out  # the second time: only the failed ones


def test_several_log_calls_per_step_are_all_recorded(tmp_path):
    assert run(write(tmp_path, ["a", "b"]), tmp_path) == 0
    client = MlflowClient(f"sqlite:///{tmp_path / 'm.db'}")
    for r in trial_runs(tmp_path).values():
        for key in ("loss", "score"):  # `score` was dropped when `loss` came first in a step
            history = client.get_metric_history(r.info.run_id, key)
            assert sorted(m.step for m in history) == [0, 1, 2]
        assert r.data.metrics["final_score"] == 2 + 0.5 * int(r.data.tags["ablate.seed"])


def test_a_kill_between_run_creation_and_params_is_completed_on_resume(tmp_path,
                                                                         monkeypatch):
    path = write(tmp_path, ["a", "b"])
    original = Tracker._log_params

    def killed(self, run_id, trial):  # the process dies right after creating the run
        raise KeyboardInterrupt

    monkeypatch.setattr(Tracker, "_log_params", killed)
    assert run(path, tmp_path) == 130
    (bare,) = trial_runs(tmp_path).values()
    assert bare.data.params == {}
    monkeypatch.setattr(Tracker, "_log_params", original)
    assert run(path, tmp_path) == 0
    runs = trial_runs(tmp_path)
    assert len(runs) == 4 and bare.info.run_id in {r.info.run_id for r in runs.values()}
    for r in runs.values():
        assert r.data.params["mode"] in ("a", "b") and "seed" in r.data.params
        assert r.data.tags["ablate.status"] == "finished"


def test_set_takes_a_bare_path_unquoted():
    assert parse_override("data.path=./corpus.txt") == ("data.path", "./corpus.txt")
    assert parse_override("data.path=/data/nietzsche.txt") == ("data.path",
                                                               "/data/nietzsche.txt")
    assert parse_override("train.lr=0.1") == ("train.lr", 0.1)


def test_a_large_design_is_counted_before_it_is_built():
    def train(config, run):
        pass

    t0 = time.perf_counter()
    big = Study("big", train=train, factors={f"f{i}": [0, 1] for i in range(12)},
                design="full_factorial", metric="score")
    assert len(big.variants) == 4096
    assert time.perf_counter() - t0 < 30  # 13 factors took 121 s (a quadratic duplicate check)
    with pytest.raises(ValueError, match="makes 8,192 variants"):
        Study("bigger", train=train, factors={f"f{i}": [0, 1] for i in range(13)},
              design="full_factorial", metric="score")


def test_a_process_writes_variant_rows_at_most_every_few_seconds_and_misses_none(tmp_path,
                                                                               monkeypatch):
    """Rows are rewritten at most every ROW_EVERY_S seconds per process: a trial that ends
    sooner leaves its variant stale, and the next write (after the interval) includes it."""
    from types import SimpleNamespace

    from ablate.execute import trial as trial_module

    written: list[str] = []
    tracker = SimpleNamespace(update_variant=lambda study, runs, v: written.append(v.id))
    study = SimpleNamespace(name="s")
    runs = SimpleNamespace(plan="p-rows")
    trials = [SimpleNamespace(variant=SimpleNamespace(id=v, label=v)) for v in "abc"]
    now = [100.0]
    monkeypatch.setattr(trial_module, "_rows_due", {})
    monkeypatch.setattr(trial_module, "_rows_stale", {})

    def ended(i: int) -> None:
        trial_module.update_variant_row(study, trials[i], tracker, runs, tmp_path,
                                        clock=lambda: now[0])

    ended(0)  # the first: written at once
    assert written == ["a"]
    now[0] += 1.0
    ended(1)
    ended(2)  # within the interval: left stale
    assert written == ["a"]
    now[0] += trial_module.ROW_EVERY_S
    ended(0)  # due: every stale row, and this one
    assert sorted(written) == ["a", "a", "b", "c"]
