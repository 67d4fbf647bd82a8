"""A rerun of a study whose code or data changed since its trials were trained: asked once, the
answer remembered, the report saying which trials came from older code or other data; and new
variant ids announced. Real MLflow stores (sqlite in temp folders), tiny real training."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from ablate.cli import main
from ablate.runcheck import changed_trials, new_ids_note
from ablate.source import load_study
from ablate.track import Tracker, TrialRecord

FOLDER = """
from ablate import Study
from ablate.data import image_folder
from ablate.models import ConvNet

study = Study(
    "grown",
    model=ConvNet,
    data=image_folder,
    config={"data.path": PATH, "data.image_size": 8, "data.batch_size": 16,
            "data.augment": False, "model.widths": (4, 8), "train.epochs": 1},
    factors={"model.batch_norm": [True, False]},
    seeds=1,
)
"""


def add_images(root: Path, split: str, name: str, n: int, start: int = 0) -> None:
    from PIL import Image

    rng = np.random.default_rng(start + 7 * len(name))
    folder = root / split / name
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + n):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(folder / f"{i}.png")


def run(path: Path, tmp_path: Path, *extra: str) -> int:
    return main(["run", str(path), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}",
                 "--checkpoint-dir", str(tmp_path / "ck"), *extra])


def report(path: Path, tmp_path: Path, *extra: str) -> str:
    out = tmp_path / "report"
    assert main(["report", str(path), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}",
                 "--out", str(out), *extra]) == 0
    text = (out / "report.md").read_text().split("\n## ")[0]  # the first screen
    return text.replace("\\(", "(").replace("\\)", ")")  # markdown's escapes, undone


@pytest.fixture
def grown(tmp_path):
    """An image-folder study, trained once; then 3 images more in one class folder."""
    from ablate.train.build import check_data

    images = tmp_path / "imgs"
    for name in ("airplane", "ship"):
        add_images(images, "train", name, 6)
        add_images(images, "val", name, 2)
    study = tmp_path / "grown.py"
    study.write_text(textwrap.dedent(FOLDER).replace("PATH", repr(str(images))))
    assert run(study, tmp_path) == 0
    first = load_study(study)
    recorded = Tracker(f"sqlite:///{tmp_path / 'm.db'}").results(first)
    assert set(recorded["data"]) == set(check_data(first).values())  # the trial's = the check's
    assert len(set(recorded["data"])) == 1 and set(recorded["code"]) == {first.fingerprint}
    add_images(images, "train", "airplane", 3, start=100)  # more images of one class
    return study, images, recorded


def test_a_grown_image_folder_asks_once_and_keep_changed_is_remembered(grown, tmp_path, capsys):
    study, images, _ = grown
    capsys.readouterr()
    assert run(study, tmp_path) == 2
    err = capsys.readouterr().err
    assert "2 of the plan's 2 trials finished with other data" in err
    assert f"image_folder(path={str(images)!r}" in err
    assert "--rerun-changed" in err and "--keep-changed" in err and "Nothing was trained" in err
    assert run(study, tmp_path, "--keep-changed") == 0
    out = capsys.readouterr().out
    assert "reusing them" in out and "trained now 0, already done 2" in out
    assert run(study, tmp_path) == 0  # the choice is remembered: no question
    assert "trained now 0, already done 2" in capsys.readouterr().out
    first_screen = report(study, tmp_path)
    assert "2 of 2 trials were trained on other data (kept with --keep-changed" in first_screen
    add_images(images, "val", "ship", 1, start=200)  # another change: asked again
    assert run(study, tmp_path) == 2
    assert "finished with other data" in capsys.readouterr().err


def test_a_grown_image_folder_retrained_with_rerun_changed(grown, tmp_path, capsys):
    from ablate.train.build import check_data

    study, _, before = grown
    capsys.readouterr()
    assert run(study, tmp_path, "--rerun-changed") == 0
    out = capsys.readouterr().out
    assert "2 finished trial(s) were trained with other data: training them again" in out
    assert "trained now 2" in out
    now = load_study(study)
    results = Tracker(f"sqlite:///{tmp_path / 'm.db'}").results(now)
    assert set(results["data"]) == set(check_data(now).values()) != set(before["data"])
    client = MlflowClient(f"sqlite:///{tmp_path / 'm.db'}")
    exp = client.get_experiment_by_name("grown")
    replaced = [r for r in client.search_runs([exp.experiment_id])
                if r.data.tags.get("ablate.replaced") == "true"]
    assert {r.data.tags["ablate.data"] for r in replaced} == set(before["data"])  # kept
    assert run(study, tmp_path) == 0
    assert "trained now 0, already done 2" in capsys.readouterr().out


TINY = '''
"""A tiny built-in-loop study the test edits."""
from ablate import Study
from ablate.data import digits
from ablate.models import ConvNet

study = Study(
    "edited",
    model=ConvNet,
    data=digits,
    config={"model.widths": (4, 8), "data.image_size": 8, "data.batch_size": 512,
            "train.epochs": 1},
    factors=FACTORS,
    design="one_at_a_time",
    seeds=SEEDS,
)
'''


def test_a_factor_a_seed_and_a_comment_added_ask_nothing(tmp_path, capsys):
    study = tmp_path / "edited.py"
    study.write_text(textwrap.dedent(TINY)
                     .replace("FACTORS", '{"model.batch_norm": [True, False]}')
                     .replace("SEEDS", "1"))
    assert run(study, tmp_path) == 0
    study.write_text(textwrap.dedent(TINY).replace(
        "FACTORS", '{"model.batch_norm": [True, False],  # residual too\n'
                   '             "model.residual": [True, False]}'
    ).replace("SEEDS", "2").replace('"""A tiny', '"""A tiny (and documented)'))
    capsys.readouterr()
    assert run(study, tmp_path) == 0  # seed 0 of the first 2 variants: same code, same data
    assert "trained now 4, already done 2" in capsys.readouterr().out


USER = """
from ablate import Study
import SCORING as scoring


def train(config, run):
    for epoch in range(2):
        run.log({"loss": 1.0 / (epoch + 1), "score": scoring.score(epoch, config["mode"])},
                step=epoch)


study = Study("user-code", train=train, factors={"mode": ["a", "b"]}, seeds=1, metric="score",
              mode="max")
"""

SCORING = """
def score(epoch, mode):
    return epoch + (1.0 if mode == "b" else 0.0)
"""


@pytest.fixture
def user_study(tmp_path):
    """A train=fn study whose train function calls a module beside the study file."""
    name = f"scoring_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(SCORING))
    path = tmp_path / "user.py"
    path.write_text(textwrap.dedent(USER).replace("SCORING", name))
    yield path, tmp_path / f"{name}.py", name
    sys.modules.pop(name, None)


def edit(module: Path, name: str, old: str, new: str) -> None:
    """Change the module beside the study, as seen by the next `ablate` process."""
    module.write_text(module.read_text().replace(old, new))
    sys.modules.pop(name, None)


def test_a_changed_helper_asks_and_keep_changed_is_remembered_and_reported(user_study, tmp_path,
                                                                           capsys):
    study, module, name = user_study
    assert run(study, tmp_path) == 0
    old = load_study(study).fingerprint
    edit(module, name, "epoch + (1.0", "2 * epoch + (1.0")  # what the train function calls
    capsys.readouterr()
    assert run(study, tmp_path) == 2
    err = capsys.readouterr().err
    assert "2 of the plan's 2 trials finished with other code" in err and old in err
    assert "--rerun-changed" in err and "--keep-changed" in err
    assert run(study, tmp_path, "--keep-changed") == 0
    assert "trained now 0, already done 2" in capsys.readouterr().out
    assert run(study, tmp_path) == 0  # remembered
    assert "trained now 0, already done 2" in capsys.readouterr().out
    first_screen = report(study, tmp_path)
    assert "2 of 2 trials were trained with older code (kept with --keep-changed" in first_screen
    assert old in first_screen
    assert "different environments or code" not in first_screen  # said once, precisely
    edit(module, name, "2 * epoch", "3 * epoch")  # a later, different change asks again
    assert run(study, tmp_path) == 2
    assert "finished with other code" in capsys.readouterr().err


def test_a_changed_function_body_asks_a_comment_does_not(user_study, tmp_path, capsys):
    study, _, _ = user_study
    assert run(study, tmp_path) == 0
    study.write_text(study.read_text().replace("def train(config, run):",
                                               "def train(config, run):  # the loop\n"
                                               "    '''Two epochs.'''"))
    capsys.readouterr()
    assert run(study, tmp_path) == 0
    assert "trained now 0, already done 2" in capsys.readouterr().out
    study.write_text(study.read_text().replace("range(2)", "range(3)"))
    assert run(study, tmp_path) == 2
    assert "finished with other code" in capsys.readouterr().err
    assert run(study, tmp_path, "--rerun-changed") == 0
    assert "trained now 2" in capsys.readouterr().out


ARRAYS = """
import torch
from torch import nn
from ablate import Study
from ablate.data import from_arrays


def data(train_size=SIZE):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(train_size + 20, 4, generator=g)
    y = (x[:, 0] > 0).long()
    return from_arrays(x[:train_size], y[:train_size], x[train_size:], y[train_size:])


def model(in_features=4, num_classes=2, width=8):
    return nn.Sequential(nn.Linear(in_features, width), nn.ReLU(), nn.Linear(width, num_classes))


study = Study("defaults", model=model, data=data, config={"train.epochs": 1},
              factors={"model.width": [8, 16]}, seeds=1)
"""


def test_a_changed_default_announces_the_new_ids(tmp_path, capsys):
    study = tmp_path / "defaults.py"
    study.write_text(textwrap.dedent(ARRAYS).replace("SIZE", "40"))
    assert run(study, tmp_path) == 0
    tracker = Tracker(f"sqlite:///{tmp_path / 'm.db'}")
    assert new_ids_note(load_study(study), tracker) is None  # its own runs
    study.write_text(textwrap.dedent(ARRAYS).replace("SIZE", "60"))
    note = new_ids_note(load_study(study), tracker)
    assert note is not None
    assert note.startswith("2 variants have new ids because data.train_size changed 40 → 60")
    assert "old runs are kept" in note
    capsys.readouterr()
    assert run(study, tmp_path) == 0
    out = capsys.readouterr().out
    assert "2 variants have new ids because data.train_size changed 40 → 60" in out
    assert "trained now 2, already done 0" in out
    assert new_ids_note(load_study(study), tracker) is None  # trained: nothing new any more


def record(code: str, data: str = "", kept: str = "", status: str = "finished") -> TrialRecord:
    return TrialRecord(f"run-{code}-{data}-{kept}", status, code, data, kept)


def test_which_trials_count_as_changed(tmp_path):
    study = tmp_path / "defaults.py"
    study.write_text(textwrap.dedent(ARRAYS).replace("SIZE", "40").replace("seeds=1", "seeds=2"))
    s = load_study(study)
    code = s.fingerprint
    base, wide = (v.id for v in s.variants)
    now = {base: "d1", wide: "d1"}

    def found(records):
        return {(c.trial.variant.id, c.trial.seed): (c.code, c.data, c.kept)
                for c in changed_trials(s, records, now)}

    same = {(v, seed): record(code, "d1") for v in (base, wide) for seed in (0, 1)}
    assert found(same) == {}
    assert found({**same, (base, 1): record("old", "d1")}) == {(base, 1): (True, False, False)}
    assert found({**same, (wide, 0): record(code, "d0"), (wide, 1): record(code, "d0")}) == {
        (wide, 0): (False, True, False), (wide, 1): (False, True, False)}
    # data that depends on the seed: the first seed's trial has the data of now
    assert found({**same, (base, 1): record(code, "d-seed-1")}) == {}
    # kept for the code and data of now; a later change is a new question
    kept = {**same, (base, 0): record("old", "d0", kept=f"{code}/d1")}
    assert found(kept) == {(base, 0): (True, True, True)}
    assert found({**same, (base, 0): record("old", "d0", kept="older/d1")}) == {
        (base, 0): (True, True, False)}
    # not done, or no data fingerprint recorded (older stores): not a question
    assert found({**same, (base, 0): record("old", status="failed")}) == {}
    assert found({**same, (base, 0): record(code, "")}) == {}
