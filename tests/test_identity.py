"""The variant ids of every shipped study, pinned: an accidental change to identity (a default,
the canonical form, the hash) fails here. A deliberate one updates this table and says so."""

from __future__ import annotations

from pathlib import Path

import pytest

from ablate.source import load_study

STUDIES = Path(__file__).resolve().parents[1] / "studies"

IDS = {
    "charlm_rnn.py": ["4de571f9", "a4764bf7", "375fe40a", "52f159cf", "93868aea", "80942a27"],
    # cifar10_cnn, cifar10_cpu and quick: new ids when train.cams split from train.keep_weights
    # (they set train.cams=True, and no longer keep the weights they never used)
    "cifar10_cnn.py": ["34cadc45", "3c4f6117", "99f1fcbe", "c7107131", "ebc60083"],
    # cifar10_cpu: new ids when it learned to reach 70% (all 50,000 images, one-cycle, label
    # smoothing, test-time flips: issue #30.5)
    "cifar10_cpu.py": ["b18684ff", "e6996bfd", "07fa80fa", "81a636ec", "12854e74"],
    "custom_train.py": ["1ba5b67a", "6b608be2", "c0da5880", "ea0fa219", "52aeeaff",
                        "80d913a1"],
    "quick.py": ["ad51958c", "d0cea8e3", "48a2d204", "a8b6eea3", "cfd07c66", "24f9fafb",
                 "05af38b3", "774840b5"],
    "quick_adaptive.py": ["1a498c47", "12e4e16d", "03037527", "64ee6aab", "2dccb740"],
    # tasks_convnet: with $ABLATE_CIFAR10_IMAGES unset (its CIFAR-10 folder joins the ids)
    "tasks_convnet.py": ["1a9bc940", "100f8e6e", "4580fab6", "dbe01724", "b0ca465a",
                         "37836e55", "895f8aff", "977026bb", "59adbe82"],
    "tuned.py": ["05ed7576", "953ad876", "f3c4a14a", "7d2a2c09", "fb0a0fc2", "8d405f92",
                 "15448fcb", "a8c337af", "735ed673", "8e3b3fe4", "442a3fb5", "1ddc3ea9",
                 "a38f94f5", "e1142ef7", "3b76533c", "67f7fc05"],
}


def test_every_shipped_study_is_pinned():
    assert {p.name for p in STUDIES.glob("*.py")} == set(IDS)


@pytest.mark.parametrize("name", sorted(IDS))
def test_variant_ids_are_stable(name, monkeypatch):
    monkeypatch.delenv("ABLATE_CIFAR10_IMAGES", raising=False)
    assert [v.id for v in load_study(STUDIES / name).variants] == IDS[name]
