"""Model size for a parameter budget, as Jozefowicz et al. 2015 chose it ("we used binary search to select the
appropriate number of units for a given number of parameters").

    hidden_for_budget("gru", "5M", vocab=10000, nlayers=2)   # -> the largest n whose whole model has <= 5M parameters
    largest(lambda n: next_step_params("lstm", n, 40, 40, 2), "250K", "lstm")   # the same for Arith's model

The count is the whole language model with embedding size = hidden size = n: embedding V*n, the recurrent layers
(each cell's paper formula, ``cells.num_params``), the softmax n*V + V (none extra when tied).
"""
from __future__ import annotations

import re

import cells

_SUFFIX = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9}


def parse_count(text) -> int:
    """5M -> 5000000, 60K -> 60000, 1.5M -> 1500000, 12345 -> 12345."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMG]?)\s*", str(text), re.IGNORECASE)
    if not m:
        raise ValueError(f"a parameter count is a number with an optional K, M or G suffix (5M, 60K), got {text!r}")
    return int(float(m.group(1)) * _SUFFIX[m.group(2).upper()])


def lm_params(cell: str, n: int, vocab: int, nlayers: int, tie: bool = False) -> int:
    """Parameters of a word language model with emsize = nhid = n."""
    recurrent = sum(cells.num_params(cell, n, n) for _ in range(nlayers))
    return vocab * n + recurrent + (0 if tie else n * vocab) + vocab


def next_step_params(cell: str, n: int, inputs: int, outputs: int, nlayers: int, target: str = "tokens",
                     input_layer: bool = True) -> int:
    """Parameters of ``lit_models.next_step.NextStepNet``: an embedding inputs*n for symbols (a linear layer
    inputs*n + n for music's frames, none with ``input_layer=False``), the recurrent layers of n units, the decoder
    n*outputs + outputs."""
    first = n if input_layer else inputs
    recurrent = sum(cells.num_params(cell, first if i == 0 else n, n) for i in range(nlayers))
    front = (inputs * n + (n if target == "notes" else 0)) if input_layer else 0
    return front + recurrent + n * outputs + outputs


def largest(count, budget, what: str) -> int:
    """The largest n with count(n) <= budget (parameters grow with n, so bisection finds it)."""
    budget = parse_count(budget)
    if count(1) > budget:
        raise ValueError(f"budget {budget:,} is below the smallest {what} ({count(1):,} parameters at n = 1)")
    lo, hi = 1, 2
    while count(hi) <= budget:
        lo, hi = hi, hi * 2
    while hi - lo > 1:  # invariant: lo fits, hi does not
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if count(mid) <= budget else (lo, mid)
    return lo


def hidden_for_budget(cell: str, budget, vocab: int, nlayers: int, tie: bool = False) -> int:
    """The largest n with lm_params(...) <= budget."""
    return largest(lambda n: lm_params(cell, n, vocab, nlayers, tie), budget, f"{cell} language model")
