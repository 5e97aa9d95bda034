"""The language-model tables end to end on real PTB (``--preset smoke``): G2 Table 1 (one run per cell fills its
three rows), G2 Table 3 (compressing Table 1's models) and Jozefowicz Table 3 (sizes from a parameter budget)."""
from __future__ import annotations

import math

import pytest

from lit_models.sizing import hidden_for_budget
from reproduce import fig_gates_g2lstm as fig_gates
from reproduce import results, runner


@pytest.fixture
def workdir(workdir, monkeypatch):
    """conftest's workdir without torch.compile: seconds, not a compile per run."""
    monkeypatch.setenv("GATEZOO_COMPILE", "0")
    return workdir


def _by_cell(out):
    return {(o["row"], o["column"]): o for o in out}


@pytest.mark.slow
def test_g2_tables_1_and_3_end_to_end(workdir):
    with pytest.raises(SystemExit, match=r"python reproduce/table1_g2lstm.py --preset smoke"):
        runner.main("table3_g2lstm", ["--preset", "smoke"])  # nothing to compress yet: says what to run

    out = _by_cell(runner.main("table1_g2lstm", ["--preset", "smoke", "--cells", "lstm", "g2_lstm"]))
    for cell in ("lstm", "g2_lstm"):
        for row in (f"{cell} w/o finetune", cell, f"{cell} + cache"):
            for col in ("valid", "test"):
                o = out[(row, col)]
                assert o["status"] == "ok" and 1.0 < o["mean"] < 1e5 and o["presets"] == "smoke", (row, col, o)
                assert o["published"] is not None and o["delta"] == pytest.approx(o["mean"] - o["published"])
    assert out[("sharpened_lstm", "test")]["status"] == "not run"
    assert out[("NAS Cell (Zoph & Le, 2016)", "test")]["status"] == "literature"
    assert out[("NAS Cell (Zoph & Le, 2016)", "test")]["mean"] is None
    records = results.load_records(workdir / "results", table="table1_g2lstm")
    assert len(records) == 2  # one run per cell
    rec = next(r for r in records if r["row"] == "lstm")
    m = rec["metrics"]
    assert m["test/nll"] == pytest.approx(math.log(m["test/ppl"]))
    assert rec["params"] > 0 and rec["params_total"] > rec["params"]
    assert "val/ppl" in rec["curve"]
    assert (workdir / "results" / "tables" / "smoke" / "table1_g2lstm.val-ppl.png").exists()

    t3 = _by_cell(runner.main("table3_g2lstm", ["--preset", "smoke", "--cells", "lstm", "g2_lstm"]))
    for cell in ("lstm", "g2_lstm"):
        table1 = next(r for r in records if r["row"] == cell)["metrics"]["test/ppl_cache"]
        assert t3[(cell, "original")]["mean"] == pytest.approx(table1, rel=1e-6)  # the same model, evaluated again
        for col in ("round", "round_clip", "svd128", "svd64"):
            assert t3[(cell, col)]["status"] == "ok" and t3[(cell, col)]["mean"] != t3[(cell, "original")]["mean"]
    comp = {r["column"]: r["compression"] for r in results.load_records(workdir / "results", table="table3_g2lstm")}
    assert comp["original"] is None and comp["svd64"]["ratio"] > comp["svd128"]["ratio"] > 1.0
    assert comp["round"]["ratio"] > 1.0

    # Figures 1, 3, 4 from the same runs
    with pytest.raises(SystemExit, match="--cells sharpened_lstm"):
        fig_gates.main(["--preset", "smoke"])
    values = fig_gates.main(["--preset", "smoke", "--cells", "lstm", "g2_lstm", "--tokens", "300", "--layer", "1",
                             "--out", str(workdir / "fig")])
    assert set(values) == {"lstm", "g2_lstm"} and values["lstm"]["f"].numel() == 300 * 24  # tokens x units
    assert all(0.0 <= v.min() and v.max() <= 1.0 for cell in values.values() for v in cell.values())
    for name in ("hist", "lstm", "g2_lstm"):
        assert (workdir / "fig" / f"fig_gates_g2lstm.{name}.png").stat().st_size > 1000


def test_jozefowicz_sizes_come_from_the_budget(workdir):
    out = _by_cell(runner.main("table3_jozefowicz", ["--preset", "smoke", "--cells", "lstm"]))
    assert out[("lstm", "5M-tst")]["status"] == "ok" and out[("lstm", "5M-v")]["status"] == "ok"
    assert out[("lstm", "5M-tst")]["published"] == 4.699 and out[("gru", "5M-tst")]["status"] == "not run"
    rec = results.load_records(workdir / "results", table="table3_jozefowicz")[0]
    n = hidden_for_budget("lstm", "5M", vocab=10000, nlayers=2)
    assert rec["config"]["task"]["net"]["param_budget"] == "5M"
    assert rec["params_total"] <= 5_000_000 and rec["params"] == 2 * 4 * (n * n + n * n + n)
    assert out[("lstm", "5M-tst")]["mean"] == pytest.approx(rec["metrics"]["test/nll"])
