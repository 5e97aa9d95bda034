"""Tests of the G2-LSTM paper's gate compression (``cells.compress_gates``, sec. 4.3) and gate pictures
(``lit_models.gates``, sec. 4.4): values by hand, untouched parameters bit for bit, the SVD against torch's, the
compression ratio against the paper's "roughly 12x / 8x / 32x", gate collection with padding, and the PNG files."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.testing import assert_close

import cells
from cells.compress import low_rank
from lit_models.gates import collect_gates, plot_gate_heatmap, plot_gate_histograms

IF = ("W_i", "U_i", "b_i", "W_f", "U_f", "b_f")
OG = ("W_o", "U_o", "b_o", "W_g", "U_g", "b_g")


def lstm(m=5, n=6, scale=3.0, **kw):
    """An lstm layer with weights spread over about [-scale/sqrt(n), scale/sqrt(n)], so rounding meets every level."""
    layer = cells.build("lstm", m, n, **kw)
    with torch.no_grad():
        for p in layer.parameters():
            p.mul_(scale)
    return layer


def snapshot(layer):
    return {k: v.detach().clone() for k, v in layer.state_dict().items()}


def assert_multiples(t, r, c=None):
    k = t / r
    assert_close(k, k.round(), atol=1e-4, rtol=0)
    if c is not None:
        assert t.abs().max() <= c + 1e-6


# ---- round and round & clip (eqs. 17, 18) -------------------------------------------------------------------------
def test_round_by_hand_and_other_gates_untouched():
    layer = lstm()
    before = snapshot(layer)
    report = cells.compress_gates(layer, "round", r=0.2)
    cell, old = layer.cells[0], {k.split(".")[-1]: v for k, v in before.items()}
    for name in IF:
        p = getattr(cell, name)
        assert torch.equal(p, torch.round(old[name] / 0.2) * 0.2)  # eq. 17
        assert_multiples(p, 0.2)
    for name in OG:
        assert torch.equal(getattr(cell, name), old[name])  # bit for bit
    m, n = 5, 6
    assert report["tensors_changed"] == 6 and report["method"] == "round" and report["settings"] == {"r": 0.2}
    assert report["gates"]["i"]["params"] == report["gates"]["f"]["params"] == n * m + n * n + n
    i = report["gates"]["i"]
    assert i["distinct"] == len(torch.unique(torch.cat([getattr(cell, k).flatten() for k in IF[:3]])))
    assert report["ratio"] == pytest.approx(report["bits_before"] / report["bits_after"])


@pytest.mark.parametrize("r, c", [(0.2, 0.4), (0.5, 1.0)])  # the paper's PTB and translation settings
def test_round_clip_values(r, c):
    layer = lstm(scale=8.0)
    report = cells.compress_gates(layer, "round_clip", r=r, c=c)
    levels = torch.tensor([-2 * r, -r, 0.0, r, 2 * r])
    for name in IF:
        p = getattr(layer.cells[0], name)
        assert_multiples(p, r, c)
        assert torch.isin(p, levels).all()  # (0, ±0.2, ±0.4) / (0, ±0.5, ±1.0), as sec. 4.3 says
    for g in "if":
        assert report["gates"][g]["distinct"] == 5 and report["gates"][g]["bits"] == 3
    assert report["ratio"] == pytest.approx(32 / 3)


def test_round_biases_false_keeps_biases():
    layer = lstm()
    before = snapshot(layer)
    report = cells.compress_gates(layer, "round_clip", r=0.2, c=0.4, biases=False)
    for name in ("b_i", "b_f"):
        assert torch.equal(getattr(layer.cells[0], name), before[f"cells.0.{name}"])
    assert report["tensors_changed"] == 4
    m, n, bits = 5, 6, report["gates"]["i"]["bits"]
    assert report["bits_after"] == 2 * (bits * (n * m + n * n) + 32 * n)


# ---- low rank -----------------------------------------------------------------------------------------------------
def test_svd_rank_k_equals_torch_truncation():
    m, n, k = 12, 10, 3
    layer = lstm(m, n)
    before = {k_.split(".")[-1]: v for k_, v in snapshot(layer).items()}
    report = cells.compress_gates(layer, "svd", rank=k)
    cell = layer.cells[0]
    for name in ("W_i", "U_i", "W_f", "U_f"):
        p = getattr(cell, name)
        assert torch.linalg.matrix_rank(p) == k
        U, S, Vh = torch.linalg.svd(before[name], full_matrices=False)
        assert_close(p, U[:, :k] @ torch.diag(S[:k]) @ Vh[:k], atol=1e-5, rtol=1e-5)
    for name in ("b_i", "b_f") + OG:  # biases of svd untouched, other gates untouched
        assert torch.equal(getattr(cell, name), before[name])
    assert report["tensors_changed"] == 4
    assert report["gates"]["i"]["params"] == n * m + n * n + n
    assert report["gates"]["i"]["params_after"] == k * (n + m) + k * (n + n) + n


def test_svd_rank_at_least_min_shape_changes_nothing():
    layer = lstm(12, 10)
    before = snapshot(layer)
    report = cells.compress_gates(layer, "svd", rank=10)
    assert all(torch.equal(v, before[k]) for k, v in layer.state_dict().items())
    assert report["tensors_changed"] == 0 and report["ratio"] == 1.0


def test_low_rank_keeps_dtype():
    M = torch.randn(8, 6, dtype=torch.float64)
    assert low_rank(M, 2).dtype == torch.float64 and torch.linalg.matrix_rank(low_rank(M, 2)) == 2


# ---- models, stacks, cells ----------------------------------------------------------------------------------------
class TinyLM(nn.Module):
    """AWD-LSTM's layout: an embedding, a list of single-layer recurrent layers, a decoder."""

    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(20, 4)
        self.rnns = nn.ModuleList([cells.build("lstm", 4, 7), cells.build("lstm", 7, 7), cells.build("lstm", 7, 4)])
        self.decoder = nn.Linear(4, 20)


def test_model_with_several_recurrent_layers():
    model = TinyLM()
    before = snapshot(model)
    report = cells.compress_gates(model, "round", r=0.2)
    assert report["tensors_changed"] == 3 * 6
    for rnn in model.rnns:
        for name in IF:
            assert_multiples(getattr(rnn.cells[0], name), 0.2)
    for key in ("embedding.weight", "decoder.weight", "decoder.bias", "rnns.1.cells.0.U_o"):
        assert torch.equal(model.state_dict()[key], before[key])
    assert report["gates"]["f"]["params"] == sum(c.W_f.numel() + c.U_f.numel() + c.b_f.numel()
                                                 for rnn in model.rnns for c in rnn.cells)


def test_bidirectional_two_layer():
    layer = lstm(5, 6, num_layers=2, bidirectional=True)
    report = cells.compress_gates(layer, "svd", rank=2)
    assert len(layer.cells) == 4 and report["tensors_changed"] == 4 * 4
    for cell in layer.cells:
        assert all(torch.linalg.matrix_rank(getattr(cell, k)) == 2 for k in ("W_i", "U_i", "W_f", "U_f"))
    n = 6  # W of layer 2 sees both directions: (n, 2n)
    assert report["gates"]["i"]["params"] == 2 * (n * 5 + n * n + n) + 2 * (n * 2 * n + n * n + n)


def test_lstm1_without_W_i():
    m, n = 5, 6
    layer = cells.build("lstm1", m, n)
    report = cells.compress_gates(layer, "round", r=0.2)
    assert report["tensors_changed"] == 4  # U_i, b_i, U_f, b_f: lstm1 has no W_i and no W_f
    assert report["gates"]["i"]["params"] == n * n + n
    assert_multiples(layer.cells[0].U_i, 0.2)


def test_other_cell_families_names():
    gru = cells.build("gru", 4, 5)
    report = cells.compress_gates(gru, "round", r=0.2, gates=("r", "z"))  # W_xr, W_hr, b_r, W_xz, W_hz, b_z
    assert report["tensors_changed"] == 6
    peep = cells.build("peephole_lstm", 4, 5)
    p_i = peep.cells[0].p_i.clone()
    report = cells.compress_gates(peep, "round", r=0.2)  # W_i, R_i, b_i (Greff's R); the peephole p_i untouched
    assert report["tensors_changed"] == 6 and torch.equal(peep.cells[0].p_i, p_i)


# ---- errors --------------------------------------------------------------------------------------------------------
def test_errors():
    layer = lstm()
    before = snapshot(layer)
    with pytest.raises(ValueError, match=r"gru cells have no gate 'i', 'f'; the gates they have: r, z, h"):
        cells.compress_gates(cells.build("gru", 4, 5), "round", r=0.2)
    with pytest.raises(ValueError, match="valid methods: round, round_clip, svd"):
        cells.compress_gates(layer, "prune", r=0.2)
    with pytest.raises(ValueError, match="needs r and c; c is missing"):
        cells.compress_gates(layer, "round_clip", r=0.2)
    with pytest.raises(ValueError, match="needs r; r is missing"):
        cells.compress_gates(layer, "round")
    with pytest.raises(ValueError, match="needs rank; rank is missing"):
        cells.compress_gates(layer, "svd")
    with pytest.raises(ValueError, match="rank means nothing for method 'round'"):
        cells.compress_gates(layer, "round", r=0.2, rank=3)
    with pytest.raises(ValueError, match="no cells.Recurrent layer"):
        cells.compress_gates(nn.Linear(2, 2), "svd", rank=1)
    model = nn.ModuleList([layer, cells.build("lstm_i", 5, 6)])  # every check runs before the first change
    with pytest.raises(ValueError, match="lstm_i cells have no gate 'i'"):
        cells.compress_gates(model, "round", r=0.2)
    assert all(torch.equal(v, before[k]) for k, v in layer.state_dict().items())


# ---- the compression ratio against the paper's figures ------------------------------------------------------------
def test_ratio_translation_reproduced():
    """ "rank = 16 (roughly 8x/32x ... for German->English and English->German)": n x n gate matrices, n / (2k)."""
    assert cells.gate_compression_ratio([(256, 256)], rank=16) == 8.0
    assert cells.gate_compression_ratio([(1024, 1024)], rank=16) == 32.0
    report = cells.compress_gates(cells.build("lstm", 256, 256), "svd", rank=16)  # W, U and b of i and f
    assert report["ratio"] == pytest.approx(8.0, rel=0.02)
    shapes = [(1024, 1024), (1024, 1024), (1024,)]
    assert cells.gate_compression_ratio(shapes, rank=16) == pytest.approx(32.0, rel=0.02)


def test_ratio_ptb_12x_needs_the_joint_count():
    """ "rank = 64 (roughly 12x compression rate of the gates)": AWD-LSTM 400-1150-1150-400. Each gate matrix on its
    own gives 9.0x (1150 x 1150) and 7.3x over the stack; 12x needs i and f factored as one (2n x n) matrix."""
    awd = [(1150, 400), (1150, 1150), (1150, 1150), (1150, 1150), (400, 1150), (400, 400)]  # W, U of 3 layers
    assert cells.gate_compression_ratio([(1150, 1150)], rank=64) == pytest.approx(8.98, abs=0.01)
    assert cells.gate_compression_ratio(awd * 2, rank=64) == pytest.approx(7.30, abs=0.01)
    assert cells.gate_compression_ratio([(2 * 1150, 1150)], rank=64) == pytest.approx(12.0, abs=0.05)
    assert cells.gate_compression_ratio([(512, 256)], rank=16) == pytest.approx(10.67, abs=0.01)  # not 8x then


def test_ratio_bits_and_arguments():
    assert cells.gate_compression_ratio([(10, 10), (10,)], bits=3) == pytest.approx(32 / 3)
    assert cells.gate_compression_ratio([(4, 4)], rank=3) == 1.0  # factored would be bigger: stored dense
    with pytest.raises(ValueError, match="exactly one of rank or bits"):
        cells.gate_compression_ratio([(4, 4)])


# ---- collect_gates --------------------------------------------------------------------------------------------------
def test_collect_gates_padding_dropped():
    layer = cells.build("lstm", 3, 5)
    x, lengths = torch.randn(4, 7, 3), torch.tensor([7, 5, 3, 1])
    x_bad = x.clone()
    x_bad[1, 5:] = float("nan")  # garbage in the padding never shows
    values = collect_gates(layer, x_bad, lengths=lengths)
    assert set(values) == {"i", "f"} and values["i"].shape == (16 * 5,) and values["f"].shape == (16 * 5,)
    assert ((values["f"] > 0) & (values["f"] < 1)).all()
    _, _, g = layer(x, lengths=lengths, return_gates=True)
    valid = torch.arange(7)[None] < lengths[:, None]
    assert_close(values["i"], g["i"][valid].flatten())


def test_collect_gates_batches_layers_and_limits():
    layer = cells.build("g2_lstm", 3, 5, num_layers=2, bidirectional=True)
    batches = [(torch.randn(2, 6, 3), torch.tensor([6, 4])), torch.randn(3, 2, 3)]
    values = collect_gates(layer, batches, layer=1, gates=("f",))
    assert values["f"].shape == ((10 + 6) * 10,)  # both directions: 2n values per valid step
    assert layer.training  # restored; it ran in eval: no G2 noise, so the same values twice
    assert torch.equal(values["f"], collect_gates(layer, batches, layer=1, gates=("f",))["f"])
    _, _, g = layer.eval()(batches[1], return_gates=True)
    assert_close(values["f"][-6 * 10:], g[1]["f"].flatten())
    assert collect_gates(layer, iter(batches), max_values=25)["i"].shape == (25,)
    with pytest.raises(ValueError, match=r"layer must be in \[0, 2\)"):
        collect_gates(layer, batches, layer=2)
    with pytest.raises(ValueError, match="lstm_i has no gate 'i'; its gates: f, o"):
        collect_gates(cells.build("lstm_i", 3, 5), torch.randn(1, 2, 3))
    with pytest.raises(ValueError, match="holds 3 cells.Recurrent layers"):
        collect_gates(TinyLM(), torch.randn(1, 2, 4))
    with pytest.raises(ValueError, match="no gate values"):
        collect_gates(layer, [])


# ---- the pictures ---------------------------------------------------------------------------------------------------
def is_png(path):
    return path.stat().st_size > 0 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plots_write_png(tmp_path):
    a, b = cells.build("lstm", 3, 8), cells.build("g2_lstm", 3, 8)
    x = torch.randn(4, 9, 3)
    values = {"LSTM": collect_gates(a, x), "G2-LSTM": collect_gates(b, x)}
    out = plot_gate_histograms(values, tmp_path / "hist.png", title="Figure 1 / 3")
    assert out == tmp_path / "hist.png" and is_png(out)
    tokens = "we were wrong , so we left .".split()
    _, _, g = b(torch.randn(1, len(tokens), 3), return_gates=True)
    out = plot_gate_heatmap(tokens, {k: v[0] for k, v in g.items() if k in "if"}, tmp_path / "heat.png", units=[0, 7])
    assert out == tmp_path / "heat.png" and is_png(out)
    assert is_png(plot_gate_heatmap(tokens, g, tmp_path / "heat3d.png"))  # (1, T, n) accepted, default units


def test_plots_refuse_empty(tmp_path):
    with pytest.raises(ValueError, match="no values"):
        plot_gate_histograms({}, tmp_path / "a.png")
    with pytest.raises(ValueError, match="no values for 'LSTM', gate 'i'"):
        plot_gate_histograms({"LSTM": {"i": torch.tensor([])}}, tmp_path / "a.png")
    with pytest.raises(ValueError, match="no tokens or no gates"):
        plot_gate_heatmap([], {"i": torch.rand(0, 3)}, tmp_path / "b.png")
    with pytest.raises(ValueError, match=r"must be \(2, n\) for 2 tokens"):
        plot_gate_heatmap(["a", "b"], {"i": torch.rand(3, 4)}, tmp_path / "b.png")
    with pytest.raises(ValueError, match="units"):
        plot_gate_heatmap(["a", "b"], {"i": torch.rand(2, 4)}, tmp_path / "b.png", units=[4])
    assert not (tmp_path / "a.png").exists() and not (tmp_path / "b.png").exists()
