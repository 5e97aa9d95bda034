"""gatezoo's cell registry: every recurrent cell of the five papers, one layer wrapper, three exact backends.

    import cells
    cells.names()                                  # all registered names
    print(cells.describe("lstm1"))                 # equations, parameter formula, paper, exact backends
    layer = cells.build("lstm1", 28, 50, backend="auto")
    out, (h, c) = layer(x)                         # x: (B, T, 28), batch first
    cells.compress_gates(model, "svd", rank=64)    # G2-LSTM sec. 4.3: compress the i/f gates in place, get a report
    cells.register_graph("found1", "h' = tanh(Wb(x) + W(h))")   # a cell as a graph (cells/graph.py, graphs.yaml)
"""
from __future__ import annotations

import torch
from torch import nn

from . import g2, jozefowicz, odyssey, simplified, slim, standard  # noqa: F401  (registration on import)
from .base import Cell, Fused
from .compress import compress_gates, gate_compression_ratio
from .graphcell import load_graphs, register_graph
from .layer import BACKENDS, Recurrent
from .registry import build, describe, get, names, register

__all__ = ["build", "describe", "names", "register", "register_graph", "get", "from_torch", "Cell", "Fused",
           "Recurrent", "BACKENDS", "num_params", "compress_gates", "gate_compression_ratio"]


load_graphs()  # cells/graphs.yaml: the found graphs that have a name


def num_params(name: str, input_size: int, hidden_size: int, *, num_layers: int = 1,
               bidirectional: bool = False) -> int:
    """The paper's formula summed over layers and directions (a bidirectional layer counts twice)."""
    cls, D = get(name), 2 if bidirectional else 1
    return sum(D * cls.count(input_size if layer == 0 else hidden_size * D, hidden_size) for layer in range(num_layers))


def from_torch(lstm: nn.LSTM, backend: str = "auto") -> Recurrent:
    """An ``lstm`` layer with the weights of ``lstm`` (b_ih + b_hh folded into the one bias per gate).

    The result is batch first whatever ``lstm.batch_first`` says; same outputs and gradients up to rounding."""
    if not isinstance(lstm, nn.LSTM):
        raise TypeError(f"from_torch expects a torch.nn.LSTM, got {type(lstm).__name__}")
    if lstm.proj_size or not lstm.bias:
        raise ValueError("from_torch: nn.LSTM with proj_size > 0 or bias=False has no counterpart here")
    layer = build("lstm", lstm.input_size, lstm.hidden_size, num_layers=lstm.num_layers,
                  bidirectional=lstm.bidirectional, dropout=lstm.dropout, backend=backend)
    w = next(lstm.parameters())
    layer.to(dtype=w.dtype, device=w.device)
    n = lstm.hidden_size
    with torch.no_grad():
        for k, cell in enumerate(layer.cells):
            sfx = f"_l{k // layer.directions}" + ("_reverse" if k % layer.directions else "")
            w_ih, w_hh = getattr(lstm, "weight_ih" + sfx), getattr(lstm, "weight_hh" + sfx)
            b = getattr(lstm, "bias_ih" + sfx) + getattr(lstm, "bias_hh" + sfx)
            for j, gate in enumerate("ifgo"):  # nn.LSTM's rows are i, f, g, o
                rows = slice(j * n, (j + 1) * n)
                getattr(cell, f"W_{gate}").copy_(w_ih[rows])
                getattr(cell, f"U_{gate}").copy_(w_hh[rows])
                getattr(cell, f"b_{gate}").copy_(b[rows])
    return layer
