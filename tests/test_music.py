"""Tests of ``datamodules.music``: the four piano-roll datasets (MANIFEST section 5) as next-frame streams, the JSB
.mat against the original pickle, and the per-time-step NLL of Boulanger-Lewandowski et al. 2012.

Real data comes from $GATEZOO_DATA, else ``<repo>/../shared/data``; without either the tests FAIL (conftest ``data``).
"""
from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from localhttp import closed_url

import datamodules as D
from datamodules.files import ChecksumError, DataError, MissingDataError
from datamodules.music import Music, frame_nll, roll

SPLITS = ("train", "valid", "test")
SIZES = {  # MANIFEST section 5: pieces per split and train frames
    "jsb": ((229, 76, 77), 13_807),
    "nottingham": ((694, 173, 170), 176_561),
    "piano_midi": ((87, 12, 25), 75_911),
    "musedata": ((524, 135, 124), 245_202),
}


@pytest.fixture(scope="module")
def jsb(data):
    dm = D.build("music", dataset="jsb", data_dir=data, batch_size=8, eval_batch_size=4, bptt=20)
    dm.prepare_data()
    dm.setup("fit")
    return dm


@pytest.fixture(scope="module")
def jsb_pickle(data):
    dm = D.build("music", dataset="jsb", source="pickle", data_dir=data)
    dm.setup("fit")
    return dm


def test_jsb_mat_equals_the_original_pickle_piece_by_piece(jsb, jsb_pickle, data):
    for split in SPLITS:
        mat, pkl = jsb.pieces(split), jsb_pickle.pieces(split)
        assert len(mat) == len(pkl) == dict(zip(SPLITS, SIZES["jsb"][0]))[split]
        for i, (a, b) in enumerate(zip(mat, pkl)):
            assert a.shape == b.shape and a.dtype == b.dtype == np.uint8, (split, i)
            assert np.array_equal(a, b), (split, i)
        for a, b in zip(jsb.streams[split], jsb_pickle.streams[split]):
            assert torch.equal(a, b)
    # the pickle read directly: steps of MIDI numbers 43..96, rests included; the .mat's column k is note 21 + k
    with open(data / "music/JSB_Chorales.pickle", "rb") as f:
        raw = pickle.load(f, encoding="latin1")
    first = raw["train"][0]
    assert len(first) == len(jsb.pieces("train")[0])
    assert sorted(np.flatnonzero(jsb.pieces("train")[0][0]) + 21) == sorted(int(n) for n in first[0])
    steps = [s for split in SPLITS for piece in raw[split] for s in piece]
    notes = [int(n) for s in steps for n in s]
    assert (min(notes), max(notes)) == (43, 96) and sum(len(s) == 0 for s in steps) == 64


@pytest.mark.parametrize("dataset", sorted(SIZES))
def test_split_sizes_are_the_manifests(dataset, jsb, data):
    dm = jsb if dataset == "jsb" else Music(dataset=dataset, data_dir=data)
    dm.setup("fit")
    (n_train, n_valid, n_test), frames = SIZES[dataset]
    assert [len(dm.pieces(s)) for s in SPLITS] == [n_train, n_valid, n_test]
    assert sum(len(p) for p in dm.pieces("train")) == frames
    for split in SPLITS:
        total = sum(len(p) for p in dm.pieces(split))
        x, y, m = dm.streams[split]
        assert x.shape == y.shape == (total - 1, 88) and x.dtype == torch.float32 and bool(m.all())
    assert f"train {n_train} pieces / {frames:,} frames" in dm.provenance


def test_the_stream_is_the_pieces_concatenated_and_windows_are_next_frame(jsb):
    assert (jsb.vocab_size, jsb.symbols, jsb.input_size, jsb.num_outputs, jsb.target) == (None, None, 88, 88, "notes")
    for loader, split, bsz, bptt in ((jsb.train_dataloader(), "train", 8, 20), (jsb.val_dataloader(), "valid", 4, 20),
                                     (jsb.test_dataloader(), "test", 4, 20), (jsb.stream_loader("test", 1, 50),
                                                                              "test", 1, 50)):
        s = torch.from_numpy(np.concatenate(jsb.pieces(split))).float()
        batches = list(loader)
        n = (len(s) - 1) // bsz
        assert len(batches) == -(-n // bptt)
        for x, y, m in batches:
            assert x.dtype == y.dtype == torch.float32 and m.dtype == torch.bool
            assert x.shape == y.shape and x.shape[0] == bsz and x.shape[1] <= bptt and x.shape[2] == 88
            assert m.shape == x.shape[:2] and bool(m.all())
        x, y, _ = (torch.cat(t, dim=1) for t in zip(*batches))
        assert torch.equal(x.reshape(-1, 88), s[:n * bsz]) and torch.equal(y.reshape(-1, 88), s[1:n * bsz + 1])
        assert torch.equal(y[:, :-1], x[:, 1:])


def test_frame_nll_of_the_training_note_frequencies_is_the_hand_computation(jsb):
    train = np.concatenate(jsb.pieces("train")).astype(np.float64)
    valid = np.concatenate(jsb.pieces("valid")).astype(np.float64)
    p = np.clip(train.mean(axis=0), 1e-3, 1 - 1e-3)  # notes never played in train have p = 0: clipped
    assert (train.mean(axis=0) == 0).sum() > 0
    per_frame = [-(np.log(p[f == 1]).sum() + np.log(1 - p[f == 0]).sum()) for f in valid]
    by_hand = sum(per_frame) / len(valid)
    probs = np.broadcast_to(p, valid.shape)
    assert frame_nll(probs, valid) == pytest.approx(by_hand, rel=1e-12)
    as_float32 = frame_nll(torch.from_numpy(probs.copy()).float(), torch.from_numpy(valid))
    assert as_float32 == pytest.approx(by_hand, rel=1e-5)
    # the stream's targets in (B, L, 88) windows: the same normalisation (frames, whatever the leading shape)
    y = jsb.streams["valid"][1][:4600].reshape(4, 1150, 88)
    assert frame_nll(np.broadcast_to(p, y.shape), y) == pytest.approx(
        -np.mean([np.log(p[f == 1]).sum() + np.log(1 - p[f == 0]).sum() for f in y.reshape(-1, 88).numpy()]))
    assert 5 < by_hand < 30  # nats per frame: far above the papers' ~4.5-8.7 for trained models, far below 88 log 2
    frame = valid[:3]
    assert frame_nll(frame, frame) == 0.0  # sure and right costs nothing
    assert frame_nll(np.zeros_like(frame), 1 - np.zeros_like(frame)) == float("inf")
    with pytest.raises(ValueError, match=r"same shape \(\.\.\., 88\)"):
        frame_nll(np.zeros((3, 87)), np.zeros((3, 87)))


def test_roll_maps_midi_numbers_to_columns():
    frames = roll([(21, 60), (), (108,)], "piece")
    assert frames.shape == (3, 88) and frames.dtype == np.uint8
    assert [list(np.flatnonzero(f)) for f in frames] == [[0, 39], [], [87]]
    with pytest.raises(DataError, match="MIDI note 20"):
        roll([(20,)], "piece")


def test_options_are_checked():
    with pytest.raises(ValueError, match="valid: jsb, nottingham, piano_midi, musedata"):
        D.build("music", dataset="jsb_chorales")
    with pytest.raises(ValueError, match="only available for dataset='jsb'"):
        D.build("music", dataset="musedata", source="pickle")
    with pytest.raises(ValueError, match="valid: mat, pickle"):
        D.build("music", source="midi")
    with pytest.raises(ValueError, match="valid: holdout, paper"):
        D.build("music", protocol="test")
    with pytest.raises(RuntimeError, match="call setup"):
        Music().pieces("train")


@pytest.mark.parametrize("dataset, source, name", [("nottingham", "mat", "music/Nottingham.mat"),
                                                   ("jsb", "pickle", "music/JSB_Chorales.pickle")])
def test_a_missing_file_names_the_file(dataset, source, name, tmp_path, home, monkeypatch):
    key = "music_jsb_pickle" if source == "pickle" else f"music_{dataset}"
    url = closed_url(Path(name).name)
    monkeypatch.setitem(D.SOURCES, key, dataclasses.replace(D.SOURCES[key], urls=(url,)))
    dm = Music(dataset=dataset, source=source, data_dir=tmp_path / "empty")
    with pytest.raises(MissingDataError) as err:
        dm.prepare_data()
    assert isinstance(err.value, DataError)
    for part in (name, str(tmp_path / "empty"), url, "Fix: copy"):
        assert part in str(err.value), part


def test_a_corrupt_file_is_never_read(data, tmp_path, home, monkeypatch):
    local = tmp_path / "data" / "music"
    local.mkdir(parents=True)
    (local / "JSB_Chorales.pickle").write_bytes((data / "music/JSB_Chorales.pickle").read_bytes()[:5000])
    (local / "JSB_Chorales.mat").write_bytes((data / "music/JSB_Chorales.mat").read_bytes()[:-1] + b"\0")

    def never(*args, **kwargs):
        raise AssertionError("a file was read before its checksum was accepted")

    monkeypatch.setattr(pickle, "load", never)
    monkeypatch.setattr(scipy.io, "loadmat", never)
    for source, key in (("pickle", "music_jsb_pickle"), ("mat", "music_jsb")):
        with pytest.raises(ChecksumError) as err:
            Music(source=source, data_dir=tmp_path / "data").prepare_data()
        assert D.SOURCES[key].path in str(err.value) and D.SOURCES[key].sha256[0] in str(err.value)
