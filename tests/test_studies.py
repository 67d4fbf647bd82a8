"""Every shipped study plans instantly and runs end to end at a tiny size, so none of them rots."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from ablate.cli import main
from ablate.study import load_study

STUDIES = Path(__file__).resolve().parents[1] / "studies"

TINY = {
    "quick.py": ["--set", "train.epochs=1"],
    "charlm_rnn.py": ["--set", "data.max_chars=12000", "--set", "data.batch_size=8",
                      "--set", "model.n_hidden=16", "--set", "train.epochs=1"],
    "custom_train.py": ["--set", "opt.epochs=2"],
    "tuned.py": ["--set", "train.epochs=1", "--tune-trials", "2"],
    "cifar10_cnn.py": ["--set", "model.widths=(4, 8)", "--set", "train.epochs=1",
                       "--set", "data.download=False", "--set", "data.batch_size=8"],
}


def tiny_args(name: str, cifar_files) -> list[str]:
    """TINY's settings, with the data read from small files the tests write."""
    root = cifar_files[0]
    if name == "cifar10_cnn.py":
        return [*TINY[name], "--set", f"data.root={str(root)!r}"]
    if name == "charlm_rnn.py":
        corpus = root.parent / "corpus.txt"
        corpus.write_text("Thus spoke a small test corpus, again and again. " * 400)
        return [*TINY[name], "--set", f"data.path={str(corpus)!r}"]
    return list(TINY[name])


def test_every_study_is_covered():
    assert {p.name for p in STUDIES.glob("*.py")} == set(TINY)


@pytest.mark.parametrize("name", sorted(TINY))
def test_study_plans_and_states_its_hypothesis(name, cifar_files):
    study = load_study(STUDIES / name)
    doc = (STUDIES / name).read_text().split('"""')[1]
    assert "Hypothesis" in doc and "ablate run" in doc
    # `ablate plan` loads the data once (from files the tests write: nothing is downloaded)
    assert main(["plan", str(STUDIES / name), *tiny_args(name, cifar_files)]) == 0
    assert len(study.trials) >= 2 * len(study.seeds)


@pytest.mark.parametrize("name", sorted(TINY))
def test_study_runs_at_a_tiny_size(name, tmp_path, monkeypatch, cifar_files):
    monkeypatch.chdir(tmp_path)
    args = tiny_args(name, cifar_files)
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    path = str(STUDIES / name)
    assert main(["run", path, *args, "--seeds", "1", "--tracking-uri", uri]) == 0
    study = load_study(path)
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(study.name)
    trials = [r for r in client.search_runs([exp.experiment_id])
              if r.data.tags.get("ablate.role") == "trial"]
    assert len(trials) == len(study.variants)
    assert all(r.data.tags["ablate.status"] in ("finished", "diverged") for r in trials)
    assert main(["report", path, *args, "--seeds", "1", "--tracking-uri", uri]) == 0
    assert (tmp_path / "reports" / study.name / "report.md").exists()
