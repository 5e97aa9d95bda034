"""Table machinery that the language-model tables need: one run filling several cells (``table.expand``), literature
rows, columns that set several keys or are a preset's subset, and model sizes for a parameter budget."""
import math

import pytest

from lit_models.sizing import hidden_for_budget, lm_params, parse_count
from reproduce import compare, config, grid, report, results, runner


def test_parse_count():
    assert parse_count("5M") == 5_000_000 and parse_count("60k") == 60_000 and parse_count(1234) == 1234
    assert parse_count("1.5M") == 1_500_000
    with pytest.raises(ValueError, match="5M, 60K"):
        parse_count("five")


@pytest.mark.parametrize("cell", ["lstm", "gru", "tanh_rnn", "mut1"])
@pytest.mark.parametrize("budget", ["5M", "20M"])
def test_hidden_for_budget_is_the_largest_size_that_fits(cell, budget):
    n = hidden_for_budget(cell, budget, vocab=10000, nlayers=2)
    assert lm_params(cell, n, 10000, 2) <= parse_count(budget) < lm_params(cell, n + 1, 10000, 2)


def test_20m_lstm_is_zarembas_medium_size():
    # Zaremba's medium PTB model (650 units, 2 layers, untied) is the paper's ~20M model
    assert abs(hidden_for_budget("lstm", "20M", vocab=10000, nlayers=2) - 650) < 10
    with pytest.raises(ValueError, match="below the smallest"):
        hidden_for_budget("lstm", 100, vocab=10000, nlayers=2)


def test_column_values_that_set_several_keys_and_a_presets_subset():
    cfg = config.compose("table3_jozefowicz", "paper", [])
    points = grid.grid_points(cfg)
    assert [p[1] for p in points[:3]] == ["5M", "10M", "20M"] and len(points) == 30
    assert points[1][2] == {"cell.name": "tanh_rnn", "optim.lr": 2.0, "task.net.param_budget": "10M",
                            "task.net.dropout": 0.5, "task.net.dropouth": 0.5, "task.net.dropouti": 0.5}
    quick = grid.grid_points(config.compose("table3_jozefowicz", "quick", []))
    assert {p[1] for p in quick} == {"5M"} and len(quick) == 10


def test_configuration_rows_cross_the_columns_and_may_set_a_cell_option():
    # a figure's rows are configurations (a cell and its constant forget value), its columns learning rates
    cfg = config.compose("fig_c6forget_slim", "quick", [])
    points = grid.grid_points(cfg)
    assert [(r, c) for r, c, _ in points] == [("lstm", "eta=1e-5"), ("lstm_c6 h=200 f=0.59", "eta=1e-5"),
                                              ("lstm_c6 h=200 f=0.8", "eta=1e-5"), ("lstm_c6 h=200 f=0.95", "eta=1e-5")]
    point = grid.point_config(cfg, points[3][2])
    assert (point.cell.name, point.cell.hidden_size, point.optim.eta0) == ("lstm_c6", 200, 1e-5)
    assert point.cell.options.forget == 0.95 and point.cell.options.activation == "sigmoid"  # added to Table 4's
    assert "forget" not in grid.point_config(cfg, points[0][2]).cell.options                 # the lstm row's own
    assert [r for r, _, _ in grid.grid_points(cfg, ["lstm_c6 h=200 f=0.8"])] == ["lstm_c6 h=200 f=0.8"]  # --cells
    with pytest.raises(ValueError, match="lstm6 not among the rows of fig_c6forget_slim, which are configurations: "
                                         "lstm; lstm_c6 h=200 f=0.59; "):
        grid.grid_points(cfg, ["lstm6"])
    assert runner._extra_rows(cfg, ["lstm_c6 h=200 f=0.8"]) == []  # a configuration's name is no extra cell row
    assert runner._extra_rows(config.compose("parity_g2lstm", "smoke", []), ["+ fairseq's batches"]) == []
    with pytest.raises(Exception, match="optim.etaa"):  # a mistyped key still fails: only cell options are added
        grid.point_config(cfg, {"optim.etaa": 1.0})


def test_a_table_without_columns_has_one_run_per_row():
    points = grid.grid_points(config.compose("table1_g2lstm", "quick", []))
    assert points == [(c, "run", {"cell.name": c}) for c in ("lstm", "sharpened_lstm", "g2_lstm")]


def _record(row, metrics, seed=0):
    return {"table": "table1_g2lstm", "paper": "g2lstm", "row": row, "column": "run", "seed": seed,
            "preset": "quick", "metrics": metrics, "params": 10, "created": f"2026-01-0{seed + 1}"}


def test_expanded_runs_fill_the_papers_rows_and_literature_rows_are_marked(tmp_path):
    cfg = config.compose("table1_g2lstm", "quick", [f"paths.results={tmp_path}"])
    metrics = {"val/ppl": 150.0, "test/ppl": 140.0, "val/ppl_finetune": 130.0, "test/ppl_finetune": 120.0,
               "val/ppl_cache": 110.0, "test/ppl_cache": 100.0}
    out = report.table(cfg, "table1_g2lstm", grid.grid_points(cfg), [_record("lstm", metrics)], "quick",
                       out_dir=tmp_path / "tables")
    got = {(o["row"], o["column"]): o for o in out}
    assert got[("lstm w/o finetune", "valid")]["mean"] == 150.0 and got[("lstm + cache", "test")]["mean"] == 100.0
    assert got[("lstm", "test")]["mean"] == 120.0 and got[("lstm", "test")]["published"] == 57.3
    assert math.isclose(got[("lstm", "test")]["delta"], 120.0 - 57.3)
    assert got[("g2_lstm", "valid")]["status"] == "not run"
    assert got[("Zoneout (Krueger et al., 2016)", "test")]["status"] == "literature"
    assert got[("Zoneout (Krueger et al., 2016)", "test")]["published"] == 77.4
    md = (tmp_path / "tables" / "table1_g2lstm.md").read_text()
    assert "| lstm + cache | test | 52.80 | 100.00 (n=1) | +47.20 |" in md
    assert (tmp_path / "tables" / "table1_g2lstm.val-ppl.png").exists() is False  # no curves in these records


def test_expand_formats_the_runs_column():
    spec = [{"row": "{row}", "column": "{column}-tst", "metric": "test/nll"}]
    rec = {"row": "gru", "column": "5M", "metrics": {"test/nll": 4.7}}
    assert grid.expand([rec], spec, "nll") == [{"row": "gru", "column": "5M-tst", "metrics": {"nll": 4.7}}]


def test_published_literature_rows():
    lit = results.literature_rows("g2lstm", "table1_g2lstm")
    assert "NAS Cell (Zoph & Le, 2016)" in lit and "lstm" not in lit
    assert results.literature_rows("simplified", "table2_simplified") == []



def test_perplexity_and_bleu_print_two_decimals_accuracy_four(tmp_path):
    rec = {"table": "t", "row": "lstm", "column": "test", "seed": 0, "preset": "quick",
           "metrics": {"ppl": 123.4567, "test/acc_best": 0.912345}}
    for metric, shown in (("ppl", "123.46"), ("test/acc_best", "0.9123")):
        out = compare.compare("t", paper="x", published={}, records=[rec], rows=["lstm"], columns=["test"],
                              metric=metric, out_dir=tmp_path, console=None)
        assert out[0]["mean"] == rec["metrics"][metric]
        line = next(x for x in (tmp_path / "t.md").read_text().splitlines() if x.startswith("| lstm"))
        assert f"| {shown} (n=1) |" in line, line


def test_rows_can_carry_their_own_settings():
    points = {p[0]: p[2] for p in grid.grid_points(config.compose("table3_jozefowicz", "quick", []))}
    assert points["tanh_rnn"] == {"cell.name": "tanh_rnn", "optim.lr": 2.0, "task.net.param_budget": "5M"}
    assert points["lstm_f"]["optim.lr"] == 10.0 and points["lstm_o"]["optim.lr"] == 10.0
    assert points["lstm"] == {"cell.name": "lstm", "task.net.param_budget": "5M"}
    cfg = config.compose("table3_jozefowicz", "quick", ["grid.rows.overrides={tanh_rnn: {optim.lr: 5.0}}"])
    points = {p[0]: p[2] for p in grid.grid_points(cfg)}
    assert points["tanh_rnn"]["optim.lr"] == 5.0 and points["lstm_f"]["optim.lr"] == 10.0  # merged, not replaced


def test_overrides_after_cells_are_overrides():
    args = runner.parse_args(["--cells", "lstm", "gru", "trainer.max_epochs=2", "--seeds", "2", "cell.backend=eager"],
                             "table2_simplified")
    assert args.cells == ["lstm", "gru"] and args.overrides == ["trainer.max_epochs=2", "cell.backend=eager"]
    with pytest.raises(SystemExit):
        runner.parse_args(["--cells", "trainer.max_epochs=2"], "table2_simplified")
