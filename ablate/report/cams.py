"""The class activation map figure, assembled from the maps each trial recorded when it ended.

The maps are computed by the training loop (``ablate.train.artifacts``: ``cams.npz`` per trial,
with ``train.cams``); this module only reads those arrays and draws them, so a report
rebuilds no model and loads no data.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np

from ablate.report.plots import _figure, _save, _wrap

NO_WEIGHTS = "no weights"
NOT_RECORDED = "not recorded: trained before ablate kept them when a trial ends"

# A row: a variant's label and its trial's cams.npz arrays (a mapping), or why it has none.
Row = tuple[str, Any]


def read_record(path: str | Path) -> dict[str, Any]:
    """The arrays of a trial's ``cams.npz`` (no pickles)."""
    with np.load(path, allow_pickle=False) as npz:
        return {key: npz[key] for key in npz.files}


def not_applicable(rows: list[Row]) -> bool:
    """Whether the trials' data is not image classification (no CAM is defined at all)."""
    return any(not isinstance(r, str) and not bool(r["applicable"]) for _, r in rows)


def _skipped_note(skipped: list[tuple[str, str]]) -> str:
    """One line per reason: ``Not shown (reason): label, label``."""
    by_reason: dict[str, list[str]] = {}
    for label, reason in skipped:
        by_reason.setdefault(reason, []).append(label)
    return "\n".join(
        textwrap.fill(f"Not shown ({reason}): {', '.join(labels)}", 130)
        for reason, labels in by_reason.items()
    )


def cam_figure(rows: list[Row], path: str | Path) -> Path | None:
    """Grid of class activation maps: one row per variant whose record has CAMs, one column per
    image.

    Each cell shows the un-normalised image (grayscale for one channel) with the CAM of the
    predicted class overlaid, titled "pred <class>" in green if correct, red if wrong; the true
    class is under each column. Variants without CAMs get no row; one note under the grid names
    them with the reason. Returns None (and writes nothing) if no row has a CAM.
    """
    shown = [(label, r) for label, r in rows if not isinstance(r, str) and "cams" in r]
    if not shown:
        return None
    skipped = [(label, r if isinstance(r, str) else str(r["reason"]))
               for label, r in rows if isinstance(r, str) or "cams" not in r]
    first = shown[0][1]  # every shown trial ran on the baseline's data: the same images
    pictures, classes = first["pictures"], [str(c) for c in first["classes"]]
    gray = pictures.shape[-1] == 1
    truth = np.asarray(first["labels"]).tolist()
    note = _skipped_note(skipped)
    fig = _figure(0.95 * len(pictures) + 2.0, 1.0 * len(shown) + 0.6 + 0.18 * note.count("\n")
                  + (0.3 if note else 0))
    axes = fig.subplots(len(shown), len(pictures), squeeze=False)
    for (label, record), row in zip(shown, axes):
        for ax in row:
            ax.set(xticks=[], yticks=[])
        row[0].set_ylabel(_wrap(label, 24), fontsize=7, rotation=0, ha="right", va="center")
        preds = np.asarray(record["preds"]).tolist()
        for ax, picture, cam, pred, true in zip(row, pictures, record["cams"], preds, truth):
            ax.imshow(picture[..., 0] if gray else picture, cmap="gray", vmin=0, vmax=1)
            ax.imshow(cam, cmap="inferno", alpha=0.5, vmin=0, vmax=1)
            colour = "#1a9850" if pred == true else "#d73027"
            ax.set_title(f"pred {classes[pred]}", fontsize=6, color=colour, pad=2)
    for ax, true in zip(axes[-1], truth):
        ax.set_xlabel(f"true {classes[true]}", fontsize=6)
    fig.suptitle("Class activation maps of the predicted class (bright: evidence)", fontsize=9)
    if note:
        fig.supxlabel(note, fontsize=7, ha="left", x=0.01)
    return _save(fig, path)


def not_recorded(rows: list[Row]) -> list[str]:
    """The variants whose trials recorded no CAMs (trained before ablate kept them)."""
    return [label for label, r in rows if isinstance(r, str) and r == NOT_RECORDED]
