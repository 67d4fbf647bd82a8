"""The two fingerprints a trial records: of the code that produces its results (``ablate.code``)
and of the data it trained on (``ablate.data``). Study files and data written by the tests."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from ablate.data import from_arrays, image_folder, text
from ablate.data.fingerprint import data_fingerprint
from ablate.fingerprint import code_fingerprint, code_parts
from ablate.source import load_study

QUICK = Path(__file__).resolve().parents[1] / "studies" / "quick.py"

STUDY = '''
"""A study the tests edit."""
import torch
from torch import nn
from ablate import Study
from ablate.data import from_arrays
import HELPERS as helpers

SCALE = 2.0
JITTER = torch.tensor(0.1)


def noise(x):
    return x + JITTER * torch.sin(x)


def data(train_size=40, batch_size=16):
    """Separable points."""
    g = torch.Generator().manual_seed(0)
    x = noise(SCALE * torch.randn(train_size + 20, 4, generator=g))  # a comment
    y = (x[:, 0] > 0).long()
    return from_arrays(x[:train_size], y[:train_size], x[train_size:], y[train_size:])


def model(in_features=4, num_classes=2, width=8):
    return nn.Sequential(nn.Linear(in_features, width), helpers.act(),
                         nn.Linear(width, num_classes))


study = Study("fp", model=model, data=data, config={"train.epochs": 1},
              factors={"model.width": [8, 16]}, seeds=1)
'''

HELPERS = '''
from torch import nn


def act():
    return nn.ReLU()
'''


class Files:
    """Writes each version of the study to a new file (and its helper module beside it), and
    loads it in a fresh module, as a new `ablate` process would."""

    def __init__(self, root: Path, name: str) -> None:
        self.root, self.helpers, self.count = root, name, 0

    def load(self, study: str = STUDY, helpers: str = HELPERS):
        self.count += 1
        folder = self.root / f"v{self.count}"
        folder.mkdir()
        (folder / f"{self.helpers}.py").write_text(textwrap.dedent(helpers))
        path = folder / "study.py"
        path.write_text(textwrap.dedent(study).replace("HELPERS", self.helpers))
        sys.modules.pop(self.helpers, None)  # imported anew, from this folder
        sys.path.insert(0, str(folder))
        try:
            return load_study(path)
        finally:
            sys.path.remove(str(folder))
            sys.modules.pop(self.helpers, None)


@pytest.fixture
def files(tmp_path, request):
    return Files(tmp_path, f"fp_helpers_{request.node.name[-40:].replace('[', '_')}"
                 .replace("]", "").replace("-", "_"))


def test_what_is_not_code_leaves_the_fingerprint_alone(files):
    first = files.load()
    same = {
        "a factor": STUDY.replace('factors={"model.width": [8, 16]}',
                                  'factors={"model.width": [8, 16], "train.lr": [0.1, 0.2]}'),
        "seeds": STUDY.replace("seeds=1)", "seeds=3)"),
        "a comment": STUDY.replace("# a comment", "# another comment, longer"),
        "a docstring": STUDY.replace('"""Separable points."""',
                                     '"""Separable points, two classes.\n\n    More."""'),
        "a module docstring": STUDY.replace('"""A study the tests edit."""', ""),
        "formatting": STUDY.replace("nn.Sequential(nn.Linear(in_features, width), helpers.act(),",
                                    "nn.Sequential(\n        nn.Linear(in_features, width),\n"
                                    "        helpers.act(),"),
        "the Study's config": STUDY.replace('config={"train.epochs": 1}',
                                            'config={"train.epochs": 2}'),
        "an unused function": STUDY + "\n\ndef unused():\n    return 1\n",
    }
    for what, edited in same.items():
        assert files.load(edited).fingerprint == first.fingerprint, what
    helper_comment = HELPERS.replace("def act():", "# the activation\ndef act():")
    assert files.load(helpers=helper_comment).fingerprint == first.fingerprint


def test_what_produces_results_changes_the_fingerprint(files):
    first = files.load()
    changed = {
        "the data function's body": STUDY.replace("(x[:, 0] > 0)", "(x[:, 1] > 0)"),
        "a default": STUDY.replace("width=8)", "width=9)"),
        "a helper in the study file": STUDY.replace("torch.sin(x)", "torch.cos(x)"),
        "a constant the data function reads": STUDY.replace("SCALE = 2.0", "SCALE = 3.0"),
        "a tensor a helper reads": STUDY.replace("torch.tensor(0.1)", "torch.tensor(0.2)"),
        "another data function": STUDY.replace("data=data,", "data=other,").replace(
            "def model(", "def other(train_size=40):\n    return data(train_size)\n\n\n"
                         "def model("),
    }
    seen = {first.fingerprint}
    for what, edited in changed.items():
        fingerprint = files.load(edited).fingerprint
        assert fingerprint not in seen, what
        seen.add(fingerprint)
    other = files.load(helpers=HELPERS.replace("nn.ReLU()", "nn.Tanh()"))
    assert other.fingerprint not in seen  # a function of a module beside the study file


def test_the_parts_are_the_studys_code_and_ablates_not_the_libraries(files):
    parts = code_parts(files.load())
    assert {"<study>:data", "<study>:model", "<study>:noise", "<study>.SCALE", "<study>.JITTER",
            f"{files.helpers}:act", "ablate.data.arrays:from_arrays"} <= set(parts)
    assert not [k for k in parts if k.startswith(("torch", "numpy"))]
    assert "value=Constant(value=2.0)" in parts["<study>.SCALE"]  # its assignment
    assert "<study>.study" not in parts and "id='Study'" not in " ".join(parts.values())
    assert "Separable" not in parts["<study>:data"]  # docstrings removed


def test_a_lambda_in_the_study_declaration_is_hashed_alone(tmp_path):
    text = '''
        from ablate import Study
        from ablate.data import digits
        from ablate.models import ConvNet

        study = Study("lam", model=lambda **kw: ConvNet(widths=(4, 8), **kw), data=digits,
                      factors=FACTORS, seeds=1)
    '''
    paths = []
    for i, factors in enumerate(('{"model.batch_norm": [True, False]}',
                                 '{"model.batch_norm": [True, False], "train.lr": [0.1, 0.3]}')):
        paths.append(tmp_path / f"lam{i}.py")
        paths[-1].write_text(textwrap.dedent(text).replace("FACTORS", factors))
    one, two = (load_study(p) for p in paths)
    assert one.fingerprint == two.fingerprint
    paths[1].write_text(paths[1].read_text().replace("(4, 8)", "(4, 16)"))
    assert load_study(paths[1]).fingerprint != one.fingerprint


def test_a_train_function_and_a_user_module_it_calls(tmp_path):
    helper = tmp_path / "fp_scoring.py"
    helper.write_text("def score(epoch):\n    return 1.0 / (epoch + 1)\n")
    study = tmp_path / "user.py"
    study.write_text(textwrap.dedent('''
        from ablate import Study
        import fp_scoring

        def train(config, run):
            run.log({"score": fp_scoring.score(0)}, step=0)

        study = Study("user", train=train, factors={"mode": ["a", "b"]}, metric="score")
    '''))
    try:
        first = load_study(study)
        assert "fp_scoring:score" in code_parts(first)
        sys.modules.pop("fp_scoring")
        helper.write_text("def score(epoch):\n    return 2.0 / (epoch + 1)\n")
        assert load_study(study).fingerprint != first.fingerprint
    finally:
        sys.modules.pop("fp_scoring", None)


def test_ablates_own_model_and_data_are_hashed_by_source():
    parts = code_parts(load_study(QUICK))
    assert "ablate.models.convnet:ConvNet" in parts and "ablate.data.images:digits" in parts
    assert not [k for k in parts if "__create_fn__" in k]  # not a dataclass's generated code
    assert code_fingerprint(load_study(QUICK)) == load_study(QUICK).fingerprint


# ----------------------------------------------------------------------------- data


def arrays(n=60, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int64)


def test_the_data_fingerprint_is_of_the_content():
    x, y = arrays()
    one = from_arrays(x[:40], y[:40], x[40:], y[40:])
    again = from_arrays(x[:40].copy(), y[:40].copy(), x[40:], y[40:], batch_size=7)
    assert data_fingerprint(one) == data_fingerprint(again)  # settings are not content
    assert len(data_fingerprint(one)) == 12
    y2 = y.copy()
    y2[3] = 1 - y2[3]
    assert data_fingerprint(from_arrays(x[:40], y2[:40], x[40:], y[40:])) != data_fingerprint(one)
    x2 = x.copy()
    x2[45, 2] += 1e-3
    assert data_fingerprint(from_arrays(x[:40], y[:40], x2[40:], y[40:])) != data_fingerprint(one)
    named = from_arrays(x[:40], y[:40], x[40:], y[40:], classes=["neg", "pos"])
    assert data_fingerprint(named) != data_fingerprint(one)
    images = np.random.default_rng(1).integers(0, 256, (30, 8, 8, 3), dtype=np.uint8)
    labels = np.arange(30) % 3
    image_data = from_arrays(images[:20], labels[:20], images[20:], labels[20:])
    assert data_fingerprint(image_data) == data_fingerprint(
        from_arrays(images[:20], labels[:20], images[20:], labels[20:]))


def test_the_data_fingerprint_is_computed_once_per_object(monkeypatch):
    import ablate.data.fingerprint as fp

    x, y = arrays()
    data = from_arrays(x[:40], y[:40], x[40:], y[40:])
    calls = []
    real = fp._tensor_digest
    monkeypatch.setattr(fp, "_tensor_digest", lambda t: calls.append(1) or real(t))
    first = data_fingerprint(data)
    assert data_fingerprint(data) == first and len(calls) == 4  # x/y, train/val: once


def test_the_data_fingerprint_of_text_and_of_a_grown_image_folder(tmp_path):
    from PIL import Image

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog. " * 20)
    before = data_fingerprint(text(path=str(corpus), batch_size=4, bptt=8))
    assert data_fingerprint(text(path=str(corpus), batch_size=4, bptt=8)) == before
    corpus.write_text(corpus.read_text() + "!")
    assert data_fingerprint(text(path=str(corpus), batch_size=4, bptt=8)) != before

    rng = np.random.default_rng(0)

    def add(split, name, i):
        folder = tmp_path / "imgs" / split / name
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.png")

    for split, n in (("train", 4), ("val", 2)):
        for name in ("cat", "dog"):
            for i in range(n):
                add(split, name, i)
    path = str(tmp_path / "imgs")
    first = data_fingerprint(image_folder(path=path))
    assert data_fingerprint(image_folder(path=path)) == first  # from the decode cache
    add("train", "cat", 99)
    assert data_fingerprint(image_folder(path=path)) != first


def test_tensors_anywhere_and_of_any_dtype():
    from ablate.data.fingerprint import _tensor_digest

    t = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4)
    assert _tensor_digest(t) == _tensor_digest(t.clone())
    assert _tensor_digest(t.transpose(1, 2)) != _tensor_digest(t)  # the values in order
    assert _tensor_digest(t.transpose(1, 2)) == _tensor_digest(t.transpose(1, 2).contiguous())
    assert _tensor_digest(t.to(torch.bfloat16)) != _tensor_digest(t)
    assert _tensor_digest(t > 3) != _tensor_digest((t > 3).to(torch.uint8))  # dtype counts
    assert _tensor_digest(torch.empty(0)) != _tensor_digest(torch.empty(0, 2))
    big = torch.rand(5_000_000)  # several chunks, hashed on threads
    assert _tensor_digest(big) == _tensor_digest(big.clone())


def test_check_data_returns_each_variants_data_fingerprint(tmp_path):
    from ablate.train.build import check_data

    path = tmp_path / "s.py"
    path.write_text(textwrap.dedent('''
        import torch
        from torch import nn
        from ablate import Study
        from ablate.data import from_arrays

        def data(train_size=40):
            x = torch.randn(train_size + 20, 4)  # the global RNG: seeded as in a trial
            y = (x[:, 0] > 0).long()
            return from_arrays(x[:train_size], y[:train_size], x[train_size:], y[train_size:])

        def model(in_features=4, num_classes=2, width=8):
            return nn.Sequential(nn.Linear(in_features, width), nn.Linear(width, num_classes))

        study = Study("cd", model=model, data=data, factors={"model.width": [8, 16],
                      "data.train_size": [40, 50]}, design="one_at_a_time", seeds=2)
    '''))
    study = load_study(path)
    state = torch.get_rng_state()
    found = check_data(study)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG is left as it was
    assert set(found) == {v.id for v in study.variants}
    by_size = {v.config["data.train_size"]: found[v.id] for v in study.variants}
    assert len(set(found.values())) == 2 == len(by_size)
    assert check_data(study) == found  # the same data each time: seeded with the first seed
    user = tmp_path / "u.py"
    user.write_text("from ablate import Study\n\ndef train(config, run):\n    pass\n\n"
                    "study = Study('u', train=train, factors={'a': [1, 2]}, metric='m', "
                    "mode='max')\n")
    assert check_data(load_study(user)) == {}


def test_run_set_tags_goes_to_its_sink(tmp_path):
    from ablate.train.run import Run

    sent = []
    run = Run(config={}, seed=0, device=torch.device("cpu"), checkpoint_dir=tmp_path, metric="m",
              mode="max", sink=lambda m, s: None, tag_sink=sent.append)
    run.set_tags({"ablate.data": "abc", "n": 3})
    assert sent == [{"ablate.data": "abc", "n": "3"}] and run.tags == {"ablate.data": "abc",
                                                                       "n": "3"}
    quiet = Run(config={}, seed=0, device=torch.device("cpu"), checkpoint_dir=tmp_path,
                metric="m", mode="max", sink=lambda m, s: None)
    quiet.set_tags({"a": "b"})  # no sink: kept on the run only
    assert quiet.tags == {"a": "b"}
