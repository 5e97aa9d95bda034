"""A recurrent cell as a small computation graph: Jozefowicz et al. 2015, sec. 3.2 ("Mutation Generation").

The paper's search space: M + 1 input nodes (the previous hidden state, M = 1 for h alone or M = 2 for h and c, and
the external input x), M output nodes, and in between nodes that are linear maps with their own weights and bias,
element-wise sums, products and differences, and activations. Every node has the hidden size n but x (size m).

The text form, one statement per named node, ``;`` between statements::

    v1 = sigmoid(Wb(x)); h' = h * (1 - v1) + v1 * tanh(Wb(h * sigmoid(Wb(x) + W(h))) + tanh(x))      (MUT1)

- inputs ``x``, ``h``, ``c`` (the previous step's h and c); outputs ``h'`` (and ``c'``): M = 1 or 2;
- ``Wb(e)`` = W e + b, a linear map with its own W and b; ``W(e)`` = W e without a bias (a second bias in a sum of
  maps would be one parameter vector too many: the papers count one bias per gate); ``Wb(e, 1)``: Linear(a, e) of
  sec. 3.2, a added to W's diagonal at initialisation (a in {0, 1, 0.9, 1.1}); a map reading x is n x m, any other
  n x n;
- ``+``, ``-``, ``*`` element-wise (``*`` binds tighter, left-associative), ``tanh``, ``sigmoid``, ``relu``, and the
  constant ``1`` (for the GRU's 1 - z);
- a node used twice is named once (``v1``): an inline ``Wb(x)`` is always a new map, with its own weights.

Input (``parse``) is forgiving: any names, statements in any order, ``⊙ × − σ`` for ``* * - sigmoid``, and labels on
maps, ``Wb[W_xz b_z](x)``, that say which parameters a map is (they are kept beside the graph, never in its text).
The canonical text (``Graph.text``) is one text per graph: dead nodes pruned, identical parameter-free nodes merged,
the operands of ``+`` and ``*`` sorted, shared nodes named v1, v2, ... in the order of a depth-first walk from the
outputs. The k-th linear map of the canonical text owns the cell parameters W_k (reading x) or U_k, and b_k.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, replace

LEAVES = ("x", "h", "c", "one")
ACTS = ("tanh", "sigmoid", "relu")
BINARY = ("add", "sub", "mul")
COMMUTATIVE = ("add", "mul")
SYMBOL = {"add": "+", "sub": "-", "mul": "*"}
OUTPUTS = ("h'", "c'")


class GraphError(ValueError):
    """A text that does not parse, or a graph that is not a valid cell; the message says why."""


@dataclass(frozen=True)
class Node:
    op: str  # a LEAVES, ACTS or BINARY name, or "lin"
    args: tuple = ()  # node indices (names while parsing)
    a: float = 0.0  # lin: added to W's diagonal at initialisation
    bias: bool = True  # lin: W e + b (True) or W e
    k: int = 0  # lin: its number in the text, 1, 2, ...: its parameters are W_k / U_k and b_k


class Graph:
    """``nodes`` (canonical graphs: in evaluation order), ``outputs`` (the node of h', then of c'), ``labels``
    (lin number k -> its label, e.g. "W_xz b_z"). Equal graphs have equal canonical texts: ``==`` compares those."""

    def __init__(self, nodes, outputs, labels=None):
        self.nodes, self.outputs = tuple(nodes), tuple(outputs)
        self.labels = dict(labels or {})
        self._text = None

    # ---- what the cell is ------------------------------------------------------------------------------------------
    @property
    def text(self) -> str:
        """The canonical text (computed once)."""
        if self._text is None:
            self._text = _canonical(self)[0]
        return self._text

    @property
    def has_cell_state(self) -> bool:
        return len(self.outputs) == 2

    def linears(self) -> list[int]:
        """The nodes that are linear maps, in the order of their numbers k."""
        return sorted((i for i, v in enumerate(self.nodes) if v.op == "lin"), key=lambda i: self.nodes[i].k)

    def reads_x(self, i: int) -> bool:
        return self.nodes[self.nodes[i].args[0]].op == "x"

    @property
    def square_only(self) -> bool:
        """x enters a hidden-sized node other than a linear map (tanh(x), x + ...), or is an output: m must be n."""
        return _x_outside_maps(self, range(len(self.nodes)))

    def terms(self) -> tuple[int, int, int]:
        """(maps reading x: n x m each, other maps: n x n, biases: n each)."""
        lins = self.linears()
        mn = sum(self.reads_x(i) for i in lins)
        return mn, len(lins) - mn, sum(self.nodes[i].bias for i in lins)

    def count(self, m: int, n: int) -> int:
        mn, nn, b = self.terms()
        return mn * m * n + nn * n * n + b * n

    @property
    def formula(self) -> str:
        """The parameter count in docs/cells.md's notation, e.g. "2mn + 2n² + 3n" (``cells.base.formula_count``)."""
        parts = [f"{c if c != 1 else ''}{t}" for c, t in zip(self.terms(), ("mn", "n²", "n")) if c]
        return " + ".join(parts) or "0"

    def __eq__(self, other):
        return isinstance(other, Graph) and self.text == other.text

    def __hash__(self):
        return hash(self.text)

    def __repr__(self):
        return f"Graph({self.text!r})"


# ---- the text: tokens, then a recursive-descent parser ---------------------------------------------------------------

_TOKEN = re.compile(r"[ \t]*(?:(?P<num>\d+(?:\.\d*)?|\.\d+)|(?P<name>[A-Za-z_σ][A-Za-z0-9_]*'?)|(?P<label>\[[^\]]*\])"
                    r"|(?P<sym>[-+*(),=;\n⊙×−]))")
_ALIAS = {"⊙": "*", "×": "*", "−": "-", "\n": ";", "σ": "sigmoid"}
_RESERVED = {"x", "h", "c", "W", "Wb", *ACTS}


def _tokens(text: str) -> list[tuple[str, str, int]]:
    out, pos, text = [], 0, text.rstrip()
    while pos < len(text):
        hit = _TOKEN.match(text, pos)
        if hit is None or hit.end() == pos:
            raise GraphError(f"cannot read {text[pos:pos + 20].strip()!r} at character {pos + 1}")
        kind = hit.lastgroup
        out.append((kind, _ALIAS.get(hit.group(kind), hit.group(kind)), pos + 1))
        pos = hit.end()
    return out


def parse_raw(text: str) -> Graph:
    """The graph a text writes, as written: names resolved, nothing checked, pruned or sorted (``check`` tells what
    is wrong with it; ``parse`` is what to use)."""
    toks, k = _tokens(text), 0
    nodes: list[Node] = []
    leaf: dict[str, int] = {}
    bind: dict[str, object] = {}  # name -> node index or another name
    labels: dict[int, str] = {}
    lin_count = 0

    def peek(value=None):
        if k < len(toks) and (value is None or toks[k][1] == value):
            return toks[k]
        return None

    def expect(value):
        nonlocal k
        if peek(value) is None:
            got = f"{toks[k][1]!r} at character {toks[k][2]}" if k < len(toks) else "the end"
            raise GraphError(f"expected {value!r}, got {got}")
        k += 1

    def add(node):
        nodes.append(node)
        return len(nodes) - 1

    def leaf_node(op):
        if op not in leaf:
            leaf[op] = add(Node(op))
        return leaf[op]

    def atom():
        nonlocal k, lin_count
        tok = peek()
        if tok is None:
            raise GraphError("unexpected end of the text")
        kind, value, pos = tok
        k += 1
        if value == "(":
            e = expr()
            expect(")")
            return e
        if kind == "num":
            if float(value) != 1.0:
                raise GraphError(f"the constant {value} at character {pos}: 1 is the only constant (as in 1 - z)")
            return leaf_node("one")
        if kind != "name":
            raise GraphError(f"unexpected {value!r} at character {pos}")
        if value in ACTS:
            expect("(")
            e = expr()
            expect(")")
            return add(Node(value, (e,)))
        if value in ("W", "Wb"):
            lin_count += 1
            number = lin_count  # the maps inside its operand come after it in the text
            if peek() is not None and peek()[0] == "label":
                labels[number] = toks[k][1][1:-1].strip()
                k += 1
            expect("(")
            e, a = expr(), 0.0
            if peek(","):
                k += 1
                if peek() is None or peek()[0] != "num":
                    raise GraphError(f"expected the diagonal offset a of the map at character {pos}, e.g. Wb(h, 1)")
                a = float(toks[k][1])
                k += 1
            expect(")")
            return add(Node("lin", (e,), a=a, bias=value == "Wb", k=number))
        if value in ("x", "h", "c"):
            return leaf_node(value)
        return value  # a name, resolved at the end (a forward reference can write a cycle, which ``check`` names)

    def term():
        nonlocal k
        left = atom()
        while peek("*"):
            k += 1
            left = add(Node("mul", (left, atom())))
        return left

    def expr():
        nonlocal k
        left = term()
        while peek("+") or peek("-"):
            op = "add" if toks[k][1] == "+" else "sub"
            k += 1
            left = add(Node(op, (left, term())))
        return left

    while k < len(toks):
        if peek(";"):
            k += 1
            continue
        kind, name, pos = toks[k]
        if kind != "name" or name in _RESERVED or (name.endswith("'") and name not in OUTPUTS):
            what = "an input" if name in ("x", "h", "c") else "not a name to define"
            raise GraphError(f"{name!r} at character {pos} is {what}: statements are NAME = expression, the outputs "
                             f"h' and c'")
        if name in bind:
            raise GraphError(f"{name} is defined twice")
        k += 1
        expect("=")
        bind[name] = expr()
        if k < len(toks) and not peek(";"):
            raise GraphError(f"expected ';' or a new line at character {toks[k][2]}, got {toks[k][1]!r}")

    def resolve(ref, seen=()):
        if not isinstance(ref, str):
            return ref
        if ref in seen:
            raise GraphError(f"cycle: {' = '.join(seen + (ref,))}")
        if ref not in bind:
            raise GraphError(f"{ref} is used but never defined")
        return resolve(bind[ref], seen + (ref,))

    if "h'" not in bind:
        raise GraphError("no output: write h' = ... (and c' = ... for a cell with a cell state)")
    nodes = [replace(v, args=tuple(resolve(a) for a in v.args)) for v in nodes]
    outputs = [resolve("h'")] + ([resolve("c'")] if "c'" in bind else [])
    return Graph(nodes, outputs, labels)


def parse(text: str, m: int | None = None, n: int | None = None) -> Graph:
    """The canonical graph of a text; GraphError saying why if it is not a valid cell (``check``)."""
    return canonical(parse_raw(text), m, n)


# ---- validity (sec. 3.2: "We reject architectures whose number of output vectors is incompatible ...") ---------------


def _order(g: Graph) -> list[int] | str:
    """The nodes the outputs depend on, each after its operands; or the reason (a cycle) there is no such order."""
    state, order = {}, []

    def visit(i, path):
        if state.get(i) == "done":
            return None
        if state.get(i) == "open":
            loop = path[path.index(i):] + [i]
            return "cycle within a step: " + " -> ".join(_describe(g, j) for j in loop)
        state[i] = "open"
        for j in g.nodes[i].args:
            why = visit(j, path + [i])
            if why:
                return why
        state[i] = "done"
        order.append(i)
        return None

    for o in g.outputs:
        why = visit(o, [])
        if why:
            return why
    return order


def _x_outside_maps(g: Graph, among) -> bool:
    """Whether one of the nodes ``among`` other than a map reads x, or x is an output."""
    direct = any(g.nodes[j].op == "x" for i in among if g.nodes[i].op != "lin" for j in g.nodes[i].args)
    return direct or any(g.nodes[o].op == "x" for o in g.outputs)


def _describe(g: Graph, i: int) -> str:
    v = g.nodes[i]
    return {"lin": "W" + ("b" if v.bias else ""), "one": "1"}.get(v.op, SYMBOL.get(v.op, v.op))


def check(g: Graph, m: int | None = None, n: int | None = None) -> str | None:
    """None for a valid cell, else the reason it is not one. With m and n, also that sizes agree."""
    nodes = g.nodes
    for i, v in enumerate(nodes):
        arity = {"lin": 1, **dict.fromkeys(ACTS, 1), **dict.fromkeys(BINARY, 2)}.get(v.op, 0)
        if v.op not in (*LEAVES, *ACTS, *BINARY, "lin") or len(v.args) != arity:
            return f"node {i}: {v.op!r} with {len(v.args)} operands"
        if not all(isinstance(j, int) and 0 <= j < len(nodes) for j in (*v.args, *g.outputs)):
            return f"node {i} or an output refers to no node"
    order = _order(g)
    if isinstance(order, str):
        return order
    inputs: dict[int, set] = {}  # node -> the inputs x, h, c it depends on
    for i in order:
        v = nodes[i]
        inputs[i] = {v.op} if v.op in ("x", "h", "c") else set().union(*(inputs[j] for j in v.args))
        if v.op not in LEAVES and not inputs[i]:
            return f"a {_describe(g, i)} node depends on none of x, h, c (a constant: 1 is only an operand of + - *)"
    reads = set().union(*(inputs[o] for o in g.outputs))
    if "x" not in reads:
        return "the outputs never read the input x"
    if "c" in reads and not g.has_cell_state:
        return "reads c but has no output c' (M = 1: the state is h alone)"
    for name, o in zip(OUTPUTS, g.outputs):
        if nodes[o].op == "one":
            return f"{name} is the constant 1"
    if not any(nodes[i].op == "lin" for i in order):
        return "no linear map: the cell has no parameters"
    if m is not None and n is not None and m != n and _x_outside_maps(g, order):
        return f"x (size m = {m}) enters a hidden-sized node (size n = {n}) other than a linear map: needs m = n"
    return None


# ---- the canonical form ----------------------------------------------------------------------------------------------


def canonical(g: Graph, m: int | None = None, n: int | None = None) -> Graph:
    """The canonical graph: ``parse_raw(text)`` of the canonical text, the labels carried over; GraphError if not
    a valid cell."""
    why = check(g, m, n)
    if why:
        raise GraphError(why)
    text, lin_k = _canonical(g)
    out = parse_raw(text)
    out.labels = {lin_k[i]: g.labels[v.k] for i, v in enumerate(g.nodes) if v.op == "lin" and v.k in g.labels
                  and i in lin_k}
    out._text = text
    return out


def _sha(*parts) -> str:
    return hashlib.sha1(repr(parts).encode()).hexdigest()[:16]


def _key_code(v: Node) -> str:
    """Sort code of a node: inputs first, then maps, activations, element-wise ops (so ``Wb(x) + W(h)``)."""
    return {"x": "0", "h": "1", "c": "2", "one": "3", "lin": "4", "sigmoid": "5s", "tanh": "5t", "relu": "5r",
            "mul": "6m", "add": "6a", "sub": "6s"}[v.op]


def _canonical(g: Graph) -> tuple[str, dict[int, int]]:
    """(canonical text, node -> its map number k in that text). Steps: prune, merge, sort, name, print."""
    why = _order(g)
    if isinstance(why, str):
        raise GraphError(why)
    # 1. prune (only the nodes the outputs depend on are in the order) and merge equal parameter-free nodes: two
    # tanh(h) compute the same thing; two Wb(h) are two maps with their own weights and stay two
    nodes, same = list(g.nodes), {}
    seen: dict[tuple, int] = {}
    for i in why:
        v = nodes[i]
        args = tuple(same[j] for j in v.args)
        if v.op in COMMUTATIVE:
            args = tuple(sorted(args))
        nodes[i] = replace(v, args=args)
        same[i] = seen.setdefault((v.op, args) if v.op != "lin" else ("lin", i), i)
    live = [i for i in why if same[i] == i]  # evaluation order
    outputs = [same[o] for o in g.outputs]
    # 2. a sort key per node, independent of construction order: its expression tree (shared nodes expanded, cut at
    # 200 characters), then Weisfeiler-Lehman colours (operands and users, refined to a fixed point) for nodes with
    # equal trees but different places in the graph
    tree: dict[int, str] = {}
    for i in live:
        v = nodes[i]
        sub = [tree[j] for j in v.args]
        sub = sorted(sub) if v.op in COMMUTATIVE else sub
        extra = ("b" if v.bias else "") + (f"{v.a:g}" if v.a else "") if v.op == "lin" else ""
        tree[i] = (_key_code(v) + ("(" + ",".join(sub) + ")" if sub else "") + extra)[:200]
    users: dict[int, list] = {i: [] for i in live}
    for i in live:
        for pos, j in enumerate(nodes[i].args):
            users[j].append((i, "s" if nodes[i].op in COMMUTATIVE else pos))
    roles = {i: tuple(name for name, o in zip(OUTPUTS, outputs) if o == i) for i in live}
    colour = {i: _sha(tree[i], roles[i]) for i in live}
    for _ in range(len(live)):
        new = {}
        for i in live:
            ops = [colour[j] for j in nodes[i].args]
            ops = sorted(ops) if nodes[i].op in COMMUTATIVE else ops
            new[i] = _sha(colour[i], ops, sorted((colour[u], str(p)) for u, p in users[i]))
        if len(set(new.values())) == len(set(colour.values())):
            break
        colour = new

    def operands(i):
        args = nodes[i].args
        return sorted(args, key=lambda j: (tree[j], colour[j])) if nodes[i].op in COMMUTATIVE else list(args)

    # 3. names: the outputs by their own names, other nodes used twice or more v1, v2, ... in depth-first order
    uses = {i: len(users[i]) + outputs.count(i) for i in live}
    name: dict[int, str] = {}
    stmts: list[int] = []
    done: set[int] = set()

    def visit(i):
        if i in done or nodes[i].op in LEAVES:
            return
        done.add(i)
        for j in operands(i):
            visit(j)
        if i in outputs:
            name[i] = OUTPUTS[outputs.index(i)]
        elif uses[i] > 1:
            name[i] = f"v{sum(i_ not in outputs for i_ in name) + 1}"
        if i in name:
            stmts.append(i)

    for o in outputs:
        visit(o)
    # 4. print: maps numbered in the order they appear
    lin_k: dict[int, int] = {}
    leaf_name = {"x": "x", "h": "h", "c": "c", "one": "1"}
    prec = {"add": 1, "sub": 1, "mul": 2}

    def show(i, top=False):
        v = nodes[i]
        if v.op in LEAVES:
            return leaf_name[v.op]
        if i in name and not top:
            return name[i]
        if v.op == "lin":
            lin_k[i] = len(lin_k) + 1
            a = f", {v.a:g}" if v.a else ""
            return f"W{'b' if v.bias else ''}({show(v.args[0])}{a})"
        if v.op in ACTS:
            return f"{v.op}({show(v.args[0])})"
        left, right = operands(i)
        ls, rs = show(left), show(right)
        lp = prec.get(nodes[left].op, 3) if left not in name else 3
        rp = prec.get(nodes[right].op, 3) if right not in name else 3
        ls = f"({ls})" if lp < prec[v.op] else ls
        rs = f"({rs})" if rp <= prec[v.op] else rs  # the parser is left-associative: a - (b - c) keeps its brackets
        return f"{ls} {SYMBOL[v.op]} {rs}"

    lines = [f"{name[i]} = {show(i, top=True)}" for i in stmts]
    for out_name, o in zip(OUTPUTS, outputs):  # an output that is an input or another output: h' = h, c' = h'
        if name.get(o) != out_name:
            lines.append(f"{out_name} = {name.get(o) or show(o)}")
    return "; ".join(lines), lin_k


# ---- the cells of Jozefowicz et al. (and the LSTM) as graphs: the seeds of the search --------------------------------
# Written in the papers' order with the registry's parameter names as labels (PAPER_FORM), and as the canonical
# texts those give (REFERENCE; tests/test_graph.py checks that one gives the other and that each equals its
# hand-written registry cell exactly).

PAPER_FORM = {
    "lstm": "i = σ(Wb[W_i b_i](x) + W[U_i](h)); f = σ(Wb[W_f b_f](x) + W[U_f](h));"
            " g = tanh(Wb[W_g b_g](x) + W[U_g](h)); o = σ(Wb[W_o b_o](x) + W[U_o](h));"
            " c' = f ⊙ c + i ⊙ g; h' = o ⊙ tanh(c')",
    "gru": "r = σ(Wb[W_xr b_r](x) + W[W_hr](h)); z = σ(Wb[W_xz b_z](x) + W[W_hz](h));"
           " h' = z ⊙ h + (1 − z) ⊙ tanh(Wb[W_xh b_h](x) + W[W_hh](r ⊙ h))",
    "mut1": "z = σ(Wb[W_xz b_z](x)); r = σ(Wb[W_xr b_r](x) + W[W_hr](h));"
            " h' = tanh(Wb[W_hh b_h](r ⊙ h) + tanh(x)) ⊙ z + h ⊙ (1 − z)",
    "mut2": "z = σ(Wb[W_xz b_z](x) + W[W_hz](h)); r = σ(x + Wb[W_hr b_r](h));"
            " h' = tanh(W[W_hh](r ⊙ h) + Wb[W_xh b_h](x)) ⊙ z + h ⊙ (1 − z)",
    "mut3": "z = σ(Wb[W_xz b_z](x) + W[W_hz](tanh(h))); r = σ(Wb[W_xr b_r](x) + W[W_hr](h));"
            " h' = tanh(W[W_hh](r ⊙ h) + Wb[W_xh b_h](x)) ⊙ z + h ⊙ (1 − z)",
    "tanh_rnn": "h' = tanh(Wb[W b](x) + W[U](h))",
}

REFERENCE = {
    "lstm": "c' = c * sigmoid(Wb(x) + W(h)) + sigmoid(Wb(x) + W(h)) * tanh(Wb(x) + W(h)); "
            "h' = sigmoid(Wb(x) + W(h)) * tanh(c')",
    "gru": "v1 = sigmoid(Wb(x) + W(h)); h' = h * v1 + tanh(Wb(x) + W(h * sigmoid(Wb(x) + W(h)))) * (1 - v1)",
    "mut1": "v1 = sigmoid(Wb(x)); h' = h * (1 - v1) + v1 * tanh(Wb(h * sigmoid(Wb(x) + W(h))) + tanh(x))",
    "mut2": "v1 = sigmoid(Wb(x) + W(h)); h' = h * (1 - v1) + v1 * tanh(Wb(x) + W(h * sigmoid(x + Wb(h))))",
    "mut3": "v1 = sigmoid(Wb(x) + W(tanh(h))); h' = h * (1 - v1) + v1 * tanh(Wb(x) + W(h * sigmoid(Wb(x) + W(h))))",
    "tanh_rnn": "h' = tanh(Wb(x) + W(h))",
}
