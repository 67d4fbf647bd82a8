import hashlib
from pathlib import Path

import pytest
import torch

from ablate.data import ChecksumError, TextData, text
from ablate.data import cache as cache_module
from ablate.data.corpus import CORPORA, Corpus

CORPUS = "".join(
    "\n" if i % 61 == 60 else "é日 .,"[i % 5] if i % 17 == 0 else chr(97 + (i * 7 + i // 13) % 26)
    for i in range(5000)
)


@pytest.fixture
def corpus_file(tmp_path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(CORPUS, encoding="utf-8")
    return path


def reassemble(data: TextData, batches) -> str:
    """Concatenate each stream's windows (plus the final target), then the streams in order."""
    streams = torch.cat([x for x, _ in batches] + [batches[-1][1][:, -1:]], dim=1)
    return "".join(data.decode(s) for s in streams)


def test_vocab_split_and_encoding(corpus_file):
    data = text(path=str(corpus_file), batch_size=4, bptt=10)
    assert data.vocab == sorted(set(CORPUS))
    assert data.model_kwargs == {"vocab_size": len(data.vocab)}
    assert data.task == "language_model" and data.device == torch.device("cpu")
    assert data.decode(data.train) + data.decode(data.val) == CORPUS
    assert len(data.val) == 500
    assert torch.equal(data.encode(CORPUS[:100]), data.train[:100])
    with pytest.raises(ValueError, match="'Z'"):
        data.encode("Z")
    assert len(text(path=str(corpus_file), batch_size=4, bptt=10, max_chars=1000).train) == 900
    moved = data.to("cpu")
    assert torch.equal(moved.train, data.train) and moved.bptt == 10


def test_bptt_streams_reassemble_into_train_text(corpus_file):
    data = text(path=str(corpus_file), batch_size=4, bptt=10)
    batches = list(data.train_batches(seed=0, epoch=0))
    assert len(batches) == data.steps_per_epoch
    assert [x.shape[1] for x, _ in batches[:-1]] == [10] * (len(batches) - 1)
    for x, y in batches:
        assert x.shape == y.shape and x.shape[0] == 4 and x.dtype == torch.int64
        assert torch.equal(x[:, 1:], y[:, :-1])
    stream_len = len(data.train) // 4
    assert reassemble(data, batches) == data.decode(data.train[: 4 * stream_len])
    again = list(data.train_batches(seed=5, epoch=3))  # fixed bptt: streams are never shuffled
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(batches, again, strict=True))
    val = list(data.val_batches())
    assert [x.shape[1] for x, _ in val] == [10] * 12 + [4]  # 500 // 4 = 125 = 12 * 10 + 4 + 1
    assert reassemble(data, val) == data.decode(data.val)


def test_random_bptt_lengths_vary_and_are_reproducible(corpus_file):
    data = text(path=str(corpus_file), batch_size=2, bptt=20, random_bptt=True)

    def lengths(seed, epoch):
        return [x.shape[1] for x, _ in data.train_batches(seed=seed, epoch=epoch)]

    first = lengths(0, 0)
    assert len(set(first)) > 5 and min(first[:-1]) >= 5
    assert first == lengths(0, 0)
    assert first != lengths(1, 0) and first != lengths(0, 1)
    assert abs(len(first) - data.steps_per_epoch) <= 0.15 * data.steps_per_epoch
    batches = list(data.train_batches(seed=0, epoch=0))
    assert reassemble(data, batches) == data.decode(data.train[: 2 * (len(data.train) // 2)])
    assert {x.shape[1] for x, _ in list(data.val_batches())[:-1]} == {20}  # val: fixed windows


@pytest.fixture
def served(tmp_path, monkeypatch) -> dict:
    """"nietzsche" served from a file:// URL of CORPUS, with its real checksum; every fetch counted.

    The cache folder is a fresh ``ABLATE_CACHE_DIR``; nothing is downloaded from the internet.
    """
    source = tmp_path / "served.txt"
    source.write_text(CORPUS, encoding="utf-8")
    cache = tmp_path / "cache"
    monkeypatch.setenv("ABLATE_CACHE_DIR", str(cache))
    sha = hashlib.sha256(CORPUS.encode()).hexdigest()
    monkeypatch.setitem(CORPORA, "nietzsche", Corpus(url=source.as_uri(), sha256=sha))
    fetched = []
    opener = cache_module.urlopen

    def counting(url, *args, **kwargs):
        fetched.append(url)
        return opener(url, *args, **kwargs)

    monkeypatch.setattr(cache_module, "urlopen", counting)
    return {"source": source, "cache": cache, "fetched": fetched}


def test_named_corpus_is_downloaded_once_then_read_from_the_cache(served):
    data = text(batch_size=4, bptt=10)  # the default corpus is "nietzsche"
    assert data.decode(data.train) + data.decode(data.val) == CORPUS
    assert served["fetched"] == [served["source"].as_uri()]
    assert [p.name for p in (served["cache"] / "text").iterdir()] == ["nietzsche.txt"]
    served["source"].unlink()  # a second fetch would fail now
    again = text(name="nietzsche", batch_size=4, bptt=10, max_chars=1000)
    assert len(served["fetched"]) == 1 and len(again.train) == 900


def test_checksum_mismatch_caches_nothing(served, monkeypatch):
    real = "23cf69874ab69d3d256099ab530ea4be24d47d9675b673bcc67cbcd6298ec647"
    monkeypatch.setitem(CORPORA, "nietzsche", Corpus(served["source"].as_uri(), real))
    with pytest.raises(ChecksumError, match=f"expected {real}; nothing was cached") as info:
        text(name="nietzsche", batch_size=4, bptt=10)
    assert isinstance(info.value, ValueError) and "data.path" in str(info.value)
    assert list((served["cache"] / "text").iterdir()) == []  # no file, no temporary file


def test_a_damaged_cached_copy_is_downloaded_again(served):
    text(batch_size=4, bptt=10)
    (served["cache"] / "text" / "nietzsche.txt").write_text("tampered")
    data = text(batch_size=4, bptt=10)
    assert len(served["fetched"]) == 2 and data.decode(data.val) == CORPUS[-500:]


def test_failed_download_and_unknown_name(served):
    served["source"].unlink()
    with pytest.raises(ConnectionError, match="is not cached in .* data.path"):
        text(batch_size=4, bptt=10)
    assert list((served["cache"] / "text").iterdir()) == []
    with pytest.raises(ValueError, match="unknown corpus data.name='bard'; known: nietzsche"):
        text(name="bard")


def test_path_wins_over_name(served, corpus_file):
    data = text(name="no-such-corpus", path=str(corpus_file), batch_size=4, bptt=10)
    assert data.decode(data.train[:50]) == CORPUS[:50] and served["fetched"] == []


def test_missing_empty_and_short_files(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(FileNotFoundError, match="data.path") as info:
        text(path=str(missing))
    assert str(missing) in str(info.value)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(ValueError, match="8960") as info:  # 64 * 70 * 2
        text(path=str(empty))
    assert "empty.txt" in str(info.value)
    short = tmp_path / "short.txt"
    short.write_text("x" * 50)
    with pytest.raises(ValueError, match="has 50 characters.*at least 80"):
        text(path=str(short), batch_size=4, bptt=10)


def test_argument_validation(corpus_file):
    for bad in ({"batch_size": 0}, {"bptt": 0}, {"val_fraction": 0.0}, {"max_chars": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            text(path=str(corpus_file), **bad)
    ids = torch.zeros(100, dtype=torch.int64)
    with pytest.raises(ValueError, match="batch_size"):
        TextData(vocab=["a"], train=ids, val=ids, batch_size=0)
    with pytest.raises(ValueError, match="val has 10 characters"):
        TextData(vocab=["a"], train=ids, val=ids[:10], batch_size=8)
