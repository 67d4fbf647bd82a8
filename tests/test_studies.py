"""Every shipped study plans instantly and runs end to end at a tiny size, so none of them rots."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from ablate.cli import main
from ablate.source import load_study

STUDIES = Path(__file__).resolve().parents[1] / "studies"

TINY = {
    "quick.py": ["--set", "train.epochs=1"],
    "charlm_rnn.py": ["--set", "data.max_chars=12000", "--set", "data.batch_size=8",
                      "--set", "model.n_hidden=16", "--set", "train.epochs=1"],
    "custom_train.py": ["--set", "opt.epochs=2"],
    "tuned.py": ["--set", "train.epochs=1", "--tune-trials", "2"],
    "quick_adaptive.py": ["--set", "train.epochs=1"],
    "cifar10_cnn.py": ["--set", "model.widths=(4, 8)", "--set", "train.epochs=1",
                       "--set", "data.download=False", "--set", "data.batch_size=8"],
    "cifar10_cpu.py": ["--set", "model.widths=(4, 8)", "--set", "train.epochs=1",
                       "--set", "data.train_size=12", "--set", "data.val_size=6",
                       "--set", "data.batch_size=4"],
    # its CIFAR-10 folder is $ABLATE_CIFAR10_IMAGES (a task's own setting: no --set), and the
    # task's 10,000 images are all of the tiny folder's 18
    "tasks_convnet.py": ["--set", "train.epochs=1", "--set", "data.batch_size=8"],
}


def image_folder_of(root: Path, size: int = 8) -> Path:
    """A tiny ImageFolder layout (3 classes, PNGs) written by the test: train/ and test/."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("test", 3)):
        for c, name in enumerate(("cat", "dog", "frog")):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                pixels[..., c] = 255  # each class has its own colour: learnable
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def tiny_args(name: str, cifar_files, monkeypatch) -> list[str]:
    """TINY's settings, with the data read from small files the tests write."""
    root = cifar_files[0]
    if name == "tasks_convnet.py":
        folder = image_folder_of(root.parent / "images")
        monkeypatch.setenv("ABLATE_CIFAR10_IMAGES", str(folder))
    if name == "cifar10_cnn.py":
        return [*TINY[name], "--set", f"data.root={str(root)!r}"]
    if name == "cifar10_cpu.py":
        folder = image_folder_of(root.parent / "images")
        return [*TINY[name], "--set", f"data.path={str(folder)!r}"]
    if name == "charlm_rnn.py":
        corpus = root.parent / "corpus.txt"
        corpus.write_text("Thus spoke a small test corpus, again and again. " * 400)
        return [*TINY[name], "--set", f"data.path={str(corpus)!r}"]
    return list(TINY[name])


def test_every_study_is_covered():
    assert {p.name for p in STUDIES.glob("*.py")} == set(TINY)


@pytest.mark.parametrize("name", sorted(TINY))
def test_study_plans_and_states_its_hypothesis(name, cifar_files, monkeypatch):
    args = tiny_args(name, cifar_files, monkeypatch)
    study = load_study(STUDIES / name)
    doc = (STUDIES / name).read_text().split('"""')[1]
    assert "Hypothesis" in doc and "ablate run" in doc
    # `ablate plan` loads the data once (from files the tests write: nothing is downloaded)
    assert main(["plan", str(STUDIES / name), *args]) == 0
    assert len(study.trials) >= 2 * len(study.seeds)


@pytest.mark.parametrize("name", sorted(TINY))
def test_study_runs_at_a_tiny_size(name, tmp_path, monkeypatch, cifar_files):
    monkeypatch.chdir(tmp_path)
    args = tiny_args(name, cifar_files, monkeypatch)
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


def test_the_multi_task_study_asks_one_question_on_three_tasks(tmp_path, monkeypatch, capsys):
    """tasks_convnet.py: the ConvNet's batch norm and residuals, one at a time, on the digits,
    a CIFAR-10 folder (here a tiny one the test writes, through $ABLATE_CIFAR10_IMAGES) and a
    table read by the MLP, with enough seeds for verdicts; `ablate plan` loads each task's data
    and tries each task's model on it."""
    from ablate.data import digits, image_folder
    from ablate.models import MLP, ConvNet

    folder = image_folder_of(tmp_path / "cifar")
    monkeypatch.setenv("ABLATE_CIFAR10_IMAGES", str(folder))
    study = load_study(STUDIES / "tasks_convnet.py")
    assert study.task_names == ["digits", "cifar10", "cancer"]
    assert set(study.factors) == {"model.batch_norm", "model.residual"}
    assert len(study.seeds) >= 5 and study.design == "one_at_a_time"
    by_task = {v.task: v.config for v in study.variants if v.baseline}
    assert by_task["cifar10"]["data.path"] == str(folder)
    assert (study.data_for(by_task["cifar10"]), study.model_for(by_task["cifar10"])) == (
        image_folder, ConvNet)
    assert (study.data_for(by_task["digits"]), study.model_for(by_task["digits"])) == (
        digits, ConvNet)
    assert study.model_for(by_task["cancer"]) is MLP
    assert len({c["train.epochs"] for c in by_task.values()}) == 1  # one budget: aggregates
    assert main(["plan", str(STUDIES / "tasks_convnet.py")]) == 0
    out = capsys.readouterr().out
    assert "3 tasks (digits, cifar10, cancer): 9 variants x 5 seeds" in out
    rows = study.data_for(by_task["cancer"])()
    assert rows.model_kwargs == {"num_classes": 2, "in_features": 30}
    assert abs(float(rows.x_train.mean())) < 1e-5  # standardised with the training rows


def test_your_own_images_take_the_two_marked_lines_of_the_quick_study(tmp_path, monkeypatch):
    """README's promise: a folder of images per class runs through studies/quick.py by swapping
    its two marked lines, which also rename the study (its own experiment and report folder)."""
    monkeypatch.chdir(tmp_path)
    folder = image_folder_of(tmp_path / "my-images", size=12)
    lines = (STUDIES / "quick.py").read_text().splitlines()
    start = lines.index('# name, data = "my-images", image_folder')
    mine = [line[2:] for line in lines[start:start + 2]]  # uncommented, as a user would
    mine[1] = mine[1].replace("/path/to/images", str(folder)).replace("32", "12")
    assert lines[start + 2].startswith("name, data = ") and "data_settings" in lines[start + 3]
    path = tmp_path / "my_quick.py"
    path.write_text("\n".join(lines[:start] + mine + lines[start + 4:]) + "\n")
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    args = ["--seeds", "1", "--set", "train.epochs=1", "--set", "data.batch_size=6",
            "--tracking-uri", uri]
    assert main(["run", str(path), *args]) == 0
    study = load_study(path)
    assert study.name == "my-images" and study.baseline_variant.config["data.path"] == str(folder)
    assert main(["report", str(path), *args]) == 0
    assert (tmp_path / "reports" / "my-images" / "report.md").exists()


def test_committed_reports_name_no_path_of_the_machine_that_wrote_them():
    """A reader's clone has none of the writer's folders: a committed report names its store
    relative to the project (report/collect.py's _shown_uri), never an absolute path."""
    import re

    reports = sorted((STUDIES.parent / "reports").glob("*/report.md"))
    assert reports
    for report in reports:
        text = report.read_text()
        found = re.findall(r"sqlite:////\S+|(?<![\w.])/(?:work|tmp|root|home|Users)/\S+", text)
        assert not found, f"{report.parent.name}: {found}"


def test_committed_reports_write_no_number_with_an_exponent_in_their_tables():
    """A reader sees "1.8 min", never "1.1e+02 s": every table cell of a committed report is
    written without an exponent (p-values and tiny numbers have their own forms)."""
    import re

    for report in sorted((STUDIES.parent / "reports").glob("*/report.md")):
        cells = [c for line in report.read_text().splitlines() if line.startswith("|")
                 for c in line.split("|")]
        found = [c.strip() for c in cells if re.search(r"\de[+-]\d", c)]
        assert not found, f"{report.parent.name}: {found}"
