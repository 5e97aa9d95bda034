"""Tests of the cell registry ``cells`` against the papers' equations and parameter counts (docs/cells.md).

Every cell is checked against the independent reference in ``tests/reference.py`` (one step, sequences, stacked and
bidirectional layers), its parameter formula (``cls.formula``, the one place it is written) against what a built
layer really allocates and against the papers' printed counts, every exact backend against ``eager`` (outputs, final
state and all gradients; lengths with garbage in the padding), and the options, the G2 noise, DropConnect,
``from_torch``, the error messages and ``describe`` / ``python -m cells``.

Every per-cell fact comes from the registry (``cells.get(name)``: ``square_only``, ``forget_bias_ok()``, ``options``,
``exact_backends()``) or from the cell's reference step (``ref.get(name)``: its state and gates, as its paper says):
a new cell needs its class and one reference step, nothing here; without the reference step its tests fail naming it.
"""
from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import reference as ref
import torch
from torch import nn
from torch._dynamo.utils import counters
from torch.testing import assert_close

import cells
from cells import backends
from cells.base import formula_count

NAMES = cells.names()
SQUARE = [name for name in NAMES if cells.get(name).square_only]  # MUT1/2 add x to a hidden-sized vector: m = n
FUSED = [name for name in NAMES if "cudnn" in cells.get(name).exact_backends()]
F64, F32 = torch.float64, torch.float32
TOL32 = dict(atol=1e-5, rtol=1e-4)
EXACT = dict(atol=0.0, rtol=0.0)
REPO = Path(__file__).resolve().parents[1]

COMMON_OPTIONS = ["activation", "gate_activation", "forget_bias", "init", "init_scale"]


# ---- helpers ---------------------------------------------------------------------------------------------------------


def sizes(name):
    """(m, n): m != n catches transposed weights; MUT1/2 need m = n."""
    return (4, 4) if name in SQUARE else (3, 4)


def deepest(name):
    """(num_layers, bidirectional): two bidirectional layers, or one for MUT1/2 (a second one would see 2n != n)."""
    return (1, True) if name in SQUARE else (2, True)


def build(name, m=None, n=None, *, dtype=F64, **kw):
    m0, n0 = sizes(name)
    return cells.build(name, m or m0, n or n0, **kw).to(dtype)


def twin(layer, backend, **changes):
    """A layer of the same cell, options and weights on another backend (and with ``changes`` to the build)."""
    kw = dict(num_layers=layer.num_layers, bidirectional=layer.bidirectional, dropout=layer.dropout,
              weight_drop=layer.weight_drop, **layer.options)
    kw.update(changes)
    other = cells.build(layer.cell_name, layer.input_size, layer.hidden_size, backend=backend, **kw)
    other.to(next(layer.parameters()).dtype).load_state_dict(layer.state_dict())
    return other.train(layer.training)


def tup(state):
    return tuple(state) if isinstance(state, (tuple, list)) else (state,)


def untup(layer, parts):
    return tuple(parts) if layer.has_cell_state else parts[0]


def random_state(layer, B, scale=0.5):
    dtype = next(layer.parameters()).dtype
    shape = (layer.num_layers * layer.directions, B, layer.hidden_size)
    return untup(layer, [scale * torch.randn(shape, dtype=dtype) for _ in range(2 if layer.has_cell_state else 1)])


def garbage(x, lengths):
    """x with huge random values and NaN in every padded step."""
    x = x.clone()
    for b, L in enumerate(lengths.tolist()):
        x[b, L:] = 1e6 * torch.randn_like(x[b, L:])
        x[b, L:, 0] = float("nan")
    return x


def zero_padding(x, lengths):
    x = x.clone()
    for b, L in enumerate(lengths.tolist()):
        x[b, L:] = 0.0
    return x


def forward_backward(layer, x, state=None, lengths=None, *, seed=0, steps=False):
    """Outputs, final state and the gradients w.r.t. x, the initial state and every parameter of a fixed random
    functional of the outputs and the final state. The RNG is seeded first (G2 noise, DropConnect masks).
    ``steps``: as a decoder uses a layer, T calls of one step each with the weights built once (``layer.weights()``)."""
    x = x.detach().clone().requires_grad_(True)
    st = () if state is None else tuple(s.detach().clone().requires_grad_(True) for s in tup(state))
    torch.manual_seed(seed)
    if steps:
        w, new, outs = layer.weights(), untup(layer, st) if st else None, []
        for t in range(x.shape[1]):
            out, new = layer(x[:, t:t + 1], new, weights=w)
            outs.append(out)
        out = torch.cat(outs, 1)
    else:
        out, new = layer(x, untup(layer, st) if st else None, lengths)
    gen = torch.Generator().manual_seed(1234)
    loss = (out * torch.randn(out.shape, generator=gen, dtype=out.dtype)).sum()
    for s in tup(new):
        loss = loss + (s * torch.randn(s.shape, generator=gen, dtype=s.dtype)).sum()
    pnames, params = zip(*layer.named_parameters())
    grads = torch.autograd.grad(loss, [x, *st, *params])
    res = {"out": out.detach(), "grad x": grads[0]}
    res.update({f"state[{i}]": s.detach() for i, s in enumerate(tup(new))})
    res.update({f"grad state[{i}]": g for i, g in enumerate(grads[1:1 + len(st)])})
    res.update({f"grad {p}": g for p, g in zip(pnames, grads[1 + len(st):])})
    return res


def assert_same(got: dict, want: dict, **tol):
    assert got.keys() == want.keys()
    for k in want:
        assert_close(got[k], want[k], msg=lambda m, k=k: f"{k}: {m}", **tol)


# ---- the registry ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_every_cell_has_a_reference_step(name):
    """The reference steps are the cells of docs/cells.md, written independently of ``cells/``: a registered cell
    without one is tested against nothing."""
    assert cells.get(name).name == name
    assert name in ref.REFERENCES, (f"cell {name!r} has no reference step: write one from docs/cells.md in "
                                    f"tests/reference.py (@reference({name!r}, cell_state=..., gates=...))")


def test_every_reference_step_is_a_registered_cell():
    missing = sorted(set(ref.REFERENCES) - set(NAMES))
    assert not missing, f"cells with a reference step but no registered class: {missing}"
    assert len(NAMES) >= 26  # the 26 cells of docs/cells.md


# ---- every cell against the reference ------------------------------------------------------------------------------


@pytest.mark.parametrize("T", [1, 3])
@pytest.mark.parametrize("name", NAMES)
def test_layer_equals_reference_rolled_by_hand(name, T):
    layer = build(name, backend="eager").eval()
    m, B = layer.input_size, 2
    x = torch.randn(B, T, m, dtype=F64)
    state = random_state(layer, B)
    out, new = layer(x, state)
    out_g, new_g, gates = layer(x, state, return_gates=True)
    assert layer.has_cell_state == ref.get(name).cell_state
    assert out.shape == (B, T, layer.hidden_size)
    assert set(gates) == set(ref.get(name).gates)
    s, prev = tuple(t[0] for t in tup(state)), None
    for t in range(T):
        s, g = ref.step(name, layer.cells[0], x[:, t], s, layer.options, prev=prev)
        prev = g
        assert_close(out[:, t], s[0], msg=lambda msg: f"h at t={t}: {msg}")
        for k in g:
            assert_close(gates[k][:, t], g[k], msg=lambda msg, k=k: f"gate {k} at t={t}: {msg}")
    assert len(tup(new)) == len(s)
    for got, want in zip(tup(new), s):
        assert_close(got[0], want)
    assert_close(out_g, out, **EXACT)
    for a, b in zip(tup(new_g), tup(new)):
        assert_close(a, b, **EXACT)


OPTION_CASES = [
    ("lstm", {"activation": "sigmoid"}, False),
    ("lstm6", {"activation": "sigmoid"}, False),  # the Slim paper also runs act = sigmoid
    ("lstm_c6", {"activation": "sigmoid"}, False),
    ("lstm6", {"forget": 0.96}, False),
    ("lstm6", {"forget": -0.5}, False),
    ("lstm_c6", {"forget": 0.1}, False),
    ("lstm_c6", {"forget": -0.9}, False),
    ("peephole_lstm", {"activation": "sigmoid"}, False),
    ("gru", {"activation": "relu"}, False),
    ("mut3", {"activation": "identity"}, False),
    ("sharpened_lstm", {}, True),  # σ(α / τ) in training as in evaluation
    ("sharpened_lstm", {"tau": 0.5}, False),
    ("sharpened_lstm", {"tau": 0.5}, True),
    ("g2_lstm", {"tau": 0.5}, False),  # evaluation: plain σ(α), τ unused
    ("g2_lstm", {"noise_prob": 0.0}, True),  # training without noise: plain σ(α), as the authors' GumbelNoise
    ("g2_lstm", {"noise_prob": 0.0, "tau": 0.3}, True),
] + [(name, {"gate_activation": "hard_sigmoid"}, False) for name in NAMES
      if name in ref.REFERENCES and ref.get(name).gates] + [
    (name, dict(cells.get(name).options), False) for name in NAMES if cells.get(name).options]  # passed explicitly


@pytest.mark.parametrize("name,options,training", OPTION_CASES,
                         ids=[f"{n}-{o}-{'train' if t else 'eval'}" for n, o, t in OPTION_CASES])
def test_options_equal_reference(name, options, training):
    layer = build(name, backend="eager", **options).train(training)
    with torch.no_grad():  # larger weights and inputs: hard_sigmoid must clip somewhere
        for p in layer.parameters():
            p.mul_(3.0)
    x = 2.0 * torch.randn(3, 4, layer.input_size, dtype=F64)
    state = random_state(layer, 3)
    out, new, gates = layer(x, state, return_gates=True)
    want_out, want_state, want_gates = ref.run(name, layer.cells[0], x, tuple(t[0] for t in tup(state)),
                                               options, training=training)
    assert_close(out, want_out)
    for a, b in zip(tup(new), want_state):
        assert_close(a[0], b)
    assert gates.keys() == want_gates.keys()
    for k in gates:
        assert_close(gates[k], want_gates[k])
    if options.get("gate_activation") == "hard_sigmoid" and name != "lstm3":
        clipped = torch.cat([g.flatten() for g in gates.values()])
        assert ((clipped == 0) | (clipped == 1)).any(), "hard_sigmoid never clipped: the test is too weak"


@pytest.mark.parametrize("name,config", [(n, c) for n in NAMES for c in ([(1, True), (2, False)] if n in SQUARE
                                                                          else [(2, True)])])
def test_stacked_bidirectional_layer_equals_reference(name, config):
    num_layers, bidirectional = config
    layer = build(name, backend="eager", num_layers=num_layers, bidirectional=bidirectional).eval()
    x = torch.randn(3, 4, layer.input_size, dtype=F64)
    state = random_state(layer, 3)
    out, new, gates = layer(x, state, return_gates=True)
    want_out, want_state, want_gates = ref.layer_forward(layer, x, state)
    D = 2 if bidirectional else 1
    assert out.shape == (3, 4, D * layer.hidden_size)
    assert_close(out, want_out)
    for a, b in zip(tup(new), tup(want_state)):
        assert_close(a, b)
    gates = gates if num_layers > 1 else [gates]
    assert isinstance(gates, list) and len(gates) == num_layers
    for got, want in zip(gates, want_gates):
        assert got.keys() == want.keys()
        for k in got:
            assert_close(got[k], want[k])


def test_fgr_starts_from_zero_gates_then_feeds_the_previous_gates_back():
    fgr, peep = build("fgr", backend="eager").eval(), build("peephole_lstm", backend="eager").eval()
    shared = {k: v for k, v in fgr.state_dict().items() if k in peep.state_dict()}
    assert shared.keys() == peep.state_dict().keys()
    peep.load_state_dict(shared)
    x = torch.randn(2, 2, 3, dtype=F64)
    h0, c0 = random_state(fgr, 2)
    # step 1: the previous gates are zero, so FGR is the peephole LSTM with the same shared parameters
    out1, (h1, c1) = fgr(x[:, :1], (h0, c0))
    want1, (wh1, wc1) = peep(x[:, :1], (h0, c0))
    assert_close(out1, want1)
    assert_close(c1, wc1)
    # step 2 by hand, with the gates of step 1 fed back through the nine matrices R_{to from}
    out2, (h2, c2), g = fgr(x[:, :2], (h0, c0), return_gates=True)
    p, xt, h, c = fgr.cells[0], x[:, 1], h1[0], c1[0]
    i1, f1, o1 = g["i"][:, 0], g["f"][:, 0], g["o"][:, 0]

    def pre(k, cell):
        a = xt @ getattr(p, f"W_{k}").T + h @ getattr(p, f"R_{k}").T + getattr(p, f"b_{k}")
        a = a + getattr(p, f"p_{k}") * cell
        return a + i1 @ getattr(p, f"R_{k}i").T + f1 @ getattr(p, f"R_{k}f").T + o1 @ getattr(p, f"R_{k}o").T

    z = torch.tanh(xt @ p.W_z.T + h @ p.R_z.T + p.b_z)
    i, f = torch.sigmoid(pre("i", c)), torch.sigmoid(pre("f", c))
    c_new = z * i + c * f
    o = torch.sigmoid(pre("o", c_new))
    assert_close(out2[:, 1], torch.tanh(c_new) * o)
    assert_close(c2[0], c_new)
    assert_close(g["i"][:, 1], i)
    assert_close(g["o"][:, 1], o)
    # the gate recurrence matters at step 2 ...
    assert not torch.allclose(out2[:, 1], peep(x[:, :2], (h0, c0))[0][:, 1])
    # ... and a new call starts from zero gates again, whatever state it is given
    assert_close(fgr(x[:, 1:2], (h1, c1))[0], peep(x[:, 1:2], (h1, c1))[0])


# ---- parameter counts -----------------------------------------------------------------------------------------------


def allocated(layer) -> int:
    """What a built layer really allocates: the independent check of every formula."""
    return sum(p.numel() for p in layer.parameters())


@pytest.mark.parametrize("text,m,n,want", [
    ("4(mn + n² + n)", 3, 5, 4 * (15 + 25 + 5)), ("4(mn + n² + n) − 3(mn + n²)", 3, 5, 180 - 3 * 40),
    ("n(m + 2)", 3, 5, 25), ("2mn + 3n² + 3n", 2, 3, 12 + 27 + 9), ("mn + n² + n", 1, 1, 3),
    ("2 × 3m · n - n³", 2, 3, 36 - 27), ("(m + n)(m - n)", 5, 3, 16), ("10n", 0, 7, 70)])
def test_formula_text_reads_as_arithmetic(text, m, n, want):
    assert formula_count(text, m, n) == want


@pytest.mark.parametrize("text", ["?", "", "4(mn + n", "4k", "mn +", "m))", "2 ** n", "n²²"])
def test_unreadable_formula_is_refused(text):
    with pytest.raises(ValueError, match="parameter formula"):
        formula_count(text, 3, 4)


def test_register_refuses_a_cell_without_a_readable_formula():
    class NoFormula(cells.Cell):  # formula "?", the base class's
        pass

    with pytest.raises(ValueError, match=r"'no_formula'.*formula"):
        cells.register("no_formula")(NoFormula)
    assert "no_formula" not in cells.names()


COUNT_CONFIGS = [(1, 100, 1, False), (28, 50, 1, False), (32, 100, 1, False), (128, 128, 1, False), (3, 5, 2, False),
                 (3, 5, 1, True), (3, 5, 3, True), (7, 7, 1, True), (6, 6, 3, False)]


@pytest.mark.parametrize("name", NAMES)
def test_parameter_formula_is_what_a_built_layer_allocates(name):
    """``cls.formula`` (the paper's formula, the one place it is written) against the parameters a built layer really
    allocates: ``count`` for one direction of one layer, ``cells.num_params`` for stacked and bidirectional layers."""
    cls = cells.get(name)
    assert cls.formula != "?" and cls.formula in cells.describe(name)
    for m, n, num_layers, bidirectional in COUNT_CONFIGS:
        if name in SQUARE and (m != n or (bidirectional and num_layers > 1)):
            continue  # these cannot be built (MUT1/2 need every layer's input size = n)
        layer = cells.build(name, m, n, num_layers=num_layers, bidirectional=bidirectional, backend="eager")
        assert cells.num_params(name, m, n, num_layers=num_layers, bidirectional=bidirectional) == allocated(layer), (
            cls.formula, m, n, num_layers, bidirectional)
    for m, n in [(1, 100), (28, 50), (32, 100), (128, 128), (300, 7), (7, 300)]:
        if name not in SQUARE or m == n:
            assert cls.count(m, n) == allocated(cells.build(name, m, n, backend="eager")), (cls.formula, m, n)


PAPER_COUNTS = [  # (cell, m, n, bidirectional, printed count)
    ("lstm", 1, 100, False, 40_800), ("lstm1", 1, 100, False, 40_500), ("lstm2", 1, 100, False, 40_200),
    ("lstm3", 1, 100, False, 10_500),  # Lu & Salem, pixel MNIST
    ("lstm", 28, 50, False, 15_800), ("lstm1", 28, 50, False, 11_600), ("lstm2", 28, 50, False, 11_450),
    ("lstm3", 28, 50, False, 4_100),  # Lu & Salem, row MNIST
    ("lstm", 128, 128, False, 131_584), ("lstm1", 128, 128, False, 82_432), ("lstm2", 128, 128, False, 82_048),
    ("lstm3", 128, 128, False, 33_280),  # Lu & Salem, IMDB
    ("lstm", 32, 100, False, 53_200), ("lstm6", 32, 100, False, 13_300), ("lstm_c6", 32, 100, False, 3_400),
    ("lstm", 128, 128, True, 263_168), ("lstm6", 128, 128, True, 65_792), ("lstm_c6", 128, 128, True, 33_280),
]


@pytest.mark.parametrize("name,m,n,bidirectional,printed", PAPER_COUNTS)
def test_parameter_count_matches_the_papers_tables(name, m, n, bidirectional, printed):
    assert (2 if bidirectional else 1) * cells.get(name).count(m, n) == printed  # the cell's formula
    assert cells.num_params(name, m, n, bidirectional=bidirectional) == printed
    assert allocated(cells.build(name, m, n, bidirectional=bidirectional, backend="eager")) == printed


# ---- gradients ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,backend", [(n, "eager") for n in NAMES] + [(n, "cudnn") for n in FUSED])
def test_every_parameter_gets_a_finite_nonzero_gradient(name, backend):
    num_layers, bidirectional = deepest(name)
    layer = build(name, backend=backend, num_layers=num_layers, bidirectional=bidirectional, dtype=F32).train()
    x = torch.randn(3, 6, layer.input_size)
    out, state = layer(x, lengths=torch.tensor([6, 3, 5]))
    loss = (out * torch.randn_like(out)).sum() + sum(s.sum() for s in tup(state))
    loss.backward()
    assert torch.isfinite(out).all()
    for pname, p in layer.named_parameters():
        assert p.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{pname}: non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{pname}: gradient identically zero"


# ---- backends: every exact backend equals eager ----------------------------------------------------------------------

PARITY_CONFIGS = {"plain": dict(num_layers=1, bidirectional=False, lengths=None, state=False),
                  "stacked": dict(num_layers=2, bidirectional=True, lengths=[5, 2, 4], state=True)}


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("dtype", [F32, F64], ids=["f32", "f64"])
@pytest.mark.parametrize("config", list(PARITY_CONFIGS))
@pytest.mark.parametrize("name", FUSED)
def test_cudnn_equals_eager(name, config, dtype, training):
    cfg = PARITY_CONFIGS[config]
    eager = build(name, backend="eager", dtype=dtype, num_layers=cfg["num_layers"],
                  bidirectional=cfg["bidirectional"]).train(training)
    fused = twin(eager, "cudnn")
    x = torch.randn(3, 5, eager.input_size, dtype=dtype)
    lengths = None if cfg["lengths"] is None else torch.tensor(cfg["lengths"])
    if lengths is not None:
        x = garbage(x, lengths)
    state = random_state(eager, 3) if cfg["state"] else None
    tol = TOL32 if dtype == F32 else {}
    assert_same(forward_backward(fused, x, state, lengths), forward_backward(eager, x, state, lengths), **tol)


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("dtype", [F32, F64], ids=["f32", "f64"])
@pytest.mark.parametrize("name", FUSED)
def test_one_step_calls_equal_eager(name, dtype, training, monkeypatch):
    """The fused backend's one-step path (``backends.fused_step``: torch.lstm_cell / rnn_tanh_cell, what a decoder
    runs at T = 1) equals the eager loop: stacked, with dropout between the layers and DropConnect in training."""
    eager = build(name, backend="eager", dtype=dtype, num_layers=2, dropout=0.3, weight_drop=0.25).train(training)
    fused = twin(eager, "cudnn")
    x, state = torch.randn(3, 4, eager.input_size, dtype=dtype), random_state(eager, 3)
    calls, real = [], backends.fused_step
    monkeypatch.setattr(backends, "fused_step", lambda *a: calls.append(1) or real(*a))
    tol = TOL32 if dtype == F32 else {}
    assert_same(forward_backward(fused, x, state, steps=True), forward_backward(eager, x, state, steps=True),
                **tol)
    assert len(calls) == 4 * 2  # every step of both layers took the one-step path
    with torch.no_grad():  # no gradients (search): torch.lstm_cell / rnn_tanh_cell, not the held weights' _Step
        torch.manual_seed(0)
        w, s_f, s_e = fused.weights(), state, state
        torch.manual_seed(0)
        w_e = eager.weights()  # the same DropConnect masks
        assert all(fz.pieces is None for *_, fz in w)
        for t in range(4):
            torch.manual_seed(t)
            out_f, s_f = fused(x[:, t:t + 1], s_f, weights=w)
            torch.manual_seed(t)
            out_e, s_e = eager(x[:, t:t + 1], s_e, weights=w_e)
            torch.testing.assert_close(out_f, out_e, **tol)


def compiled_config(name):
    """The one configuration the (slow to compile) ``compiled`` backend is tested in, per cell."""
    num_layers, bidirectional = deepest(name)
    return dict(num_layers=num_layers, bidirectional=bidirectional, weight_drop=0.25)


@pytest.mark.parametrize("name", NAMES)
def test_compiled_equals_eager(name, monkeypatch):
    """B=3, T=5, stacked and bidirectional, lengths with NaN padding, a random initial state, training mode (G2 noise,
    DropConnect): outputs, state and every gradient equal eager's, and the steps really ran compiled (new graphs,
    no silent fallback to eager at dynamo's recompile limit). One step per graph call here (compiles in a third of
    the default's time); the default of 2 with T padded to whole chunks: the next test."""
    assert "compiled" in cells.get(name).exact_backends()
    monkeypatch.setattr(backends, "STEPS", 1)
    eager = build(name, backend="eager", dtype=F32, **compiled_config(name)).train()
    comp = twin(eager, "compiled")
    lengths = torch.tensor([5, 2, 4])
    x = garbage(torch.randn(3, 5, eager.input_size), lengths)
    state = random_state(eager, 3)
    graphs = counters["stats"]["unique_graphs"]
    with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):
        got = forward_backward(comp, x, state, lengths)
    assert counters["stats"]["unique_graphs"] > graphs, "the compiled backend compiled nothing"
    assert_same(got, forward_backward(eager, x, state, lengths), **TOL32)


def test_compiled_compiles_once_per_cell_whatever_t_b_layers_and_mode():
    """One forward graph and one backward graph per cell: every layer and direction, every T and batch size, with
    and without lengths, in training and evaluation and with DropConnect reuse them (no recompiles within a table).
    At the default steps per graph call (2): odd T is padded with steps that leave the state alone."""
    assert backends.STEPS == 2
    eager = build("lstm_c6", backend="eager", dtype=F32, num_layers=2, bidirectional=True, weight_drop=0.25)
    comp = twin(eager, "compiled")
    forward_backward(comp, torch.randn(3, 4, eager.input_size))  # the first call compiles (or finds the disk cache)
    graphs = counters["stats"]["unique_graphs"]
    for B, T, lengths, train in [(3, 5, torch.tensor([5, 1, 3]), True), (7, 2, None, True), (2, 9, None, False),
                                 (5, 1, torch.tensor([1, 1, 1, 1, 1]), False)]:
        comp.train(train), eager.train(train)
        x = torch.randn(B, T, eager.input_size)
        state = random_state(eager, B)
        assert_same(forward_backward(comp, x, state, lengths), forward_backward(eager, x, state, lengths), **TOL32)
    assert counters["stats"]["unique_graphs"] == graphs, "a new T, B, mode or lengths compiled again"


def test_compiled_runs_the_right_graph_when_cells_and_options_alternate():
    """Guards are skipped after a loop's first call: with several graphs cached for the one step function (other
    cells, another option value, another hidden size, activation), each loop must still run its own."""
    layers = [build("lstm_c6", backend="eager", dtype=F32, forget=0.3), build("lstm_c6", backend="eager", dtype=F32),
              build("lstm_c6", 4, 9, backend="eager", dtype=F32), build("lstm_c6", backend="eager", dtype=F32,
                                                                       activation="relu"),
              build("gru", backend="eager", dtype=F32)]
    twins = [twin(layer, "compiled") for layer in layers]
    for _ in range(2):
        for eager, comp in zip(layers, twins):
            x = torch.randn(3, 5, eager.input_size)
            assert_same(forward_backward(comp, x), forward_backward(eager, x), **TOL32)


@pytest.mark.parametrize("backend,compile_ok", [("auto", True), ("auto", False), ("eager", True), ("compiled", True),
                                                ("cudnn", True)], ids=["auto", "auto-no-compiler", "eager", "compiled",
                                                                       "cudnn"])
@pytest.mark.parametrize("name", NAMES)
def test_backend_dispatch(name, backend, compile_ok, monkeypatch):
    """auto = cudnn where the cell has an exact fused form, else compiled (where a compiler exists), else eager;
    return_gates always runs the eager loop. Spies replace the backends, nothing is compiled here."""
    if backend == "cudnn" and name not in FUSED:
        with pytest.raises(ValueError, match="cudnn"):
            build(name, backend=backend)
        return
    calls = []
    real_fused = backends.fused

    def spy_fused(*a, **k):
        calls.append("cudnn")
        return real_fused(*a, **k)

    def spy_compiled(cell, x, state, valid, W, b, R):
        calls.append("compiled")
        return backends.eager(cell, x, state, valid, W, b, R)

    monkeypatch.setattr(backends, "fused", spy_fused)
    monkeypatch.setattr(backends, "compiled", spy_compiled)
    monkeypatch.setattr(backends, "compile_available", lambda: compile_ok)
    layer = build(name, backend=backend).train()  # training: G2's noise columns go through every backend too
    x = torch.randn(2, 3, layer.input_size, dtype=F64)
    torch.manual_seed(5)
    out, _ = layer(x)
    want = {"eager": [], "compiled": ["compiled"], "cudnn": ["cudnn"],
            "auto": ["cudnn"] if name in FUSED else (["compiled"] if compile_ok else [])}[backend]
    assert calls == want
    calls.clear()
    torch.manual_seed(5)
    out_g, _, _ = layer(x, return_gates=True)
    assert calls == []
    assert_close(out_g, out)


# ---- gates ---------------------------------------------------------------------------------------------------------


def gates_of(name, T=4, B=3, **kw):
    layer = build(name, backend="eager", **kw).eval()
    x = torch.randn(B, T, layer.input_size, dtype=F64)
    return layer(x, random_state(layer, B), return_gates=True)[2]


def test_lstm3_gates_are_constant_over_time_and_batch():
    gates = gates_of("lstm3")
    assert set(gates) == {"i", "f", "o"}
    for g in gates.values():
        assert_close(g, g[:1, :1].expand_as(g), **EXACT)


def test_cifg_forget_gate_is_one_minus_input_gate():
    gates = gates_of("cifg")
    assert_close(gates["f"], 1.0 - gates["i"])


@pytest.mark.parametrize("name,absent", [("lstm_f", "f"), ("lstm_i", "i"), ("lstm_o", "o"), ("nig", "i"),
                                         ("nfg", "f"), ("nog", "o"), ("lstm6", "ifo"), ("lstm_c6", "ifo"),
                                         ("tanh_rnn", "ifo")])
def test_removed_gates_are_absent(name, absent):
    gates = gates_of(name)
    assert not set(absent) & set(gates)
    assert set(gates) == set(ref.get(name).gates)


@pytest.mark.parametrize("name", NAMES)
def test_gate_shapes(name):
    n, B, T = 4, 3, 5
    for g in gates_of(name, T, B).values():
        assert g.shape == (B, T, n)
    for g in gates_of(name, T, B, bidirectional=True).values():
        assert g.shape == (B, T, 2 * n)
    num_layers = 2
    stacked = gates_of(name, T, B, num_layers=num_layers, bidirectional=name not in SQUARE)
    assert isinstance(stacked, list) and len(stacked) == num_layers
    D = 1 if name in SQUARE else 2
    for layer_gates in stacked:
        assert set(layer_gates) == set(ref.get(name).gates)
        for g in layer_gates.values():
            assert g.shape == (B, T, D * n)


# ---- padding -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,backend", [(n, "eager") for n in NAMES] + [(n, "cudnn") for n in FUSED])
def test_garbage_in_padding_changes_nothing(name, backend):
    num_layers, bidirectional = deepest(name)
    layer = build(name, backend=backend, num_layers=num_layers, bidirectional=bidirectional).eval()
    lengths = torch.tensor([6, 2, 4, 1])
    x = torch.randn(4, 6, layer.input_size, dtype=F64)
    state = random_state(layer, 4)
    clean = forward_backward(layer, zero_padding(x, lengths), state, lengths)
    dirty = forward_backward(layer, garbage(x, lengths), state, lengths)
    assert_same(dirty, clean, **EXACT)
    pad = torch.arange(6)[None, :] >= lengths[:, None]  # (B, T) padded steps
    assert (dirty["out"][pad] == 0).all(), "outputs at padded steps must be zero"
    assert (dirty["grad x"][pad] == 0).all(), "padded inputs must get a zero gradient"
    for k, v in dirty.items():
        assert torch.isfinite(v).all(), k


@pytest.mark.parametrize("name,backend", [(n, "eager") for n in NAMES] + [(n, "cudnn") for n in FUSED])
def test_lengths_equal_running_each_sequence_alone(name, backend):
    """Each padded sequence (both directions, every layer) equals the same sequence run alone without lengths: the
    backward direction starts at the sequence's own last step."""
    num_layers, bidirectional = deepest(name)
    layer = build(name, backend=backend, num_layers=num_layers, bidirectional=bidirectional).eval()
    lengths = torch.tensor([5, 2, 4, 1])
    x = garbage(torch.randn(4, 5, layer.input_size, dtype=F64), lengths)
    state = random_state(layer, 4)
    out, new = layer(x, state, lengths)
    gates = layer(x, state, lengths, return_gates=True)[2]
    gates = gates if isinstance(gates, list) else [gates]
    for b, L in enumerate(lengths.tolist()):
        alone = untup(layer, [s[:, b:b + 1] for s in tup(state)])
        out_b, new_b = layer(x[b:b + 1, :L], alone)
        assert_close(out[b:b + 1, :L], out_b, msg=lambda m: f"sample {b}: {m}")
        assert (out[b, L:] == 0).all()
        for s, s_b in zip(tup(new), tup(new_b)):
            assert_close(s[:, b:b + 1], s_b)
        gates_b = layer(x[b:b + 1, :L], alone, return_gates=True)[2]
        for g, g_b in zip(gates, gates_b if isinstance(gates_b, list) else [gates_b]):
            for k in g:
                assert_close(g[k][b:b + 1, :L], g_b[k], msg=lambda m, k=k: f"gate {k} of sample {b}: {m}")


# ---- from_torch ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["eager", "cudnn"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["time-first", "batch-first"])
@pytest.mark.parametrize("num_layers,bidirectional", [(1, False), (2, False), (1, True), (2, True)])
def test_from_torch_equals_nn_lstm(num_layers, bidirectional, batch_first, backend):
    m, n, B, T = 3, 5, 3, 4
    src = nn.LSTM(m, n, num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first).double()
    layer = cells.from_torch(src, backend=backend)
    assert layer.cell_name == "lstm" and layer.backend == backend
    assert sum(p.numel() for p in layer.parameters()) == sum(
        p.numel() for k, p in src.named_parameters() if not k.startswith("bias_hh"))
    x = torch.randn(B, T, m, dtype=F64)
    h0, c0 = random_state(layer, B)
    got = forward_backward(layer, x, (h0, c0))
    # nn.LSTM on the same data in its own layout, with the same loss
    xs = (x if batch_first else x.transpose(0, 1)).clone().requires_grad_(True)
    hs, cs = h0.clone().requires_grad_(True), c0.clone().requires_grad_(True)
    out, (h, c) = src(xs, (hs, cs))
    out = out if batch_first else out.transpose(0, 1)
    gen = torch.Generator().manual_seed(1234)
    loss = sum((t * torch.randn(t.shape, generator=gen, dtype=F64)).sum() for t in (out, h, c))
    loss.backward()
    assert_close(got["out"], out.detach())
    assert_close(got["state[0]"], h.detach())
    assert_close(got["state[1]"], c.detach())
    assert_close(got["grad x"], xs.grad if batch_first else xs.grad.transpose(0, 1))
    assert_close(got["grad state[0]"], hs.grad)
    assert_close(got["grad state[1]"], cs.grad)
    D = 2 if bidirectional else 1
    for k in range(num_layers * D):
        sfx = f"_l{k // D}" + ("_reverse" if k % D else "")
        for j, gate in enumerate("ifgo"):  # nn.LSTM's rows: i, f, g, o
            rows = slice(j * n, (j + 1) * n)
            assert_close(got[f"grad cells.{k}.W_{gate}"], getattr(src, "weight_ih" + sfx).grad[rows])
            assert_close(got[f"grad cells.{k}.U_{gate}"], getattr(src, "weight_hh" + sfx).grad[rows])
            assert_close(got[f"grad cells.{k}.b_{gate}"], getattr(src, "bias_ih" + sfx).grad[rows])
            assert_close(got[f"grad cells.{k}.b_{gate}"], getattr(src, "bias_hh" + sfx).grad[rows])


def test_from_torch_float32_and_rejects_what_has_no_counterpart():
    src = nn.LSTM(3, 4, batch_first=True)
    layer = cells.from_torch(src, backend="cudnn")
    assert next(layer.parameters()).dtype == F32
    x = torch.randn(2, 5, 3)
    assert_close(layer(x)[0], src(x)[0], **TOL32)
    with pytest.raises(TypeError, match="nn.LSTM"):
        cells.from_torch(nn.GRU(3, 4))
    with pytest.raises(ValueError, match="proj_size"):
        cells.from_torch(nn.LSTM(3, 4, proj_size=2))
    with pytest.raises(ValueError, match="bias"):
        cells.from_torch(nn.LSTM(3, 4, bias=False))


# ---- G2-LSTM and the sharpened sigmoid ------------------------------------------------------------------------------


def test_g2_training_noise_is_seeded_and_evaluation_is_the_standard_lstm():
    g2 = build("g2_lstm", backend="eager")
    x = torch.randn(4, 6, 3, dtype=F64)

    def train_out(seed):
        torch.manual_seed(seed)
        return g2.train()(x)[0]

    assert_close(train_out(1), train_out(1), **EXACT)
    assert not torch.allclose(train_out(1), train_out(2))
    ev = g2.eval()(x)[0]
    assert not torch.allclose(train_out(1), ev)
    assert_close(g2.eval()(x)[0], ev, **EXACT)  # evaluation is deterministic
    lstm = build("lstm", backend="eager").eval()
    lstm.load_state_dict(g2.state_dict())  # same parameter names W_i, U_i, b_i, ...
    assert_close(ev, lstm(x)[0])


def test_g2_noise_is_drawn_identically_on_eager_and_cudnn():
    eager = build("g2_lstm", backend="eager", dtype=F32, num_layers=2, bidirectional=True).train()
    fused = twin(eager, "cudnn")
    x = torch.randn(3, 5, 3)
    for seed in (0, 7):
        torch.manual_seed(seed)
        want = eager(x)[0]
        torch.manual_seed(seed)
        assert_close(fused(x)[0], want, **TOL32)


@pytest.mark.parametrize("backend", ["eager", "cudnn"])
def test_g2_without_noise_prob_is_the_standard_lstm_in_training_too(backend):
    """The authors' GumbelNoise returns its input unchanged at p = 0 (no noise, no 1/τ): noise_prob=0 trains as the
    standard LSTM with the same weights; with noise it does not."""
    torch.manual_seed(0)
    g2 = build("g2_lstm", backend=backend, noise_prob=0.0, tau=0.3).double().train()
    lstm = build("lstm", backend=backend).double().train()
    lstm.load_state_dict(g2.state_dict())
    x = torch.randn(3, 4, 3, dtype=F64)
    assert_close(g2(x)[0], lstm(x)[0], rtol=0, atol=1e-12)
    g2.cells[0].noise_prob = 0.2
    assert not torch.allclose(g2(x)[0], lstm(x)[0])


def _pinned_gates(name, alpha=0.3, n=8, B=128, T=20, **options):
    """Gates of a layer whose weights are zero and whose i, f, o biases are α, -α, 0.7: any spread is noise."""
    layer = build(name, 3, n, backend="eager", **options)
    with torch.no_grad():
        for p in layer.parameters():
            p.zero_()
        cell = layer.cells[0]
        cell.b_i.fill_(alpha)
        cell.b_f.fill_(-alpha)
        cell.b_o.fill_(0.7)
    x = torch.randn(B, T, 3, dtype=F64)
    return layer, lambda: layer(x, return_gates=True)[2]


@pytest.mark.parametrize("noise_prob", [0.2, 0.5, 1.0])
def test_g2_gumbel_noise_statistics(noise_prob):
    """Training: i = σ((α + m ⊙ ε) / τ), m ~ Bernoulli(noise_prob), ε logistic, fresh per element and step; the output
    gate never noisy. Evaluation: plain σ(α)."""
    tau, alpha = 0.9, 0.3
    layer, gates = _pinned_gates("g2_lstm", alpha, tau=tau, noise_prob=noise_prob)
    g = gates()
    assert_close(g["o"], torch.full_like(g["o"], 1 / (1 + math.exp(-0.7))))
    for k, a in (("i", alpha), ("f", -alpha)):
        eps = tau * torch.logit(g[k]) - a  # m ⊙ ε, recovered
        perturbed = eps.abs() > 1e-9
        assert abs(perturbed.double().mean().item() - noise_prob) < 0.03, k
        e = eps[perturbed]
        assert abs(e.mean().item()) < 0.1, k  # logistic noise: mean 0, variance π²/3
        assert abs(e.var().item() - math.pi ** 2 / 3) < 0.5, k
        if noise_prob < 1:
            assert not torch.equal(perturbed[:, 0], perturbed[:, 1])  # a fresh mask per step
        assert not torch.allclose(eps[:, 0], eps[:, 1])  # fresh noise per step
    layer.eval()
    g = gates()
    assert_close(g["i"], torch.full_like(g["i"], 1 / (1 + math.exp(-alpha))))  # no noise and no τ
    assert_close(g["f"], torch.full_like(g["f"], 1 / (1 + math.exp(alpha))))


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_sharpened_sigmoid_divides_by_tau_in_both_modes(training):
    alpha = 0.3
    layer, gates = _pinned_gates("sharpened_lstm", alpha)
    layer.train(training)
    g = gates()
    assert_close(g["i"], torch.full_like(g["i"], 1 / (1 + math.exp(-alpha / 0.2))))
    assert_close(g["f"], torch.full_like(g["f"], 1 / (1 + math.exp(alpha / 0.2))))
    assert_close(g["o"], torch.full_like(g["o"], 1 / (1 + math.exp(-0.7))))  # o is not sharpened


# ---- DropConnect (weight_drop) ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_weight_drop_acts_in_training_only(name):
    layer = build(name, backend="eager", weight_drop=0.5)
    plain = twin(layer, "eager", weight_drop=0.0)
    x = torch.randn(3, 4, layer.input_size, dtype=F64)
    state = random_state(layer, 3)
    for model in (layer, plain):
        model.train()
    torch.manual_seed(3)
    dropped = layer(x, state)[0]
    torch.manual_seed(3)
    assert not torch.allclose(dropped, plain(x, state)[0]), "weight_drop changed nothing in training"
    layer.eval(), plain.eval()
    assert_close(layer(x, state)[0], plain(x, state)[0], **EXACT)
    plain.weight_drop = 0.5  # as an attribute after build
    plain.train(), layer.train()
    torch.manual_seed(3)
    want = layer(x, state)[0]
    torch.manual_seed(3)
    assert_close(plain(x, state)[0], want, **EXACT)


@pytest.mark.parametrize("name", ["lstm", "g2_lstm", "tanh_rnn"])
def test_seed_then_build_then_run_gives_the_same_result_on_eager_and_cudnn(name):
    """torch.manual_seed; build; forward: the backend must not change what the seed produces (G2 noise and the
    DropConnect masks of the forward), so building a layer must not draw from the global RNG after the init."""
    x = torch.randn(3, 5, sizes(name)[0])
    outs = {}
    for backend in ("eager", "cudnn"):
        torch.manual_seed(0)
        layer = cells.build(name, *sizes(name), backend=backend, weight_drop=0.5).train()
        outs[backend] = layer(x)[0]
    assert_close(outs["cudnn"], outs["eager"], **TOL32)


@pytest.mark.parametrize("name", FUSED)
def test_weight_drop_same_seed_same_result_on_eager_and_cudnn(name):
    eager = build(name, backend="eager", dtype=F32, num_layers=2, bidirectional=True, weight_drop=0.5).train()
    fused = twin(eager, "cudnn")
    lengths = torch.tensor([5, 3, 4])
    x = garbage(torch.randn(3, 5, eager.input_size), lengths)
    state = random_state(eager, 3)
    assert_same(forward_backward(fused, x, state, lengths, seed=11),
                forward_backward(eager, x, state, lengths, seed=11), **TOL32)


def test_weight_drop_is_one_mask_per_call_on_recurrent_matrices_only():
    """Recover the effective matrices of an LSTM's gates at every step from the returned gates (least squares on
    logit(gate) = W x_t + U h_{t-1} + b): U is masked with ONE mask for all steps (entries 0 or U / (1 - p)), a new mask
    each call, W and b never; evaluation uses U itself."""
    m, n, B, T, p = 3, 4, 48, 4, 0.5
    layer = build("lstm", m, n, backend="eager", weight_drop=p).train()
    cell = layer.cells[0]
    x = torch.randn(B, T, m, dtype=F64)
    h0, c0 = random_state(layer, B)

    def effective():
        out, _, gates = layer(x, (h0, c0), return_gates=True)
        h_prev = torch.cat([h0[0][:, None], out[:, :-1]], 1)
        res = {}
        for k in "ifo":
            res[k] = []
            for t in range(T):
                A = torch.cat([x[:, t], h_prev[:, t], torch.ones(B, 1, dtype=F64)], 1)  # (B, m + n + 1)
                sol = torch.linalg.lstsq(A, torch.logit(gates[k][:, t])).solution  # (m + n + 1, n)
                res[k].append((sol[:m].T, sol[m:m + n].T, sol[-1]))
        return res

    first, second = effective(), effective()
    masks = []
    for k in "ifo":
        W, U, b = getattr(cell, f"W_{k}"), getattr(cell, f"U_{k}"), getattr(cell, f"b_{k}")
        U0 = first[k][0][1]
        for W_t, U_t, b_t in first[k]:
            assert_close(W_t, W.detach())  # input weights and biases are never dropped
            assert_close(b_t, b.detach())
            assert_close(U_t, U0, atol=1e-7, rtol=1e-6)  # the same mask at every step
        kept = U0.abs() > 1e-6
        assert_close(U0[kept], U.detach()[kept] / (1 - p))
        masks.append((kept, second[k][0][1].abs() > 1e-6))
    kept_all = torch.stack([a for a, _ in masks])
    assert kept_all.any() and not kept_all.all()
    assert any(not torch.equal(a, b) for a, b in masks), "the same mask on two calls"
    layer.eval()
    for k in "ifo":
        assert_close(effective()[k][1][1], getattr(cell, f"U_{k}").detach())


def test_dropout_between_layers_only_in_training():
    one = build("lstm", backend="eager", dropout=0.5).train()  # no layer above: nothing to drop
    x = torch.randn(3, 4, 3, dtype=F64)
    assert_close(one(x)[0], one.eval()(x)[0], **EXACT)
    two = build("lstm", backend="eager", num_layers=2, dropout=0.5)
    assert not torch.allclose(two.train()(x)[0], two.eval()(x)[0])
    assert_close(two(x)[0], two(x)[0], **EXACT)


# ---- errors ---------------------------------------------------------------------------------------------------------


def _message(fn, exc=ValueError):
    with pytest.raises(exc) as info:
        fn()
    return str(info.value)


def _lists(msg, items):
    for item in items:
        assert re.search(rf"(?<![\w]){re.escape(item)}(?![\w])", msg), f"{item!r} not listed in: {msg}"


def test_unknown_cell_lists_the_valid_names_and_suggests_the_closest():
    for fn in (lambda: cells.build("lstn1", 3, 4), lambda: cells.get("lstn1"), lambda: cells.describe("lstn1")):
        msg = _message(fn)
        assert "lstn1" in msg
        assert re.search(r"did you mean\W+lstm1\W", msg, re.I), msg
        _lists(msg, NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_unknown_option_lists_the_valid_options(name):
    msg = _message(lambda: build(name, colour="red"))
    assert "colour" in msg
    _lists(msg, COMMON_OPTIONS + list(cells.get(name).options))


@pytest.mark.parametrize("key,valid", [("activation", ["tanh", "sigmoid", "relu", "identity"]),
                                       ("gate_activation", ["sigmoid", "hard_sigmoid"]),
                                       ("init", ["torch", "keras", "glorot", "uniform"]),
                                       ("backend", ["auto", "eager", "compiled", "cudnn"])])
def test_unknown_choice_lists_the_valid_ones(key, valid):
    msg = _message(lambda: cells.build("lstm", 3, 4, **{key: "bogus"}))
    assert key in msg and "bogus" in msg
    _lists(msg, valid)


@pytest.mark.parametrize("name", ["lstm6", "lstm_c6"])
@pytest.mark.parametrize("forget", [1.0, -1.0, 1.5, -3.0])
def test_constant_forget_gate_must_lie_in_open_unit_interval(name, forget):
    msg = _message(lambda: cells.build(name, 3, 4, forget=forget))
    assert "forget" in msg and "(-1, 1)" in msg and str(forget) in msg


@pytest.mark.parametrize("name", SQUARE)
def test_mut1_mut2_need_input_size_equal_hidden_size(name):
    msg = _message(lambda: cells.build(name, 3, 4))
    assert name in msg and "input_size == hidden_size" in msg
    cells.build(name, 4, 4)
    cells.build("mut3", 3, 4)  # MUT3 has no such restriction


@pytest.mark.parametrize("name", ["lstm", "gru", "lstm_c6"])
def test_wrong_input_and_state_shapes(name):
    layer = cells.build(name, 3, 4, num_layers=2, backend="eager")
    msg = _message(lambda: layer(torch.randn(2, 3)))
    assert "(batch, time, 3)" in msg and "(2, 3)" in msg
    msg = _message(lambda: layer(torch.randn(2, 5, 4)))
    assert "(batch, time, 3)" in msg and "(2, 5, 4)" in msg
    x = torch.randn(2, 5, 3)
    good = torch.zeros(2, 2, 4)
    for bad in (torch.zeros(1, 2, 4), torch.zeros(2, 3, 4), torch.zeros(2, 2, 5)):
        msg = _message(lambda: layer(x, (bad, good) if layer.has_cell_state else bad))
        assert "(2, 2, 4)" in msg and str(tuple(bad.shape)) in msg
    if layer.has_cell_state:
        msg = _message(lambda: layer(x, good))  # h alone for a cell that needs (h, c)
        assert "(h, c)" in msg
    else:
        msg = _message(lambda: layer(x, (good, good)))  # a tuple for a cell whose state is h alone
        assert "(2, 2, 4)" in msg


@pytest.mark.parametrize("backend", ["eager", "cudnn"])
def test_lengths_out_of_range(backend):
    layer = cells.build("lstm", 3, 4, backend=backend)
    x = torch.randn(2, 5, 3)
    for bad in ([0, 5], [6, 1], [3, -1], [5, 5, 5], [[5, 3]]):
        msg = _message(lambda: layer(x, lengths=torch.tensor(bad)))
        assert "lengths" in msg and "[1, 5]" in msg
    layer(x, lengths=[5, 1])  # a list of ints is fine


@pytest.mark.parametrize("backend", ["eager", "cudnn"])
def test_fractional_lengths_are_refused(backend):
    """A length of 4.5 is no length: eager reads it as 5 steps (t < 4.5), the packed cudnn path as 4 (int cast), so
    accepting it gives backend-dependent results."""
    layer = cells.build("lstm", 3, 4, backend=backend)
    msg = _message(lambda: layer(torch.randn(2, 5, 3), lengths=torch.tensor([4.5, 3.0])))
    assert "lengths" in msg


def test_invalid_sizes_rates_and_cell_options():
    for kw, word in ((dict(num_layers=0), "num_layers"), (dict(dropout=1.0), "dropout"),
                     (dict(weight_drop=-0.1), "weight_drop"), (dict(weight_drop=1.0), "weight_drop")):
        assert word in _message(lambda: cells.build("lstm", 3, 4, **kw))
    assert "hidden_size" in _message(lambda: cells.build("lstm", 3, 0))
    assert "input_size" in _message(lambda: cells.build("lstm", 0, 4))
    for name in ("g2_lstm", "sharpened_lstm"):
        assert "tau" in _message(lambda: cells.build(name, 3, 4, tau=0.0))
    for p in (-0.1, 1.5):
        assert "noise_prob" in _message(lambda: cells.build("g2_lstm", 3, 4, noise_prob=p))
    # init_scale means something only for Jozefowicz's uniform init; silently ignoring it would hide a typo
    assert "init_scale" in _message(lambda: cells.build("lstm", 3, 4, init="keras", init_scale=0.5))
    assert "stacked bidirectional" in _message(lambda: cells.build("mut1", 4, 4, num_layers=2, bidirectional=True))


@pytest.mark.parametrize("name,options", [(n, {}) for n in NAMES if n not in FUSED]
                         + [("lstm6", {"activation": "sigmoid"}), ("lstm6", {"forget": -0.5}),
                            ("lstm", {"gate_activation": "hard_sigmoid"}), ("lstm1", {"activation": "relu"}),
                            ("tanh_rnn", {"activation": "sigmoid"})])
def test_cudnn_without_a_fused_form_is_refused(name, options):
    msg = _message(lambda: cells.build(name, *sizes(name), backend="cudnn", **options))
    assert "cudnn" in msg and "compiled" in msg and name in msg


@pytest.mark.parametrize("name", NAMES)
def test_forget_bias_fills_b_f_or_is_refused(name):
    has = cells.get(name).forget_bias_ok()
    assert cells.get(name).has_forget_bias == has
    assert hasattr(build(name).cells[0], "b_f") == has  # the flag says what the cell really has
    if not has:
        msg = _message(lambda: build(name, forget_bias=2.0))
        assert "forget_bias" in msg
        return
    layer = build(name, forget_bias=2.0, num_layers=2, bidirectional=name not in SQUARE)
    for cell in layer.cells:
        assert_close(cell.b_f, torch.full_like(cell.b_f, 2.0), **EXACT)


# ---- initialisation -------------------------------------------------------------------------------------------------


def _kind(pname):
    if pname in ("U",) or pname.startswith(("U_", "R_", "W_h")):
        return "recurrent"
    if pname == "W" or pname.startswith("W_"):
        return "input"
    if pname == "b" or pname.startswith("b_"):
        return "bias"
    return "vector"  # peepholes p_*, LSTM_C6's u_c


def initialised(cell):
    """(name, parameter as ``init`` drew it): the diagonal a cell adds afterwards (a graph's Linear(a, x)) taken off."""
    offsets = cell.diagonal_offsets()
    for pname, p in cell.named_parameters():
        p = p.detach().clone()
        if pname.split(".")[-1] in offsets:
            p.diagonal().sub_(offsets[pname.split(".")[-1]])
        yield pname, p


@pytest.mark.parametrize("name", NAMES)
def test_keras_init_orthogonal_recurrence_zero_bias_forget_bias_one(name):
    layer = build(name, 6, 6, init="keras")
    cell = layer.cells[0]
    kinds = {pname: _kind(pname) for pname, _ in cell.named_parameters()}
    for pname, p in initialised(cell):
        if kinds[pname] == "recurrent":
            assert_close(p.T @ p, torch.eye(p.shape[1], dtype=F64), atol=1e-6, rtol=0, msg=pname)
        elif kinds[pname] == "bias":
            assert_close(p, torch.full_like(p, 1.0 if pname == "b_f" else 0.0), **EXACT, msg=pname)
        elif kinds[pname] == "input":  # glorot uniform
            assert p.abs().max() <= math.sqrt(6 / sum(p.shape)) + 1e-12, pname
    assert "recurrent" in kinds.values() or name == "lstm_c6"


@pytest.mark.parametrize("name", NAMES)
def test_glorot_init_is_glorot_uniform_for_recurrent_matrices_too(name):
    """Lu & Salem's MNIST script: glorot-uniform for input AND recurrent weights, zero bias, forget bias one."""
    torch.manual_seed(0)
    cell = build(name, 40, 40, init="glorot").cells[0]
    for pname, p in initialised(cell):
        kind = _kind(pname)
        if kind in ("recurrent", "input") and p.dim() == 2:
            limit = math.sqrt(6 / sum(p.shape))
            assert p.abs().max() <= limit + 1e-12 and p.abs().max() > 0.9 * limit, pname
            if kind == "recurrent":
                assert (p.T @ p - torch.eye(p.shape[1], dtype=F64)).abs().max() > 0.1, f"{pname} is orthogonal"
        elif kind == "bias":
            assert_close(p, torch.full_like(p, 1.0 if pname == "b_f" else 0.0), **EXACT, msg=pname)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("init,scale", [("torch", 1.0), ("uniform", 0.3), ("uniform", 2.8)])
def test_uniform_init_stays_within_scale_over_sqrt_n(name, init, scale):
    n = 16
    layer = build(name, n, n, init=init, init_scale=scale)
    bound = scale / math.sqrt(n)
    biggest = 0.0
    for pname, p in (q for cell in layer.cells for q in initialised(cell)):
        if name == "lstm_b" and pname.endswith("b_f"):
            assert (p == 1.0).all()  # LSTM-b: the forget bias starts at 1 whatever the init
            continue
        assert p.abs().max() <= bound, pname
        biggest = max(biggest, p.abs().max().item())
    assert biggest > 0.9 * bound  # the whole range is used


def test_lstm_b_is_the_lstm_with_forget_bias_one():
    lstm_b, lstm = build("lstm_b", num_layers=2), build("lstm")
    for cell in lstm_b.cells:
        assert (cell.b_f == 1.0).all()
    assert not (lstm.cells[0].b_f == 1.0).all()
    assert_close(build("lstm_b", forget_bias=3.0).cells[0].b_f, torch.full((4,), 3.0, dtype=F64))
    lstm_b_one = build("lstm_b").eval()
    lstm.load_state_dict(lstm_b_one.state_dict())  # the same parameters, the same math
    x = torch.randn(2, 3, 3, dtype=F64)
    assert_close(lstm.eval()(x)[0], lstm_b_one(x)[0], **EXACT)


# ---- describe and the command line --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_describe_has_formula_and_backends(name):
    cls, text = cells.get(name), cells.describe(name)
    assert text.startswith(name)
    assert cls.formula in text
    assert f"{allocated(cells.build(name, 128, 128)):,}" in text
    assert "exact backends: " + ", ".join(cls.exact_backends()) in text
    assert cls.exact_backends()[:2] == ["eager", "compiled"]
    assert ("cudnn" in cls.exact_backends()) == (name in FUSED)


def _cli(*args):
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), COLUMNS="200")
    res = subprocess.run([sys.executable, "-m", "cells", *args], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_cli_lists_every_cell():
    out = _cli()
    for name in NAMES:
        assert re.search(rf"(?<![\w]){name}(?![\w])", out), name
        assert f"{allocated(cells.build(name, 128, 128)):,}" in out
    out = _cli("-m", "28", "-n", "50")
    assert "11,600" in out and "4,100" in out  # LSTM1 and LSTM3 of Lu & Salem, row MNIST
    assert _cli("--describe", "lstm1").strip() == cells.describe("lstm1").strip()


def test_fused_kernel_keeps_what_cudnn_backward_needs(monkeypatch):
    """cuDNN raises "cudnn RNN backward can only be called in training mode" when the kernel's `train` flag is off
    (found on an H100: every cudnn-backend backward failed; the CPU kernel ignores the flag, so record it here): the
    flag must follow autograd, also in eval mode, and be off under no_grad."""
    seen = []
    real = torch.lstm

    def spy(*args):
        seen.append(args[6] if isinstance(args[1], tuple) else args[7])  # train: after dropout, packed or not
        return real(*args)

    monkeypatch.setattr(torch, "lstm", spy)
    layer = cells.build("lstm", 3, 4, backend="cudnn").eval()
    x = torch.randn(2, 5, 3)
    layer(x)
    layer(x, lengths=torch.tensor([5, 3]))  # on a CPU: one call per distinct length (backends._segments)
    n_grad = len(seen)
    with torch.no_grad():
        layer(x)
        layer(x, lengths=torch.tensor([5, 3]))
    assert n_grad == 3 and seen == [True] * 3 + [False] * 3
