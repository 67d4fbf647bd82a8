import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ablate.models.convnet import ConvNet
from ablate.report.cams import NO_WEIGHTS, NOT_RECORDED, cam_figure, not_recorded
from ablate.train.artifacts import cam_record, class_activation_maps, pick_images

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CLASSES = ["zero", "one", "two"]


def make_model(seed=0, in_channels=1, **kwargs):
    torch.manual_seed(seed)
    return ConvNet(widths=(4, 8), in_channels=in_channels, image_size=8, num_classes=3, **kwargs)


def records(rows, images, labels, mean, std, classes):
    """What each trial records when it ends (cams.npz), for ``(label, model or None)`` rows."""
    return [(label, NO_WEIGHTS if m is None else cam_record(m, images, labels, mean, std, classes))
            for label, m in rows]


def make_images(n=5, channels=1, seed=0):
    return torch.randn(n, channels, 8, 8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("pool", ["adaptive_max", "adaptive_avg"])
@pytest.mark.parametrize("training", [True, False])
def test_cams_shape_range_predictions_and_cleanup(pool, training):
    model = make_model(pool=pool, dropout=0.5).train(training)  # BN + dropout: eval matters
    images = make_images()
    cams, pred = class_activation_maps(model, images)
    assert cams.shape == (5, 8, 8) and pred.shape == (5,)
    assert cams.min() >= 0 and cams.max() <= 1
    peaks = cams.amax((1, 2))
    assert ((peaks == 1) | (peaks == 0)).all() and (peaks == 1).any()
    assert model.training is training
    assert all(m.training is training for m in model.modules())
    assert not model.features._forward_hooks
    with torch.no_grad():
        assert torch.equal(pred, model.eval()(images).argmax(1))


def test_cam_is_classifier_weighted_sum_of_features():
    model = make_model(seed=2, batch_norm=False, pool="adaptive_avg").eval()
    images = 3 * make_images(seed=1)
    with torch.no_grad():
        features = model.features(images)  # [5, 8, 2, 2]
        logits = model(images)
    pred = logits.argmax(1)
    assert len(pred.unique()) > 1  # so using the wrong class's weights would show
    weight, bias = model.classifier.weight[pred], model.classifier.bias[pred]
    raw = (weight[:, :, None, None] * features).sum(1)  # un-ReLU'd, un-normalised CAM
    # Global average pool: the predicted logit is the raw CAM's spatial mean plus the bias.
    torch.testing.assert_close(raw.mean((1, 2)) + bias, logits[torch.arange(5), pred])
    expected = F.interpolate(raw.relu()[:, None], size=(8, 8), mode="bilinear")[:, 0]
    expected /= expected.amax((1, 2), keepdim=True).clamp_min(1e-12)
    cams, cam_pred = class_activation_maps(model, images)
    assert torch.equal(cam_pred, pred)
    torch.testing.assert_close(cams, expected)


def test_no_cam_rows(tmp_path):
    images, labels = make_images(4), torch.tensor([0, 1, 2, 0])
    flat = make_model(pool="max")
    assert class_activation_maps(flat, images) is None
    assert not flat.features._forward_hooks and flat.training
    assert class_activation_maps(nn.Linear(64, 3), images) is None
    args = (images, labels, (0.5,), (0.25,), CLASSES)
    rows = [("baseline", make_model()), ("pool=max", flat), ("crashed", None)]
    path = cam_figure(records(rows, *args), tmp_path / "cams.png")
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 5000
    assert cam_figure(records(rows[1:], *args), tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


def test_cam_figure_rgb(tmp_path):
    images, labels = make_images(6, channels=3), torch.tensor([0, 1, 2, 0, 1, 2])
    rows = [
        (f"variant {i}, with a long label", make_model(seed=i, in_channels=3)) for i in range(3)
    ]
    rows[1] = ("pool=max", make_model(in_channels=3, pool="max"))
    rows = records(rows, images, labels, (0.5,) * 3, (0.25,) * 3, CLASSES)
    path = cam_figure(rows, tmp_path / "c.png")
    assert path.read_bytes().startswith(PNG_SIGNATURE)


def test_trials_without_a_record_are_named(tmp_path):
    images, labels = make_images(4), torch.tensor([0, 1, 2, 0])
    args = (images, labels, (0.5,), (0.25,), CLASSES)
    rows = [("baseline", NOT_RECORDED), ("wide", NOT_RECORDED), ("crashed", NO_WEIGHTS)]
    assert cam_figure(rows, tmp_path / "none.png") is None
    assert not_recorded(rows) == ["baseline", "wide"]
    rows = [*records([("new", make_model())], *args), *rows]
    assert cam_figure(rows, tmp_path / "c.png").read_bytes().startswith(PNG_SIGNATURE)
    assert not_recorded(records([("new", make_model()), ("gone", None)], *args)) == []


def test_pick_images():
    y = torch.tensor([2, 2, 0, 1, 0, 2, 1, 1])
    assert pick_images(y, 3).tolist() == [2, 3, 0]  # first of class 0, 1, 2
    assert pick_images(y, 5).tolist() == [2, 3, 0, 4, 6]  # then the second of each class
    assert sorted(pick_images(y, 20).tolist()) == list(range(8))
    assert pick_images(torch.tensor([3, 3, 1]), 3).tolist() == [2, 0, 1]  # absent classes
    y = torch.randint(0, 10, (500,), generator=torch.Generator().manual_seed(0))
    picked = pick_images(y)
    assert torch.equal(picked, pick_images(y.clone()))
    assert y[picked].tolist() == [0, 1, 2, 3, 4, 5]
    with pytest.raises(ValueError):
        pick_images(y, 0)
