"""The cache folder's location and atomic writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from ablate.data.cache import cache_dir, write_atomically


def test_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("ABLATE_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "ablate"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "ablate"
    monkeypatch.setenv("ABLATE_CACHE_DIR", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"


def test_write_atomically_leaves_the_old_file_on_failure(tmp_path):
    dest = tmp_path / "sub" / "file.bin"
    write_atomically(dest, lambda f: f.write(b"first"))
    assert dest.read_bytes() == b"first"

    def broken(f) -> None:
        f.write(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        write_atomically(dest, broken)
    assert dest.read_bytes() == b"first"
    assert [p.name for p in Path(tmp_path / "sub").iterdir()] == ["file.bin"]
