"""bench.gpu_check on the CPU at toy sizes (--tiny): the run that a lent GPU gets, smoke-tested here.

Parity must find every exact backend equal to eager (and eager equal to float64) for every cell, every section must
write its numbers, and a backend that is off by 1e-4 must be caught.
"""
from __future__ import annotations

import json

import cells
from bench import gpu_check
from cells import backends


def test_tiny_cpu_run_finds_every_backend_equal_to_eager_and_writes_its_files(tmp_path):
    # no time budgets here: a busy machine must not turn into skipped checks
    res = gpu_check.main(["--device", "cpu", "--tiny", "--compiled-cells", "--budget-scale", "1e6", "--max-seconds",
                          "1e9", "--out", str(tmp_path)])
    assert res["ok"] and not res["skipped"] and not res["failed"]

    rows = res["parity"]
    assert {(r["cell"], r["backend"]) for r in rows} == {
        (name, b) for name in cells.names() for b in cells.get(name).exact_backends() if b != "compiled"}
    assert {(r["config"], r["mode"]) for r in rows if r["cell"] == "g2_lstm"} == {
        (c, m) for c in ("1L", "2L-bi") for m in ("train", "eval")}  # G2's noise: both modes, and the stacked layer
    assert {r["config"] for r in rows if r["cell"] == "lstm"} == {"1L", "2L-bi"}
    for r in rows:
        assert r["ok"] and r["error"] is None, r
        errs = gpu_check.row_errors(r)
        assert errs and max(errs) < 1e-5, r  # float32 rounding, nothing more
        if r["backend"] != "eager":
            assert r["out_vs_eager"] is not None and r["grad_vs_eager"] is not None, r
        if not (r["cell"] == "g2_lstm" and r["mode"] == "train"):  # noise drawn on the device: no float64 replay
            assert r["out_vs_f64"] is not None and r["grad_vs_f64"] is not None, r

    assert len(res["mt"]) == 2 * len(gpu_check.MT_CELLS) * len(gpu_check.SPEED_BACKENDS)
    assert all(r["ms_per_step"] > 0 and r["epoch_h"] > 0 for r in res["mt"])
    assert all(r["beam_sent_per_s"] > 0 for r in res["mt"] if r["direction"] == "de-en")
    assert len(res["lm"]) == len(gpu_check.LM_CELLS) * len(gpu_check.SPEED_BACKENDS)
    assert len(res["layer"]) == 2 * len(gpu_check.LAYER_CELLS) and all(r["ratio"] > 0 for r in res["layer"])

    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu_check.json", "gpu_check.log", "gpu_check.md"]
    saved = json.loads((tmp_path / "gpu_check.json").read_text())
    assert saved["ok"] and len(saved["parity"]) == len(rows)
    md = (tmp_path / "gpu_check.md").read_text()
    assert "| g2_lstm | 2L-bi | train | cudnn | off |" in md and "## mt" in md and "## lm" in md and "## layer" in md
    assert res["summary"] in (tmp_path / "gpu_check.log").read_text()


def test_a_backend_off_by_1e_4_fails_the_check(tmp_path, monkeypatch):
    fused = backends.fused

    def off(*args, **kwargs):
        out, state, gates = fused(*args, **kwargs)
        return out * (1 + 1e-4), state, gates

    monkeypatch.setattr(backends, "fused", off)
    res = gpu_check.main(["--device", "cpu", "--tiny", "--sections", "parity", "--cells", "lstm", "tanh_rnn",
                          "--out", str(tmp_path)])
    assert not res["ok"]
    verdict = {(r["cell"], r["config"], r["backend"]): r["ok"] for r in res["parity"]}
    assert verdict == {("lstm", "1L", "eager"): True, ("lstm", "1L", "cudnn"): False,
                       ("lstm", "2L-bi", "eager"): True, ("lstm", "2L-bi", "cudnn"): False,
                       ("tanh_rnn", "1L", "eager"): True, ("tanh_rnn", "1L", "cudnn"): False}
    assert "| lstm | 1L | train | cudnn | off |" in (tmp_path / "gpu_check.md").read_text()
