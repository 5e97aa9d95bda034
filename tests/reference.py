"""An independent reference for every cell, written from the papers' equations (as docs/cells.md, "Equations and
parameter counts", writes them out), NOT from ``cells/``.

``step(name, cell, x, state, ...)`` is one time step of cell ``name`` read off those equations, using only
the named parameters of ``cell`` (one direction of one layer, e.g. ``layer.cells[0]``) and the options the user
passed (``layer.options``); every default below (forget 0.59, τ = 0.2 / 0.9, tanh, σ) is the papers' (docs/cells.md),
not the package's. It never calls the cell's own ``step``, weights or fused form.

``layer_forward(layer, x, state)`` rolls it over a whole (unpadded) batch-first sequence for a stacked, possibly
bidirectional layer, with nn.LSTM's state layout.

A cell's reference is ONE step function registered by ``@reference(name, cell_state=..., gates=...)``: what the paper
says its state is ((h, c) or h alone) and which gates it exposes. ``REFERENCES`` is then the list of the cells of
docs/cells.md; the tests take every other per-cell fact from the registry (``cells.get(name)``), and fail naming a
registered cell that has no reference step here.

State: ``(h, c)`` for cells with a cell state, ``(h,)`` otherwise. FGR's previous gates are passed as ``prev``
(a dict i, f, o; None = all zero, as at the start of every call).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace

import torch
from torch import Tensor

# ---- activations, written out -----------------------------------------------------------------------------------


def sigmoid(v: Tensor) -> Tensor:
    return 1.0 / (1.0 + torch.exp(-v))


def hard_sigmoid(v: Tensor) -> Tensor:  # Keras 2.0-2.2: clip(0.2 x + 0.5, 0, 1)
    return torch.clamp(0.2 * v + 0.5, 0.0, 1.0)


ACT = {"tanh": torch.tanh, "sigmoid": sigmoid, "relu": lambda v: torch.clamp(v, min=0.0), "identity": lambda v: v}
GATE = {"sigmoid": sigmoid, "hard_sigmoid": hard_sigmoid}

# ---- the reference steps, one per cell, registered by name --------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    step: Callable  # (p, x, h, c, s) -> (new state, gates); s: name, options, act, sig, training, prev, noise
    cell_state: bool  # the layer state is (h, c); else h alone
    gates: tuple[str, ...]  # the gates the cell exposes (docs/cells.md; a removed or constant gate is absent)


class _References(dict):
    """The hand-written reference steps by name, and for a registered graph cell (``cells/graphcell.py``) the slow
    interpreter of its graph below: a registered graph needs no hand-written reference."""

    def __contains__(self, name):
        return dict.__contains__(self, name) or _graph_cell(name) is not None

    def __missing__(self, name):
        cls = _graph_cell(name)
        if cls is None:
            raise KeyError(name)
        return Reference(_graph_step, cls.graph.has_cell_state, ())


REFERENCES: dict[str, Reference] = _References()


def reference(name: str, *, cell_state: bool = True, gates: str = "ifo"):
    """Decorator: the step function below is cell ``name``'s reference (stack one per cell sharing a function)."""

    def wrap(fn):
        if name in REFERENCES:
            raise ValueError(f"two reference steps for cell {name!r}")
        REFERENCES[name] = Reference(fn, cell_state, tuple(gates))
        return fn

    return wrap


def get(name: str) -> Reference:
    """Cell ``name``'s reference; a cell without one raises LookupError naming it."""
    try:
        return REFERENCES[name]
    except KeyError:
        raise LookupError(f"no reference step for cell {name!r}: write one from docs/cells.md in tests/reference.py "
                       f"(@reference({name!r}, cell_state=..., gates=...))") from None


def mv(M: Tensor, v: Tensor) -> Tensor:
    """M v for a batch of row vectors v (B, cols) -> (B, rows)."""
    return v @ M.T


# ---- the standard LSTM and its constrained variants (docs/cells.md: the standard LSTM, Lu & Salem, Jozefowicz, Li) --


def _lstm_update(p, x, h, c, i, f, o, act):
    g = act(mv(p.W_g, x) + mv(p.U_g, h) + p.b_g)
    c_new = f * c + i * g  # c' = f ⊙ c + i ⊙ g
    return act(c_new) * o, c_new  # h' = o ⊙ act(c')


def _standard(p, x, h, c, act, sig, scale_if=1.0, noise=None):
    """i, f, o = σ(W x + U h + b), i and f pre-activations (+ noise) times ``scale_if``."""
    a_i = mv(p.W_i, x) + mv(p.U_i, h) + p.b_i
    a_f = mv(p.W_f, x) + mv(p.U_f, h) + p.b_f
    if noise is not None:
        a_i, a_f = a_i + noise[0], a_f + noise[1]
    i, f = sig(a_i * scale_if), sig(a_f * scale_if)
    o = sig(mv(p.W_o, x) + mv(p.U_o, h) + p.b_o)
    h, c = _lstm_update(p, x, h, c, i, f, o, act)
    return (h, c), {"i": i, "f": f, "o": o}


def _lstm1(p, x, h, c, act, sig):  # no input signal
    i, f, o = sig(mv(p.U_i, h) + p.b_i), sig(mv(p.U_f, h) + p.b_f), sig(mv(p.U_o, h) + p.b_o)
    return _lstm_update(p, x, h, c, i, f, o, act), {"i": i, "f": f, "o": o}


def _lstm2(p, x, h, c, act, sig):  # no input signal, no bias
    i, f, o = sig(mv(p.U_i, h)), sig(mv(p.U_f, h)), sig(mv(p.U_o, h))
    return _lstm_update(p, x, h, c, i, f, o, act), {"i": i, "f": f, "o": o}


def _lstm3(p, x, h, c, act, sig):  # bias only: the same for every sample
    B = x.shape[0]
    i, f, o = (sig(b).expand(B, -1) for b in (p.b_i, p.b_f, p.b_o))
    return _lstm_update(p, x, h, c, i, f, o, act), {"i": i, "f": f, "o": o}


def _lstm_no(p, x, h, c, act, sig, removed):
    """Jozefowicz's LSTM-f / LSTM-i / LSTM-o: the named gate is the constant 1."""
    gates = {}
    for k in "ifo":
        if k != removed:
            gates[k] = sig(mv(getattr(p, f"W_{k}"), x) + mv(getattr(p, f"U_{k}"), h) + getattr(p, f"b_{k}"))
    one = torch.ones_like(h)
    hn, cn = _lstm_update(p, x, h, c, gates.get("i", one), gates.get("f", one), gates.get("o", one), act)
    return (hn, cn), gates


def _lstm6(p, x, h, c, act, forget):  # Akandeh & Salem LSTM_6 (W_c, U_c, b_c are W_g, U_g, b_g in the package)
    c_new = forget * c + act(mv(p.W_g, x) + mv(p.U_g, h) + p.b_g)
    return (act(c_new), c_new), {}


def _lstm_c6(p, x, h, c, act, forget):  # LSTM_C6: u_c is a vector, the recurrence is element-wise
    c_new = forget * c + act(mv(p.W_c, x) + p.u_c * h + p.b_c)
    return (act(c_new), c_new), {}


# ---- Greff et al.: the vanilla peephole LSTM and its variants -----------------------------------------------------


def _greff(p, x, h, c, act, sig, variant, prev=None):
    """Greff et al. 2017, sec. 2 (docs/cells.md): z, i, f from the OLD c, c' = z ⊙ i + c ⊙ f, o peeks at the NEW c'."""
    z = mv(p.W_z, x) + mv(p.R_z, h) + p.b_z
    z = z if variant == "niaf" else act(z)  # NIAF: g = identity

    def pre(k, cell):
        a = mv(getattr(p, f"W_{k}"), x) + mv(getattr(p, f"R_{k}"), h) + getattr(p, f"b_{k}")
        if variant != "np":
            a = a + getattr(p, f"p_{k}") * cell
        if variant == "fgr":  # + R_{k i} i_{t-1} + R_{k f} f_{t-1} + R_{k o} o_{t-1}
            for frm in "ifo":
                g_prev = prev[frm] if prev is not None else torch.zeros_like(h)
                a = a + mv(getattr(p, f"R_{k}{frm}"), g_prev)
        return a

    gates = {}
    if variant != "nig":
        gates["i"] = sig(pre("i", c))
    if variant == "cifg":
        gates["f"] = 1.0 - gates["i"]
    elif variant != "nfg":
        gates["f"] = sig(pre("f", c))
    one = torch.ones_like(h)
    c_new = z * gates.get("i", one) + c * gates.get("f", one)
    if variant != "nog":
        gates["o"] = sig(pre("o", c_new))  # the output gate peeks at c'
    hact = c_new if variant == "noaf" else act(c_new)
    h_new = hact * gates.get("o", one)
    return (h_new, c_new), gates


# ---- Jozefowicz et al.: GRU, MUT1-3, tanh RNN ------------------------------------------------------------------------


def _gru(p, x, h, act, sig):  # reset applied BEFORE the matrix product
    r = sig(mv(p.W_xr, x) + mv(p.W_hr, h) + p.b_r)
    z = sig(mv(p.W_xz, x) + mv(p.W_hz, h) + p.b_z)
    h_tilde = act(mv(p.W_xh, x) + mv(p.W_hh, r * h) + p.b_h)
    return (z * h + (1.0 - z) * h_tilde,), {"r": r, "z": z}


def _mut1(p, x, h, act, sig):
    z = sig(mv(p.W_xz, x) + p.b_z)
    r = sig(mv(p.W_xr, x) + mv(p.W_hr, h) + p.b_r)
    h_new = act(mv(p.W_hh, r * h) + torch.tanh(x) + p.b_h) * z + h * (1.0 - z)
    return (h_new,), {"r": r, "z": z}


def _mut2(p, x, h, act, sig):
    z = sig(mv(p.W_xz, x) + mv(p.W_hz, h) + p.b_z)
    r = sig(x + mv(p.W_hr, h) + p.b_r)
    h_new = act(mv(p.W_hh, r * h) + mv(p.W_xh, x) + p.b_h) * z + h * (1.0 - z)
    return (h_new,), {"r": r, "z": z}


def _mut3(p, x, h, act, sig):
    z = sig(mv(p.W_xz, x) + mv(p.W_hz, torch.tanh(h)) + p.b_z)
    r = sig(mv(p.W_xr, x) + mv(p.W_hr, h) + p.b_r)
    h_new = act(mv(p.W_hh, r * h) + mv(p.W_xh, x) + p.b_h) * z + h * (1.0 - z)
    return (h_new,), {"r": r, "z": z}


def _tanh_rnn(p, x, h, act):
    return (act(mv(p.W, x) + mv(p.U, h) + p.b),), {}


# ---- any graph cell (cells/graph.py): its graph interpreted node by node ---------------------------------------------


def _graph_cell(name):
    import cells

    try:
        cls = cells.get(name)
    except ValueError:
        return None
    return cls if getattr(cls, "graph", None) is not None else None


def _graph_step(p, x, h, c, s):
    """One step of a graph cell read off its graph alone, one node at a time, no stacked matrices: the k-th map of the
    canonical text is W_k e (+ b_k) with W_k = p.W_k reading x, p.U_k otherwise (docs/cells.md, "Cells as graphs")."""
    g, val = p.graph, {}
    for i, v in enumerate(g.nodes):  # canonical graphs list each node after its operands
        e = [val[j] for j in v.args]
        if v.op in ("x", "h", "c"):
            val[i] = {"x": x, "h": h, "c": c}[v.op]
        elif v.op == "one":
            val[i] = torch.ones_like(h)
        elif v.op == "lin":
            W = getattr(p, f"W_{v.k}") if g.nodes[v.args[0]].op == "x" else getattr(p, f"U_{v.k}")
            val[i] = mv(W, e[0]) + (getattr(p, f"b_{v.k}") if v.bias else 0.0)
        elif v.op in ("tanh", "sigmoid", "relu"):
            val[i] = ACT[v.op](e[0])
        else:
            val[i] = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b}[v.op](*e)
    return tuple(val[o] for o in g.outputs), {}


# ---- one registered reference step per cell of docs/cells.md --------------------------------------------------------


@reference("lstm")
@reference("np")  # Greff's NP is exactly the standard LSTM
@reference("lstm_b")  # the standard LSTM's math; only the forget-bias init differs
def _ref_standard(p, x, h, c, s):
    return _standard(p, x, h, c, s.act, s.sig)


@reference("sharpened_lstm")
def _ref_sharpened(p, x, h, c, s):  # σ(α / τ) in training AND evaluation, τ = 0.2
    return _standard(p, x, h, c, s.act, s.sig, scale_if=1.0 / s.options.get("tau", 0.2))


@reference("g2_lstm")
def _ref_g2(p, x, h, c, s):  # evaluation: plain σ(α); training: σ((α + m ⊙ ε) / τ), τ = 0.9
    if not s.training or s.options.get("noise_prob", 0.2) == 0:  # p = 0: the authors' GumbelNoise returns α as is
        return _standard(p, x, h, c, s.act, s.sig)
    if s.noise is None:
        raise ValueError("g2_lstm training is random: pass noise=(eps_i, eps_f) or use noise_prob=0")
    return _standard(p, x, h, c, s.act, s.sig, scale_if=1.0 / s.options.get("tau", 0.9), noise=s.noise)


@reference("lstm1")
def _ref_lstm1(p, x, h, c, s):
    return _lstm1(p, x, h, c, s.act, s.sig)


@reference("lstm2")
def _ref_lstm2(p, x, h, c, s):
    return _lstm2(p, x, h, c, s.act, s.sig)


@reference("lstm3")
def _ref_lstm3(p, x, h, c, s):
    return _lstm3(p, x, h, c, s.act, s.sig)


@reference("lstm_f", gates="io")
@reference("lstm_i", gates="fo")
@reference("lstm_o", gates="if")
def _ref_lstm_no(p, x, h, c, s):
    return _lstm_no(p, x, h, c, s.act, s.sig, removed=s.name[-1])


@reference("lstm6", gates="")
def _ref_lstm6(p, x, h, c, s):
    return _lstm6(p, x, h, c, s.act, s.options.get("forget", 0.59))


@reference("lstm_c6", gates="")
def _ref_lstm_c6(p, x, h, c, s):
    return _lstm_c6(p, x, h, c, s.act, s.options.get("forget", 0.59))


@reference("peephole_lstm")
@reference("niaf")
@reference("noaf")
@reference("cifg")  # CIFG's f = 1 - i is a gate
@reference("fgr")
@reference("nig", gates="fo")
@reference("nfg", gates="io")
@reference("nog", gates="if")
def _ref_greff(p, x, h, c, s):
    return _greff(p, x, h, c, s.act, s.sig, s.name, s.prev)


@reference("gru", cell_state=False, gates="rz")
def _ref_gru(p, x, h, c, s):
    return _gru(p, x, h, s.act, s.sig)


@reference("mut1", cell_state=False, gates="rz")
def _ref_mut1(p, x, h, c, s):
    return _mut1(p, x, h, s.act, s.sig)


@reference("mut2", cell_state=False, gates="rz")
def _ref_mut2(p, x, h, c, s):
    return _mut2(p, x, h, s.act, s.sig)


@reference("mut3", cell_state=False, gates="rz")
def _ref_mut3(p, x, h, c, s):
    return _mut3(p, x, h, s.act, s.sig)


@reference("tanh_rnn", cell_state=False, gates="")
def _ref_tanh_rnn(p, x, h, c, s):
    return _tanh_rnn(p, x, h, s.act)


# ---- dispatch --------------------------------------------------------------------------------------------------------


def step(name: str, cell, x: Tensor, state: tuple, options: dict | None = None, *, training: bool = False,
         prev: dict | None = None, noise: tuple | None = None):
    """One step of cell ``name`` -> (new state tuple, gates dict).

    options: what the user passed to ``cells.build`` (the papers' defaults otherwise, docs/cells.md). training: only
    G2-LSTM reads it; its training step is deterministic only with ``noise_prob=0`` or an explicit ``noise`` =
    (ε_i, ε_f)."""
    r = get(name)
    o = dict(options or {})
    s = SimpleNamespace(name=name, options=o, act=ACT[o.get("activation", "tanh")],
                        sig=GATE[o.get("gate_activation", "sigmoid")], training=training, prev=prev, noise=noise)
    h = state[0]
    c = state[1] if r.cell_state else None
    return r.step(cell, x, h, c, s)


def run(name: str, cell, x: Tensor, state: tuple, options: dict | None = None, *, training: bool = False):
    """Roll ``step`` over x (B, T, m) -> (outputs (B, T, n), final state tuple, gates dict of (B, T, n))."""
    outs, gate_seq, prev = [], [], None
    for t in range(x.shape[1]):
        state, g = step(name, cell, x[:, t], state, options, training=training, prev=prev)
        prev = g  # FGR: the gates of this step feed the next
        outs.append(state[0])
        gate_seq.append(g)
    gates = {k: torch.stack([g[k] for g in gate_seq], 1) for k in gate_seq[0]}
    return torch.stack(outs, 1), state, gates


def layer_forward(layer, x: Tensor, state=None, *, training: bool = False):
    """A whole stacked / bidirectional layer (no lengths, no dropout) by the reference, in nn.LSTM's layout.

    Returns (output, state, gates): state in the layer's format, (h, c) or h, each (L * D, B, n); gates a list (one
    dict per layer, bottom first) of (B, T, D * n) tensors, forward direction first."""
    name, L, D, n = layer.cell_name, layer.num_layers, 2 if layer.bidirectional else 1, layer.hidden_size
    B = x.shape[0]
    has_c = get(name).cell_state
    if state is None:
        z = x.new_zeros(L * D, B, n)
        state = (z, z) if has_c else (z,)
    elif not has_c:
        state = (state,)
    finals, all_gates = [[] for _ in state], []
    for layer_idx in range(L):
        outs, gates = [], []
        for d in range(D):
            k = layer_idx * D + d
            xin = x if d == 0 else x.flip(1)  # the backward direction reads the sequence from its end
            out, s, g = run(name, layer.cells[k], xin, tuple(s_[k] for s_ in state), layer.options, training=training)
            outs.append(out if d == 0 else out.flip(1))
            gates.append(g if d == 0 else {key: v.flip(1) for key, v in g.items()})
            for f, s_ in zip(finals, s):
                f.append(s_)
        x = torch.cat(outs, -1)
        all_gates.append({key: torch.cat([g[key] for g in gates], -1) for key in gates[0]})
    new = tuple(torch.stack(f) for f in finals)
    return x, (new if has_c else new[0]), all_gates
