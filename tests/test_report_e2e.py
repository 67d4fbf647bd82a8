"""`ablate report` end to end: real runs in a real MLflow store, then the report from MLflow."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from ablate.cli import main
from ablate.report.fmt import escape

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


def first_table(text: str) -> dict[str, str]:
    """First cell -> line, for the report's first table (the one under "## Conclusion")."""
    section = text.split("## Conclusion", 1)[1]
    block = next(b for b in section.split("\n\n") if b.startswith("|"))
    return {re.split(r"(?<!\\)\|", line)[1].strip(): line for line in block.splitlines()[2:]}


def run_and_report(tmp_path, source: str, name: str) -> str:
    """Train a study file through the real runner into a fresh store; return its report."""
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    checkpoints = str(tmp_path / "ckpt")
    assert main(["run", str(path), "--tracking-uri", uri, "--checkpoint-dir", checkpoints]) == 0
    out = tmp_path / "report"
    assert main(["report", str(path), "--tracking-uri", uri, "--out", str(out)]) == 0
    return (out / "report.md").read_text()


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
    rows = first_table(text)
    assert "helps" in rows["change=large"]
    assert "no clear effect" in rows["change=same"]
    assert "all failed" in rows["change=broken"]
    assert "7/8 (1 diverged)" in rows["change=nan"]  # seeds the comparison could use
    assert escape("unstable (1/8 diverged)") in rows["change=nan"]  # a failure is an outcome
    assert "helps" in rows[escape("change: same → large")]  # non-baseline levels compared too
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
                              "train.cams": True},
                      factors={"model.pool": ["adaptive_max", "max"]}, seeds=1)
    """))
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    assert main(["run", str(study), "--tracking-uri", uri]) == 0
    assert main(["report", str(study), "--tracking-uri", uri]) == 0
    out = tmp_path / "reports" / "cams"
    assert (out / "cams.png").read_bytes()[:4] == b"\x89PNG"
    assert "](cams.png)" in (out / "report.md").read_text()
    peak = pd.read_csv(out / "results.csv")["peak_mem_mb"]
    assert peak.notna().all() == Path("/proc/self/clear_refs").exists()  # per trial, or none


# The data factory imports ablate.data only when called (training), so that loading the study
# file for the report imports none of it.
LIGHT_CNN = """
from ablate import Study
from ablate.models import ConvNet

def digits(**settings):
    from ablate.data import digits as load
    return load(**settings)

study = Study("light", model=ConvNet, data=digits,
              config={"model.widths": (4, 8), "data.image_size": 8, "train.epochs": 1,
                      "train.cams": True},
              factors={"model.pool": ["adaptive_max", "max"]}, seeds=1)
"""


def test_report_loads_no_data_and_no_training_code(tmp_path, monkeypatch):
    """`ablate report` reads the CAMs the trials recorded: no ablate.train, no ablate.data."""
    import subprocess
    import sys

    monkeypatch.chdir(tmp_path)
    study = tmp_path / "light.py"
    study.write_text(LIGHT_CNN)
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    assert main(["run", str(study), "--tracking-uri", uri]) == 0
    code = ("import sys; from ablate.cli import main; "
            f"code = main(['report', {str(study)!r}, '--tracking-uri', {uri!r}]); "
            "print('MODULES', code, *sorted(sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, timeout=600)
    line = next(x for x in proc.stdout.splitlines() if x.startswith("MODULES"))
    code, *modules = line.split()[1:]
    assert code == "0", proc.stderr
    loaded = [m for m in modules
              if m.startswith(("ablate.train", "ablate.data", "torchvision.datasets"))]
    assert loaded == []
    out = tmp_path / "reports" / "light"
    assert (out / "cams.png").read_bytes()[:4] == b"\x89PNG"
    assert "](cams.png)" in (out / "report.md").read_text()


def test_trials_without_recorded_cams_are_named_not_rebuilt(tmp_path, monkeypatch):
    """Trials trained before the loop recorded CAMs (simulated): the report says so."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("ablate.train.loop.log_cams", lambda run, model, data: None)
    study = tmp_path / "light.py"
    study.write_text(LIGHT_CNN)
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    assert main(["run", str(study), "--tracking-uri", uri]) == 0
    assert main(["report", str(study), "--tracking-uri", uri]) == 0
    out = tmp_path / "reports" / "light"
    assert not (out / "cams.png").exists()
    text = (out / "report.md").read_text()
    assert "Class activation maps are not recorded for the trials of baseline, pool=max" in text

FACTORIAL = """
import random
from ablate import Study

def train(config, run):
    a, b, c = config["x.a"], config["x.b"], config["x.c"]
    shared = random.Random(run.seed).gauss(0, 0.05)   # seed noise shared by every cell
    own = random.Random(f"{run.seed}-{a}-{b}-{c}").gauss(0, 0.02)
    run.log({"loss": 1.0, "score": 0.5 + 0.3 * a + 0.3 * a * b + shared + own}, step=0)

study = Study("factorial", train=train, config={"x.base": 1},
              factors={"x.a": [0, 1], "x.b": [0, 1], "x.c": [0, 1]},
              design="full_factorial", seeds=4, metric="score")
"""


def test_factorial_report_finds_main_effect_and_interaction(tmp_path, monkeypatch):
    """Planted: a main effect of a (+0.3), an a × b interaction (+0.3), nothing from c."""
    monkeypatch.chdir(tmp_path)
    text = run_and_report(tmp_path, FACTORIAL, "factorial")
    rows = first_table(text)
    assert "**helps**" in rows[escape("a: 0 → 1")]
    assert "interaction found" in rows[escape("a × b")]
    assert "no clear effect" in rows[escape("c: 0 → 1")]
    assert "no clear effect" in rows[escape("a × c")] and "no clear effect" in rows[escape("b × c")]
    assert len(rows) == 6  # effects, not 7 cells against one baseline
    simple = text.split("### Simple effects within each level of a", 1)[1]
    assert "helps" in next(line for line in simple.splitlines()
                           if line.startswith("| " + escape("b: 0 → 1, when a=1")))
    opening = text.split("## Conclusion", 1)[1].split("\n|", 1)[0]
    assert opening.index("**Helps:**") < opening.index("**Interactions:**")
    assert "Of 10 tests: " in opening
    # a's main effect is an average over b, on which it depends; the sentences say so
    helps = next(line for line in opening.splitlines() if line.startswith("- **Helps:**"))
    assert re.search(r"a: 0 → 1 \([^)]*; depends on b\)", helps), helps
    # what the data cannot tell includes the simple effects, e.g. c within each level of a
    unclear = next(line for line in opening.splitlines() if line.startswith("- **Cannot tell"))
    assert escape("c: 0 → 1, when a=0") in unclear and escape("c: 0 → 1, when a=1") in unclear


LEVELS = """
import random
from ablate import Study

EFFECT = {"lstm": 0.0, "gru": -0.1, "rnn": 0.1}

def train(config, run):
    cell, lr = config["x.cell"], config["x.lr"]
    shared = random.Random(run.seed).gauss(0, 0.05)
    own = random.Random(f"{run.seed}-{cell}-{lr}").gauss(0, 0.02)
    loss = float("nan") if lr == 10 and run.seed in (0, 2) else 1.0
    run.log({"loss": loss, "score": 0.5 + EFFECT[cell] + shared + own}, step=0)

study = Study("levels", train=train, config={"x.base": 1},
              factors={"x.cell": ["lstm", "gru", "rnn"], "x.lr": [0.1, 10]}, seeds=6,
              metric="score")
"""


def test_levels_beyond_the_baseline_are_compared_and_divergence_is_unstable(tmp_path, monkeypatch):
    """Planted: gru and rnn differ by 0.2 (both replace the baseline's lstm); lr=10 diverges on
    2 of 6 seeds where the baseline finished."""
    monkeypatch.chdir(tmp_path)
    text = run_and_report(tmp_path, LEVELS, "levels")
    rows = first_table(text)
    assert "**helps**" in rows[escape("cell: gru → rnn")]
    assert escape("unstable (2/6 diverged)") in rows["lr=10"]
    assert "4/6 (2 diverged)" in rows["lr=10"]
    assert "**Unstable**" in text and "lr=10 (2/6 diverged" in text
    assert "lr=10 (UI " in text  # where MLflow's UI mean (diverged runs included) differs
