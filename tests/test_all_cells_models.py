"""Every registered cell through every task model of ``lit_models``, built as reproduce's ``build_net`` builds them
(classification, language model, translation), at tiny sizes:

- ``RNNClassifier``: one unidirectional layer on raw inputs (pixel/row MNIST) with a softmax head,
  and a bidirectional one (two stacked layers where the cell allows it) behind a word embedding with a Dense(relu)
  layer and one sigmoid unit (IMDB / News20);
- ``AWDLSTM``: the AWD-LSTM language model, two layers, tied weights;
- ``Seq2Seq``: the attention encoder-decoder, bidirectional first encoder layer, two layers.

Each: forward, backward with a finite gradient for every parameter (and a nonzero one, but for the exceptions named
in ``zero_by_construction``), then ``STEPS`` Adam steps on one fixed batch must lower the loss (measured in eval mode,
no dropout or G2 noise) to under ``FALL`` times its start. Backend ``auto`` without torch.compile: the fused kernel
where the cell has an exact form, else the eager loop.

Exceptions by construction, read off the registry (nothing here names a cell):
- a ``square_only`` cell (MUT1/2: x is added to a hidden-sized vector) cannot be a Seq2Seq decoder, whose input is
  [embedding; h~] (emsize + nhid wide) for nhid units: building it must raise the cell's clear error;
- a cell with ``extra_state`` (FGR's previous gates) restarts it on every call, and the decoder calls its layer one
  step at a time: the decoder's gate-recurrence matrices R_<to><from> multiply zero and get a zero gradient.
"""
from __future__ import annotations

import re

import pytest
import torch

import cells
from lit_models.classifier import SequenceClassifier
from lit_models.language_model import AWDLSTM
from lit_models.nets import RNNClassifier
from lit_models.seq2seq import Seq2Seq

NAMES = cells.names()
STEPS, LR, FALL = 30, 0.05, 0.7  # Adam steps on the one batch; the final loss must be < FALL x the initial one
PAD, BOS, EOS = 0, 1, 2


@pytest.fixture(autouse=True)
def _no_compile(monkeypatch):
    monkeypatch.setenv("GATEZOO_COMPILE", "0")  # backend auto: the fused kernel or eager, no compile per test


def square(name) -> bool:
    return cells.get(name).square_only


def zero_by_construction(name, model: str) -> list[str]:
    """Regexes of the parameters whose gradient is zero by construction (see the module docstring)."""
    if model == "seq2seq" and cells.get(name).extra_state:
        return [r"decoder\.cells\.\d+\.R_[ifo][ifo]"]
    return []


def fit(net, loss_fn, zero_ok=()) -> tuple[float, float]:
    """Check the first backward, train ``STEPS`` Adam steps on the same batch; -> (initial, final) eval-mode loss."""
    with torch.no_grad():
        initial = loss_fn(net.eval()).item()
    assert torch.isfinite(torch.tensor(initial)), initial
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    net.train()
    for step in range(STEPS):
        opt.zero_grad()
        loss = loss_fn(net)
        assert torch.isfinite(loss), f"step {step}: loss {loss.item()}"
        loss.backward()
        if step == 0:
            for pname, p in net.named_parameters():
                assert p.grad is not None, f"{pname} got no gradient"
                assert torch.isfinite(p.grad).all(), f"{pname}: non-finite gradient"
                zero = any(re.fullmatch(pat, pname) for pat in zero_ok)
                assert (p.grad.abs().sum() == 0) == zero, (
                    f"{pname}: gradient {'not ' if zero else ''}identically zero")
        opt.step()
    with torch.no_grad():
        final = loss_fn(net.eval()).item()
    return initial, final


def assert_falls(initial, final):
    assert final < FALL * initial, f"loss {initial:.4f} -> {final:.4f} in {STEPS} Adam steps"


# ---- RNNClassifier (the classification tables) ----------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_classifier(name):
    torch.manual_seed(0)
    m, n = (8, 8) if square(name) else (5, 8)
    net = RNNClassifier(cells.build(name, m, n), 3)  # pixel/row MNIST: x (B, T, m) -> cell(n) -> Dense(C)
    x, y = torch.randn(8, 6, m), torch.arange(8) % 3
    assert net(x).shape == (8, 3)
    assert_falls(*fit(net, lambda net: SequenceClassifier.loss_and_correct(net(x), y)[0]))


@pytest.mark.parametrize("name", NAMES)
def test_classifier_bidirectional(name):
    """Embedding front, bidirectional layer (two stacked where the cell allows it), Dense(relu), one sigmoid unit."""
    torch.manual_seed(0)
    num_layers = 1 if square(name) else 2  # above the first layer a bidirectional layer's input is 2n wide
    rnn = cells.build(name, 8, 8, num_layers=num_layers, bidirectional=True)
    net = RNNClassifier(rnn, 1, front="embedding", vocab_size=20, embed_dim=8, hidden=16)
    x, y = torch.randint(0, 20, (8, 6)), torch.arange(8) % 2
    assert net(x).shape == (8, 1)
    assert_falls(*fit(net, lambda net: SequenceClassifier.loss_and_correct(net(x), y)[0]))


# ---- AWD-LSTM (the language-model tables) ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_awd_lstm(name):
    torch.manual_seed(0)
    V = 20
    net = AWDLSTM(V, name, emsize=8, nhid=8, nlayers=2, tie_weights=True, dropout=0.0, dropouth=0.0, dropouti=0.0,
                  dropoute=0.0, wdrop=0.0)
    order = torch.randperm(V)  # a fixed cycle through the vocabulary: each word's successor is learnable
    stream = order[(torch.arange(4)[:, None] * 5 + torch.arange(9)) % V]
    x, y = stream[:, :-1], stream[:, 1:]

    def loss_fn(net):
        logits, hidden, raw, dropped = net(x, net.init_hidden(len(x)))
        assert logits.shape == (4, 8, V) and len(hidden) == 2
        return torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten())

    assert_falls(*fit(net, loss_fn))


# ---- Seq2Seq (the translation tables) --------------------------------------------------------------------------------


def mt_batch(V=15):
    """src (B, S) ending in eos, padded; tgt [bos] y [eos] padded."""
    g = torch.Generator().manual_seed(1)
    src_len, tgt_len = [6, 4, 5, 3], [5, 6, 3, 4]
    src = torch.full((4, max(src_len)), PAD)
    tgt = torch.full((4, max(tgt_len) + 2), PAD)
    for i, (s, t) in enumerate(zip(src_len, tgt_len)):
        src[i, :s - 1], src[i, s - 1] = torch.randint(3, V, (s - 1,), generator=g), EOS
        tgt[i, 0], tgt[i, 1:t + 1], tgt[i, t + 1] = BOS, torch.randint(3, V, (t,), generator=g), EOS
    return src, torch.tensor(src_len), tgt


@pytest.mark.parametrize("name", NAMES)
def test_seq2seq(name):
    torch.manual_seed(0)
    V, kw = 15, dict(emsize=6, nhid=8, nlayers=2, dropout=0.0, pad=PAD)
    if square(name):  # the decoder's input [embedding; h~] is emsize + nhid wide for nhid units: it cannot exist
        with pytest.raises(ValueError, match=rf"{name}.*input_size == hidden_size"):
            Seq2Seq(V, V, name, **kw)
        return
    net = Seq2Seq(V, V, name, **kw)
    src, src_lengths, tgt = mt_batch(V)
    assert net(src, src_lengths, tgt[:, :-1]).shape == (4, tgt.shape[1] - 1, V)
    initial, final = fit(net, lambda net: net.loss(src, src_lengths, tgt)[0], zero_by_construction(name, "seq2seq"))
    assert_falls(initial, final)
