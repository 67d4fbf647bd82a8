"""`ablate report` end to end: real runs in a real MLflow store, then the report from MLflow."""

from __future__ import annotations

import textwrap

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from ablate.cli import main

PLANTED = """
import random
from ablate import Study

EFFECT = {"base": 0.0, "same": 0.0, "small": 0.1, "large": 1.0, "broken": None, "nan": "nan"}

def train(config, run):
    rng = random.Random(run.seed)
    shared = rng.gauss(0, 0.07)            # seed noise shared by every variant: pairing helps
    effect = EFFECT[config["x.change"]]
    if effect is None:
        raise ValueError("this variant is broken")
    for epoch in range(3):
        loss = float("nan") if effect == "nan" and run.seed == 0 and epoch == 1 else 1.0
        own = random.Random(f"{run.seed}-{config['x.change']}-{epoch}").gauss(0, 0.07)
        value = 0.5 + (0.0 if effect == "nan" else effect) * (epoch + 1) / 3 + shared + own
        run.log({"loss": loss, "score": value}, step=epoch)

study = Study("planted", train=train, config={"x.base": 1},
              factors={"x.change": ["base", "same", "small", "large", "broken", "nan"]},
              seeds=SEEDS, metric="score")
"""


@pytest.fixture
def planted(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "planted.py"
    path.write_text(textwrap.dedent(PLANTED).replace("SEEDS", "8"))
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    assert main(["run", str(path), "--tracking-uri", uri]) == 1  # the broken variant failed
    return path, uri


def test_report_from_mlflow_matches_the_runs(planted, tmp_path, capsys):
    path, uri = planted
    capsys.readouterr()
    assert main(["report", str(path), "--tracking-uri", uri]) == 0
    out = tmp_path / "reports" / "planted"
    assert "report: reports/planted/report.md" in capsys.readouterr().out
    text = (out / "report.md").read_text()
    for png in ("forest.png", "learning_curves.png", "seeds.png", "cost.png"):
        assert (out / png).stat().st_size > 5000
        assert f"]({png})" in text
    table = pd.read_csv(out / "results.csv")
    assert len(table) == 6 * 8
    client = MlflowClient(uri)
    for row in table.itertuples():  # every number comes from MLflow
        run = client.get_run(row.run_id)
        assert run.data.tags["ablate.status"] == row.status
        if row.status == "finished":
            assert run.data.metrics["final_score"] == pytest.approx(row.final, rel=1e-12)
    rows = {line.split("|")[1].strip(): line for line in text.splitlines()
            if line.startswith("|")}
    assert "helps" in rows["change=large"]
    assert "no clear effect" in rows["change=same"]
    assert "all failed" in rows["change=broken"]
    assert "7/8 (1 diverged)" in rows["change=nan"]
    assert "**39 of 48 trials finished**" in text  # 8 failed + 1 diverged, said up front
    assert f"ablate run {path}" in text  # the command that reproduces it
    # the same files are artifacts of the study's parent run
    exp = client.get_experiment_by_name("planted")
    parent = [r for r in client.search_runs([exp.experiment_id])
              if r.data.tags.get("ablate.role") == "study"][0]
    names = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/report.md", "report/results.csv", "report/forest.png"} <= names


def test_report_without_runs_exits_2(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "planted.py"
    path.write_text(textwrap.dedent(PLANTED).replace("SEEDS", "2"))
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    assert main(["report", str(path), "--tracking-uri", uri]) == 2
    err = capsys.readouterr().err
    assert "has no runs" in err and f"ablate run {path}" in err
    assert not (tmp_path / "reports").exists()


def test_language_model_report_shows_text_samples(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    corpus = tmp_path / "c.txt"
    corpus.write_text("to be or not to be, that is the question. " * 150)
    study = tmp_path / "lm.py"
    study.write_text(textwrap.dedent(f"""
        from ablate import Study
        from ablate.data import text
        from ablate.models import CharRNN
        study = Study("lm-report", model=CharRNN, data=text,
                      config={{"data.path": {str(corpus)!r}, "data.batch_size": 8,
                               "data.bptt": 16, "model.n_hidden": 16, "model.n_layers": 1,
                               "model.n_fac": 8, "train.epochs": 1, "train.optimizer": "adam",
                               "train.lr": 0.01}},
                      factors={{"model.cell": ["gru", "rnn"]}}, seeds=1, metric="val_bpc")
    """))
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    assert main(["run", str(study), "--tracking-uri", uri]) == 0
    assert main(["report", str(study), "--tracking-uri", uri]) == 0
    text = (tmp_path / "reports" / "lm-report" / "report.md").read_text()
    assert "cell=rnn" in text
    assert text.count("to be or not to be, that is the qu") >= 2  # each variant's sample prompt


def test_cnn_report_has_class_activation_maps(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    study = tmp_path / "cnn.py"
    study.write_text(textwrap.dedent("""
        from ablate import Study
        from ablate.data import digits
        from ablate.models import ConvNet
        study = Study("cams", model=ConvNet, data=digits,
                      config={"model.widths": (4, 8), "data.image_size": 8, "train.epochs": 1,
                              "train.keep_weights": True},
                      factors={"model.pool": ["adaptive_max", "max"]}, seeds=1)
    """))
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    assert main(["run", str(study), "--tracking-uri", uri]) == 0
    assert main(["report", str(study), "--tracking-uri", uri]) == 0
    out = tmp_path / "reports" / "cams"
    assert (out / "cams.png").read_bytes()[:4] == b"\x89PNG"
    assert "](cams.png)" in (out / "report.md").read_text()
