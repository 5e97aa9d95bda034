"""Lu & Salem 2017, "Simplified gating in long short-term memory (LSTM) recurrent neural networks": LSTM1-3.

Only the gates change (eqs. 7-15); g, c' and h' are the standard LSTM's (eqs. 1-5). Each variant removes a term
from the pre-activation of all three gates i, f, o (``LSTM.terms``), so each runs exactly through the fused kernel.
"""
from __future__ import annotations

from .registry import register
from .standard import LSTM


@register("lstm1")
class LSTM1(LSTM):
    """LSTM1, no input signal (Lu & Salem eqs. 7-9):
        i = σ(U_i h + b_i),  f = σ(U_f h + b_f),  o = σ(U_o h + b_o)
        g = act(W_g x + U_g h + b_g),  c' = f ⊙ c + i ⊙ g,  h' = o ⊙ act(c')"""

    paper = "simplified"
    formula = "4(mn + n² + n) − 3mn"
    terms = {"i": "Ub", "f": "Ub", "g": "WUb", "o": "Ub"}


@register("lstm2")
class LSTM2(LSTM):
    """LSTM2, no input signal and no bias (Lu & Salem eqs. 10-12):
        i = σ(U_i h),  f = σ(U_f h),  o = σ(U_o h)
        g = act(W_g x + U_g h + b_g),  c' = f ⊙ c + i ⊙ g,  h' = o ⊙ act(c')"""

    paper = "simplified"
    formula = "4(mn + n² + n) − 3(mn + n)"
    terms = {"i": "U", "f": "U", "g": "WUb", "o": "U"}


@register("lstm3")
class LSTM3(LSTM):
    """LSTM3, bias only (Lu & Salem eqs. 13-15): the gates are learned constants, the same at every step and sample.
        i = σ(b_i),  f = σ(b_f),  o = σ(b_o)
        g = act(W_g x + U_g h + b_g),  c' = f ⊙ c + i ⊙ g,  h' = o ⊙ act(c')"""

    paper = "simplified"
    formula = "4(mn + n² + n) − 3(mn + n²)"
    terms = {"i": "b", "f": "b", "g": "WUb", "o": "b"}
