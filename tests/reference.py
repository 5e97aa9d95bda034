"""An independent reference for every cell, written from /work/shared/CELLS.md, NOT from ``cells/``.

``step(name, cell, x, state, ...)`` is one time step of cell ``name`` read off the equations of CELLS.md, using only
the named parameters of ``cell`` (one direction of one layer, e.g. ``layer.cells[0]``) and the options the user
passed (``layer.options``); every default below (forget 0.59, τ = 0.2 / 0.9, tanh, σ) is CELLS.md's, not the
package's. It never calls the cell's own ``step``, weights or fused form.

``layer_forward(layer, x, state)`` rolls it over a whole (unpadded) batch-first sequence for a stacked, possibly
bidirectional layer, with nn.LSTM's state layout.

State: ``(h, c)`` for cells with a cell state, ``(h,)`` otherwise. FGR's previous gates are passed as ``prev``
(a dict i, f, o; None = all zero, as at the start of every call).
"""
from __future__ import annotations

import torch
from torch import Tensor

# ---- activations, written out -----------------------------------------------------------------------------------


def sigmoid(v: Tensor) -> Tensor:
    return 1.0 / (1.0 + torch.exp(-v))


def hard_sigmoid(v: Tensor) -> Tensor:  # Keras 2.0-2.2: clip(0.2 x + 0.5, 0, 1)
    return torch.clamp(0.2 * v + 0.5, 0.0, 1.0)


ACT = {"tanh": torch.tanh, "sigmoid": sigmoid, "relu": lambda v: torch.clamp(v, min=0.0), "identity": lambda v: v}
GATE = {"sigmoid": sigmoid, "hard_sigmoid": hard_sigmoid}

# Cells whose layer state is (h, c); the others carry h alone.
CELL_STATE = {"lstm", "lstm1", "lstm2", "lstm3", "lstm6", "lstm_c6", "peephole_lstm", "nig", "nfg", "nog", "niaf",
              "noaf", "np", "cifg", "fgr", "lstm_f", "lstm_i", "lstm_o", "lstm_b", "g2_lstm", "sharpened_lstm"}

# The gates each cell exposes (CELLS.md; a removed or constant gate is absent). CIFG's f = 1 - i is a gate.
GATES = {
    **{k: ("i", "f", "o") for k in ("lstm", "lstm1", "lstm2", "lstm3", "np", "lstm_b", "g2_lstm", "sharpened_lstm",
                                    "peephole_lstm", "niaf", "noaf", "cifg", "fgr")},
    "lstm6": (), "lstm_c6": (), "tanh_rnn": (),
    "nig": ("f", "o"), "nfg": ("i", "o"), "nog": ("i", "f"),
    "lstm_f": ("i", "o"), "lstm_i": ("f", "o"), "lstm_o": ("i", "f"),
    "gru": ("r", "z"), "mut1": ("r", "z"), "mut2": ("r", "z"), "mut3": ("r", "z"),
}


def mv(M: Tensor, v: Tensor) -> Tensor:
    """M v for a batch of row vectors v (B, cols) -> (B, rows)."""
    return v @ M.T


# ---- the standard LSTM and its constrained variants (CELLS.md "Standard LSTM", Lu & Salem, Jozefowicz, Li) ----------


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
    """CELLS.md "Greff et al.": z, i, f from the OLD c, c' = z ⊙ i + c ⊙ f, o peeks at the NEW c'."""
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


# ---- dispatch --------------------------------------------------------------------------------------------------------


def step(name: str, cell, x: Tensor, state: tuple, options: dict | None = None, *, training: bool = False,
         prev: dict | None = None, noise: tuple | None = None):
    """One step of cell ``name`` -> (new state tuple, gates dict).

    options: what the user passed to ``cells.build`` (CELLS.md defaults otherwise). training: only G2-LSTM reads it;
    its training step is deterministic only with ``noise_prob=0`` or an explicit ``noise`` = (ε_i, ε_f)."""
    o = dict(options or {})
    act = ACT[o.get("activation", "tanh")]
    sig = GATE[o.get("gate_activation", "sigmoid")]
    p = cell
    h = state[0]
    c = state[1] if name in CELL_STATE else None
    if name in ("lstm", "np", "lstm_b"):
        return _standard(p, x, h, c, act, sig)
    if name == "sharpened_lstm":  # σ(α / τ) in training AND evaluation, τ = 0.2
        return _standard(p, x, h, c, act, sig, scale_if=1.0 / o.get("tau", 0.2))
    if name == "g2_lstm":  # evaluation: plain σ(α); training: σ((α + m ⊙ ε) / τ), τ = 0.9
        if not training:
            return _standard(p, x, h, c, act, sig)
        if noise is None and o.get("noise_prob", 0.2) != 0:
            raise ValueError("g2_lstm training is random: pass noise=(eps_i, eps_f) or use noise_prob=0")
        return _standard(p, x, h, c, act, sig, scale_if=1.0 / o.get("tau", 0.9), noise=noise)
    if name == "lstm1":
        return _lstm1(p, x, h, c, act, sig)
    if name == "lstm2":
        return _lstm2(p, x, h, c, act, sig)
    if name == "lstm3":
        return _lstm3(p, x, h, c, act, sig)
    if name in ("lstm_f", "lstm_i", "lstm_o"):
        return _lstm_no(p, x, h, c, act, sig, removed=name[-1])
    if name == "lstm6":
        return _lstm6(p, x, h, c, act, o.get("forget", 0.59))
    if name == "lstm_c6":
        return _lstm_c6(p, x, h, c, act, o.get("forget", 0.59))
    if name in ("peephole_lstm", "nig", "nfg", "nog", "niaf", "noaf", "cifg", "fgr"):
        return _greff(p, x, h, c, act, sig, name, prev)
    if name == "gru":
        return _gru(p, x, h, act, sig)
    if name == "mut1":
        return _mut1(p, x, h, act, sig)
    if name == "mut2":
        return _mut2(p, x, h, act, sig)
    if name == "mut3":
        return _mut3(p, x, h, act, sig)
    if name == "tanh_rnn":
        return _tanh_rnn(p, x, h, act)
    raise KeyError(f"no reference for cell {name!r}")


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
    has_c = name in CELL_STATE
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
