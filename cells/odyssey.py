"""Greff et al. 2017, "LSTM: A search space odyssey": the vanilla LSTM with peepholes and its eight variants.

Vanilla (sec. 2, with the output gate peeking at the NEW cell state):
    z  = g(W_z x + R_z h + b_z)                 block input, g = tanh
    i  = σ(W_i x + R_i h + p_i ⊙ c + b_i)       input gate
    f  = σ(W_f x + R_f h + p_f ⊙ c + b_f)       forget gate
    c' = z ⊙ i + c ⊙ f
    o  = σ(W_o x + R_o h + p_o ⊙ c' + b_o)      output gate
    h' = hact(c') ⊙ o                           hact = tanh
Each variant changes one thing: NIG i = 1, NFG f = 1, NOG o = 1, NIAF g = identity, NOAF hact = identity,
NP no peepholes (the standard LSTM; exact on the fused kernel), CIFG f = 1 − i, FGR full gate recurrence (each gate
also sees i, f, o of the previous step through 9 more n×n matrices). The peepholes are element-wise terms on c, which
the fused kernel has no place for, so these cells run on ``compiled`` (NP excepted).
"""
from __future__ import annotations

import torch

from .base import Cell
from .registry import register
from .standard import LSTM

GATES = "ifo"


@register("peephole_lstm")
class PeepholeLSTM(Cell):
    """Vanilla LSTM with peepholes (Greff et al. 2017, sec. 2):
        z = act(W_z x + R_z h + b_z),  i = σ(W_i x + R_i h + p_i ⊙ c + b_i),  f = σ(W_f x + R_f h + p_f ⊙ c + b_f)
        c' = z ⊙ i + c ⊙ f,  o = σ(W_o x + R_o h + p_o ⊙ c' + b_o),  h' = act(c') ⊙ o"""

    paper = "odyssey"
    formula = "4(mn + n² + n) + 3n"
    removed = ""  # the gate fixed to 1 (NIG/NFG/NOG)
    coupled = False  # CIFG: f = 1 − i
    block_act = True  # NIAF: g = identity
    out_act = True  # NOAF: hact = identity
    peepholes = True
    full_gate_recurrence = False  # FGR

    @classmethod
    def forget_bias_ok(cls):
        return "f" in cls.learned()

    @classmethod
    def learned(cls) -> str:
        """The gates with their own parameters."""
        return "".join(g for g in GATES if g != cls.removed and not (cls.coupled and g == "f"))

    def __init__(self, input_size, hidden_size, **options):
        super().__init__(input_size, hidden_size, **options)
        m, n = input_size, hidden_size
        self.gate_names = tuple(g for g in GATES if g != self.removed)
        for k in "z" + self.learned():
            self.param(f"W_{k}", n, m, kind="input")
            self.param(f"R_{k}", n, n, kind="recurrent")
            self.param(f"b_{k}", n, kind="bias")
            if self.peepholes and k != "z":
                self.param(f"p_{k}", n, kind="vector")
        if self.full_gate_recurrence:  # R_<to><from>: gate <to> sees gate <from> of the previous step
            for to in GATES:
                for frm in GATES:
                    self.param(f"R_{to}{frm}", n, n, kind="recurrent")

    def input_weights(self):
        keys = "z" + self.learned()
        return torch.cat([getattr(self, f"W_{k}") for k in keys]), torch.cat([getattr(self, f"b_{k}") for k in keys])

    def recurrent_weights(self):
        R = {"R": torch.cat([getattr(self, f"R_{k}") for k in "z" + self.learned()])}
        if self.full_gate_recurrence:
            R["G"] = torch.cat([torch.cat([getattr(self, f"R_{to}{frm}") for frm in GATES], 1) for to in GATES])
        return R

    def step(self, a, state, R):
        if self.full_gate_recurrence:
            h, c, prev = state[0], state[1], state[2:]
        else:
            (h, c), prev = state, ()
        keys = "z" + self.learned()
        pre = dict(zip(keys, (a + h @ R["R"].T).chunk(len(keys), 1)))  # W x + R h + b per block
        if self.full_gate_recurrence:  # + R_*i i_{t-1} + R_*f f_{t-1} + R_*o o_{t-1}
            pre.update({k: pre[k] + v for k, v in zip(GATES, (torch.cat(prev, 1) @ R["G"].T).chunk(3, 1))})
        peep = (lambda k, cell: cell * getattr(self, f"p_{k}")) if self.peepholes else (lambda k, cell: 0.0)
        z = self.act(pre["z"]) if self.block_act else pre["z"]
        gates = {}
        if "i" in keys:
            gates["i"] = self.gate_act(pre["i"] + peep("i", c))
        if "f" in keys:
            gates["f"] = self.gate_act(pre["f"] + peep("f", c))
        if self.coupled:
            gates["f"] = 1 - gates["i"]  # CIFG
        c = z * gates.get("i", 1.0) + c * gates.get("f", 1.0)  # c' = z ⊙ i + c ⊙ f
        if "o" in keys:
            gates["o"] = self.gate_act(pre["o"] + peep("o", c))  # the output gate peeks at c'
        h = (self.act(c) if self.out_act else c) * gates.get("o", 1.0)
        if self.full_gate_recurrence:
            return (h, c, gates["i"], gates["f"], gates["o"]), gates
        return (h, c), gates


class _Variant(PeepholeLSTM):
    formula = "3(mn + n² + n) + 2n"


@register("nig")
class NIG(_Variant):
    """NIG, no input gate (Greff et al.): the vanilla peephole LSTM with i = 1:  c' = z + c ⊙ f."""

    removed = "i"


@register("nfg")
class NFG(_Variant):
    """NFG, no forget gate (Greff et al.): the vanilla peephole LSTM with f = 1:  c' = z ⊙ i + c."""

    removed = "f"


@register("nog")
class NOG(_Variant):
    """NOG, no output gate (Greff et al.): the vanilla peephole LSTM with o = 1:  h' = act(c')."""

    removed = "o"


@register("cifg")
class CIFG(_Variant):
    """CIFG, coupled input and forget gate (Greff et al.): the vanilla peephole LSTM with f = 1 − i
    (no forget-gate parameters):  c' = z ⊙ i + c ⊙ (1 − i)."""

    coupled = True


@register("niaf")
class NIAF(PeepholeLSTM):
    """NIAF, no input activation function (Greff et al.): the vanilla peephole LSTM with z = W_z x + R_z h + b_z."""

    block_act = False


@register("noaf")
class NOAF(PeepholeLSTM):
    """NOAF, no output activation function (Greff et al.): the vanilla peephole LSTM with h' = c' ⊙ o."""

    out_act = False


@register("fgr")
class FGR(PeepholeLSTM):
    """FGR, full gate recurrence (Greff et al.): the vanilla peephole LSTM whose gates i, f, o each also receive
    R_*i i_{t-1} + R_*f f_{t-1} + R_*o o_{t-1} (9 more n×n matrices). The previous gates start at zero on each call
    (the layer's state carries h and c, as every LSTM's)."""

    formula = "4(mn + n² + n) + 3n + 9n²"
    full_gate_recurrence = True
    extra_state = 3


@register("np")
class NP(LSTM):
    """NP, no peepholes (Greff et al.): the vanilla LSTM without p_i, p_f, p_o, which is exactly the standard LSTM
    (block input z is named g here):  i, f, o = σ(W x + U h + b),  c' = f ⊙ c + i ⊙ act(g),  h' = o ⊙ act(c')."""

    paper = "odyssey"
