"""What a trial of the built-in loop records for the report when it ends: class activation maps.

Class activation maps (fast.ai lesson 7) show where a CNN looks when it classifies. For a net
``features -> global pool -> (dropout) -> linear classifier`` the logit of class ``k`` is
``w_k . pool(f) + b_k``; applying the classifier's weights at every position of the last feature
map ``f`` instead gives the map ``sum_c w_kc f_c(i, j)`` of where the evidence for ``k`` lies.
With a global average pool this is exact (the logit is the map's spatial mean plus ``b_k``); with
a global max pool it is the usual approximation.

With ``train.cams`` (``train.keep_weights`` keeps the weights, not these) the loop computes them
on fixed validation images once training ends and attaches them to the trial's run as
``cams.npz``, which ``ablate report`` assembles into one figure without rebuilding any model or
loading any data. The file holds
``applicable`` (False where the data is not image classification, e.g. text or arrays),
``pictures`` (the un-normalised images [N, H, W, C] in [0, 1]), ``labels`` [N], ``classes``,
and either ``cams`` [N, H, W] with ``preds`` [N] or ``reason``, why the model has no CAM.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

CAMS = "cams.npz"  # the artifact; ablate.report.collect reads it
N_IMAGES = 6


def log_cams(run: Any, model: nn.Module, data: Any) -> None:
    """Attach ``cams.npz`` to the trial's run: the maps of ``model`` on ``data``'s fixed
    validation images (:func:`pick_images`). A failure here is a warning, never the trial's."""
    try:
        record = data_record(model, data)
    except Exception as exc:
        warnings.warn(f"class activation maps not recorded: {type(exc).__name__}: {exc}",
                      stacklevel=2)
        record = {"applicable": np.array(True),
                  "reason": np.array(f"could not be computed: {type(exc).__name__}")}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / CAMS
        # numpy's stub lets **kwargs fill allow_pickle: bool, so a dict of arrays is rejected
        np.savez_compressed(path, **record)  # type: ignore[arg-type]
        run.log_artifact(path)


def data_record(model: nn.Module, data: Any) -> dict[str, np.ndarray]:
    """The ``cams.npz`` arrays of ``model`` on ``data`` (an ``ImageData``)."""
    x_val = getattr(data, "x_val", None)
    if not (getattr(data, "task", None) == "classification"
            and getattr(data, "mean", None) is not None
            and isinstance(x_val, Tensor) and x_val.ndim == 4):
        return {"applicable": np.array(False), "reason": np.array("not image classification")}
    index = pick_images(data.y_val, N_IMAGES)
    images, labels = x_val[index.to(x_val.device)], data.y_val[index.to(data.y_val.device)]
    return cam_record(model, images, labels, data.mean, data.std, list(data.classes))


def cam_record(
    model: nn.Module | None,
    images: Tensor,
    labels: Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    classes: list[str],
) -> dict[str, np.ndarray]:
    """The ``cams.npz`` arrays of ``model`` on normalised ``images`` [N, C, H, W] whose true
    classes are ``labels``."""
    record = {
        "applicable": np.array(True),
        "pictures": pictures(images, mean, std).numpy(),
        "labels": labels.cpu().numpy(),
        "classes": np.array([str(c) for c in classes]),
    }
    found = None if model is None else class_activation_maps(model, images)
    if found is None:
        record["reason"] = np.array(no_cam_reason(model))
    else:
        record["cams"], record["preds"] = found[0].numpy(), found[1].numpy()
    return record


def class_activation_maps(model: nn.Module, images: Tensor) -> tuple[Tensor, Tensor] | None:
    """Class activation maps of the predicted class for normalised ``images`` [N, C, H, W].

    The output of ``model.features`` ([N, C', h, w], captured by a forward hook during an ordinary
    forward pass) is weighted by ``model.classifier``'s weights for each image's predicted class
    and summed over channels, then ReLU'd, upsampled (bilinear) to [H, W] and divided by each
    image's maximum. Runs in eval mode without gradients; the model's training mode is restored
    and the hook removed afterwards.

    Returns:
        ``(cams [N, H, W] in [0, 1], predicted classes [N])`` on the CPU; None where no CAM is
        defined: the model has no ``features`` module or no linear ``classifier``, or the
        classifier does not read one value per feature channel (e.g. ``ConvNet(pool="max")``,
        whose classifier reads the flattened feature map).
    """
    features, classifier = getattr(model, "features", None), getattr(model, "classifier", None)
    if not isinstance(features, nn.Module) or not isinstance(classifier, nn.Linear):
        return None
    captured: list[Tensor] = []
    hook = features.register_forward_hook(lambda _module, _input, out: captured.append(out))
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            pred = model(images.to(classifier.weight.device)).argmax(1)
            if len(captured) != 1 or captured[0].ndim != 4:
                return None
            (fmap,) = captured
            if fmap.shape[1] != classifier.in_features:
                return None
            cams = torch.einsum("nchw,nc->nhw", fmap, classifier.weight[pred]).relu()
            cams = F.interpolate(cams[:, None], size=images.shape[-2:], mode="bilinear")[:, 0]
            cams /= cams.amax((1, 2), keepdim=True).clamp_min(1e-12)
    finally:
        hook.remove()
        model.train(training)
    return cams.float().cpu(), pred.cpu()


def pick_images(y_val: Tensor, n: int = N_IMAGES) -> Tensor:
    """Indices of ``n`` fixed validation images: the first image of each class in class order,
    then the second of each class, and so on (so distinct classes come first)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    y = y_val.cpu()
    order = torch.argsort(y, stable=True)  # grouped by class, each class in index order
    counts = torch.bincount(y)
    rank = torch.arange(len(y)) - (counts.cumsum(0) - counts)[y[order]]  # occurrence in class
    return order[torch.argsort(rank * len(counts) + y[order])[:n]]


def pictures(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """Un-normalised images as [N, H, W, C] in [0, 1]."""
    mean_t, std_t = (torch.tensor(v, dtype=torch.float32)[:, None, None] for v in (mean, std))
    return (images.detach().float().cpu() * std_t + mean_t).clamp(0, 1).permute(0, 2, 3, 1)


def no_cam_reason(model: nn.Module | None) -> str:
    if model is None:
        return "no weights"
    if isinstance(getattr(model, "pool", None), nn.Flatten):
        return "pool=max: the classifier reads the whole feature map"
    return "no linear classifier on pooled features"
