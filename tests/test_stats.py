"""The papers' claims tested on our seeds (reproduce/stats.py, reproduce/report.claims): Welch's one-sided p-value is
scipy's, Bonferroni multiplies by the table's claims, one seed a side is "too few seeds", and a claim that names no
line of its table is refused with the valid rows and columns."""
from __future__ import annotations

import pytest
from scipy import stats as scipy_stats

from reproduce import config, grid, report, results, stats

CLAIM = {"says": "a beats b", "better": {"row": "a", "column": "c"}, "worse": {"row": "b", "column": "c"}}


def test_welch_is_scipys_one_sided_test_in_the_claims_direction():
    a, b = [0.97, 0.975, 0.972], [0.95, 0.96, 0.955]
    assert stats.welch(a, b) == pytest.approx(scipy_stats.ttest_ind(a, b, equal_var=False).pvalue / 2)
    assert stats.welch(b, a) == pytest.approx(1 - scipy_stats.ttest_ind(a, b, equal_var=False).pvalue / 2)
    assert stats.welch([5.1, 5.2, 5.0], [5.6, 5.7, 5.5], lower_is_better=True) < 0.01  # perplexity: lower wins


def test_bonferroni_seeds_and_verdicts():
    values = {("a", "c"): [0.97, 0.975, 0.972], ("b", "c"): [0.95, 0.96, 0.955], ("d", "c"): [0.9]}
    weak = {"says": "b beats a", "better": {"row": "b", "column": "c"}, "worse": {"row": "a", "column": "c"}}
    few = {"says": "d beats a", "better": {"row": "d", "column": "c"}, "worse": {"row": "a", "column": "c"}}
    out = stats.check_claims([CLAIM, weak, few], values)
    assert out[0]["p"] == pytest.approx(min(1.0, 3 * stats.welch(values[("a", "c")], values[("b", "c")])))
    assert [o["verdict"] for o in out] == ["reproduced", "not reproduced", "too few seeds"]
    assert out[2]["p"] is None and out[0]["better"].endswith("(n=3)")


def test_the_report_tests_a_tables_claims_on_the_newest_record_of_each_seed(tmp_path):
    cfg = config.compose("table2_simplified", "quick")
    for seed, (a, b) in enumerate([(0.978, 0.959), (0.977, 0.958), (0.979, 0.960)]):
        for row, acc in (("lstm", a), ("lstm1", a), ("lstm2", a), ("lstm3", b)):
            results.write_record({"table": "table2_simplified", "paper": "simplified", "row": row,
                                  "column": "eta0=1e-3", "seed": seed, "preset": "quick",
                                  "metrics": {"test/acc_best": acc}}, tmp_path)
    recs = results.load_records(tmp_path)
    pairs = [(r, c) for r, c, _ in grid.grid_points(cfg)]
    tested = report.claims(cfg, "table2_simplified", recs, "quick", pairs)
    assert [c["verdict"] for c in tested] == ["reproduced"] * 3
    page, _ = report.build(tmp_path)
    assert sum(line.endswith("| reproduced |") for line in page.splitlines()) == 3 and "Welch's t-test" in page


def test_a_claim_that_names_no_line_of_its_table_is_refused():
    from omegaconf import OmegaConf

    cfg = config.compose("table2_simplified", "quick")
    OmegaConf.update(cfg, "table.claims", [{"says": "x", "better": {"row": "lstm9", "column": "eta0=1e-3"},
                                            "worse": {"row": "lstm", "column": "eta0=1e-3"}}])
    pairs = [(r, c) for r, c, _ in grid.grid_points(cfg)]
    with pytest.raises(ValueError, match="row 'lstm9'.*its rows: lstm, lstm1, lstm2, lstm3"):
        report.claims(cfg, "table2_simplified", [], "quick", pairs)
