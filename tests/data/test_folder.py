"""``image_folder`` on small PNG/JPEG folders the tests write: layout, labels, cache, errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from PIL import Image

from ablate.data import ImageData, ImageFolderError, image_folder
from ablate.data import folder as folder_module

CLASSES = {"dog": 3, "ant": 4, "cat": 5}  # sorted: ant, cat, dog


def pixels(label: int, index: int, size: tuple[int, int] = (6, 5)) -> torch.Tensor:
    """An RGB image whose pixels encode (label, index): channel c holds 40*c + 10*label + index."""
    values = torch.tensor([40 * c + 10 * label + index for c in range(3)], dtype=torch.uint8)
    return values[:, None, None].expand(3, *size).contiguous()


def write_png(image: torch.Tensor, path: str) -> None:
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(path, format="PNG")


def write_split(root: Path, split: str, counts: dict[str, int], size=(6, 5)) -> None:
    for label, name in enumerate(sorted(counts)):
        (root / split / name).mkdir(parents=True, exist_ok=True)
        for i in range(counts[name]):
            write_png(pixels(label, i, size), str(root / split / name / f"{i:03d}.png"))


@pytest.fixture
def images(tmp_path) -> Path:
    root = tmp_path / "images"
    write_split(root, "train", CLASSES)
    write_split(root, "val", {name: 2 for name in CLASSES})
    return root


@pytest.fixture
def decodes(monkeypatch) -> list[Path]:
    """Every file ``image_folder`` decodes, in the order it decodes them."""
    seen: list[Path] = []
    decode_file = folder_module._decode_file

    def counting(root, file, decode):
        seen.append(file)
        return decode_file(root, file, decode)

    monkeypatch.setattr(folder_module, "_decode_file", counting)
    return seen


def raw(data: ImageData, x: torch.Tensor) -> torch.Tensor:
    """Normalised images back to uint8 pixels."""
    mean, std = (torch.tensor(v)[:, None, None] for v in (data.mean, data.std))
    return (x * std + mean).mul(255).round().to(torch.uint8)


def test_classes_labels_pixels_and_normalisation(images):
    data = image_folder(path=str(images), batch_size=4)
    assert data.classes == ["ant", "cat", "dog"] and data.augment and data.batch_size == 4
    assert data.y_train.tolist() == [0] * 4 + [1] * 5 + [2] * 3
    assert data.y_val.tolist() == [0, 0, 1, 1, 2, 2]
    assert data.x_train.shape == (12, 3, 6, 5) and data.x_train.dtype == torch.float32
    assert data.model_kwargs == {"num_classes": 3, "in_channels": 3, "image_size": 6}
    expected = torch.stack([pixels(label, i) for label, n in enumerate((4, 5, 3))
                            for i in range(n)])
    assert torch.equal(raw(data, data.x_train), expected)
    assert torch.equal(raw(data, data.x_val)[2], pixels(1, 0))
    assert torch.allclose(data.x_train.mean((0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(data.x_train.std((0, 2, 3), correction=0), torch.ones(3), atol=1e-4)
    assert not image_folder(path=str(images), augment=False).augment


def test_test_split_jpeg_extensions_and_ignored_files(tmp_path):
    root = tmp_path / "jpegs"
    for split, n in (("train", 3), ("test", 1)):
        for name in ("b", "a"):
            folder = root / split / name / "nested"
            folder.mkdir(parents=True)
            for i in range(n):
                ext = (".jpg", ".JPEG", ".jpeg")[i % 3]
                image = Image.fromarray(pixels(0, i, (8, 8)).permute(1, 2, 0).numpy())
                image.save(folder / f"{i}{ext}", format="JPEG")
            (folder / "notes.txt").write_text("not an image")
            (folder / ".hidden.png").write_bytes(b"not an image either")
    (root / "train" / ".thumbnails").mkdir()
    data = image_folder(path=str(root))
    assert data.classes == ["a", "b"] and data.x_train.shape == (6, 3, 8, 8)
    assert data.y_train.tolist() == [0, 0, 0, 1, 1, 1] and data.y_val.tolist() == [0, 1]


def test_grayscale_palette_and_rgba_files_become_rgb(images):
    rgb, dog = Image.fromarray(pixels(2, 0).permute(1, 2, 0).numpy()), images / "train" / "dog"
    rgb.convert("L").save(dog / "000.png")
    rgb.convert("RGBA").save(dog / "001.png")
    rgb.convert("P", palette=Image.Palette.ADAPTIVE).save(dog / "002.png")
    data = image_folder(path=str(images))
    decoded = raw(data, data.x_train[-3:])
    assert decoded.shape == (3, 3, 6, 5)
    assert torch.equal(decoded[0, 0], decoded[0, 1])  # grey: equal channels
    assert torch.equal(decoded[1], pixels(2, 0)) and torch.equal(decoded[2], pixels(2, 0))


def test_second_call_loads_the_cache_without_decoding(images, decodes):
    first = image_folder(path=str(images))
    assert len(decodes) == 18
    decodes.clear()
    again = image_folder(path=str(images), batch_size=8)
    assert decodes == []
    assert torch.equal(again.x_train, first.x_train) and torch.equal(again.y_val, first.y_val)
    assert again.mean == first.mean and again.classes == first.classes
    assert [p.suffix for p in (images / ".ablate-cache").iterdir()] == [".pt"]


def test_cache_is_rebuilt_when_the_folder_changes(images, decodes):
    image_folder(path=str(images))
    cache_files = list((images / ".ablate-cache").iterdir())
    write_png(pixels(0, 9), str(images / "train" / "ant" / "000.png"))  # rewritten contents
    decodes.clear()
    data = image_folder(path=str(images))
    assert len(decodes) == 18
    assert torch.equal(raw(data, data.x_train)[0], pixels(0, 9))
    assert list((images / ".ablate-cache").iterdir()) != cache_files  # the stale file is gone
    assert len(list((images / ".ablate-cache").iterdir())) == 1
    write_png(pixels(2, 7), str(images / "train" / "dog" / "new.png"))  # an added image
    assert len(image_folder(path=str(images)).y_train) == 13


def test_damaged_cache_is_decoded_again(images, decodes):
    image_folder(path=str(images))
    (cache,) = (images / ".ablate-cache").iterdir()
    cache.write_bytes(b"garbage")
    decodes.clear()
    with pytest.warns(UserWarning, match="unreadable image cache"):
        data = image_folder(path=str(images))
    assert len(decodes) == 18 and len(data.y_train) == 12


def test_cache_falls_back_to_the_user_cache_dir(images, decodes, tmp_path, monkeypatch):
    monkeypatch.setenv("ABLATE_CACHE_DIR", str(tmp_path / "user-cache"))
    (images / ".ablate-cache").write_text("a file where the cache folder would go")
    image_folder(path=str(images))
    (cached,) = (tmp_path / "user-cache" / "image-folders").glob("*/*.pt")
    decodes.clear()
    image_folder(path=str(images))
    assert decodes == [] and cached.exists()


def test_random_subsets_are_reproducible_by_seed(images):
    full = image_folder(path=str(images))
    small = image_folder(path=str(images), train_size=6, val_size=3)
    assert len(small.y_train) == 6 and len(small.y_val) == 3
    assert small.mean == full.mean and small.std == full.std  # statistics of all training images
    rows = [next(i for i, img in enumerate(full.x_train) if torch.equal(img, x))
            for x in small.x_train]
    assert rows != list(range(6)) and rows == sorted(rows)  # random, kept in folder order
    assert small.y_train.tolist() == full.y_train[rows].tolist()
    same = image_folder(path=str(images), train_size=6, val_size=3)
    assert torch.equal(same.x_train, small.x_train) and torch.equal(same.x_val, small.x_val)
    other = image_folder(path=str(images), train_size=6, val_size=3, seed=1)
    assert not torch.equal(other.x_train, small.x_train)
    assert len(image_folder(path=str(images), train_size=100).y_train) == 12
    with pytest.raises(ValueError, match="train_size"):
        image_folder(path=str(images), train_size=0)


def test_resize_and_grayscale(tmp_path):
    root = tmp_path / "mixed"
    write_split(root, "train", {"a": 2, "b": 2}, size=(12, 8))
    write_split(root, "val", {"a": 1, "b": 1}, size=(6, 6))
    data = image_folder(path=str(root), image_size=4, grayscale=True)
    assert data.x_train.shape == (4, 1, 4, 4) and data.x_val.shape == (2, 1, 4, 4)
    assert len(data.mean) == 1
    assert len(list((root / ".ablate-cache").iterdir())) == 1
    image_folder(path=str(root), image_size=5)  # other options: a cache file of its own
    assert len(list((root / ".ablate-cache").iterdir())) == 2


def bad(root: Path, match: str) -> str:
    with pytest.raises(ImageFolderError, match=match) as info:
        image_folder(path=str(root))
    assert isinstance(info.value, ValueError)
    return str(info.value)


def test_missing_folder_and_splits(tmp_path):
    bad(tmp_path / "nowhere", "not found. Fix: set data.path")
    root = tmp_path / "imgs"
    write_split(root, "val", {"a": 1, "b": 1})
    assert f"{root}/train/<class>/" in bad(root, "has no train/ folder")
    (root / "val").rename(root / "holdout")
    write_split(root, "train", {"a": 1, "b": 1})
    assert f"{root}/val/<class>/" in bad(root, "has no val/ or test/ folder")


def test_single_class_and_class_mismatch(tmp_path):
    root = tmp_path / "imgs"
    write_split(root, "train", {"only": 2})
    write_split(root, "val", {"only": 1})
    bad(root, r"1 class folder\(s\) \['only'\]; classification needs at least 2")
    write_split(root, "train", {"only": 2, "other": 2})
    write_split(root, "test", {"only": 1, "third": 1})
    (root / "val").rename(root / "old-val")
    message = bad(root, "class folders .* differ")
    assert "only in train/: ['other']" in message and "only in test/: ['third']" in message


def test_mixed_sizes_name_two_files(images):
    write_png(pixels(1, 0, (7, 9)), str(images / "train" / "cat" / "003.png"))
    message = bad(images, "differ in size")
    assert "train/ant/000.png is 5x6" in message and "train/cat/003.png is 9x7" in message
    assert "data.image_size" in message


def test_val_images_of_another_size(images):
    write_png(pixels(1, 0, (3, 3)), str(images / "val" / "dog" / "000.png"))
    assert "val/dog/000.png is 3x3" in bad(images, "differ in size")


def test_corrupt_and_empty_files_are_named(images):
    (images / "train" / "dog" / "001.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    bad(images, r"can't decode train/dog/001.png .* Fix: replace or delete that file")
    (images / "train" / "dog" / "001.png").write_bytes(b"")
    bad(images, "can't decode train/dog/001.png")


def test_empty_class_folder(images):
    for png in (images / "val" / "cat").iterdir():
        png.unlink()
    bad(images, "class folder .*val/cat has no .png/.jpg/.jpeg images")


def test_no_leftover_temp_files_and_readable_cache(images):
    image_folder(path=str(images))
    (cache,) = (images / ".ablate-cache").iterdir()
    assert not cache.name.startswith(".") and cache.name.endswith(".pt")
    umask = os.umask(0)
    os.umask(umask)
    assert cache.stat().st_mode & 0o777 == 0o666 & ~umask
