"""Jozefowicz, Zaremba & Sutskever 2015, "An empirical exploration of recurrent network architectures".

Their LSTM (sec. 2) names the block input i (tanh), the input gate j, forget f, output o; here the standard names
(g, i, f, o) are used. The printed text gives o = tanh(.), almost surely a typo for σ (their own ablation treats o as
a gate): σ is used. The ablations remove one gate (LSTM-f/i/o) or initialise the forget bias to 1 (LSTM-b). Then the
GRU as Cho et al. (reset BEFORE the matrix product: NOT nn.GRU's form), the three mutated architectures MUT1-3 found
by their search (sec. 3.2), and the tanh RNN. Initialisation of their search: ``init="uniform"`` with ``init_scale``.
"""
from __future__ import annotations

import torch

from .base import Cell, Fused
from .registry import register
from .standard import LSTM


class _NoGate(LSTM):
    paper = "jozefowicz"
    formula = "3(mn + n² + n)"


@register("lstm_f")
class LSTMNoForget(_NoGate):
    """LSTM-f (Jozefowicz et al. sec. 4): the standard LSTM with the forget gate removed, f = 1:
        c' = c + i ⊙ g,  h' = o ⊙ act(c')"""

    terms = {"i": "WUb", "g": "WUb", "o": "WUb"}


@register("lstm_i")
class LSTMNoInput(_NoGate):
    """LSTM-i (Jozefowicz et al. sec. 4): the standard LSTM with the input gate removed (their j = 1):
        c' = f ⊙ c + g,  h' = o ⊙ act(c')"""

    terms = {"f": "WUb", "g": "WUb", "o": "WUb"}


@register("lstm_o")
class LSTMNoOutput(_NoGate):
    """LSTM-o (Jozefowicz et al. sec. 4): the standard LSTM with the output gate removed, o = 1:
        c' = f ⊙ c + i ⊙ g,  h' = act(c')"""

    terms = {"i": "WUb", "f": "WUb", "g": "WUb"}


@register("lstm_b")
class LSTMForgetBias(LSTM):
    """LSTM-b (Jozefowicz et al. sec. 4): the standard LSTM with the forget-gate bias b_f initialised to 1
    (``forget_bias`` defaults to 1; the math is the standard LSTM's)."""

    paper = "jozefowicz"

    def __init__(self, input_size, hidden_size, forget_bias=1.0, **options):
        super().__init__(input_size, hidden_size, forget_bias=forget_bias, **options)


@register("tanh_rnn")
class TanhRNN(Cell):
    """Tanh RNN (Jozefowicz et al. sec. 2):  h' = act(W x + U h + b),  act = tanh."""

    paper = "jozefowicz"
    formula = "mn + n² + n"
    has_cell_state = False
    has_forget_bias = False
    fused_when = "activation tanh"

    def __init__(self, input_size, hidden_size, **options):
        super().__init__(input_size, hidden_size, **options)
        self.param("W", hidden_size, input_size, kind="input")
        self.param("U", hidden_size, hidden_size, kind="recurrent")
        self.param("b", hidden_size, kind="bias")

    def input_weights(self):
        return self.W, self.b

    def recurrent_weights(self):
        return {"U": self.U}

    def step(self, a, state, R):
        (h,) = state
        return (self.act(a + h @ R["U"].T),), {}

    def fused(self, W, b, R):
        return Fused("rnn_tanh", W, R["U"], b) if self.activation == "tanh" else None


class _GatedRNN(Cell):
    """Shared parameter set-up of the GRU and the MUTs: parameters named as Jozefowicz et al. write them."""

    paper = "jozefowicz"
    has_cell_state = False
    has_forget_bias = False
    gate_names = ("r", "z")
    params: dict = {}  # name -> kind; W_x* are (n, m), W_h* are (n, n)

    def __init__(self, input_size, hidden_size, **options):
        super().__init__(input_size, hidden_size, **options)
        for name, kind in self.params.items():
            if kind == "bias":
                self.param(name, hidden_size, kind="bias")
            else:
                self.param(name, hidden_size, input_size if kind == "input" else hidden_size, kind=kind)

    def eye(self, like):
        return torch.eye(self.hidden_size, dtype=like.dtype, device=like.device)


_GRU = {"W_xr": "input", "W_hr": "recurrent", "b_r": "bias", "W_xz": "input", "W_hz": "recurrent", "b_z": "bias",
        "W_xh": "input", "W_hh": "recurrent", "b_h": "bias"}


@register("gru")
class GRU(_GatedRNN):
    """GRU (Cho et al. 2014, as Jozefowicz et al. sec. 2 write it), reset applied BEFORE the matrix product:
        r = σ(W_xr x + W_hr h + b_r),  z = σ(W_xz x + W_hz h + b_z)
        h̃ = act(W_xh x + W_hh (r ⊙ h) + b_h),  h' = z ⊙ h + (1 − z) ⊙ h̃
    nn.GRU / cuDNN apply r AFTER W_hh h, a different function: no exact fused form."""

    formula = "3(mn + n² + n)"
    params = _GRU

    def input_weights(self):
        return torch.cat([self.W_xr, self.W_xz, self.W_xh]), torch.cat([self.b_r, self.b_z, self.b_h])

    def recurrent_weights(self):
        return {"U": torch.cat([self.W_hr, self.W_hz]), "W_hh": self.W_hh}

    def step(self, a, state, R):
        (h,) = state
        ar, az, ah = a.chunk(3, 1)
        ur, uz = (h @ R["U"].T).chunk(2, 1)
        r, z = self.gate_act(ar + ur), self.gate_act(az + uz)
        h_new = self.act(ah + (r * h) @ R["W_hh"].T)  # h̃
        return (z * h + (1 - z) * h_new,), {"r": r, "z": z}


class _MUT(_GatedRNN):
    """Shared candidate of MUT1-3. MUT1 and MUT2 add x itself to a hidden-sized vector (``square_only``: the base
    ``Cell`` refuses input_size != hidden_size); MUT3 does not."""

    def candidate(self, r, h, R, ah, z):
        """h' = act(W_hh (r ⊙ h) + [input part] + b_h) ⊙ z + h ⊙ (1 − z), shared by MUT1-3."""
        return self.act((r * h) @ R["W_hh"].T + ah) * z + h * (1 - z)


@register("mut1")
class MUT1(_MUT):
    """MUT1 (Jozefowicz et al. sec. 3.2), needs m = n:
        z = σ(W_xz x + b_z),  r = σ(W_xr x + W_hr h + b_r)
        h' = act(W_hh (r ⊙ h) + tanh(x) + b_h) ⊙ z + h ⊙ (1 − z)
    tanh(x) enters as extra input columns with identity weights."""

    formula = "2mn + 2n² + 3n"  # W_xz, b_z, W_xr, W_hr, b_r, W_hh, b_h
    square_only = True  # + tanh(x)
    params = {"W_xz": "input", "b_z": "bias", "W_xr": "input", "W_hr": "recurrent", "b_r": "bias",
              "W_hh": "recurrent", "b_h": "bias"}

    def extra_inputs(self, x):
        return torch.tanh(x)

    def input_weights(self):  # columns [x, tanh(x)]; rows z, r, h
        Z = torch.zeros_like(self.W_xz)
        W = torch.cat([torch.cat([self.W_xz, Z], 1), torch.cat([self.W_xr, Z], 1), torch.cat([Z, self.eye(Z)], 1)])
        return W, torch.cat([self.b_z, self.b_r, self.b_h])

    def recurrent_weights(self):
        return {"W_hr": self.W_hr, "W_hh": self.W_hh}

    def step(self, a, state, R):
        (h,) = state
        az, ar, ah = a.chunk(3, 1)
        z, r = self.gate_act(az), self.gate_act(ar + h @ R["W_hr"].T)
        return (self.candidate(r, h, R, ah, z),), {"r": r, "z": z}


@register("mut2")
class MUT2(_MUT):
    """MUT2 (Jozefowicz et al. sec. 3.2), needs m = n:
        z = σ(W_xz x + W_hz h + b_z),  r = σ(x + W_hr h + b_r)
        h' = act(W_hh (r ⊙ h) + W_xh x + b_h) ⊙ z + h ⊙ (1 − z)"""

    formula = "2mn + 3n² + 3n"  # W_xz, W_hz, b_z, W_hr, b_r, W_hh, W_xh, b_h
    square_only = True  # r = σ(x + ...)
    params = {"W_xz": "input", "W_hz": "recurrent", "b_z": "bias", "W_hr": "recurrent", "b_r": "bias",
              "W_hh": "recurrent", "W_xh": "input", "b_h": "bias"}

    def input_weights(self):  # rows z, r (x itself: identity), h
        return torch.cat([self.W_xz, self.eye(self.W_xz), self.W_xh]), torch.cat([self.b_z, self.b_r, self.b_h])

    def recurrent_weights(self):
        return {"U": torch.cat([self.W_hz, self.W_hr]), "W_hh": self.W_hh}

    def step(self, a, state, R):
        (h,) = state
        az, ar, ah = a.chunk(3, 1)
        uz, ur = (h @ R["U"].T).chunk(2, 1)
        z, r = self.gate_act(az + uz), self.gate_act(ar + ur)
        return (self.candidate(r, h, R, ah, z),), {"r": r, "z": z}


@register("mut3")
class MUT3(_MUT):
    """MUT3 (Jozefowicz et al. sec. 3.2):
        z = σ(W_xz x + W_hz tanh(h) + b_z),  r = σ(W_xr x + W_hr h + b_r)
        h' = act(W_hh (r ⊙ h) + W_xh x + b_h) ⊙ z + h ⊙ (1 − z)"""

    formula = "3(mn + n² + n)"
    params = {"W_xz": "input", "W_hz": "recurrent", "b_z": "bias", "W_xr": "input", "W_hr": "recurrent",
              "b_r": "bias", "W_hh": "recurrent", "W_xh": "input", "b_h": "bias"}

    def input_weights(self):
        return torch.cat([self.W_xz, self.W_xr, self.W_xh]), torch.cat([self.b_z, self.b_r, self.b_h])

    def recurrent_weights(self):
        return {"W_hz": self.W_hz, "W_hr": self.W_hr, "W_hh": self.W_hh}

    def step(self, a, state, R):
        (h,) = state
        az, ar, ah = a.chunk(3, 1)
        z = self.gate_act(az + torch.tanh(h) @ R["W_hz"].T)
        r = self.gate_act(ar + h @ R["W_hr"].T)
        return (self.candidate(r, h, R, ah, z),), {"r": r, "z": z}
