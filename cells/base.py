"""The cell base class: parameters, initialisation, activations. A cell declares its parameters and ONE step.

A cell is one direction of one layer. The shared layer wrapper (``cells/layer.py``) owns everything else: the
input projection of all time steps in one matrix product, the time loop, lengths, stacking, bidirection and the
backends. A subclass writes:

- ``__init__``: its parameters, each by ``self.param(name, rows, cols, kind)`` with the paper's name (``W_i``, ``U_i``,
  ``b_i``); ``kind`` picks the initialisation.
- ``input_weights()``: ``(W, b)``, the stacked matrix (k, m) and bias (k,) applied to every x_t at once.
- ``recurrent_weights()``: a dict of the hidden-to-hidden matrices (the DropConnect target), built once per call.
- ``step(a, state, R)``: one time step, written like the paper, from the projected input ``a`` (B, k) and the state
  tuple; returns ``(new_state, gates)``.
- ``fused(W, b, R)`` (optional): the exact weights of PyTorch's fused LSTM / tanh-RNN kernel, or None.
- ``formula``: the paper's parameter count of one direction of one layer, written ONCE, as docs/cells.md writes it
  (``"4(mn + n² + n) − 3mn"``); ``count(m, n)`` evaluates that same text (``formula_count``), so the text that
  ``describe`` / ``python -m cells`` show and the number that ``count`` / ``cells.num_params`` return cannot disagree.
"""
from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass

import torch
from torch import Tensor, nn

PAPERS = {
    "simplified": "Lu & Salem 2017, Simplified gating in LSTM",
    "slim": "Akandeh & Salem 2019, Slim LSTM",
    "odyssey": "Greff et al. 2017, LSTM: A search space odyssey",
    "jozefowicz": "Jozefowicz et al. 2015, An empirical exploration of recurrent network architectures",
    "g2lstm": "Li et al. 2018, Towards binary-valued gates for robust LSTM training",
    "standard": "Hochreiter & Schmidhuber 1997 / Graves 2013 (the baseline of every paper)",
    "jozefowicz-search": "a graph of Jozefowicz et al. 2015's architecture search (sec. 3.2; cells/graph.py)",
}


def hard_sigmoid(x: Tensor) -> Tensor:
    """Keras 2.0-2.2's ``hard_sigmoid``: clip(0.2 x + 0.5, 0, 1)."""
    return (0.2 * x + 0.5).clamp(0.0, 1.0)


def identity(x: Tensor) -> Tensor:
    return x


ACTIVATIONS = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "relu": torch.relu, "identity": identity}
GATE_ACTIVATIONS = {"sigmoid": torch.sigmoid, "hard_sigmoid": hard_sigmoid}
INITS = ("torch", "keras", "glorot", "uniform")

# ---- the parameter formula: docs/cells.md's notation, read as arithmetic --------------------------------------------

_TOKEN = re.compile(r"\s*(?:(\d+)|([mn])|([+\-−])|([*×·])|([²³])|([()]))")


@functools.cache
def formula_expression(text: str) -> str:
    """The Python expression a formula in docs/cells.md's notation means: ``"4(mn + n² + n) − 3mn"`` ->
    ``"4*(m*n+n**2+n)-3*m*n"``. Grammar: sum = term (("+" | "−" | "-") term)*; term = power ([* × ·] power)*, where
    juxtaposition multiplies (``mn``, ``3n``, ``n(m + 2)``); power = atom ["²" | "³"]; atom = integer | m | n |
    "(" sum ")". Anything else (``"?"``, an unknown letter, unbalanced brackets) raises ValueError."""
    tokens, pos, text_ = [], 0, text.rstrip()
    while pos < len(text_):
        hit = _TOKEN.match(text_, pos)
        if hit is None:
            raise ValueError(f"parameter formula {text!r}: cannot read {text_[pos:].strip()!r} (allowed: integers, "
                             f"m, n, + − * × · ² ³ and parentheses)")
        tokens.append(next(t for t in hit.groups() if t is not None))
        pos = hit.end()
    out, k = [], 0

    def peek():
        return tokens[k] if k < len(tokens) else None

    def atom():
        nonlocal k
        t = peek()
        if t is None or t in "+-−*×·²³)":
            raise ValueError(f"parameter formula {text!r}: expected a number, m, n or '(' at token {k + 1}, got {t!r}")
        k += 1
        if t == "(":
            out.append("(")
            sum_()
            if peek() != ")":
                raise ValueError(f"parameter formula {text!r}: unbalanced parentheses")
            k += 1
            out.append(")")
        else:
            out.append(t)
        if peek() in ("²", "³"):
            out.append("**2" if tokens[k] == "²" else "**3")
            k += 1

    def term():
        nonlocal k
        atom()
        while peek() is not None and peek() not in "+-−)":
            if peek() in "*×·":
                k += 1
            out.append("*")
            atom()

    def sum_():
        nonlocal k
        term()
        while peek() in ("+", "-", "−"):
            out.append("+" if tokens[k] == "+" else "-")
            k += 1
            term()

    sum_()
    if k != len(tokens):
        raise ValueError(f"parameter formula {text!r}: unexpected {tokens[k]!r}")
    return "".join(out)


@functools.cache
def _compiled_formula(text: str):
    return compile(formula_expression(text), f"<formula {text}>", "eval")


def formula_count(text: str, m: int, n: int) -> int:
    """The number a formula in docs/cells.md's notation gives for input size m and hidden size n."""
    return int(eval(_compiled_formula(text), {"__builtins__": {}}, {"m": m, "n": n}))  # only digits, m, n, + - * **


# A constant gate of 1 (or f) inside the fused kernel: sigmoid(BIG) is exactly 1.0 in float32 and float64 alike
# (exp(-50) ~ 2e-22 vanishes against 1), so the kernel multiplies by exactly one.
BIG = 50.0


@dataclass
class Fused:
    """Weights for PyTorch's fused kernel (cuDNN on a GPU): ``mode`` "lstm" (gate rows i, f, g, o) or "rnn_tanh"."""

    mode: str
    w_ih: Tensor
    w_hh: Tensor
    bias: Tensor
    pieces: list | None = None  # set by backends.hold: one-step calls keep their weight-gradient pieces here


class Cell(nn.Module):
    name: str = "?"  # set by @register
    paper: str = "standard"  # key of PAPERS
    formula: str = "?"  # the paper's parameter formula in docs/cells.md's notation; ``count`` evaluates it
    has_cell_state: bool = True
    gate_names: tuple[str, ...] = ()  # the gates ``step`` returns (a removed gate is absent)
    options: dict = {}  # cell-specific options and their defaults, e.g. {"forget": 0.59}
    fused_when: str = ""  # the condition under which ``fused`` applies, for ``describe``
    has_forget_bias: bool = True  # whether ``forget_bias`` means something (the cell has a b_f)
    extra_state: int = 0  # (B, n) state tensors beyond h and c that start at zero on every call (FGR's gates)
    square_only: bool = False  # the equations add the input to a hidden-sized vector: input_size must equal hidden_size

    def __init__(self, input_size: int, hidden_size: int, *, activation: str = "tanh",
                 gate_activation: str = "sigmoid", forget_bias: float | None = None, init: str = "torch",
                 init_scale: float = 1.0):
        super().__init__()
        if self.square_only and input_size != hidden_size:
            raise ValueError(f"{self.name} adds its input to a hidden-sized vector, so it needs input_size == "
                             f"hidden_size; got {input_size} and {hidden_size} (above the first layer the input is "
                             f"hidden_size x directions, so a stacked bidirectional {self.name} cannot exist; put a "
                             f"linear layer in front)")
        self.input_size, self.hidden_size = input_size, hidden_size
        self.activation, self.gate_activation = activation, gate_activation
        self.act = ACTIVATIONS[activation]
        self.gate_act = GATE_ACTIVATIONS[gate_activation]
        if init_scale != 1.0 and init != "uniform":
            raise ValueError(f"init_scale only applies to init='uniform' (Jozefowicz's U(-s/sqrt(n), s/sqrt(n))), "
                             f"got init={init!r}")
        self.init, self.init_scale, self.forget_bias = init, init_scale, forget_bias
        self._kinds: dict[str, str] = {}

    # ---- parameters ------------------------------------------------------------------------------------------
    def param(self, name: str, *shape: int, kind: str) -> nn.Parameter:
        """Add parameter ``name`` of ``shape``; ``kind`` is input | recurrent | bias | vector (picks the init)."""
        p = nn.Parameter(torch.empty(*shape))
        self.register_parameter(name, p)
        self._kinds[name] = kind
        return p

    def reset_parameters(self) -> None:
        """Initialise every parameter by ``init`` (torch | keras | glorot | uniform) and then ``forget_bias``.

        glorot is keras with glorot-uniform recurrent matrices too: what Lu & Salem's MNIST script set.
        """
        n = self.hidden_size
        with torch.no_grad():
            for name, p in self.named_parameters(recurse=False):
                kind = self._kinds[name]
                if self.init in ("keras", "glorot"):  # glorot-uniform input, orthogonal recurrent, zero bias (Keras)
                    if kind == "input":
                        nn.init.xavier_uniform_(p)
                    elif kind == "recurrent" and p.shape[0] == p.shape[1] and self.init == "keras":
                        nn.init.orthogonal_(p)
                    elif kind in ("bias", "vector"):
                        p.zero_()
                    else:
                        nn.init.xavier_uniform_(p)
                else:  # torch: U(-1/sqrt(n), 1/sqrt(n)); uniform: the same scaled by s (Jozefowicz)
                    bound = (self.init_scale if self.init == "uniform" else 1.0) / math.sqrt(n)
                    p.uniform_(-bound, bound)
            fb = self.forget_bias
            if fb is None and self.init in ("keras", "glorot"):
                fb = 1.0
            if fb is not None and hasattr(self, "b_f"):
                self.b_f.fill_(fb)

    def diagonal_offsets(self) -> dict[str, float]:
        """Parameters whose diagonal the cell adds a constant to after ``init`` (name -> the constant): none here; a
        graph cell's Linear(a, x) maps (cells/graphcell.py)."""
        return {}

    @classmethod
    def count(cls, m: int, n: int) -> int:
        """The paper's parameter count of one direction of one layer with input size m, hidden size n: ``formula``
        evaluated (the one place the count is written)."""
        try:
            return formula_count(cls.formula, m, n)
        except ValueError as e:
            raise ValueError(f"{cls.name}: {e}") from None

    @classmethod
    def forget_bias_ok(cls) -> bool:
        """Whether the option ``forget_bias`` means something for this cell (it has a forget-gate bias b_f)."""
        return cls.has_forget_bias

    @classmethod
    def paper_title(cls) -> str:
        return PAPERS[cls.paper]

    @classmethod
    def exact_backends(cls) -> list[str]:
        fused = cls.fused is not Cell.fused
        return ["eager", "compiled"] + (["cudnn"] if fused else [])

    # ---- the math ----------------------------------------------------------------------------------------------
    def extra_inputs(self, x: Tensor) -> Tensor | None:
        """Extra input columns appended to x before the projection (G2-LSTM's training noise); None for most cells."""
        return None

    def input_weights(self) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def recurrent_weights(self) -> dict[str, Tensor]:
        raise NotImplementedError

    def step(self, a: Tensor, state: tuple[Tensor, ...], R: dict[str, Tensor]):
        raise NotImplementedError

    def forward(self, a: Tensor, state: tuple[Tensor, ...], R: dict[str, Tensor]):
        """``step``: what ``torch.func.functional_call`` calls (the compiled backend differentiates a step that way)."""
        return self.step(a, state, R)

    def fused(self, W: Tensor, b: Tensor, R: dict[str, Tensor]) -> Fused | None:
        """Exact weights of the fused kernel, built differentiably from the parameters; None where impossible."""
        return None

    # ---- helpers for subclasses ----------------------------------------------------------------------------------
    def zeros(self, rows: int, cols: int | None = None, like: Tensor | None = None) -> Tensor:
        like = like if like is not None else self.b_dummy()
        return like.new_zeros(rows) if cols is None else like.new_zeros(rows, cols)

    def b_dummy(self) -> Tensor:
        return next(self.parameters())

    def fusable_acts(self) -> bool:
        """The fused LSTM kernel hard-codes tanh and the logistic sigmoid."""
        return self.activation == "tanh" and self.gate_activation == "sigmoid"

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, activation={self.activation}, gates={self.gate_activation}"


def const_gate(like: Tensor, value: float | None = None) -> Tensor:
    """Bias rows that make a fused sigmoid gate the constant ``value`` (1 by default): logit(value), or BIG."""
    n = like.shape[0] if like.dim() else 1
    if value is None:
        return like.new_full((n,), BIG)
    return like.new_full((n,), math.log(value / (1.0 - value)))
