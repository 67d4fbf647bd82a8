"""Class activation maps (fast.ai lesson 7): where each variant's CNN looks when it classifies.

For a net ``features -> global pool -> (dropout) -> linear classifier`` the logit of class ``k`` is
``w_k . pool(f) + b_k``; applying the classifier's weights at every position of the last feature
map ``f`` instead gives the map ``sum_c w_kc f_c(i, j)`` of where the evidence for ``k`` lies.
With a global average pool this is exact (the logit is the map's spatial mean plus ``b_k``); with
a global max pool it is the usual approximation.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ablate.report.plots import _figure, _save, _wrap


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


def pick_images(y_val: Tensor, n: int = 6) -> Tensor:
    """Indices of ``n`` fixed validation images: the first image of each class in class order,
    then the second of each class, and so on (so distinct classes come first)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    y = y_val.cpu()
    order = torch.argsort(y, stable=True)  # grouped by class, each class in index order
    counts = torch.bincount(y)
    rank = torch.arange(len(y)) - (counts.cumsum(0) - counts)[y[order]]  # occurrence in class
    return order[torch.argsort(rank * len(counts) + y[order])[:n]]


def _pictures(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """Un-normalised images as [N, H, W, C] in [0, 1]."""
    mean, std = (torch.tensor(v, dtype=torch.float32)[:, None, None] for v in (mean, std))
    return (images.detach().float().cpu() * std + mean).clamp(0, 1).permute(0, 2, 3, 1)


def _no_cam_reason(model: nn.Module | None) -> str:
    if model is None:
        return "no weights"
    if isinstance(getattr(model, "pool", None), nn.Flatten):
        return "pool=max: the classifier reads the whole feature map"
    return "no linear classifier on pooled features"


def _skipped_note(skipped: list[tuple[str, str]]) -> str:
    """One line per reason: ``No CAM (reason): label, label``."""
    by_reason: dict[str, list[str]] = {}
    for label, reason in skipped:
        by_reason.setdefault(reason, []).append(label)
    return "\n".join(
        textwrap.fill(f"Not shown ({reason}): {', '.join(labels)}", 130)
        for reason, labels in by_reason.items()
    )


def cam_figure(
    rows: list[tuple[str, nn.Module | None]],
    images: Tensor,
    labels: Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    classes: list[str],
    path: str | Path,
) -> Path | None:
    """Grid of class activation maps: one row per ``(label, model)`` variant that has CAMs, one
    column per image.

    Each cell shows the un-normalised image (grayscale for one channel) with the CAM of the
    predicted class overlaid, titled "pred <class>" in green if correct, red if wrong; the true
    class is under each column. Variants without weights or without a CAM get no row; one note
    under the grid names them. Returns None (and writes nothing) if no row has a CAM.
    """
    results = [None if m is None else class_activation_maps(m, images) for _, m in rows]
    shown = [(label, r) for (label, _), r in zip(rows, results) if r is not None]
    if not shown:
        return None
    skipped = [(label, _no_cam_reason(m)) for (label, m), r in zip(rows, results) if r is None]
    pictures = _pictures(images, mean, std).numpy()
    gray = pictures.shape[-1] == 1
    truth = labels.tolist()
    note = _skipped_note(skipped)
    fig = _figure(0.95 * len(images) + 2.0, 1.0 * len(shown) + 0.6 + 0.18 * note.count("\n")
                  + (0.3 if note else 0))
    axes = fig.subplots(len(shown), len(images), squeeze=False)
    for (label, (cams, preds)), row in zip(shown, axes):
        for ax in row:
            ax.set(xticks=[], yticks=[])
        row[0].set_ylabel(_wrap(label, 24), fontsize=7, rotation=0, ha="right", va="center")
        for ax, picture, cam, pred, true in zip(row, pictures, cams, preds.tolist(), truth):
            ax.imshow(picture[..., 0] if gray else picture, cmap="gray", vmin=0, vmax=1)
            ax.imshow(cam.numpy(), cmap="inferno", alpha=0.5, vmin=0, vmax=1)
            colour = "#1a9850" if pred == true else "#d73027"
            ax.set_title(f"pred {classes[pred]}", fontsize=6, color=colour, pad=2)
    for ax, true in zip(axes[-1], truth):
        ax.set_xlabel(f"true {classes[true]}", fontsize=6)
    fig.suptitle("Class activation maps of the predicted class (bright: evidence)", fontsize=9)
    if note:
        fig.supxlabel(note, fontsize=7, ha="left", x=0.01)
    return _save(fig, path)


def study_cams(study: Any, weights: dict[str, Path | None], path: str | Path) -> Path | None:
    """The CAM figure of a model/data study: one row per variant, from its kept weights.

    ``weights`` maps a variant label to its ``weights.pt`` (a ``state_dict``, loaded with
    ``weights_only=True``) or None. The images are fixed validation images of the baseline's
    data; variants trained on other data settings get a "different data" row.
    """
    from ablate.train.loop import factory_kwargs, model_kwargs

    base = study.baseline_variant.config
    data = study.data(**factory_kwargs(base, "data"))
    if getattr(data, "task", None) != "classification":
        return None
    index = pick_images(data.y_val)
    images, labels = data.x_val[index], data.y_val[index]
    rows: list[tuple[str, nn.Module | None]] = []
    for variant in study.variants:
        file = weights.get(variant.label)
        if file is None or factory_kwargs(variant.config, "data") != factory_kwargs(base, "data"):
            rows.append((variant.label, None))
            continue
        model = study.model(**model_kwargs(study.model, variant.config, data.model_kwargs))
        model.load_state_dict(torch.load(file, map_location="cpu", weights_only=True))
        rows.append((variant.label, model))
    return cam_figure(rows, images, labels, data.mean, data.std, data.classes, path)
