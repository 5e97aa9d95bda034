"""The standard LSTM and the machinery its structurally constrained variants share.

Standard LSTM (Graves 2013 without peepholes; Keras ``LSTM``; PyTorch ``nn.LSTM`` math), docs/cells.md:

    i = σ(W_i x + U_i h + b_i)      f = σ(W_f x + U_f h + b_f)
    o = σ(W_o x + U_o h + b_o)      g = act(W_g x + U_g h + b_g)
    c' = f ⊙ c + i ⊙ g              h' = o ⊙ act(c')

Many cells of the five papers ARE this step with terms removed (LSTM1-3 drop W or b or U from the gates), a gate
fixed to a constant (LSTM-f/i/o, LSTM_6), or the gate pre-activations scaled (sharpened sigmoid, G2-LSTM). A subclass
says which by three class attributes, and then runs exactly through the fused kernel:

- ``terms``: for each of the gates i, f, g, o the terms its pre-activation keeps: "W" (input), "U" (recurrent),
  "b" (bias). A gate missing from ``terms`` is removed.
- ``constants``: a removed gate's constant value (1 unless named here; a str names a cell option, e.g. "forget").
- ``scale(gate)``: a factor on the gate's pre-activation (1/τ for G2 and the sharpened sigmoid).
"""
from __future__ import annotations

import torch
from torch import Tensor

from .base import BIG, Cell, Fused, const_gate
from .registry import register

ORDER = "ifgo"  # PyTorch's gate order in the fused kernel's weight rows


@register("lstm")
class LSTM(Cell):
    """Standard LSTM (no peepholes; Graves 2013, the baseline of every paper):
        i = σ(W_i x + U_i h + b_i),  f = σ(W_f x + U_f h + b_f),  o = σ(W_o x + U_o h + b_o)
        g = act(W_g x + U_g h + b_g),  c' = f ⊙ c + i ⊙ g,  h' = o ⊙ act(c')
    act = tanh (option ``activation``), σ = sigmoid (option ``gate_activation``). Same math as nn.LSTM with
    its two biases folded into one (``cells.from_torch``)."""

    paper = "standard"
    formula = "4(mn + n² + n)"
    terms = {"i": "WUb", "f": "WUb", "g": "WUb", "o": "WUb"}
    constants: dict = {}
    fused_when = "activation tanh and gate_activation sigmoid"

    def __init__(self, input_size: int, hidden_size: int, **options):
        cell_opts = {k: options.pop(k, v) for k, v in self.options.items()}
        super().__init__(input_size, hidden_size, **options)
        for k, v in cell_opts.items():
            setattr(self, k, v)
        self.check_options()
        m, n = input_size, hidden_size
        for gate in ORDER:  # parameters in the paper's names: W_i (n, m), U_i (n, n), b_i (n,)
            t = self.terms.get(gate, "")
            if "W" in t:
                self.param(f"W_{gate}", n, m, kind="input")
            if "U" in t:
                self.param(f"U_{gate}", n, n, kind="recurrent")
            if "b" in t:
                self.param(f"b_{gate}", n, kind="bias")
        self.gate_names = tuple(g for g in "ifo" if g in self.terms)

    @classmethod
    def forget_bias_ok(cls) -> bool:
        return "b" in cls.terms.get("f", "")

    def check_options(self) -> None:
        """Cell-specific option checks (range of a constant gate, ...)."""

    def constant(self, gate: str) -> float:
        v = self.constants.get(gate, 1.0)
        return getattr(self, v) if isinstance(v, str) else v

    def scale(self, gate: str) -> float:
        return 1.0

    # ---- weights: zero blocks where a term is removed ------------------------------------------------------------
    def _block(self, kind: str, gate: str, cols: int | None) -> Tensor:
        p = getattr(self, f"{kind}_{gate}", None)
        if p is None:
            return self.zeros(self.hidden_size, cols)
        return p

    def input_weights(self):
        """W (4n, m) and b (4n,) in gate order i, f, g, o, zero where a gate has no such term."""
        m = self.input_size
        W = torch.cat([self._block("W", g, m) for g in ORDER])
        b = torch.cat([self._block("b", g, None) for g in ORDER])
        return W, b

    def recurrent_weights(self):
        """U: the stacked (k, n) recurrent matrices of the gates that have one, in gate order."""
        Us = [getattr(self, f"U_{g}") for g in ORDER if "U" in self.terms.get(g, "")]
        return {"U": torch.cat(Us)} if Us else {}

    # ---- the step: the standard LSTM (docs/cells.md), a removed gate is its constant --------------------------------
    def step(self, a: Tensor, state, R):
        h, c = state
        pre = dict(zip(ORDER, a.chunk(4, 1)))  # W x + b of every gate, (B, n) each
        if R:
            rec = iter((h @ R["U"].T).chunk(len(R["U"]) // self.hidden_size, 1))  # U h of the gates that have U
            for gate in ORDER:
                if "U" in self.terms.get(gate, ""):
                    pre[gate] = pre[gate] + next(rec)
        gates = {}
        for gate in "ifo":
            if gate in self.terms:
                s = self.scale(gate)
                gates[gate] = self.gate_act(pre[gate] * s if s != 1.0 else pre[gate])
        i = gates.get("i", self.constant("i"))
        f = gates.get("f", self.constant("f"))
        o = gates.get("o", self.constant("o"))
        c = f * c + i * self.act(pre["g"])  # c' = f ⊙ c + i ⊙ g
        h = o * self.act(c)  # h' = o ⊙ act(c')
        return (h, c), gates

    # ---- the fused kernel: the same weights, removed gates as constant biases, scales folded in -------------------
    def fused(self, W, b, R):
        if not self.fusable_acts() or not self.fusable_constants():
            return None
        n = self.hidden_size
        Ws, bs, Us = list(W.split(n)), list(b.split(n)), []
        rec = iter(R["U"].split(n)) if R else iter(())
        for k, gate in enumerate(ORDER):
            U = next(rec) if "U" in self.terms.get(gate, "") else self.zeros(n, n, like=W)
            if gate not in self.terms:  # a constant gate: no input, no recurrence, bias logit(constant)
                v = self.constant(gate)
                Ws[k], U = torch.zeros_like(Ws[k]), torch.zeros_like(U)
                bs[k] = const_gate(bs[k], None if v == 1.0 else v)
            s = self.scale(gate)
            if s != 1.0:
                Ws[k], U, bs[k] = Ws[k] * s, U * s, bs[k] * s
            Us.append(U)
        return Fused("lstm", torch.cat(Ws), torch.cat(Us), torch.cat(bs))

    def fusable_constants(self) -> bool:
        return all(gate in self.terms or self.constant(gate) == 1.0 or 0.0 < self.constant(gate) < 1.0
                   for gate in "ifo")


__all__ = ["LSTM", "ORDER", "BIG"]
