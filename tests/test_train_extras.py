"""The loop's optional settings train.label_smoothing, train.ema and train.tta: each does what
README says, resumes exactly, and leaves the ids of studies that don't set it unchanged."""

from __future__ import annotations

import textwrap

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ablate.config import TRAIN_DEFAULTS
from ablate.data import from_arrays
from ablate.data.images import ImageData
from ablate.train.loop import fit
from ablate.train.run import Run, seed_everything

CPU = torch.device("cpu")


def tiny_images() -> ImageData:
    """24 training and 12 validation RGB images 6x6, 3 classes, no augmentation."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (36, 6, 6, 3), generator=gen, dtype=torch.uint8).numpy()
    y = (torch.arange(36) % 3).numpy()
    data = from_arrays(x[:24], y[:24], x[24:], y[24:], batch_size=8)
    assert isinstance(data, ImageData)
    return data


def linear(**_) -> nn.Module:
    """No batch norm: the outputs of a batch don't depend on the rest of the batch."""
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 6 * 6, 3))


def train(tmp_path, name, data=None, model_fn=linear, **train):
    """``fit`` for one trial; returns each epoch's logged metrics and the trained run."""
    config = {**TRAIN_DEFAULTS, "train.epochs": 2, "train.momentum": 0.0,
              "train.weight_decay": 0.0, "train.activation_stats": False,
              **{f"train.{k}": v for k, v in train.items()}}
    logged: list[dict[str, float]] = []
    seed_everything(0)
    run = Run(config=config, seed=0, device=CPU, checkpoint_dir=tmp_path / name,
              metric="val_acc", mode="max", sink=lambda m, step: logged.append(dict(m)))
    data = tiny_images() if data is None else data
    fit(run, model_fn, lambda **_: data)
    return logged


def test_label_smoothing_changes_the_training_loss_only(tmp_path):
    data = tiny_images()
    torch.manual_seed(0)
    model = linear()
    still = {"lr": 1e-12, "epochs": 1}  # the weights stay where they start
    plain = train(tmp_path, "plain", data, lambda **_: model, **still)[0]
    smooth = train(tmp_path, "smooth", data, lambda **_: model, label_smoothing=0.3, **still)[0]
    with torch.no_grad():
        logits = model(data.x_train)
        expected = F.cross_entropy(logits, data.y_train, label_smoothing=0.3).item()
        unsmoothed = F.cross_entropy(logits, data.y_train).item()
    assert smooth["train_loss"] == pytest.approx(expected, rel=1e-5)
    assert plain["train_loss"] == pytest.approx(unsmoothed, rel=1e-5)
    assert expected != pytest.approx(unsmoothed, rel=1e-3)  # the test can tell them apart
    assert smooth["val_loss"] == pytest.approx(plain["val_loss"], rel=1e-6)  # plain CE


def test_tta_averages_the_logits_of_each_image_and_its_mirror(tmp_path):
    data = tiny_images()
    torch.manual_seed(0)
    model = linear()
    still = {"lr": 1e-12, "epochs": 1}
    plain = train(tmp_path, "plain", data, lambda **_: model, **still)[0]
    tta = train(tmp_path, "tta", data, lambda **_: model, tta=True, **still)[0]
    with torch.no_grad():
        logits = (model(data.x_val) + model(data.x_val.flip(-1))) / 2
    assert tta["val_loss"] == pytest.approx(F.cross_entropy(logits, data.y_val).item(), rel=1e-5)
    assert tta["val_acc"] == pytest.approx((logits.argmax(-1) == data.y_val).float().mean().item())
    assert tta["val_loss"] != pytest.approx(plain["val_loss"], rel=1e-4)
    assert tta["train_loss"] == pytest.approx(plain["train_loss"], rel=1e-6)  # training as is


def test_ema_is_what_validation_measures(tmp_path):
    plain = train(tmp_path, "plain", lr=0.5)
    tracking = train(tmp_path, "tracking", lr=0.5, ema=1e-7)  # the average is the last weights
    averaged = train(tmp_path, "averaged", lr=0.5, ema=0.9)
    for a, b in zip(plain, tracking):
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)
    assert [m["train_loss"] for m in averaged] == [m["train_loss"] for m in plain]
    assert averaged[-1]["val_loss"] != pytest.approx(plain[-1]["val_loss"], rel=1e-3)


def test_ema_resumes_exactly_from_a_checkpoint(tmp_path):
    straight = train(tmp_path, "straight", lr=0.5, ema=0.9, epochs=3)
    train(tmp_path, "resumed", lr=0.5, ema=0.9, epochs=1)  # leaves its checkpoint
    resumed = train(tmp_path, "resumed", lr=0.5, ema=0.9, epochs=3)  # epochs 2 and 3
    assert resumed == straight[1:]


@pytest.mark.parametrize(("setting", "value", "match"), [
    ("label_smoothing", 1.0, r"train.label_smoothing=1.0 must be a number in \[0, 1\)"),
    ("ema", 1, r"train.ema=1 must be a decay in \(0, 1\)"),
    ("tta", "yes", "train.tta='yes' must be True or False"),
])
def test_bad_values_are_refused_before_training(tmp_path, setting, value, match):
    with pytest.raises(ValueError, match=match):
        train(tmp_path, "bad", **{setting: value})


def test_tta_needs_images(tmp_path):
    x = torch.randn(12, 4).numpy()
    y = (torch.arange(12) % 2).numpy()
    data = from_arrays(x[:8], y[:8], x[8:], y[8:])
    with pytest.raises(ValueError, match="train.tta flips images"):
        train(tmp_path, "arrays", data, lambda **_: nn.Linear(4, 2), tta=True)


def test_unset_settings_leave_the_ids_unchanged(tmp_path):
    from ablate.source import load_study

    study = tmp_path / "s.py"
    study.write_text(textwrap.dedent("""
        from ablate import Study
        from ablate.data import digits
        from ablate.models import ConvNet
        study = Study("extras", model=ConvNet, data=digits,
                      config={"model.widths": (4, 8), "data.image_size": 8, "train.epochs": 1},
                      factors={"model.batch_norm": [True, False]}, seeds=1)
    """))
    plain = load_study(study)
    for key, value in [("train.label_smoothing", 0.2), ("train.ema", 0.99), ("train.tta", True)]:
        assert key not in plain.variants[0].config
        changed = load_study(study, overrides={key: value})
        assert changed.variants[0].config[key] == value
        assert changed.variants[0].id != plain.variants[0].id


@pytest.mark.parametrize(("setting", "value", "match"), [
    ("train.label_smoothing", 1.5, r"train.label_smoothing=1.5 does not fit: must be in \[0, 1\)"),
    ("train.ema", 2.0, r"train.ema=2.0 does not fit: the decay must be in \(0, 1\)"),
    ("train.tta", "yes", r"train.tta='yes' does not fit: expected True or False"),
])
def test_bad_values_are_refused_when_the_study_is_made(setting, value, match):
    """Before any trial starts (``ablate plan`` and ``ablate run`` make the Study first)."""
    from ablate import Study, StudyError
    from ablate.data import digits
    from ablate.models import ConvNet

    with pytest.raises(StudyError, match=match):
        Study("bad", model=ConvNet, data=digits, config={"model.widths": (4, 8), setting: value},
              factors={"model.batch_norm": [True, False]}, seeds=2)
