"""Tests of ``datamodules.translation``: IWSLT'14 / WMT'14 as fairseq prepares and batches them.

Real data comes from $GATEZOO_DATA (CI sets it to ../shared/data), else from ``<repo>/../shared/data``; without either
the real-data tests FAIL. The download paths run for real against a local HTTP server serving small archives with the
real layouts, built here from the shared files; nothing is fetched from the internet.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import pickle
import tarfile
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from localhttp import closed_url

import datamodules as D
from datamodules import files
from datamodules import translation as T
from datamodules.files import ChecksumError, DataError, MissingDataError
from datamodules.translation import (
    Batch,
    LengthBatches,
    Translation,
    decode,
    detokenize,
    moses_tokenize,
    read_lines,
    remove_bpe,
    segments,
)

PREP = "iwslt14/iwslt14.tokenized.de-en"
TEST_SETS = {"TED.dev2010": 887, "TEDX.dev2012": 1165, "TED.tst2010": 1565, "TED.tst2011": 1433, "TED.tst2012": 1700}


# ---- fixtures and helpers --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def iwslt(data):
    dm = D.build("iwslt14", data_dir=data)
    dm.prepare_data()
    dm.setup("fit")
    return dm




@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A fresh processed cache for this test, to see what it leaves there."""
    monkeypatch.setenv("GATEZOO_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"




def tgz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(payload), 1
            tar.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


def sha(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def serve(monkeypatch, server, key: str, name: str, payload: bytes, **fields) -> None:
    """Put ``payload`` on the server as ``name`` and point SOURCES[key] at it (other fields replaced by ``fields``)."""
    (server.root / name).write_bytes(payload)
    src = dataclasses.replace(D.SOURCES[key], urls=(f"{server.url}/{name}",), **fields)
    monkeypatch.setitem(D.SOURCES, key, src)


def xml_prefix(path: Path, n: int) -> str:
    """The real file up to its n-th <seg> line, closed: the real layout, n segments."""
    lines, out, segs = path.read_text(encoding="utf-8").split("\n"), [], 0
    for line in lines:
        out.append(line)
        segs += "<seg id" in line
        if segs == n:
            break
    tags = [t for t in ("doc", "srcset", "refset", "mteval") if any(x.startswith(f"<{t}") for x in out)]
    closing = [f"</{t}>" for t in tags]
    return "\n".join(out + closing + [""])


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.exists() else []


# ---- offline IWSLT'14 ------------------------------------------------------------------------------------------------


def test_offline_sizes_first_pair_and_vocabularies(iwslt, data):
    assert iwslt.sizes == {"train": 6783, "valid": 500, "test": 6750}
    assert iwslt.train_size + iwslt.sizes["valid"] == 7283
    assert (iwslt.src_lang, iwslt.tgt_lang) == ("de", "en")
    test_de, test_en = read_lines(data / f"{PREP}/test.de"), read_lines(data / f"{PREP}/test.en")
    assert iwslt.sources("test")[0] == test_de[0] and iwslt.sources("test")[0].startswith("wissen sie , eines der")
    assert iwslt.references("test")[0] == remove_bpe(test_en[0])
    valid_de = read_lines(data / f"{PREP}/valid.de")
    assert iwslt.sources("train") == valid_de[:6783] and iwslt.sources("valid") == valid_de[6783:]
    for vocab in (iwslt.src_vocab, iwslt.tgt_vocab):
        assert vocab[:4] == ["<pad>", "<s>", "</s>", "<unk>"] and len(set(vocab)) == len(vocab)
    assert (iwslt.pad, iwslt.bos, iwslt.eos, iwslt.unk) == (0, 1, 2, 3)
    assert iwslt.src_vocab[4:8] == [",", ".", "und", "die"] and iwslt.tgt_vocab_size == len(iwslt.tgt_vocab)
    counts = {}  # descending frequency on the training split, ties alphabetical
    for line in iwslt.sources("train"):
        for w in line.split():
            counts[w] = counts.get(w, 0) + 1
    assert iwslt.src_vocab[4:] == sorted(counts, key=lambda w: (-counts[w], w))
    assert "6,783 pairs of fairseq's IWSLT'14 valid split" in iwslt.provenance and "160,239" in iwslt.provenance


def test_batch_layout(iwslt):
    batch = next(iter(iwslt.train_dataloader()))
    assert isinstance(batch, Batch) and all(t.dtype == torch.int64 for t in batch)
    B = batch.src.shape[0]
    assert B == 32 and batch.src_lengths.shape == batch.index.shape == (B,) and batch.tgt.shape[0] == B
    sources, refs = iwslt.sources("train"), iwslt.references("train")
    for b in range(B):
        n, i = int(batch.src_lengths[b]), int(batch.index[b])
        assert batch.src[b, n - 1] == iwslt.eos and (batch.src[b, n:] == iwslt.pad).all()
        assert (batch.src[b, :n - 1] > iwslt.unk).all()  # every training word is in the vocabulary
        assert decode(batch.src[b], iwslt.src_vocab) == sources[i]
        t = batch.tgt[b]
        m = int((t != iwslt.pad).sum())
        assert t[0] == iwslt.bos and t[m - 1] == iwslt.eos and (t[m:] == iwslt.pad).all()
        assert remove_bpe(decode(t, iwslt.tgt_vocab, iwslt.eos, iwslt.pad, iwslt.bos)) == refs[i]
    assert int(batch.src_lengths.max()) == batch.src.shape[1]


def test_every_source_ends_with_eos_and_eval_order_is_fixed(iwslt):
    first = list(iwslt.test_dataloader())
    again = list(iwslt.test_dataloader())
    assert all(torch.equal(a.src, b.src) and torch.equal(a.index, b.index) for a, b in zip(first, again))
    index = torch.cat([b.index for b in first])
    assert sorted(index.tolist()) == list(range(6750))
    lengths = torch.cat([b.src_lengths for b in first])
    assert (lengths[1:] >= lengths[:-1]).all()  # sorted by source length
    for b in first:
        rows = torch.arange(len(b.src_lengths))
        assert (b.src[rows, b.src_lengths - 1] == iwslt.eos).all()
        assert ((b.src == iwslt.eos).sum(1) == 1).all() and ((b.src != iwslt.pad).sum(1) == b.src_lengths).all()
    ids = {int(i): (s, n) for b in first for i, s, n in zip(b.index, b.src, b.src_lengths)}
    sources = iwslt.sources("test")
    for i in (0, 1234, 6749):  # unknown words aside, the ids are the test sentence's
        s, n = ids[i]
        words = sources[i].split()
        assert int(n) == len(words) + 1
        assert [iwslt.src_vocab[j] for j in s[:n - 1].tolist()] == [w if w in iwslt.src_vocab else "<unk>"
                                                                     for w in words]


def test_training_order_is_drawn_per_epoch_and_covers_every_pair_once(iwslt, data):
    batches = iwslt.train_batches
    e0, e1 = batches.batches(0), batches.batches(1)
    for epoch in (e0, e1):
        assert sorted(i for b in epoch for i in b) == list(range(iwslt.train_size))
    assert e0 != e1 and batches.batches(0) == e0
    other = Translation(data_dir=data, seed=1)
    other.setup()
    assert other.train_batches.batches(0) != e0
    src_len, _ = iwslt.train_set.lengths()
    padded = sum(len(b) * src_len[b].max() for b in e0)
    rng = np.random.default_rng(0).permutation(iwslt.train_size)
    random = sum(32 * src_len[rng[i:i + 32]].max() for i in range(0, len(rng), 32))
    assert padded < 0.75 * random  # grouped by length: much less padding than random batches
    iwslt.set_epoch(0)
    assert [b.index.tolist() for b in iwslt.train_dataloader()] == e0
    assert batches.epoch == 1  # a complete pass advances the counter
    assert len(iwslt.train_dataloader()) == len(e0)


def test_max_tokens_caps_the_padded_batch(data):
    dm = Translation(data_dir=data, max_tokens=400, batch_size=1000, eval_batch_size=1000)
    dm.setup()
    for loader in (dm.train_dataloader(), dm.val_dataloader()):
        for b in loader:
            size = max(b.src.shape[1], b.tgt.shape[1] - 1)
            assert b.src.shape[0] * size <= 400 or b.src.shape[0] == 1


def test_lightning_serves_every_pair_once_per_epoch_in_a_new_order(data):
    dm = Translation(data_dir=data, limit_train=96, limit_eval=16, batch_size=16, eval_batch_size=16)

    class Model(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.w, self.seen = torch.nn.Parameter(torch.zeros(1)), []

        def training_step(self, batch, _):
            self.seen.append((self.current_epoch, batch.index.tolist()))
            return (self.w * batch.src.float().mean()) ** 2

        def validation_step(self, batch, _):
            pass

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    model = Model()
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(model, datamodule=dm)
    epochs = [[b for e, b in model.seen if e == epoch] for epoch in (0, 1)]
    for epoch, served in enumerate(epochs):
        assert served == dm.train_batches.batches(epoch)
        assert sorted(i for b in served for i in b) == list(range(96))
    assert epochs[0] != epochs[1]


def test_loaders_pickle_and_limits(iwslt, data):
    loader = iwslt.train_dataloader()
    pickle.loads(pickle.dumps(loader.dataset))
    sampler = pickle.loads(pickle.dumps(loader.batch_sampler))
    assert sampler.batches(3) == iwslt.train_batches.batches(3)
    dm = Translation(data_dir=data, limit_train=100, limit_eval=10, heldout=50, protocol="paper")
    dm.setup()
    assert dm.sizes == {"train": 100, "valid": 10, "test": 10} and dm.train_size == 100
    assert dm.sources("valid") == read_lines(data / f"{PREP}/valid.de")[7233:7243]  # the last 50, first 10 of them
    assert len(dm.references("test")) == 10 and "100 (limited from 7,233) pairs" in dm.provenance
    assert sorted(i for b in dm.train_dataloader() for i in b.index.tolist()) == list(range(100))


# ---- offline WMT'14 stand-in -----------------------------------------------------------------------------------------


def test_offline_wmt14_is_iwslt_en_de_plus_newstest2014(iwslt, data):
    dm = D.build("wmt14", data_dir=data, limit_eval=200)
    dm.prepare_data()
    dm.setup()
    assert (dm.src_lang, dm.tgt_lang) == ("en", "de") and dm.splits == ("train", "valid", "test", "newstest2014")
    assert dm.sources("train") == read_lines(data / f"{PREP}/valid.en")[:6783]
    assert "STAND-IN" in dm.provenance and "IWSLT'14" in dm.provenance and "newstest2014" in dm.provenance
    news_de = read_lines(data / "wmt14/newstest2014.de")
    assert len(news_de) == 3003 and dm.raw_references("newstest2014") == news_de[:200]
    assert dm.references("newstest2014")[0] == "gutach : noch mehr sicherheit für fußgänger"
    assert dm.sources("newstest2014")[0].startswith("gu@@ ta@@ ch : ")
    assert dm.src_vocab == T.build_vocab(dm.sources("train"))
    batch = next(iter(dm.dataloader("newstest2014")))
    assert batch.src.shape[0] == 64 and (batch.src[:, 0] != dm.pad).all()


# ---- text utilities --------------------------------------------------------------------------------------------------


def test_remove_bpe_and_detokenize_round_trip():
    assert remove_bpe("das ist ein Bei@@ spiel .") == "das ist ein Beispiel ."
    assert remove_bpe("ein Bei@@ spiel@@") == "ein Beispiel" and remove_bpe("ok @@") == "ok "
    assert detokenize(remove_bpe("das ist ein Bei@@ spiel ."), "de") == "das ist ein Beispiel."
    assert detokenize("it &apos;s a &quot; test &quot; &amp; more .", "en") == 'it\'s a "test" & more.'
    assert detokenize("wissen sie , eines der großen vergnügen ist das .", "de") == \
        "wissen sie, eines der großen vergnügen ist das."
    for line in ("It's a \"test\" & [more], isn't it?", "Das ist (wirklich) 100% gut."):
        lang = "en" if line.startswith("It") else "de"
        assert detokenize(moses_tokenize(line, lang), lang) == line
    assert moses_tokenize("It's the U.S.A.", "en") == "It &apos;s the U.S.A ."  # Moses splits the last period
    assert moses_tokenize("Well...", "en") == "Well ..."
    assert moses_tokenize("long-term plans", "en", aggressive=True) == "long @-@ term plans"
    vocab = ["<pad>", "<s>", "</s>", "<unk>", "ein", "Bei@@", "spiel"]
    assert decode(torch.tensor([1, 4, 5, 6, 2, 4, 0]), vocab, 2, 0, 1) == "ein Bei@@ spiel"
    assert decode([4, 3, 0, 0], vocab) == "ein <unk>"


def test_tokeniser_reproduces_moses_on_dev2010(data):
    """fairseq's tokenised dev2010 (Moses tokenizer.perl + lowercase.perl) from the XML, line for line."""
    rates = {}
    for lang in ("de", "en"):
        xml = D.fetch(f"iwslt14_dev2010_xml_{lang}", data, download=False)
        want = read_lines(D.fetch(f"iwslt14_dev2010_tok_{lang}", data, download=False))
        got = [moses_tokenize(s.replace("’", "'"), lang).lower() for s in segments(xml)]
        assert len(got) == len(want) == 887
        rates[lang] = sum(a == b for a, b in zip(got, want)) / len(want)
    print(f"dev2010 tokenisation match: {rates}")
    assert min(rates.values()) >= 0.99


# ---- archives --------------------------------------------------------------------------------------------------------


def crafted(kind: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        ok = tarfile.TarInfo("ok.txt")
        ok.size = 2
        tar.addfile(ok, io.BytesIO(b"ok"))
        info = tarfile.TarInfo({"dotdot": "../evil", "abs": "/tmp/abs-evil", "nested": "a/../../evil"}.get(kind, kind))
        if kind in ("symlink", "abs-symlink"):
            info.type, info.linkname = tarfile.SYMTYPE, "../outside" if kind == "symlink" else "/etc/passwd"
        elif kind == "hardlink":
            info.type, info.linkname = tarfile.LNKTYPE, "../outside"
        elif kind == "device":
            info.type = tarfile.CHRTYPE
        payload = b"evil" if info.isfile() else b""
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


@pytest.mark.parametrize("kind, why", [("dotdot", "'..' component"), ("nested", "'..' component"),
                                       ("abs", "absolute path"), ("symlink", "link pointing outside"),
                                       ("abs-symlink", "link pointing outside"), ("hardlink", "link pointing outside"),
                                       ("device", "special file")])
def test_a_crafted_archive_is_refused_and_nothing_is_written(tmp_path, kind, why):
    (tmp_path / "in").mkdir()
    archive = tmp_path / "in/crafted.tgz"
    archive.write_bytes(crafted(kind))
    with pytest.raises(DataError, match=why) as err:
        files.safe_extract(archive, tmp_path / "out/x")
    assert str(archive) in str(err.value) and "Fix: delete" in str(err.value)
    assert files_under(tmp_path) == [archive]  # no ok.txt, no evil, no temp dir
    assert not Path("/tmp/abs-evil").exists()


def test_safe_extract_unpacks_the_chosen_members(tmp_path):
    archive = tmp_path / "a.tgz"
    archive.write_bytes(tgz({"./d/a.de": b"A", "d/a.en": b"B", "d/other.fr": b"C"}))
    out = files.safe_extract(archive, tmp_path / "out", r"d/a\.(de|en)")
    assert [p.relative_to(out).as_posix() for p in files_under(out)] == ["d/a.de", "d/a.en"]
    buf = io.BytesIO()  # a link inside the archive is fine
    with tarfile.open(fileobj=buf, mode="w") as tar:
        f = tarfile.TarInfo("d/f")
        f.size = 1
        tar.addfile(f, io.BytesIO(b"x"))
        link = tarfile.TarInfo("d/link")
        link.type, link.linkname = tarfile.SYMTYPE, "f"
        tar.addfile(link)
    (tmp_path / "b.tar").write_bytes(buf.getvalue())
    assert (files.safe_extract(tmp_path / "b.tar", tmp_path / "out2") / "d/link").read_bytes() == b"x"


# ---- IWSLT'14 from WIT3's archive, downloaded from a local server ----------------------------------------------------


def iwslt_archive(data: Path) -> tuple[bytes, dict]:
    """A de-en.tgz with the real layout: train.tags (two talks of real TED sentences between the real kinds of tag
    lines, plus pairs clean-corpus must drop) and the 10 dev/test XML files cut to their first 3 segments."""
    orig = data / "iwslt14/orig/de-en"
    raw = {lang: segments(orig / f"IWSLT14.TED.tst2012.de-en.{lang}.xml")[:60] for lang in ("de", "en")}
    words = [[len(moses_tokenize(x, lang).split()) for x in raw[lang]] for lang in ("de", "en")]
    ratio_ok = [max(a, b) <= 1.5 * min(a, b) for a, b in zip(*words)]  # clean-corpus's -ratio 1.5
    assert ratio_ok.count(False) == 1  # segment 12: 16 German words, 25 English
    titles = {"de": ["<title>Erster Vortrag</title>", "<title>Zweiter Vortrag</title>"],
              "en": ["<title>First talk</title>", "<title>Second talk</title>"]}
    bad = {"de": ["", "eins", " ".join(["wort"] * 176)], "en": ["", "one two three four", " ".join(["word"] * 176)]}
    train, good = {}, {}
    for lang in ("de", "en"):
        lines, kept = [], []
        for talk in (0, 1):
            lines += [f"<url>http://www.ted.com/talks/lang/{lang}/talk{talk}.html</url>",
                      "<keywords>talks, science</keywords>", f"<speaker>Speaker {talk}</speaker>",
                      f"<talkid>{talk}</talkid>", titles[lang][talk],
                      '<reviewer href="http://www.ted.com/profiles/1">R</reviewer>',
                      '<translator href="http://www.ted.com/profiles/2">T</translator>',
                      f"<description>TED talk {talk} {lang}</description>"]
            kept += [titles[lang][talk][7:-8], f"TED talk {talk} {lang}"]
            body = raw[lang][30 * talk:30 * talk + 30]
            lines += body + (bad[lang] if talk == 0 else [])
            kept += [x for x, ok in zip(body, ratio_ok[30 * talk:]) if ok]
        train[lang], good[lang] = "\n".join(lines) + "\n", kept
    members = {f"de-en/train.tags.de-en.{lang}": train[lang].encode() for lang in ("de", "en")}
    members["de-en/README"] = (orig / "README").read_bytes()
    for name in TEST_SETS:
        for lang in ("de", "en"):
            xml = orig / f"IWSLT14.{name}.de-en.{lang}.xml"
            members[f"de-en/{xml.name}"] = xml_prefix(xml, 3).encode()
    return tgz(members), good


def test_iwslt14_downloaded_and_prepared_end_to_end(data, tmp_path, home, server, monkeypatch):
    archive, good = iwslt_archive(data)
    src = D.SOURCES["iwslt14_de_en"]
    (tmp_path / "a.tgz").write_bytes(archive)
    content = files.content_sha256(tmp_path / "a.tgz", src.members)  # the check the real source makes
    serve(monkeypatch, server, "iwslt14_de_en", "de-en.tgz", archive, content_sha256=content)
    monkeypatch.setitem(T.RECIPES, "fairseq10k", dataclasses.replace(T.RECIPES["fairseq10k"], symbols=50))
    dm = D.build("iwslt14", source="fairseq10k", data_dir=tmp_path / "data")
    dm.prepare_data()
    dm.setup()
    assert server.hits == ["/de-en.tgz"] and (tmp_path / "data/iwslt14/orig/de-en.tgz").read_bytes() == archive
    # tags dropped, titles and descriptions kept, tokenised, cleaned, lowercased; every 23rd (from 1) validates
    cleaned = {lang: [moses_tokenize(x, lang).lower() for x in good[lang]] for lang in ("de", "en")}
    assert len(cleaned["de"]) == 63 and dm.sizes == {"train": 61, "valid": 2, "test": 15}
    for split, want in (("train", [x for i, x in enumerate(cleaned["en"]) if (i + 1) % 23]),
                        ("valid", [cleaned["en"][22], cleaned["en"][45]])):
        assert dm.references(split) == want
        assert [remove_bpe(s) for s in dm.sources(split)] == [x for i, x in enumerate(cleaned["de"])
                                                              if (i + 1 in (23, 46)) == (split == "valid")]
    assert cleaned["en"][0] == "first talk" and not any("<" in x or "speaker" in x for x in dm.references("train"))
    # test: the five sets in the script's order, as fairseq's own tokenised files have them
    want = [x for name in TEST_SETS for x in read_lines(data / f"{PREP}/tmp/IWSLT14.{name}.de-en.en")[:3]]
    assert dm.references("test") == want
    assert dm.raw_references("test") == [detokenize(x, "en") for x in want]
    assert any("@@ " in s for s in dm.sources("train"))  # BPE applied
    assert "fairseq10k" in dm.provenance and "61 pairs" in dm.provenance
    again = D.build("iwslt14", source="fairseq10k", data_dir=tmp_path / "data")
    again.setup()  # from the cache: no new download
    assert server.hits == ["/de-en.tgz"] and again.sources("test") == dm.sources("test")
    # paper25k: a vocabulary size (characters included) and long training pairs dropped, from the same archive
    monkeypatch.setitem(T.RECIPES, "paper25k", dataclasses.replace(T.RECIPES["paper25k"], symbols=150,
                                                                   max_subwords=20))
    paper = D.build("iwslt14", source="paper25k", direction="en-de", data_dir=tmp_path / "data")
    paper.setup()
    assert paper.src_lang == "en" and 0 < paper.train_size < 61 and paper.sizes["valid"] == 2
    src_len, tgt_len = paper.train_set.lengths()
    assert src_len.max() <= 20 and tgt_len.max() <= 20
    assert max(len(s.split()) for s in paper.sources("test")) > 20  # test is not filtered
    assert server.hits == ["/de-en.tgz"]


def test_a_download_with_a_wrong_checksum_is_deleted(data, tmp_path, home, server, monkeypatch, cache):
    archive, _ = iwslt_archive(data)
    serve(monkeypatch, server, "iwslt14_de_en", "de-en.tgz", archive)  # the real content hash: not this archive
    with pytest.raises(ChecksumError) as err:
        Translation(source="fairseq10k", data_dir=tmp_path / "data").prepare_data()
    assert f"{server.url}/de-en.tgz" in str(err.value) and "deleted" in str(err.value) and "Fix" in str(err.value)
    assert files_under(tmp_path / "data") == [] and files_under(cache) == []
    serve(monkeypatch, server, "wmt14_dev", "dev.tgz", b"not the dev tarball")  # a source pinned by SHA-256
    with pytest.raises(ChecksumError, match=D.SOURCES["wmt14_dev"].sha256[0]):
        D.fetch("wmt14_dev", tmp_path / "data")
    assert files_under(tmp_path / "data") == []


def test_a_truncated_archive_is_a_data_error_and_leaves_nothing(data, tmp_path, home, server, monkeypatch, cache):
    archive, _ = iwslt_archive(data)
    (tmp_path / "a.tgz").write_bytes(archive)
    content = files.content_sha256(tmp_path / "a.tgz", D.SOURCES["iwslt14_de_en"].members)
    cut = archive[:len(archive) // 2]
    serve(monkeypatch, server, "iwslt14_de_en", "de-en.tgz", cut, content_sha256=content)
    with pytest.raises(DataError, match="truncated download"):  # downloaded: its content cannot be verified
        Translation(source="fairseq10k", data_dir=tmp_path / "data").prepare_data()
    assert files_under(tmp_path / "data") == [] and files_under(cache) == []
    # a truncated archive whose bytes are accepted (pinned to them) fails when unpacked, naming the file and the fix
    local = tmp_path / "data/iwslt14/orig/de-en.tgz"
    local.parent.mkdir(parents=True, exist_ok=True)
    local.write_bytes(cut)
    monkeypatch.setitem(D.SOURCES, "iwslt14_de_en", dataclasses.replace(D.SOURCES["iwslt14_de_en"], sha256=(sha(cut),)))
    with pytest.raises(DataError, match="truncated or corrupt") as err:
        Translation(source="fairseq10k", data_dir=tmp_path / "data").prepare_data()
    assert str(local) in str(err.value) and f"Fix: delete {local}" in str(err.value)
    assert files_under(cache) == [] and list(cache.iterdir()) == []  # no cache file, no unpacked files


# ---- WMT'14 from statmt.org's archives, downloaded from a local server -----------------------------------------------


def test_wmt14_downloaded_and_prepared_end_to_end(data, tmp_path, home, server, monkeypatch):
    news = {lang: read_lines(data / f"wmt14/newstest2014.{lang}") for lang in ("de", "en")}
    sgm = {f"test-full/{p.name}": xml_prefix(p, 12).encode() for p in sorted((data / "wmt14/test-full").iterdir())}
    corpora = {"wmt14_europarl": ("training/europarl-v7.de-en", 0), "wmt14_commoncrawl": ("commoncrawl.de-en", 30),
               "wmt14_news_commentary": ("training/news-commentary-v9.de-en", 60)}
    for key, (stem, start) in corpora.items():
        members = {f"{stem}.{lang}": "\n".join(news[lang][start:start + 30] + [""]).encode() for lang in ("de", "en")}
        members["training/europarl-v7.fr-en.fr"] = b"ignored\n"
        payload = tgz(members)
        serve(monkeypatch, server, key, f"{key}.tgz", payload, sha256=(sha(payload),))
    dev = tgz({f"dev/newstest{year}.{lang}": "\n".join(news[lang][start:start + 10] + [""]).encode()
               for year, start in ((2012, 100), (2013, 110)) for lang in ("de", "en")})
    serve(monkeypatch, server, "wmt14_dev", "dev.tgz", dev, sha256=(sha(dev),))
    (tmp_path / "t.tgz").write_bytes(tgz(sgm))
    content = files.content_sha256(tmp_path / "t.tgz", D.SOURCES["wmt14_test_full"].members)
    serve(monkeypatch, server, "wmt14_test_full", "test-full.tgz", tgz(sgm), content_sha256=content)
    assert T.RECIPES["wmt30k"].symbols == 30_000 and T.RECIPES["wmt30k"].total_symbols  # the paper's 30K vocabulary
    assert T.RECIPES["wmt30k"].max_subwords == 64  # and its length filter
    monkeypatch.setitem(T.RECIPES, "wmt30k", dataclasses.replace(T.RECIPES["wmt30k"], symbols=400, max_subwords=50))
    dm = D.build("wmt14", source="wmt30k", data_dir=tmp_path / "data")
    dm.prepare_data()
    dm.setup()
    assert sorted(server.hits) == ["/dev.tgz", "/test-full.tgz", "/wmt14_commoncrawl.tgz", "/wmt14_europarl.tgz",
                                   "/wmt14_news_commentary.tgz"]
    assert dm.sizes["valid"] == 20 and dm.sizes["test"] == 12 and 0 < dm.train_size < 85
    src_len, tgt_len = dm.train_set.lengths()
    assert src_len.max() <= 50 and tgt_len.max() <= 50  # training pairs over max_subwords dropped...
    assert max(len(s.split()) for s in dm.sources("test")) > 50  # ...not the test set
    assert dm.raw_references("test") == news["de"][:12]  # sacreBLEU's text of newstest2014
    assert dm.raw_references("valid") == news["de"][100:120]
    want = [moses_tokenize(s.replace("’", "'"), "de", aggressive=True)
            for s in segments(data / "wmt14/test-full/newstest2014-deen-ref.de.sgm")[:12]]
    assert dm.references("test") == want and want[0] == "Gutach : Noch mehr Sicherheit für Fußgänger"  # cased
    assert [remove_bpe(s) for s in dm.sources("test")][0] == "Gutach : Increased safety for pedestrians"
    assert any("@-@" in x for x in dm.references("train"))  # tokenizer.perl -a
    assert "wmt30k" in dm.provenance and "newstest2012+2013" in dm.provenance


# ---- bad input -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("task, bad, match", [
    ("iwslt14", dict(direction="fr-en"), r"direction='fr-en'; valid: de-en, en-de"),
    ("iwslt14", dict(source="wmt30k"), r"source='wmt30k' is not one of iwslt14's; valid: offline, fairseq10k, "
                                       r"paper25k"),
    ("wmt14", dict(source="fairseq10k"), r"valid: offline, wmt30k"),
    ("iwslt14", dict(batch_size=0), r"batch_size=0: must be a positive int"),
    ("iwslt14", dict(max_tokens=0), r"max_tokens=0: must be a positive int or None"),
    ("iwslt14", dict(heldout=0), r"heldout=0"),
    ("iwslt14", dict(protocol="test"), r"protocol='test'; valid: holdout, paper"),
])
def test_bad_arguments_list_the_valid_ones(task, bad, match):
    with pytest.raises(ValueError, match=match):
        D.build(task, **bad)


def test_bad_use(iwslt, data):
    with pytest.raises(ValueError, match=r"'sorce' \(did you mean 'source'\?\).*Valid: direction, source"):
        D.build("iwslt14", sorce="offline")
    with pytest.raises(ValueError, match=r"dataset='wmt16'; valid: iwslt14, wmt14"):
        Translation(dataset="wmt16")
    with pytest.raises(ValueError, match=r"split='dev'; valid: train, valid, test"):
        iwslt.references("dev")
    with pytest.raises(RuntimeError, match=r"call prepare_data\(\) and setup\(\)"):
        Translation().train_dataloader()
    with pytest.raises(ValueError, match=r"heldout=7283: must leave training pairs; the corpus has 7,283"):
        Translation(data_dir=data, heldout=7283).setup()
    assert {"iwslt14", "wmt14"} <= set(D.names()) and D.options("wmt14")["source"] == "offline"


def test_a_missing_shared_file_names_the_file_and_the_fix(data, tmp_path, home, monkeypatch):
    for key in T.OFFLINE_FILES["wmt14"]:
        src = D.SOURCES[key]
        monkeypatch.setitem(D.SOURCES, key, dataclasses.replace(src, urls=(closed_url(Path(src.path).name),)
                                                                if src.urls else ()))
    with pytest.raises(MissingDataError) as err:
        Translation(data_dir=tmp_path / "empty").prepare_data()
    msg = str(err.value)
    assert f"{PREP}/valid.de not found" in msg and str(tmp_path / "empty") in msg and "Fix: copy" in msg
    (tmp_path / "part").mkdir()  # newstest2014 has no download: the message says so
    for key in T.OFFLINE_FILES["iwslt14"] + ["iwslt14_code"]:
        dest = tmp_path / "part" / D.SOURCES[key].path
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.symlink_to(data / D.SOURCES[key].path)
    with pytest.raises(MissingDataError, match=r"wmt14/newstest2014\.de not found.*no public download"):
        D.build("wmt14", data_dir=tmp_path / "part").prepare_data()


def test_fairseq_batching_sorts_the_whole_split_once_and_reorders_batches_each_epoch():
    # fairseq's LanguagePairDataset: indices sorted by (source, target) length over the whole split, ties random,
    # cut into batches once; each epoch serves the same batches in a new order
    rng = np.random.default_rng(0)
    src, tgt = rng.integers(1, 40, 203), rng.integers(1, 40, 203)
    sampler = LengthBatches(src, tgt, batch_size=8, shuffle=True, seed=5, batching="fairseq")
    e0, e1 = sampler.batches(0), sampler.batches(1)
    assert sorted(map(tuple, e0)) == sorted(map(tuple, e1)) and e0 != e1  # the same batches, another order
    flat = sorted(e0, key=lambda b: (src[b[0]], tgt[b[0]]))
    order = [i for b in flat for i in b]
    assert sorted(order) == list(range(203))                               # every pair once
    keys = [(src[i], tgt[i]) for i in order]
    assert keys == sorted(keys)                                           # one global (source, target) order
    chunks = LengthBatches(src, tgt, batch_size=8, shuffle=True, seed=5)
    assert sorted(map(tuple, chunks.batches(0))) != sorted(map(tuple, chunks.batches(1)))  # redrawn each epoch
    with pytest.raises(ValueError, match="batching='sorted'; valid: chunks, fairseq"):
        LengthBatches(src, tgt, batch_size=8, batching="sorted")
