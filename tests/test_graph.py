"""Cells as computation graphs (``cells/graph.py``, ``cells/graphcell.py``) and their mutation (``cells/mutate.py``):
Jozefowicz et al. 2015, sec. 3.2.

The test of the whole representation: the LSTM, the GRU, MUT1-3 and the tanh RNN written as graphs ARE the
hand-written registry cells (parameter count, outputs, states and every gradient, with the weights copied over,
through ``cells.build`` layers on eager, compiled and, for the LSTM and the tanh RNN, the fused kernel).
"""
from __future__ import annotations

import random

import numpy as np
import pytest
import reference as ref
import torch
import yaml
from torch.testing import assert_close

import cells
from cells import backends, graphcell
from cells import graph as G
from cells import mutate as M
from cells.__main__ import main as cli
from cells.base import formula_count

F64 = torch.float64
NAMES = list(G.REFERENCE)  # lstm, gru, mut1, mut2, mut3, tanh_rnn


@pytest.fixture
def register():
    """``cells.register_graph`` for one test: the names are unregistered after it."""
    names = []

    def reg(name, text, **kw):
        cells.register_graph(name, text, **kw)
        names.append(name)
        return name

    yield reg
    for name in names:
        cells.registry.unregister(name)


def sizes(g: G.Graph):
    return (4, 4) if g.square_only else (3, 4)


def copy_weights(hand, graph_layer, g: G.Graph) -> dict[str, str]:
    """Copy every parameter of the hand-written layer into the graph layer by the labels of ``graph.PAPER_FORM``;
    -> graph parameter name -> hand-written name (each hand-written parameter used exactly once)."""
    names = {}
    for k, label in g.labels.items():
        w, *b = label.split()
        names[f"W_{k}" if hasattr(graph_layer.cells[0], f"W_{k}") else f"U_{k}"] = w
        if b:
            names[f"b_{k}"] = b[0]
    own = dict(hand.cells[0].named_parameters())
    assert sorted(names.values()) == sorted(own), "the labels name every parameter of the hand-written cell once"
    with torch.no_grad():
        for mine, theirs in zip(graph_layer.cells, hand.cells):
            for gname, hname in names.items():
                getattr(mine, gname).copy_(getattr(theirs, hname))
    return names


def forward_backward(layer, x, state, lengths):
    """Outputs, final state and the gradients (x, initial state, every parameter) of a fixed random functional."""
    x = x.detach().clone().requires_grad_(True)
    st = tuple(s.detach().clone().requires_grad_(True) for s in state)
    out, new = layer(x, st if layer.has_cell_state else st[0], lengths)
    new = new if layer.has_cell_state else (new,)
    gen = torch.Generator().manual_seed(1234)
    loss = sum((t * torch.randn(t.shape, generator=gen, dtype=t.dtype)).sum() for t in (out, *new))
    pnames, params = zip(*layer.named_parameters())
    grads = torch.autograd.grad(loss, [x, *st, *params])
    res = {"out": out, "grad x": grads[0], **{f"state {i}": s for i, s in enumerate(new)}}
    res.update({f"grad state {i}": gr for i, gr in enumerate(grads[1:1 + len(st)])})
    return res, dict(zip(pnames, grads[1 + len(st):]))


def same_as_hand_written(name, backend, dtype=F64, **tol):
    g = G.parse(G.PAPER_FORM[name])
    graph_name = f"graph_{name}_{backend}"
    cells.register_graph(graph_name, G.REFERENCE[name])
    try:
        m, n = sizes(g)
        layers = (1, True) if g.square_only else (2, True)
        hand = cells.build(name, m, n, num_layers=layers[0], bidirectional=layers[1], backend="eager").to(dtype)
        mine = cells.build(graph_name, m, n, num_layers=layers[0], bidirectional=layers[1], backend=backend).to(dtype)
        assert cells.num_params(graph_name, m, n) == cells.num_params(name, m, n)
        names = copy_weights(hand, mine, g)
        lengths = torch.tensor([5, 2, 4])
        x = torch.randn(3, 5, m, dtype=dtype)
        x[1, 2:] = float("nan")  # padding never enters
        state = tuple(0.5 * torch.randn(2 * layers[0], 3, n, dtype=dtype) for _ in range(1 + g.has_cell_state))
        want, want_p = forward_backward(hand, x, state, lengths)
        got, got_p = forward_backward(mine, x, state, lengths)
        for key in want:
            assert_close(got[key], want[key], msg=lambda msg, key=key: f"{key}: {msg}", **tol)
        for pname, grad in got_p.items():
            cell, gname = pname.rsplit(".", 1)
            assert_close(grad, want_p[f"{cell}.{names[gname]}"], msg=lambda msg, p=pname: f"grad {p}: {msg}", **tol)
    finally:
        cells.registry.unregister(graph_name)


# ---- the text --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_paper_form_gives_the_reference_text_which_round_trips(name):
    g = G.parse(G.PAPER_FORM[name])
    assert g.text == G.REFERENCE[name]
    again = G.parse(g.text)
    assert again.text == g.text and again == g
    assert G.parse_raw(g.text).text == g.text  # the canonical text is its own canonical form
    assert len(g.text) < 130  # short enough for a config or a paper


def test_one_graph_built_in_two_orders_gives_one_text():
    """MUT1 as the paper writes it, and with statements, names, operands of + and * and the map labels all in
    another order (and one shared node written twice): one canonical text."""
    paper = G.PAPER_FORM["mut1"]
    other = ("out = (1 - gate) * h + gate * tanh(tanh(x) + Wb(h * r))\n"
             "h' = out\n"
             "r = sigmoid(W(h) + Wb(x))\n"
             "gate = sigmoid(Wb(x))")
    assert G.parse(other).text == G.parse(paper).text == G.REFERENCE["mut1"]
    # a parameter-free node written twice is one node; a map written twice is two maps (two sets of weights)
    assert G.parse("h' = tanh(h) * tanh(h) + Wb(x)") == G.parse("t = tanh(h); h' = t * t + Wb(x)")
    assert G.parse("h' = Wb(x) * Wb(x)") != G.parse("w = Wb(x); h' = w * w")
    assert G.parse("h' = Wb(x) * Wb(x)").count(3, 4) == 2 * G.parse("w = Wb(x); h' = w * w").count(3, 4)


def test_node_order_and_operand_order_never_change_the_text():
    """Many mutated graphs, each rebuilt with its nodes listed in a random order and the operands of every + and *
    swapped at random: the canonical text is the same."""
    rng = random.Random(3)
    graphs = [G.parse(t) for t in G.REFERENCE.values()]
    for _ in range(60):
        graphs.append(M.mutate(rng.choice(graphs), rng)[0])
    for g in graphs:
        perm = list(range(len(g.nodes)))
        rng.shuffle(perm)
        where = {old: new for new, old in enumerate(perm)}
        nodes = [None] * len(perm)
        for old, v in enumerate(g.nodes):
            args = tuple(where[a] for a in v.args)
            if v.op in G.COMMUTATIVE and rng.random() < 0.5:
                args = args[::-1]
            nodes[where[old]] = G.Node(v.op, args, a=v.a, bias=v.bias)
        shuffled = G.Graph(nodes, [where[o] for o in g.outputs])
        assert shuffled.text == g.text, g.text


def test_the_text_form_reads_its_variants():
    g = G.parse("c' = f * c + i * tanh(Wb(x) + W(h)); h' = c'; f = sigmoid(Wb(x, 1)); i = 1 - f")
    assert g.has_cell_state  # Linear(1, x): a = 1 on the diagonal; one node for both outputs: named h'
    assert g.text == "v1 = sigmoid(Wb(x, 1)); h' = c * v1 + tanh(Wb(x) + W(h)) * (1 - v1); c' = h'"
    assert G.parse("h' = h - (Wb(x) - W(h))").text == "h' = h - (Wb(x) - W(h))"  # brackets that matter stay
    assert G.parse("h' = (h - Wb(x)) - W(h)").text == "h' = h - Wb(x) - W(h)"
    assert G.parse("h' = σ(Wb(x)) ⊙ h − h").text == "h' = h * sigmoid(Wb(x)) - h"
    assert G.parse("c' = c; h' = tanh(Wb(x) + W(c))").text == "h' = tanh(Wb(x) + W(c)); c' = c"


@pytest.mark.parametrize("text,why", [
    ("h' = Wb(x) + W(a); a = tanh(h' * h)", "cycle"),
    ("a = b; b = a; h' = Wb(x) + a", "cycle"),
    ("h' = tanh(W(h))", "never read the input x"),
    ("h' = Wb(x); c' = 1", "c' is the constant 1"),
    ("h' = Wb(x) * tanh(1)", "depends on none of x, h, c"),
    ("h' = Wb(x) + W(c)", "no output c'"),
    ("h' = tanh(x + h)", "no linear map"),
    ("h' = Wb(x) + q", "never defined"),
    ("c' = Wb(x)", "no output"),
    ("h' = Wb(x) + 2", "only constant"),
    ("h' = Wb(x) +", "end of the text"),
    ("x = Wb(h); h' = x", "an input"),
    ("h' = Wb(x); h' = W(h)", "defined twice"),
])
def test_invalid_graphs_are_rejected_with_their_reason(text, why):
    with pytest.raises(G.GraphError, match=why):
        G.parse(text)
    try:
        raw = G.parse_raw(text)
    except G.GraphError:
        return  # refused by the parser already
    assert why in G.check(raw)


def test_x_outside_a_linear_map_needs_m_equal_n():
    g = G.parse(G.REFERENCE["mut1"])  # + tanh(x)
    assert g.square_only and not G.parse(G.REFERENCE["mut3"]).square_only
    assert G.check(g, 4, 4) is None
    assert "needs m = n" in G.check(g, 3, 4)
    with pytest.raises(G.GraphError, match="needs m = n"):
        G.parse(G.REFERENCE["mut2"], m=3, n=4)


def test_dead_nodes_are_pruned():
    g = G.parse("unused = tanh(Wb(x) + W(h)); h' = tanh(Wb(x) + W(h))")
    assert g.text == G.REFERENCE["tanh_rnn"] and g.count(3, 4) == 3 * 4 + 16 + 4


# ---- parameter counts ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_parameter_count_equals_the_registry_formula(name):
    g = G.parse(G.REFERENCE[name])
    for m, n in [(4, 4), (3, 5), (28, 50), (128, 128)]:
        if g.square_only and m != n:
            continue
        assert formula_count(g.formula, m, n) == g.count(m, n) == cells.get(name).count(m, n), (g.formula, m, n)
    assert G.parse(G.REFERENCE["mut1"]).formula == "2mn + 2n² + 3n" == cells.get("mut1").formula
    assert G.parse("h' = W(h) * W(tanh(h)) + W(x)").formula == "mn + 2n²"


# ---- the reference graphs ARE the hand-written cells -----------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_reference_graph_equals_the_registry_cell_eager(name):
    same_as_hand_written(name, "eager", atol=1e-12, rtol=1e-12)  # float64 rounding: sums in another order


@pytest.mark.parametrize("name", ["lstm", "tanh_rnn"])
def test_lstm_and_tanh_rnn_graphs_run_on_the_fused_kernel(name):
    """The LSTM's and the tanh RNN's graphs have an exact fused form (the only graphs that do)."""
    assert "cudnn" in graphcell.cell_class(G.REFERENCE[name]).exact_backends()
    assert "cudnn" not in graphcell.cell_class(G.REFERENCE["gru"]).exact_backends()
    same_as_hand_written(name, "cudnn", atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("name", ["mut1"])
def test_reference_graph_equals_the_registry_cell_compiled(name, monkeypatch):
    """The compiled backend runs the graph cell's own step (one step per compiled graph here: faster to compile)."""
    monkeypatch.setattr(backends, "STEPS", 1)
    same_as_hand_written(name, "compiled", dtype=torch.float32, atol=1e-5, rtol=1e-4)


# ---- mutation (sec. 3.2) ---------------------------------------------------------------------------------------------


def _walk(rng, steps, **kw):
    """``steps`` mutations, each of a random graph met so far (the search's top-100 list, roughly)."""
    pool, out, rejected = [G.parse(t) for t in G.REFERENCE.values()], [], []
    for _ in range(steps):
        new, applied = M.mutate(pool[int(rng.integers(len(pool))) if hasattr(rng, "integers")
                                     else rng.randrange(len(pool))], rng, rejected=rejected, **kw)
        pool.append(new)
        out.append((new.text, applied))
    return out, rejected


def test_500_mutations_are_valid_or_rejected_with_a_reason():
    walk, rejected = _walk(random.Random(0), 500)
    for text, applied in walk:
        g = G.parse(text)
        assert G.check(g) is None and g.text == text
        assert 1 <= len(applied) <= 3 and all(a[0] in "123456" for a in applied), applied
    assert {a[0] for _, applied in walk for a in applied} == set("123456")  # all six transformations occur
    assert rejected and all(isinstance(why, str) and why for _, why in rejected)
    assert any("cycle" in why for _, why in rejected)  # 6. can close a loop: rejected, drawn again


def test_mutation_is_deterministic_by_seed():
    assert _walk(random.Random(7), 60) == _walk(random.Random(7), 60)
    assert _walk(random.Random(7), 60)[0] != _walk(random.Random(8), 60)[0]
    assert _walk(np.random.default_rng(7), 60) == _walk(np.random.default_rng(7), 60)
    lstm = G.REFERENCE["lstm"]
    assert M.mutate(lstm, 5) == M.mutate(lstm, 5)  # an int seeds a random.Random


def test_seen_graphs_and_size_mismatches_are_rejected():
    seen = M.Seen(G.REFERENCE.values())
    assert G.REFERENCE["gru"] in seen and not seen.add(G.PAPER_FORM["gru"])  # the same graph, written otherwise
    rng, rejected = random.Random(1), []
    for _ in range(200):
        new, _ = M.mutate(G.REFERENCE["gru"], rng, seen=seen, m=3, n=4, rejected=rejected)
        assert seen.add(new) and not new.square_only
    assert len(seen) == len(G.REFERENCE) + 200
    reasons = [why for _, why in rejected]
    assert "already seen" in reasons and any("needs m = n" in why for why in reasons)


# ---- graph cells in the registry -------------------------------------------------------------------------------------


def test_register_graph_then_build_forward_backward(register, capsys):
    text = "c' = c * sigmoid(Wb(x, 1)) + relu(W(h, 0.9) + W(x)); h' = tanh(c') * sigmoid(W(c') + Wb(x))"
    name = register("found_test", text, note="a test graph.")
    cls = cells.get(name)
    assert cls.has_cell_state and cls.paper == "jozefowicz-search" and cls.exact_backends() == ["eager", "compiled"]
    layer = cells.build(name, 3, 5, num_layers=2, bidirectional=True, backend="eager")
    assert sum(p.numel() for p in layer.parameters()) == cells.num_params(name, 3, 5, num_layers=2,
                                                                          bidirectional=True)
    cell = layer.cells[0]
    assert G.parse(text).text.startswith("c' = relu(W(x) + W(h, 0.9)) + c * sigmoid(Wb(x, 1))")  # maps 2 and 3
    assert (cell.U_2.diagonal() > 0.4).all() and (cell.W_3.diagonal() > 0.5).all()  # a added to the diagonal
    x = torch.randn(2, 6, 3)
    out, (h, c) = layer(x, lengths=torch.tensor([6, 3]))
    (out.sum() + c.sum()).backward()
    assert out.shape == (2, 6, 10) and all(p.grad is not None and p.grad.abs().sum() > 0 for p in layer.parameters())
    cli([])
    listed = capsys.readouterr().out
    assert name in listed and cls.formula in listed
    cli(["--describe", name])
    described = capsys.readouterr().out
    assert G.parse(text).text in described and "a test graph." in described
    with pytest.raises(ValueError, match="already registered"):
        cells.register_graph(name, text)
    with pytest.raises(ValueError, match="means nothing for a graph cell"):
        cells.build(name, 3, 5, activation="relu")


def test_registered_graph_needs_no_hand_written_reference(register):
    """tests/reference.py interprets any registered graph node by node: random mutated graphs (with and without c,
    with x outside the maps) against it."""
    rng = random.Random(11)
    graphs = [M.mutate(G.REFERENCE[base], rng)[0] for base in ("lstm", "mut1", "gru", "lstm", "mut2")]
    for i, g in enumerate(graphs):
        name = register(f"walk_{i}", g.text)
        assert name in ref.REFERENCES and ref.get(name).cell_state == g.has_cell_state
        m, n = sizes(g)
        layer = cells.build(name, m, n, backend="eager").to(F64).eval()
        x = torch.randn(2, 4, m, dtype=F64)
        state = tuple(0.5 * torch.randn(2, n, dtype=F64) for _ in range(1 + g.has_cell_state))
        out, new = layer(x, tuple(s[None] for s in state) if g.has_cell_state else state[0][None])
        want, want_state, _ = ref.run(name, layer.cells[0], x, state)
        assert_close(out, want, msg=lambda msg, t=g.text: f"{t}: {msg}")
    assert not set(ref.REFERENCES.keys()) & {f"walk_{i}" for i in range(len(graphs))}  # no stale entries


def test_graphs_file_registers_found_graphs(tmp_path):
    path = tmp_path / "graphs.yaml"
    path.write_text(f'found_a:\n  text: "{G.REFERENCE["mut3"]}"\n  note: seeded from mut3\n'
                    f'found_b: "{G.REFERENCE["tanh_rnn"]}"\n')
    try:
        assert graphcell.load_graphs(path) == ["found_a", "found_b"]
        assert cells.get("found_a").count(3, 4) == cells.get("mut3").count(3, 4)
        assert "seeded from mut3" in cells.describe("found_a")
    finally:
        for name in ("found_a", "found_b"):
            if name in cells.names():
                cells.registry.unregister(name)
    path.write_text('bad:\n  txt: "h\' = Wb(x)"\n')
    with pytest.raises(ValueError, match="needs a 'text'"):
        graphcell.load_graphs(path)
    assert graphcell.load_graphs(tmp_path / "missing.yaml") == []
    shipped = yaml.safe_load(graphcell.GRAPHS_FILE.read_text()) or {}  # read on `import cells`
    assert set(shipped) <= set(cells.names())
