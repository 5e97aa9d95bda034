"""Tests of ``datamodules``: the real datasets (MNIST, IMDB, News20 + GloVe), the Keras conventions, the file layer
(SHA-256 checks, offline messages, downloads from a local HTTP server) and the task registry.

Real data comes from $GATEZOO_DATA (CI sets it to ../shared/data), else from ``<repo>/../shared/data``; without either
the real-data tests FAIL. Processed tensors go to a temp dir for the session ($GATEZOO_CACHE), so the slow IMDB and
News20 processing happens once per session, in the session fixtures.
"""
from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import os
import re
import tarfile
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from localhttp import closed_url

import datamodules as D
from datamodules import files
from datamodules import keras_text as kt
from datamodules.files import ChecksumError, DataError, MissingDataError, Source

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]  # MANIFEST section 1
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


# ---- fixtures --------------------------------------------------------------------------------------------------------







def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def prepared(task, **kwargs):
    dm = D.build(task, **kwargs)
    dm.prepare_data()
    dm.setup("fit")
    return dm


@pytest.fixture(scope="session")
def mnist(data):
    return prepared("pixel_mnist", data_dir=data, protocol="paper")


@pytest.fixture(scope="session")
def imdb(data):
    return prepared("imdb", data_dir=data, protocol="paper")


@pytest.fixture(scope="session")
def news20(data):
    return prepared("news20", data_dir=data, glove_dim=50, protocol="paper")


def everything(dataset):
    xs, ys = zip(*(dataset[i] for i in range(len(dataset))))
    return torch.stack(xs), torch.stack(ys)


# ---- the file layer --------------------------------------------------------------------------------------------------


def test_data_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv(files.ENV_DATA, raising=False)
    assert D.data_dir() == tmp_path / ".cache/gatezoo/data"
    monkeypatch.setenv(files.ENV_DATA, str(tmp_path / "env"))
    assert D.data_dir() == tmp_path / "env"
    assert D.data_dir(tmp_path / "explicit") == tmp_path / "explicit"


def test_sources_match_the_manifest(data):
    manifest = (data / "MANIFEST.md").read_text()
    # | `path` | bytes | `sha256` |, or | `path` | bytes | lines | `sha256` | (the IWSLT'14 and WMT'14 sections)
    table = dict(re.findall(r"\| `([^`]+)` \|(?: [\d,]+ \|)+ `([0-9a-f]{64})` \|", manifest))
    for key, src in D.SOURCES.items():
        if key == "glove100":  # not in the shared data (MANIFEST: "Not obtained")
            continue
        if src.path not in table:  # the full translation corpora: download-only archives, never in shared/data
            assert src.urls and (src.sha256 or src.content_sha256), key
            continue
        assert table[src.path] == src.sha256[0], key
        assert D.fetch(key, data, download=False) == data / src.path
    assert all(u.startswith(("http://", "https://")) for s in D.SOURCES.values() for u in s.urls)


def test_truncated_file_is_never_used(data, tmp_path, home):
    local = tmp_path / "data" / "mnist"
    local.mkdir(parents=True)
    for key in ("mnist_train_images", "mnist_test_images", "mnist_test_labels"):
        (local / Path(D.SOURCES[key].path).name).symlink_to(data / D.SOURCES[key].path)
    good = (data / D.SOURCES["mnist_train_labels"].path).read_bytes()
    bad = local / "train-labels-idx1-ubyte.gz"
    bad.write_bytes(good[: len(good) // 2])
    with pytest.raises(ChecksumError) as err:
        D.fetch("mnist_train_labels", tmp_path / "data")
    msg = str(err.value)
    assert str(bad) in msg and sha(good[: len(good) // 2]) in msg and D.SOURCES["mnist_train_labels"].sha256[0] in msg
    assert "delete it" in msg and D.SOURCES["mnist_train_labels"].urls[0] in msg
    cache = Path(os.environ[files.ENV_CACHE])
    before = set(cache.iterdir())
    dm = D.build("row_mnist", data_dir=tmp_path / "data")
    with pytest.raises(DataError):
        dm.prepare_data()
    assert set(cache.iterdir()) == before and bad.stat().st_size == len(good) // 2  # nothing built, nothing replaced


def test_missing_file_offline_names_file_url_and_directory(tmp_path, home, monkeypatch):
    url = closed_url("news20.tar.gz")
    monkeypatch.setitem(D.SOURCES, "news20", dataclasses.replace(D.SOURCES["news20"], urls=(url,)))
    monkeypatch.setenv(files.ENV_DATA, str(tmp_path / "env-data"))
    with pytest.raises(MissingDataError) as err:
        D.fetch("news20", tmp_path / "empty")
    msg = str(err.value)
    for part in ("20newsgroups/news20.tar.gz", url, str(tmp_path / "empty"), files.ENV_DATA,
                 str(home / ".cache/gatezoo/data")):
        assert part in msg, part
    with pytest.raises(MissingDataError, match="downloads are disabled"):
        D.fetch("news20", tmp_path / "empty", download=False)
    with pytest.raises(MissingDataError, match="no public download"):
        D.fetch("glove50_news20", tmp_path / "empty")
    assert isinstance(err.value, RuntimeError)


def test_download_from_a_local_server(tmp_path, home, server, monkeypatch):
    payload = os.urandom(300_000)
    (server.root / "tiny.bin").write_bytes(payload)
    monkeypatch.setitem(D.SOURCES, "tiny", Source("tiny/tiny.bin", (f"{server.url}/tiny.bin",), (sha(payload),)))
    path = D.fetch("tiny", tmp_path / "data")
    assert path == tmp_path / "data/tiny/tiny.bin" and path.read_bytes() == payload
    assert sorted(p.name for p in path.parent.iterdir()) == ["tiny.bin"]  # no temp file left behind
    assert D.fetch("tiny", tmp_path / "data") == path and server.hits == ["/tiny.bin"]  # found, not fetched again
    # a read-only data dir (like the shared copy; even for root) is left untouched: the download goes to ~/.cache
    readonly = tmp_path / "readonly"
    readonly.mkdir(mode=0o555)
    try:
        path = D.fetch("tiny", readonly)
        assert path == home / ".cache/gatezoo/data/tiny/tiny.bin" and path.read_bytes() == payload
        assert list(readonly.iterdir()) == [] and len(server.hits) == 2
    finally:
        readonly.chmod(0o755)
    (tmp_path / "a-file").write_text("")  # a data dir that cannot exist: found in ~/.cache now
    assert D.fetch("tiny", tmp_path / "a-file" / "data") == path and len(server.hits) == 2


def test_every_download_url_is_https_and_plain_http_is_refused(tmp_path, home, monkeypatch):
    plain = [(k, u) for k, src in D.SOURCES.items() for u in src.urls if not u.startswith("https://")]
    assert plain == []
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: pytest.fail("an http URL was opened"))
    monkeypatch.setitem(D.SOURCES, "tiny", Source("tiny/tiny.bin", ("http://example.org/tiny.bin",), ("0" * 64,)))
    with pytest.raises(MissingDataError, match="refusing to download http://example.org/tiny.bin: only https"):
        D.fetch("tiny", tmp_path / "data")
    assert not (tmp_path / "data/tiny").exists() or list((tmp_path / "data/tiny").iterdir()) == []


def test_download_with_a_wrong_hash_is_rejected_and_removed(tmp_path, home, server, monkeypatch):
    (server.root / "tiny.bin").write_bytes(b"not what we registered")
    monkeypatch.setitem(D.SOURCES, "tiny", Source("tiny/tiny.bin", (f"{server.url}/tiny.bin",), (sha(b"other"),)))
    with pytest.raises(ChecksumError, match="deleted, not used"):
        D.fetch("tiny", tmp_path / "data")
    assert not (tmp_path / "data/tiny").exists()  # the failed download left no (empty) folder behind


def test_download_keeps_one_member_of_a_zip(tmp_path, home, server, monkeypatch):
    member = b"the 0.1 0.2\n"
    with zipfile.ZipFile(server.root / "vectors.zip", "w") as z:
        z.writestr("vectors.txt", member)
        z.writestr("other.txt", b"ignored")
    monkeypatch.setitem(D.SOURCES, "vec", Source("vec/vectors.txt", (f"{server.url}/vectors.zip",), (sha(member),),
                                                 member="vectors.txt"))
    path = D.fetch("vec", tmp_path / "data")
    assert path.read_bytes() == member and [p.name for p in path.parent.iterdir()] == ["vectors.txt"]


def tar_bytes(members: dict[str, bytes], mtime: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(content), mtime
            tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def test_an_archive_with_other_bytes_is_accepted_by_its_content(tmp_path, monkeypatch):
    """The News20 policy: CMU's archive has no published hash, so its messages are checked instead."""
    msgs = {"20_newsgroup/sci.med/1": b"a", "20_newsgroup/sci.med/2": b"b"}
    reference = tmp_path / "ref.tar.gz"
    reference.write_bytes(tar_bytes({**msgs, "20_newsgroup/README": b"x"}, mtime=1))
    pattern = D.SOURCES["news20"].members
    src = Source("n/news.tar.gz", (), ("0" * 64,), members=pattern,
                 content_sha256=files.content_sha256(reference, pattern))
    monkeypatch.setitem(D.SOURCES, "n", src)
    (tmp_path / "d/n").mkdir(parents=True)
    (tmp_path / "d/n/news.tar.gz").write_bytes(tar_bytes(msgs, mtime=2))  # other tar metadata, same messages
    assert D.fetch("n", tmp_path / "d", download=False) == tmp_path / "d/n/news.tar.gz"
    (tmp_path / "d/n/news.tar.gz").write_bytes(tar_bytes({**msgs, "20_newsgroup/sci.med/2": b"B"}, mtime=2))
    with pytest.raises(ChecksumError):
        D.fetch("n", tmp_path / "d", download=False)


def test_processed_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(files.ENV_CACHE, str(tmp_path / "c"))
    calls = []

    def build():
        calls.append(1)
        return {"x": torch.arange(3), "words": ["a", "b"]}

    first = D.cached("toy", {"source": "abc"}, build)
    again = D.cached("toy", {"source": "abc"}, build)
    assert len(calls) == 1 and torch.equal(again["x"], first["x"]) and again["words"] == ["a", "b"]
    (stored,) = list((tmp_path / "c").iterdir())  # one file, no temp file
    assert stored.name.startswith("toy-") and stored.suffix == ".pt"
    stored.write_bytes(stored.read_bytes()[:20])  # a crash mid-write elsewhere: unreadable, so rebuilt
    assert torch.equal(D.cached("toy", {"source": "abc"}, build)["x"], first["x"]) and len(calls) == 2
    D.cached("toy", {"source": "abd"}, build)  # another source hash is another entry
    assert len(calls) == 3 and len(list((tmp_path / "c").iterdir())) == 2


# ---- Keras conventions -----------------------------------------------------------------------------------------------


def test_keras_tokeniser_and_ranks():
    assert kt.text_to_word_sequence("The movie--GREAT!<br /><br />It's 'odd'\r\tx") == \
        ["the", "movie", "great", "br", "br", "it's", "'odd'\r", "x"]  # \r is not a Keras filter: it stays
    counts = kt.count_words([["b", "a", "c"], ["a", "c", "d"]])
    assert kt.rank_words(counts) == ["a", "c", "b", "d"]  # ties in first-occurrence order


def test_pad_sequences_like_keras():
    flat, lengths = kt.flatten([[1, 2, 3, 4], [5], []])
    assert kt.pad_sequences(flat, lengths, 3).tolist() == [[2, 3, 4], [0, 0, 5], [0, 0, 0]]
    assert kt.pad_sequences(flat, lengths, 3, "post", "post").tolist() == [[1, 2, 3], [5, 0, 0], [0, 0, 0]]
    assert kt.pad_sequences(flat, lengths, 3, "post", "pre").tolist() == [[2, 3, 4], [5, 0, 0], [0, 0, 0]]
    with pytest.raises(ValueError, match="pre, post"):
        kt.pad_sequences(flat, lengths, 3, padding="front")


def test_keras_shuffle_is_numpys_legacy_shuffle():
    state, x = np.random.get_state(), list(range(50))
    try:
        np.random.seed(113)  # what Keras 1.2 did, on the global RNG
        np.random.shuffle(x)
    finally:
        np.random.set_state(state)
    assert kt.keras_shuffle(50, 113).tolist() == x


def test_news20_reads_messages_like_the_example(tmp_path):
    from datamodules.news20 import read_messages, subject

    archive = tmp_path / "news20.tar.gz"
    archive.write_bytes(tar_bytes({"20_newsgroup/sci.med/9": b"Path: x\r\n\r\nCaf\xe9\rbody",
                                   "20_newsgroup/sci.med/10": b"ten", "20_newsgroup/rec.autos/5": b"five",
                                   "20_newsgroup/rec.autos/README": b"not a message"}, mtime=0))
    groups, texts, of = read_messages(archive)
    # sorted(os.listdir()) order: "10" before "9"; headers kept; Latin-1; universal newlines as open() in text mode
    assert groups == ["rec.autos", "sci.med"] and of == ["rec.autos", "sci.med", "sci.med"]
    assert texts == ["five", "ten", "Path: x\n\nCaf\xe9\nbody"]
    six = ("comp.graphics", "rec.autos", "sci.med", "misc.forsale", "talk.politics.guns", "alt.atheism",
           "talk.religion.misc", "soc.religion.christian")
    assert [subject(g) for g in six] == [0, 1, 2, 3, 4, 5, 5, 5]


def test_imdb_pipeline_on_a_tiny_archive(tmp_path, monkeypatch):
    reviews = {
        "aclImdb/train/neg/0_1.txt": b"Bad, bad film.<br /><br />The end",
        "aclImdb/train/pos/0_9.txt": b"A GOOD film; it's good!",
        "aclImdb/test/neg/0_2.txt": b"bad unseenword film",
        "aclImdb/test/pos/0_8.txt": b"good good good good good good",
        "aclImdb/train/unsup/0_0.txt": b"ignored ignored ignored",
        "aclImdb/imdb.vocab": b"ignored",
    }
    archive = tar_bytes(reviews, mtime=0)
    (tmp_path / "d/imdb").mkdir(parents=True)
    (tmp_path / "d/imdb/aclImdb_labeled.tar.gz").write_bytes(archive)
    monkeypatch.setitem(D.SOURCES, "imdb", dataclasses.replace(D.SOURCES["imdb"], sha256=(sha(archive),)))
    dm = prepared("imdb", data_dir=tmp_path / "d", num_words=7, maxlen=6, protocol="paper")
    # Keras's order: pos, then neg. Train counts: good 2, film 2, bad 2, br 2, then a, it's, the, end once each;
    # equal counts keep their first-occurrence order
    assert dm.words == ["good", "film", "bad", "br", "a", "it's", "the", "end"]
    x_tr, y_tr = everything(dm.train_set)
    x_te, y_te = everything(dm.test_set)
    # index = rank + 3: good 4, film 5, bad 6; br 7, a 8, it's 9, the 10, end 11 are >= num_words=7: oov 2
    # pos [1, 2, 4, 5, 2, 4] fits exactly; neg [1, 6, 6, 5, 2, 2, 2, 2] loses its first 2 (truncating="pre")
    expect_train = {1: [1, 2, 4, 5, 2, 4], 0: [6, 5, 2, 2, 2, 2]}
    assert y_tr.tolist() == np.array([1, 0])[kt.keras_shuffle(2, 113)].tolist()
    assert x_tr.tolist() == [expect_train[y] for y in y_tr.tolist()]
    # test: the word never seen in training is dropped, not oov; pos's 7 indices lose the start char
    expect_test = {1: [4, 4, 4, 4, 4, 4], 0: [0, 0, 0, 1, 6, 5]}
    assert y_te.tolist() == np.array([1, 0])[kt.keras_shuffle(2, 226)].tolist()
    assert x_te.tolist() == [expect_test[y] for y in y_te.tolist()]


# ---- MNIST -----------------------------------------------------------------------------------------------------------


def test_mnist_shapes_labels_and_standardisation(mnist, data):
    assert (mnist.seq_len, mnist.input_size, mnist.num_classes) == (784, 1, 10)
    assert len(mnist.train_set) == 60000 and len(mnist.test_set) == 10000 and mnist.val_set is mnist.test_set
    assert torch.bincount(mnist.train_set.y).tolist() == MNIST_TRAIN_COUNTS
    assert torch.bincount(mnist.test_set.y).tolist() == MNIST_TEST_COUNTS
    x, y = next(iter(mnist.train_dataloader()))
    assert x.shape == (32, 784, 1) and x.dtype == torch.float32 and y.dtype == torch.long
    full = (mnist.train_set.x.float() - mnist.mean) / (mnist.std + 1e-6)  # what the loader yields, all at once
    assert torch.equal(mnist.train_set[5][0].view(-1), full[5])
    assert full.mean(0).abs().max() < 1e-4  # zero mean per pixel on the training set
    varying = mnist.std > 0
    assert (full[:, varying].std(0, unbiased=False) - 1).abs().max() < 1e-3
    assert (full[:, ~varying] == 0).all() and varying.sum() == 784 - 67
    row = prepared("row_mnist", data_dir=data, protocol="paper")
    assert row.train_set[5][0].shape == (28, 28) and torch.equal(row.train_set[5][0].view(784, 1),
                                                                 mnist.train_set[5][0])
    unit = prepared("pixel_mnist", data_dir=data, normalize="unit", protocol="paper").train_set[5][0]
    assert 0 <= unit.min() and unit.max() <= 1 and unit.max() > 0.9


def test_holdout_split_and_limits(data):
    dm = prepared("row_mnist", data_dir=data)  # holdout, val_size 5000
    train, val = dm.train_set.index, dm.val_set.index
    assert (len(train), len(val), len(dm.test_set)) == (55000, 5000, 10000)
    assert len(set(train.tolist()) | set(val.tolist())) == 60000  # disjoint, together the training set
    assert torch.equal(prepared("row_mnist", data_dir=data).val_set.index, val)  # fixed by the seed
    assert not torch.equal(prepared("row_mnist", data_dir=data, seed=1).val_set.index, val)
    small = prepared("row_mnist", data_dir=data, val_size=0.2, limit_train=100, limit_test=50)
    assert (len(small.train_set), len(small.val_set), len(small.test_set)) == (100, 50, 50)
    assert len(small.train_dataloader()) == 4 and len(small.test_dataloader()) == 2


def test_mnist_rejects_a_bad_idx_file(tmp_path):
    from datamodules.mnist import read_idx

    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x01\x07"))
    assert read_idx(path, 2049).tolist() == [7]
    with pytest.raises(DataError, match="magic number 2049, expected 2051"):
        read_idx(path, 2051)


# ---- IMDB ------------------------------------------------------------------------------------------------------------


def test_imdb_keras_conventions(imdb, data):
    assert (imdb.vocab_size, imdb.seq_len, imdb.num_classes) == (20000, 80, 2)
    assert len(imdb.train_set) == len(imdb.test_set) == 25000 and imdb.val_set is imdb.test_set
    assert imdb.words[:7] == ["the", "and", "a", "of", "to", "is", "br"]  # "the": rank 1 -> index 1 + 3 = 4
    assert len(imdb.words) == 88582  # Keras's imdb_word_index.json: 88,584
    xb, yb = next(iter(imdb.train_dataloader()))
    assert xb.shape == (32, 80) and xb.dtype == torch.long and yb.dtype == torch.long
    x, y = imdb.train_set.x, imdb.train_set.y  # all of it (stored as int32)
    assert x.shape == (25000, 80) and 0 <= x.min() and x.max() < 20000
    assert torch.bincount(y).tolist() == [12500, 12500] and torch.bincount(imdb.test_set.y).tolist() == [12500, 12500]
    # labels in the order of np.random.seed(113); np.random.shuffle over (pos, neg by file name); test: seed 226
    canonical = np.array([1] * 12500 + [0] * 12500)
    assert y.tolist() == canonical[kt.keras_shuffle(25000, 113)].tolist()
    assert imdb.test_set.y.tolist() == canonical[kt.keras_shuffle(25000, 226)].tolist()
    padded = x[:, 0] == 0
    assert 0.05 < padded.float().mean() < 0.5  # short reviews (7.5%) are padded, long ones truncated
    first = (x != 0).int().argmax(1)  # the first word position
    assert (x[padded, first[padded]] == 1).all()  # a padded review starts with the start char 1 ...
    assert ((x != 0).int().diff(dim=1) >= 0).all()  # ... after its padding: zeros only at the front
    assert ((x == 1).sum(1)[padded] == 1).all() and (x == 2).any()  # one start char; oov 2 present
    assert torch.bincount(imdb.test_set.x.flatten())[3:].argmax() == 4 - 3  # index 4, "the", is the most frequent


# Keras's published x_train[0] with num_words=10000 (the review train/pos/576_10.txt), its first 40 indices
KERAS_X_TRAIN_0 = [1, 14, 22, 16, 43, 530, 973, 1622, 1385, 65, 458, 4468, 66, 3941, 4, 173, 36, 256, 5, 25, 100, 43,
                   838, 112, 50, 670, 2, 9, 35, 480, 284, 5, 150, 4, 172, 112, 167, 2, 336, 385]


def test_imdb_matches_keras_first_reviews(data):
    dm = prepared("imdb", data_dir=data, num_words=10000, maxlen=300, protocol="paper", limit_train=2, limit_test=1)
    x, y = everything(dm.train_set)
    first = x[0][x[0] != 0].tolist()
    assert y.tolist() == [1, 0] and len(first) == 218  # Keras: y_train[:2] = [1, 0], len(x_train[0]) = 218
    same = sum(a == b for a, b in zip(first, KERAS_X_TRAIN_0))
    assert first[:5] == KERAS_X_TRAIN_0[:5] and same >= 34  # the rest: words of equal count ranked in another order
    assert dm.words[first[5] - 4] == "brilliant" and dm.words[first[11] - 4] == "everyone's"


def test_imdb_options(data):
    slim = prepared("imdb", data_dir=data, num_words=5000, maxlen=500, protocol="paper", limit_train=1000,
                    limit_test=10)
    x, _ = everything(slim.train_set)
    assert x.shape == (1000, 500) and x.max() < 5000 and (x == 2).any() and slim.vocab_size == 5000
    post = prepared("imdb", data_dir=data, padding="post", truncating="post", protocol="paper", limit_train=1000,
                    limit_test=10)
    x, _ = everything(post.train_set)
    assert (x[:, 0] == 1).all() and ((x != 0).int().diff(dim=1) <= 0).all()  # start first, padding at the end


# ---- News20 ----------------------------------------------------------------------------------------------------------


def test_news20_like_the_keras_example(news20, data):
    assert (news20.num_classes, news20.seq_len, news20.vocab_size) == (20, 1000, 20001)
    assert news20.provenance == "GloVe 50d" and news20.num_word_types == 214874 and len(news20.groups) == 20
    assert (len(news20.train_set), len(news20.test_set)) == (15998, 3999) and news20.val_set is news20.test_set
    counts = torch.bincount(torch.cat([news20.train_set.y, news20.test_set.y]), minlength=20)
    assert counts.tolist() == [997 if g == "soc.religion.christian" else 1000 for g in news20.groups]
    # the test set is the last 20% of np.random.seed(1337); np.random.shuffle(indices)
    canonical = np.repeat(np.arange(20), counts.numpy())
    assert news20.test_set.y.tolist() == canonical[kt.keras_shuffle(19997, 1337)[-3999:]].tolist()
    xb, yb = next(iter(news20.train_dataloader()))
    assert xb.shape == (128, 1000) and xb.dtype == torch.long and yb.dtype == torch.long  # the example's batch 128
    x = news20.train_set.x
    assert x.shape == (15998, 1000) and 0 < x.max() < 20000 and ((x != 0).int().diff(dim=1) >= 0).all()
    glove = {}
    with gzip.open(data / D.SOURCES["glove50_news20"].path, "rt", encoding="utf-8") as f:
        for line in f:
            word, *values = line.split()
            glove[word] = torch.from_numpy(np.asarray(values, dtype=np.float32))
    emb = news20.embedding_weights
    assert emb.shape == (20001, 50) and emb.dtype == torch.float32 and (emb[0] == 0).all()
    assert news20.words[0] == "the" and torch.equal(emb[1], glove["the"])  # "the" has index 1 here
    in_glove = torch.tensor([w in glove for w in news20.words])  # index i <-> words[i - 1], i = 1..20000
    assert torch.equal((emb[1:] != 0).any(1), in_glove) and 0.5 < in_glove.float().mean() < 1  # zeros if absent
    last = news20.words[19999]  # index 20000: filled (the example's `i > MAX_NB_WORDS`), never in a sequence
    assert torch.equal(emb[20000], glove.get(last, torch.zeros(50)))


def test_news20_six_subjects_and_glove_fallback(news20, data, home, monkeypatch):
    monkeypatch.setitem(D.SOURCES, "glove100",
                        dataclasses.replace(D.SOURCES["glove100"], urls=(closed_url("glove.6B.zip"),)))
    six = prepared("news20", data_dir=data, labels="6", protocol="paper")  # glove_dim=None: 100d cannot be had
    assert six.provenance == "GloVe 50d" and six.num_classes == 6
    y = torch.cat([six.train_set.y, six.test_set.y])
    assert torch.bincount(y).tolist() == [5000, 4000, 4000, 1000, 3000, 2997]  # comp rec sci forsale politics religion
    assert torch.equal(six.test_set.x, news20.test_set.x)


# ---- the registry ----------------------------------------------------------------------------------------------------


def test_registry():
    assert D.names() == ["arith", "iam_online", "imdb", "iwslt14", "memorize", "music", "news20", "pixel_mnist",
                         "ptb", "row_mnist", "timit", "wmt14", "xml"]
    dm = D.build("row_mnist", batch_size=8)
    assert isinstance(dm, D.MNIST) and (dm.seq_len, dm.input_size, dm.num_classes) == (28, 28, 10)
    assert D.build("imdb").vocab_size == 20000 and D.build("news20", labels="6").num_classes == 6
    with pytest.raises(ValueError, match=r"unknown task 'imbd'. Did you mean 'imdb'\? Valid tasks: arith, "
                                         r"iam_online, imdb, "):
        D.build("imbd")
    with pytest.raises(ValueError, match=r"'num_word' \(did you mean 'num_words'\?\).*Valid: num_words, maxlen"):
        D.build("imdb", num_word=5000)
    with pytest.raises(ValueError, match="has no option 'layout'"):  # fixed by the task name
        D.build("pixel_mnist", layout="row")
    for bad, match in ((dict(protocol="test"), "valid: holdout, paper"), (dict(val_size=1.5), "val_size"),
                       (dict(normalize="zscore"), "valid: standardize, unit"), (dict(limit_train=0), "limit_train")):
        with pytest.raises(ValueError, match=match):
            D.build("pixel_mnist", **bad)
    with pytest.raises(ValueError, match="valid: None"):
        D.build("news20", glove_dim=300)


def test_a_relative_data_dir_means_relative_to_where_the_command_started(tmp_path, monkeypatch):
    """``GATEZOO_DATA=../shared/data python -m pytest`` (the README's command): resolved once against the starting
    folder, so a test or job that changes folder later, and the processes it starts, find the same data."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(files.ENV_DATA, "../shared/data")
    files._resolve_env_data()
    assert os.environ[files.ENV_DATA] == str(tmp_path.parent / "shared" / "data")
    monkeypatch.chdir(tmp_path / "..")
    assert files.data_dir() == tmp_path.parent / "shared" / "data"  # not ../../shared/data from here
