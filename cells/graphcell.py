"""Any graph of ``cells/graph.py`` as a registry cell, run by the normal layer wrapper (eager and compiled backends).

``register_graph("name", text)`` registers one; ``cells/graphs.yaml`` (read on ``import cells``) holds the graphs
found by the search that have a name, so that a found graph becomes a cell without code::

    mut1_again:
      text: "v1 = sigmoid(Wb(x)); h' = h * (1 - v1) + v1 * tanh(Wb(h * sigmoid(Wb(x) + W(h))) + tanh(x))"
      paper: jozefowicz-search     # a key of cells.base.PAPERS (the default)
      note: found in run 3, round 41

How the step runs the graph (the same layout as the hand-written cells): every map reading x is a block of rows of
the one input projection of all steps (plus identity rows passing x itself through, where x enters a node other than
a map: m = n), every other map's W is a recurrent matrix (the DropConnect target), maps reading the same node
stacked into one matrix product per step; the other nodes are plain torch ops in evaluation order. The fused
(cuDNN) kernel runs a graph whose canonical text IS the LSTM's or the tanh RNN's (``graph.REFERENCE``), no other.
"""
from __future__ import annotations

import functools
from pathlib import Path

import torch
import yaml

from . import graph as G
from .base import PAPERS, Cell, Fused
from .registry import register

GRAPHS_FILE = Path(__file__).with_name("graphs.yaml")
_ACT = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "relu": torch.relu}


@functools.cache
def _fused_layout() -> dict[str, tuple[str, list]]:
    """canonical text -> (fused mode, per gate in the kernel's row order the numbers k of its input and recurrent
    map): read off the labels of ``graph.PAPER_FORM`` (the registry's parameter names)."""
    out = {}
    for name, mode, gates in (("lstm", "lstm", "ifgo"), ("tanh_rnn", "rnn_tanh", "")):
        g = G.parse(G.PAPER_FORM[name])
        k = {label.split()[0]: k for k, label in g.labels.items()}
        rows = [(k[f"W_{q}"], k[f"U_{q}"]) for q in gates] if gates else [(k["W"], k["U"])]
        out[g.text] = (mode, rows)
    return out


class GraphCell(Cell):
    """Base of the cells made from a graph by ``cell_class``; ``graph`` is the canonical graph."""

    graph: G.Graph
    paper = "jozefowicz-search"
    has_forget_bias = False
    _fused_mode: str | None = None

    def __init__(self, input_size, hidden_size, **options):
        for key, default in (("activation", "tanh"), ("gate_activation", "sigmoid")):
            if options.get(key, default) != default:
                raise ValueError(f"{self.name}: option {key!r} means nothing for a graph cell: its activations are "
                                 f"nodes of its graph ({self.graph.text})")
        super().__init__(input_size, hidden_size, **options)
        m, n = input_size, hidden_size
        for i in self.graph.linears():  # the k-th map of the text: W_k (n, m) reading x, else U_k (n, n); b_k (n,)
            v = self.graph.nodes[i]
            if self.graph.reads_x(i):
                self.param(f"W_{v.k}", n, m, kind="input")
            else:
                self.param(f"U_{v.k}", n, n, kind="recurrent")
            if v.bias:
                self.param(f"b_{v.k}", n, kind="bias")

    def reset_parameters(self) -> None:
        """The cell's ``init``, then sec. 3.2's Linear(a, x): "the scalar value a is added to its diagonal entries"."""
        super().reset_parameters()
        with torch.no_grad():
            for name, a in self.diagonal_offsets().items():
                getattr(self, name).diagonal().add_(a)

    def diagonal_offsets(self) -> dict[str, float]:
        """The weights of the Linear(a, x) maps with a != 0 -> a: what ``reset_parameters`` adds to their diagonal
        after the init (sec. 3.2)."""
        out = {}
        for i in self.graph.linears():
            v = self.graph.nodes[i]
            if v.a:
                out[f"W_{v.k}" if self.graph.reads_x(i) else f"U_{v.k}"] = float(v.a)
        return out

    def _weight(self, i):
        k = self.graph.nodes[i].k
        return getattr(self, f"W_{k}" if self.graph.reads_x(i) else f"U_{k}")

    def _bias(self, i):
        v = self.graph.nodes[i]
        return getattr(self, f"b_{v.k}") if v.bias else self.zeros(self.hidden_size)

    def input_weights(self):
        """Rows: the maps reading x in the order of k, then x itself (identity, m = n) if a non-map node reads it."""
        Ws = [self._weight(i) for i in self._x_rows]
        bs = [self._bias(i) for i in self._x_rows]
        if self.square_only:  # x itself: identity rows
            p = self.b_dummy()
            Ws.append(torch.eye(self.hidden_size, dtype=p.dtype, device=p.device))
            bs.append(self.zeros(self.hidden_size))
        return torch.cat(Ws), torch.cat(bs)

    def recurrent_weights(self):
        """One stacked matrix per node that maps read: "U_3_5" holds U_3 over U_5 (both read the same node)."""
        return {key: torch.cat([self._weight(i) for i in lins]) for _, lins, key in self._groups}

    def step(self, a, state, R):
        nodes, n = self.graph.nodes, self.hidden_size
        rows = a.split(n, 1)  # (B, n) each: the x-reading maps (bias included), then x itself if it is read
        val, pre = {}, {}
        for i, v in enumerate(nodes):
            op = v.op
            if op == "x":
                val[i] = rows[-1] if self.square_only else None  # else only maps read x: their rows are in `a`
            elif op in ("h", "c"):
                val[i] = state[0 if op == "h" else 1]
            elif op == "one":
                val[i] = 1.0  # only ever an operand of + - * beside a tensor (graph.check)
            elif op == "lin":
                if i in self._x_index:
                    val[i] = rows[self._x_index[i]]
                else:
                    val[i] = (pre[i] + getattr(self, f"b_{v.k}")) if v.bias else pre[i]  # W_k e (+ b_k)
            elif op in _ACT:
                val[i] = _ACT[op](val[v.args[0]])
            else:
                p, q = val[v.args[0]], val[v.args[1]]
                val[i] = p + q if op == "add" else p - q if op == "sub" else p * q
            if i in self._reads:  # the maps reading this node: one matrix product
                lins, key = self._reads[i]
                pre.update(zip(lins, (val[i] @ R[key].T).split(n, 1)))
        return tuple(val[o] for o in self.graph.outputs), {}

    def fused(self, W, b, R):
        """The exact weights of the fused kernel for the LSTM's and the tanh RNN's graphs (from W, b and the possibly
        DropConnect-masked R); None for every other graph."""
        if self._fused_mode is None:
            return None
        n = self.hidden_size
        Wk = dict(zip((self.graph.nodes[i].k for i in self._x_rows), W.split(n)))
        bk = dict(zip((self.graph.nodes[i].k for i in self._x_rows), b.split(n)))
        Uk = {self.graph.nodes[i].k: part for _, lins, key in self._groups for i, part in zip(lins, R[key].split(n))}
        rows = self._fused_rows
        return Fused(self._fused_mode, torch.cat([Wk[w] for w, _ in rows]), torch.cat([Uk[u] for _, u in rows]),
                     torch.cat([bk[w] for w, _ in rows]))

    @classmethod
    def exact_backends(cls) -> list[str]:
        return ["eager", "compiled"] + (["cudnn"] if cls._fused_mode else [])


def cell_class(graph: G.Graph | str, *, paper: str = "jozefowicz-search", note: str = "") -> type:
    """A ``GraphCell`` subclass for a graph (or its text), not registered: its layout worked out once."""
    g = G.parse(graph) if isinstance(graph, str) else G.canonical(graph)
    if paper not in PAPERS:
        raise ValueError(f"unknown paper {paper!r}; valid: {', '.join(PAPERS)}")
    lins = g.linears()
    x_rows = tuple(i for i in lins if g.reads_x(i))
    groups: dict[int, list[int]] = {}
    for i in lins:
        if not g.reads_x(i):
            groups.setdefault(g.nodes[i].args[0], []).append(i)
    group_list = tuple((src, tuple(ls), "U_" + "_".join(str(g.nodes[i].k) for i in ls)) for src, ls in groups.items())
    fused = _fused_layout().get(g.text)
    doc = (f"Graph cell (Jozefowicz et al. 2015, sec. 3.2):\n    {g.text}\n"
           f"The k-th map of the text owns W_k (reading x) or U_k, and b_k (Wb).{' ' + note if note else ''}")
    return type("GraphCell", (GraphCell,), {
        "__doc__": doc, "graph": g, "paper": paper, "note": note, "formula": g.formula,
        "has_cell_state": g.has_cell_state, "square_only": g.square_only,
        "_x_rows": x_rows, "_x_index": {i: r for r, i in enumerate(x_rows)},
        "_groups": group_list, "_reads": {src: (ls, key) for src, ls, key in group_list},
        "_fused_mode": fused[0] if fused else None, "_fused_rows": fused[1] if fused else None,
    })


def register_graph(name: str, text: str, *, paper: str = "jozefowicz-search", note: str = "") -> type:
    """Register the graph ``text`` as cell ``name``: ``cells.build(name, ...)`` and ``python -m cells`` then know it."""
    cls = cell_class(text, paper=paper, note=note)
    cls.__qualname__ = f"GraphCell[{name}]"
    return register(name)(cls)


def load_graphs(path: Path = GRAPHS_FILE) -> list[str]:
    """Register every graph of ``path`` (name: {text, paper, note}); -> the names. A missing file registers none."""
    if not Path(path).exists():
        return []
    entries = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(entries, dict):
        raise ValueError(f"{path}: expected a mapping name -> {{text, paper, note}}, got {type(entries).__name__}")
    for name, entry in entries.items():
        entry = {"text": entry} if isinstance(entry, str) else dict(entry or {})
        unknown = set(entry) - {"text", "paper", "note"}
        if "text" not in entry or unknown:
            raise ValueError(f"{path}: graph {name!r} needs a 'text' and may have 'paper' and 'note'; got "
                             f"{sorted(entry)}")
        try:
            register_graph(str(name), entry["text"], paper=entry.get("paper", "jozefowicz-search"),
                           note=entry.get("note", ""))
        except ValueError as e:
            raise ValueError(f"{path}: graph {name!r}: {e}") from None
    return [str(name) for name in entries]
