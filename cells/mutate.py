"""Mutation of a cell graph (``cells/graph.py``): Jozefowicz et al. 2015, sec. 3.2, "Mutation Generation".

"We mutate a given architecture by choosing a probability p uniformly at random from [0, 1] and independently apply a
randomly chosen transformation from the below with probability p to each node in the graph. [...] We apply 1-3 of
these transformations to mutate an architecture." Read here as: each node (not an input) is picked with probability
p; fewer than one pick becomes one random node, more than three a random three of them; each picked node, in turn,
gets one transformation drawn uniformly from those of the six that apply to it. Invalid results are rejected, with
their reason, and the mutation drawn again ("If an architecture is rejected we try again").

Deterministic given the random generator: a ``random.Random`` or a ``numpy.random.Generator`` (or an int seed).
"""
from __future__ import annotations

import random
from dataclasses import replace

from . import graph as G
from .graph import ACTS, BINARY, LEAVES, Graph, Node

# sec. 3.2, 1: "{tanh(x), sigmoid(x), ReLU(x), Linear(0, x), Linear(1, x), Linear(0.9, x), Linear(1.1, x)}";
# Linear(a, x) "introduced a new square parameter matrix W and a bias b": Wb(·, a)
ACTIVATIONS = [("tanh", 0.0), ("sigmoid", 0.0), ("relu", 0.0), ("lin", 0.0), ("lin", 1.0), ("lin", 0.9), ("lin", 1.1)]


class _Draw:
    """One interface over random.Random and numpy.random.Generator (integers / randrange)."""

    def __init__(self, rng):
        self.rng = random.Random(rng) if isinstance(rng, int) else rng

    def uniform(self) -> float:
        return float(self.rng.random())

    def index(self, n: int) -> int:
        return int(self.rng.integers(n)) if hasattr(self.rng, "integers") else self.rng.randrange(n)

    def choice(self, seq):
        return seq[self.index(len(seq))]


class Seen:
    """The canonical texts of the graphs met so far: a graph met twice is a duplicate (the search evaluates each
    architecture once)."""

    def __init__(self, graphs=()):
        self.texts: set[str] = set()
        for g in graphs:
            self.add(g)

    @staticmethod
    def _text(g) -> str:
        return g.text if isinstance(g, Graph) else G.parse(g).text

    def add(self, g) -> bool:
        """Remember ``g`` (a Graph or a text); False if it was already there."""
        t = self._text(g)
        new = t not in self.texts
        self.texts.add(t)
        return new

    def __contains__(self, g) -> bool:
        return self._text(g) in self.texts

    def __len__(self) -> int:
        return len(self.texts)


class _Work:
    """A graph being edited: nodes may be appended or changed, never removed (``canonical`` prunes the dead)."""

    def __init__(self, g: Graph):
        self.nodes, self.outputs = list(g.nodes), list(g.outputs)

    def add(self, node: Node) -> int:
        self.nodes.append(node)
        return len(self.nodes) - 1

    def consumers(self, i: int) -> int:
        """How many uses node ``i`` has: by the live nodes and by the outputs."""
        return sum(self.nodes[j].args.count(i) for j in self.live()) + self.outputs.count(i)

    def redirect(self, old: int, new: int, skip: int | None = None) -> None:
        """Every use of ``old`` (by a node other than ``skip``, and by the outputs) becomes a use of ``new``."""
        for j, v in enumerate(self.nodes):
            if j != skip and old in v.args:
                self.nodes[j] = replace(v, args=tuple(new if a == old else a for a in v.args))
        self.outputs = [new if o == old else o for o in self.outputs]

    def ancestors(self, i: int) -> list[int]:
        """All nodes ``i`` depends on (not itself), in index order."""
        out, todo = set(), list(self.nodes[i].args)
        while todo:
            j = todo.pop()
            if j not in out:
                out.add(j)
                todo.extend(self.nodes[j].args)
        return sorted(out)

    def live(self) -> set[int]:
        out, todo = set(), list(self.outputs)
        while todo:
            j = todo.pop()
            if j not in out:
                out.add(j)
                todo.extend(self.nodes[j].args)
        return out

    def graph(self) -> Graph:
        return Graph(self.nodes, self.outputs)


def _activation(draw: _Draw, arg: int, not_like: Node | None = None) -> Node:
    options = [(op, a) for op, a in ACTIVATIONS
               if not_like is None or (op, a, True) != (not_like.op, not_like.a, not_like.bias)]
    op, a = draw.choice(options)
    return Node(op, (arg,), a=a) if op == "lin" else Node(op, (arg,))


def _short_node(v: Node) -> str:
    if v.op == "lin":
        return f"W{'b' if v.bias else ''}" + (f"({v.a:g})" if v.a else "")
    return {"one": "1", **G.SYMBOL}.get(v.op, v.op)


def _short(w: _Work, i: int) -> str:
    return _short_node(w.nodes[i])


# ---- the six transformations of sec. 3.2, on node i; each returns what it did --------------------------------------


def _swap_activation(w, i, draw):  # 1. "replace it with a randomly chosen activation function"
    old = w.nodes[i]
    w.nodes[i] = _activation(draw, old.args[0], not_like=old)
    return f"1: {_short_node(old)} -> {_short(w, i)}"


def _swap_elementwise(w, i, draw):  # 2. "replace it with a different randomly-chosen elementwise operation"
    old = w.nodes[i].op
    w.nodes[i] = replace(w.nodes[i], op=draw.choice([op for op in BINARY if op != old]))
    return f"2: {G.SYMBOL[old]} -> {_short(w, i)}"


def _insert_activation(w, i, draw):  # 3. "insert a random activation function between the current node and a parent"
    v = w.nodes[i]
    pos = draw.index(len(v.args))
    new = w.add(_activation(draw, v.args[pos]))
    w.nodes[i] = replace(v, args=v.args[:pos] + (new,) + v.args[pos + 1:])
    return f"3: {_short(w, new)} inserted under {_short(w, i)}"


def _remove(w, i, draw):  # 4. "remove the current node if it has one input and one output"
    w.redirect(i, w.nodes[i].args[0])
    return f"4: {_short(w, i)} removed"


def _to_ancestor(w, i, draw):  # 5. "replace the current node with a randomly chosen node from its ancestors"
    j = draw.choice(w.ancestors(i))
    w.redirect(i, j)
    return f"5: {_short(w, i)} replaced by its ancestor {_short(w, j)}"


def _combine(w, i, draw):  # 6. "... with the sum, product or difference of a random ancestor of it and of node A"
    others = sorted(j for j in w.live() if w.nodes[j].op not in LEAVES)
    a = draw.choice(others)
    p, q = draw.choice(w.ancestors(i)), draw.choice(w.ancestors(a))
    new = w.add(Node(draw.choice(list(BINARY)), (p, q)))
    w.redirect(i, new, skip=new)
    return f"6: {_short(w, i)} replaced by {_short(w, p)} {_short(w, new)} {_short(w, q)}"


def _applicable(w: _Work, i: int) -> list:
    v = w.nodes[i]
    unary = v.op in ACTS or v.op == "lin"
    out = [_swap_activation] if unary else [_swap_elementwise] if v.op in BINARY else []
    out.append(_insert_activation)
    if unary and w.consumers(i) == 1:
        out.append(_remove)
    return out + [_to_ancestor, _combine]


def propose(g: Graph, draw: _Draw) -> tuple[Graph, list[str]]:
    """One draw of sec. 3.2's mutation: p ~ U[0, 1], each node picked with probability p (1 to 3 of them), one
    applicable transformation each. -> (the edited graph, not checked nor canonical; what was applied)."""
    w = _Work(g)
    inner = [i for i, v in enumerate(g.nodes) if v.op not in LEAVES]
    p = draw.uniform()
    picked = [i for i in inner if draw.uniform() < p]
    if not picked:
        picked = [draw.choice(inner)]
    while len(picked) > 3:
        picked.pop(draw.index(len(picked)))
    applied = []
    for i in picked:
        if i not in w.live():  # an earlier transformation cut it off
            continue
        applied.append(draw.choice(_applicable(w, i))(w, i, draw))
    return w.graph(), applied


def mutate(g: Graph | str, rng, *, m: int | None = None, n: int | None = None, seen: Seen | None = None,
           tries: int = 1000, rejected: list | None = None) -> tuple[Graph, list[str]]:
    """A valid mutation of ``g`` -> (its canonical graph, the transformations applied). Drawn again while the result
    is invalid (``graph.check``, with m and n if given: a task with m != n rejects graphs that add x to a hidden
    vector), unchanged, or in ``seen``; each rejected draw is appended to ``rejected`` as (applied, reason). ``rng``: a
    random.Random, a numpy Generator or an int seed."""
    g = G.parse(g) if isinstance(g, str) else G.canonical(g)
    draw = _Draw(rng)
    for _ in range(tries):
        new, applied = propose(g, draw)
        why = G.check(new, m, n)
        if why is None:
            new = G.canonical(new)
            why = "unchanged" if new == g else "already seen" if seen is not None and new in seen else None
        if why is None:
            return new, applied
        if rejected is not None:
            rejected.append((applied, why))
    raise RuntimeError(f"no valid mutation of {g.text!r} in {tries} tries")
