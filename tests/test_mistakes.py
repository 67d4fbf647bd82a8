"""Mistakes a new user makes, caught before training with exit 2 and nothing written — or, where
only training can tell, stopped after the first trials with one message and every run closed.

Real `ablate` commands on real files in temp folders; "nothing written" is checked on disk (no
store, no checkpoint folder, no cache beside the study)."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from ablate.cli import main
from tests.test_runner import trial_runs, uri_of, write

TRAIN_FN = """
from ablate import Study

def train(config, run):
    BODY

study = Study("mistake", train=train, factors=FACTORS, seeds=2, metric="score")
"""


def _study(tmp_path: Path, body: str, factors: dict) -> Path:
    text = TRAIN_FN.replace("BODY", body).replace("FACTORS", repr(factors))
    path = tmp_path / "study.py"
    path.write_text(text)
    return path


def _run(path: Path, tmp_path: Path, *extra: str) -> int:
    return main(["run", str(path), "--tracking-uri", uri_of(tmp_path), "--checkpoint-dir",
                 str(tmp_path / "ck"), *extra])


def _nothing_written(tmp_path: Path) -> None:
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "ck").exists()


def test_a_key_mlflow_refuses_as_a_param_fails_at_plan_time(tmp_path, capsys):
    path = _study(tmp_path, 'run.log({"score": 1.0}, step=0)', {"x.a<b": [1, 2]})
    assert main(["plan", str(path)]) == 2
    assert _run(path, tmp_path) == 2
    err = capsys.readouterr().err
    assert "'x.a<b' can't be logged to MLflow: it contains '<'" in err and "'x.a_b'" in err
    _nothing_written(tmp_path)
    path = _study(tmp_path, 'run.log({"score": 1.0}, step=0)', {"../up": [1, 2]})
    assert _run(path, tmp_path) == 2
    assert "resolves to '../up'" in capsys.readouterr().err
    _nothing_written(tmp_path)


TABULAR = """
import numpy as np
from torch import nn
from ablate import Study
from ablate.data import from_arrays

def data(n: int = 200):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 10, (n, 5))
    y = (x.sum(1) > 22).astype(np.int64)
    return from_arrays(x[:150]CAST, y[:150], x[150:]CAST, y[150:])

def mlp(in_features: int, num_classes: int, width: int = 16):
    return nn.Sequential(nn.Linear(in_features, width), nn.ReLU(), nn.Linear(width, num_classes))

study = Study("tab", model=mlp, data=data, factors={"model.width": [16, 32]}, seeds=2,
              config={"train.epochs": 1})
"""


def test_integer_features_into_a_float_model_fail_before_training(tmp_path, capsys):
    path = write(tmp_path, TABULAR.replace("CAST", ""))
    assert main(["plan", str(path)]) == 2
    assert "mlp can't take" in capsys.readouterr().err
    assert _run(path, tmp_path) == 2
    err = capsys.readouterr().err
    assert "mlp can't take this data's inputs (torch.int64 [5] per sample)" in err
    assert "convert numeric features to float before from_arrays" in err
    assert err.count("error:") == 1  # once, not once per trial
    _nothing_written(tmp_path)
    fixed = write(tmp_path, TABULAR.replace("CAST", ".astype('float32')"), "fixed.py")
    assert _run(fixed, tmp_path) == 0  # the fix the message names works


def test_the_same_error_in_the_first_trial_of_every_variant_stops_the_study(tmp_path, capsys):
    body = 'import missing_package_of_the_user  # noqa'
    path = _study(tmp_path, body, {"opt.x": [1, 2, 3, 4]})
    assert _run(path, tmp_path) == 1
    captured = capsys.readouterr()
    assert captured.err.count("No module named 'missing_package_of_the_user'") == 1
    assert "the first trial of 3 variants failed with the same error" in captured.err
    runs = trial_runs(uri_of(tmp_path), "mistake")
    ran = sorted((r.data.tags["ablate.label"], r.data.tags["ablate.seed"]) for r in runs)
    # trials go variant by variant, seeds inner: both seeds of the first two variants, then
    # the third variant's first trial stops the study; the last 3 of 8 trials never started
    assert ran == [("baseline", "0"), ("baseline", "1"), ("x=2", "0"), ("x=2", "1"),
                   ("x=3", "0")]
    assert {r.data.tags["ablate.status"] for r in runs} == {"failed"}


def test_a_train_fn_that_never_logs_the_metric_closes_every_run_it_made(tmp_path, capsys):
    path = _study(tmp_path, 'run.log({"loss": 1.0}, step=0)', {"opt.x": [1, 2]})
    assert _run(path, tmp_path) == 2
    assert "score" in capsys.readouterr().err
    client = MlflowClient(uri_of(tmp_path))
    exp = client.get_experiment_by_name("mistake")
    runs = client.search_runs([exp.experiment_id])
    statuses = {(r.data.tags.get("ablate.role"), r.info.status) for r in runs}
    assert ("trial", "FAILED") in statuses and ("study", "FAILED") in statuses
    assert not any(status in ("RUNNING", "KILLED") for _, status in statuses), statuses
    assert len([r for r in runs if r.data.tags.get("ablate.role") == "trial"]) == 1


IMAGES = """
from ablate import Study
from ablate.data import image_folder
from ablate.models import ConvNet

study = Study("imgs", model=ConvNet, data=image_folder, seeds=1,
              config={"data.path": "imgs-data", "model.widths": (4,), "train.epochs": 1},
              factors={"model.batch_norm": [True, False]})
"""


def test_a_relative_data_path_is_named_as_resolved(tmp_path, capsys, monkeypatch):
    path = write(tmp_path, IMAGES)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["plan", str(path)]) == 2
    err = capsys.readouterr().err
    assert (f"image folder 'imgs-data' not found (a relative path, read from the working "
            f"directory {elsewhere}: {elsewhere / 'imgs-data'})") in err
    assert "an absolute path works from any folder" in err


def test_plan_shows_brackets_in_labels_and_levels(tmp_path, capsys):
    path = _study(tmp_path, 'run.log({"score": 1.0}, step=0)', {"opt.tag": ["[a]", "[bold]b"]})
    assert main(["plan", str(path)]) == 0
    out = capsys.readouterr().out
    assert "[a]" in out and "[bold]b" in out and "tag=[bold]b" in out


@pytest.mark.parametrize("largest_real", [10**9, 0])  # small models: on the CPU; large: meta
def test_a_model_that_does_not_fit_the_inputs_fails_at_plan_time(tmp_path, capsys, monkeypatch,
                                                                 largest_real):
    """A float model whose first layer expects 4 features, given 5: caught before training
    whether it is tried for real on the CPU (a small model) or on the meta device."""
    monkeypatch.setattr("ablate.train.build.REAL_FORWARD_PARAMS", largest_real)
    source = TABULAR.replace("CAST", ".astype('float32')").replace(
        "nn.Linear(in_features, width)", "nn.Linear(4, width)")
    path = write(tmp_path, source)
    assert main(["plan", str(path)]) == 2
    err = capsys.readouterr().err
    assert "mlp can't take this data's inputs (torch.float32 [5] per sample)" in err
    assert "RuntimeError: " in err and "Nothing was trained" in err
