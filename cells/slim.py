"""Akandeh & Salem 2019, "Slim LSTM networks": LSTM_6 and LSTM_C6 (eqs. 4-7).

Three gates are constants: i = o = 1 and f is a fixed scalar hyper-parameter, -1 < f < 1 (not a parameter; the
paper starts from 0.59 and sweeps up to 0.96). The paper runs act = sigmoid as well as tanh.
"""
from __future__ import annotations

from .base import Cell
from .registry import register
from .standard import LSTM


def _check_forget(name: str, f) -> None:
    if not isinstance(f, (int, float)) or not -1.0 < f < 1.0:
        raise ValueError(f"{name}: option 'forget' (the constant forget gate f) must lie in (-1, 1) for "
                         f"BIBO stability (Akandeh & Salem 4.1.3), got {f!r}")


@register("lstm6")
class LSTM6(LSTM):
    """LSTM_6 (Akandeh & Salem eq. 5): the standard LSTM with i = o = 1 and f a constant in (-1, 1):
        c' = f c + act(W_c x + U_c h + b_c),  h' = act(c')
    Runs through the fused kernel when act = tanh and 0 < f < 1 (f becomes a constant gate bias logit(f))."""

    paper = "slim"
    formula = "n(m + n + 1)"
    terms = {"g": "WUb"}  # W_c, U_c, b_c are the block input's parameters (named W_g, U_g, b_g here)
    constants = {"f": "forget"}
    options = {"forget": 0.59}
    fused_when = "activation tanh and 0 < forget < 1"

    def check_options(self):
        _check_forget(self.name, self.forget)


@register("lstm_c6")
class LSTMC6(Cell):
    """LSTM_C6 (Akandeh & Salem eq. 7): LSTM_6 with the recurrent matrix U_c replaced by a vector u_c:
        c' = f c + act(W_c x + u_c ⊙ h + b_c),  h' = act(c')
    The recurrence is element-wise: no matrix product per step, so the fused kernel (which always multiplies by a
    matrix) does not fit it; ``compiled`` runs the element-wise loop as one fused kernel per chunk of steps."""

    paper = "slim"
    formula = "n(m + 2)"
    options = {"forget": 0.59}
    has_forget_bias = False

    def __init__(self, input_size, hidden_size, forget: float = 0.59, **options):
        super().__init__(input_size, hidden_size, **options)
        _check_forget(self.name, forget)
        self.forget = forget
        self.param("W_c", hidden_size, input_size, kind="input")
        self.param("u_c", hidden_size, kind="vector")
        self.param("b_c", hidden_size, kind="bias")

    def input_weights(self):
        return self.W_c, self.b_c

    def recurrent_weights(self):
        return {"u": self.u_c}

    def step(self, a, state, R):
        h, c = state
        c = self.forget * c + self.act(a + R["u"] * h)  # c' = f c + act(W_c x + u_c ⊙ h + b_c)
        h = self.act(c)  # h' = act(c')
        return (h, c), {}
