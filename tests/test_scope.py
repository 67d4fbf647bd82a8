"""A result belongs to exactly one question: the plan's scope, trial identity and provenance.

Real MLflow stores (sqlite in temp folders) and tiny real `train=fn` studies.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from ablate.cli import main
from ablate.source import load_study
from ablate.track import Tracker

STUDY = """
import os
from ablate import Study

def train(config, run):
    for epoch in range(config["epochs"]):
        if run.seed == 2 and epoch == 1 and os.environ.get("STOP_AT_SEED_2"):
            raise KeyboardInterrupt  # as if Ctrl-C came mid-trial
        run.log({"loss": 1.0 / (epoch + 1),
                 "score": epoch + run.seed + (1.0 if config["mode"] == "b" else 0.0)},
                step=epoch)

study = Study("scope", train=train, config={"epochs": 2}, factors={"mode": ["a", "b"]},
              seeds=3, metric="score")
"""


@pytest.fixture
def study(tmp_path: Path) -> Path:
    path = tmp_path / "scope_study.py"
    path.write_text(textwrap.dedent(STUDY))
    return path


def run(path: Path, tmp_path: Path, *extra: str) -> int:
    return main(["run", str(path), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}",
                 "--checkpoint-dir", str(tmp_path / "ck"), *extra])


def report(path: Path, tmp_path: Path, out: str, *extra: str) -> int:
    return main(["report", str(path), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}",
                 "--out", str(tmp_path / out), *extra])


def test_report_covers_only_the_current_plan_and_names_what_it_left_out(study, tmp_path,
                                                                        capsys):
    assert run(study, tmp_path, "--seeds", "1", "--set", "epochs=1") == 0
    assert run(study, tmp_path, "--seeds", "1", "--set", "epochs=2") == 0
    current = load_study(study, overrides={"epochs": 2}, seeds=1)
    tracker = Tracker(f"sqlite:///{tmp_path / 'm.db'}")
    results = tracker.results(current)
    assert len(results) == 2 and results["label"].is_unique  # not 4 rows with duplicate labels
    assert tracker.left_out(current) == [("epochs=1", 2)]
    capsys.readouterr()
    assert report(study, tmp_path, "r2", "--seeds", "1", "--set", "epochs=2") == 0
    text = (tmp_path / "r2" / "report.md").read_text()
    assert "2 trial runs of other plans" in text and "epochs=1" in text
    # a plan nobody trained: exit 2, naming the settings that do have runs
    assert report(study, tmp_path, "r5", "--seeds", "1", "--set", "epochs=5") == 2
    err = capsys.readouterr().err
    assert "matches this plan" in err and "epochs=1 (2 runs)" in err and "epochs=2" in err
    assert not (tmp_path / "r5").exists()
    # each plan has its own parent run, so no report overwrites another plan's artifacts
    assert report(study, tmp_path, "r1", "--seeds", "1", "--set", "epochs=1") == 0
    client = MlflowClient(f"sqlite:///{tmp_path / 'm.db'}")
    exp = client.get_experiment_by_name("scope")
    parents = {r.data.tags["ablate.plan"]: r for r in client.search_runs([exp.experiment_id])
               if r.data.tags.get("ablate.role") == "study"}
    assert len(parents) == 2
    older = load_study(study, overrides={"epochs": 1}, seeds=1)
    assert parents[older.plan].data.tags["ablate.plan_status"] == "superseded"
    assert parents[current.plan].data.tags["ablate.plan_status"] == "current"
    for plan, folder in ((current.plan, "r2"), (older.plan, "r1")):
        local = client.download_artifacts(parents[plan].info.run_id, "report/report.md",
                                          str(tmp_path / f"dl-{plan}"))
        assert Path(local).read_text() == (tmp_path / folder / "report.md").read_text()


def test_seeds_outside_the_plan_stay_out(study, tmp_path, monkeypatch, capsys):
    """An interrupted 3-seed run, then a 2-seed run: the summary and report see 2 seeds."""
    monkeypatch.setenv("STOP_AT_SEED_2", "1")
    assert run(study, tmp_path) == 130  # seed 2 of the baseline stays `running`
    monkeypatch.delenv("STOP_AT_SEED_2")
    capsys.readouterr()
    assert run(study, tmp_path, "--seeds", "2") == 0
    out = capsys.readouterr().out
    assert "trained now 2, already done 2" in out
    assert "status: finished 4" in out and "running" not in out.split("status:")[1].split("\n")[0]
    assert report(study, tmp_path, "r", "--seeds", "2") == 0
    text = (tmp_path / "r" / "report.md").read_text()
    assert "missing" not in text.split("## ")[1]  # the first screen reports 2 of 2 seeds
    two = load_study(study, seeds=2)
    results = Tracker(f"sqlite:///{tmp_path / 'm.db'}").results(two)
    assert sorted(results["seed"]) == [0, 0, 1, 1]


def test_changed_code_is_detected_and_needs_a_choice(study, tmp_path, capsys):
    assert run(study, tmp_path, "--seeds", "1") == 0
    first = load_study(study, seeds=1)
    study.write_text(study.read_text().replace("1.0 / (epoch + 1)", "2.0 / (epoch + 1)"))
    changed = load_study(study, seeds=1)
    assert [v.id for v in changed.variants] == [v.id for v in first.variants]  # same settings
    assert changed.fingerprint != first.fingerprint  # other code
    capsys.readouterr()
    assert run(study, tmp_path, "--seeds", "1") == 2
    err = capsys.readouterr().err
    assert "2 of the plan's 2 trials finished with other code" in err
    assert "--rerun-changed" in err and "--keep-changed" in err
    assert run(study, tmp_path, "--seeds", "1", "--keep-changed") == 0
    assert "trained now 0, already done 2" in capsys.readouterr().out
    assert run(study, tmp_path, "--seeds", "1", "--rerun-changed") == 0
    assert "trained now 2" in capsys.readouterr().out
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    results = Tracker(uri).results(changed)
    assert len(results) == 2 and set(results["code"]) == {changed.fingerprint}
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("scope")
    replaced = [r for r in client.search_runs([exp.experiment_id])
                if r.data.tags.get("ablate.replaced") == "true"]
    assert len(replaced) == 2 and {r.data.tags["ablate.code"] for r in replaced} == {
        first.fingerprint}  # kept, never read again
    assert run(study, tmp_path, "--seeds", "1") == 0  # now consistent: no question


DATA_STUDY = """
import torch
from ablate import Study
from ablate.data import from_arrays
from torch import nn

def data(train_size=TRAIN_SIZE, batch_size=32):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(train_size + 20, 4, generator=g)
    y = (x[:, 0] > 0).long()
    return RETURN

def model(in_features=4, num_classes=2, width=8):
    return nn.Sequential(nn.Linear(in_features, width), nn.ReLU(), nn.Linear(width, num_classes))

study = Study("data-defaults", model=model, data=data, config={"train.epochs": 1},
              factors={"model.width": [8, 16]}, seeds=1)
"""


def write_data_study(tmp_path: Path, train_size: int, returns: str) -> Path:
    path = tmp_path / "data_study.py"
    path.write_text(textwrap.dedent(DATA_STUDY).replace("TRAIN_SIZE", str(train_size))
                    .replace("RETURN", returns))
    return path


ARRAYS = "from_arrays(x[:train_size], y[:train_size], x[train_size:], y[train_size:])"


def test_a_changed_default_of_the_data_function_gives_new_ids(tmp_path):
    big = load_study(write_data_study(tmp_path, 6000, ARRAYS))
    small = load_study(write_data_study(tmp_path, 500, ARRAYS))
    assert big.baseline_variant.config["data.train_size"] == 6000
    assert {v.id for v in big.variants}.isdisjoint(v.id for v in small.variants)
    assert big.baseline_variant.config["model.width"] == 8  # the model's defaults too
    assert "model.num_classes" not in big.baseline_variant.config  # filled from the data


def test_data_returning_tensors_exits_2_at_plan_time(tmp_path, capsys):
    path = write_data_study(tmp_path, 100, "x, y")
    assert main(["plan", str(path)]) == 2
    err = capsys.readouterr().err
    assert "data=data returned tuple" in err and "Fix: return ablate.data.ImageData" in err
    assert main(["run", str(path), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}",
                 "--dry-run"]) == 2
    assert not (tmp_path / "m.db").exists()


def test_train_fn_factor_keys_are_free(tmp_path):
    path = tmp_path / "free.py"
    path.write_text(textwrap.dedent("""
        from ablate import Study

        def train(config, run):
            run.log({"score": config["width"] * 1.0}, step=0)

        study = Study("free", train=train, factors={"width": [1, 2]}, metric="score", seeds=1)
    """))
    study = load_study(path)
    assert [v.label for v in study.variants] == ["baseline", "width=2"]
    assert study.baseline_variant.config == {"width": 1, "train.threads": 1}


def test_every_trial_records_what_it_was_trained_with_and_the_report_warns(study, tmp_path):
    import platform

    import torch

    assert run(study, tmp_path, "--seeds", "2") == 0
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    two = load_study(study, seeds=2)
    results = Tracker(uri).results(two)
    assert set(results["env.torch"]) == {torch.__version__}
    assert set(results["env.python"]) == {platform.python_version()}
    assert set(results["env.threads"]) == {"1"} and set(results["env.device"]) == {"cpu"}
    assert set(results["code"]) == {two.fingerprint}
    assert all(results["env.cpu"]) and all(results["env.ablate"])
    # one trial as if trained on another machine: the report says so
    MlflowClient(uri).set_tag(results["run_id"].iloc[0], "ablate.env.torch", "9.9.9")
    assert report(study, tmp_path, "r", "--seeds", "2") == 0
    text = (tmp_path / "r" / "report.md").read_text()
    assert "trained in different environments" in text.split("## ")[0]  # on the first screen
    assert "9.9.9 \\(1 trial\\)" in text  # the Environment table, escaped for markdown
