"""The report (``python -m reproduce.report``): docs/results.md and the README's status table are what the committed
records give, a record's number reaches its line, a point without one reads "not run", smoke records stay out."""
from __future__ import annotations

import json

import pytest

from reproduce import report, results


def _record(row="lstm", column="eta0=1e-3", seed=0, preset="quick", acc=0.9, **extra):
    return {"table": "table2_simplified", "paper": "simplified", "row": row, "column": column, "seed": seed,
            "preset": preset, "metrics": {"test/acc_best": acc, "best_epoch": 3, "epochs": 4}, "wall_s": 120.0,
            "git": "abc1234", "params": 15800, **extra}


def test_the_committed_pages_are_what_the_committed_records_give():
    page, status = report.build()
    assert report.RESULTS_MD.read_text(encoding="utf-8") == page, "run: python -m reproduce.report"
    readme = report.README.read_text(encoding="utf-8")
    assert report.readme_with(status, readme) == readme, "run: python -m reproduce.report"


def test_a_record_reaches_its_line_and_the_other_points_read_not_run(tmp_path):
    results.write_record(_record(acc=0.9), tmp_path)
    results.write_record(_record(seed=1, acc=0.8), tmp_path)
    results.write_record(_record(row="lstm1", preset="smoke", acc=0.5), tmp_path)  # a test run: not a result
    page, status = report.build(tmp_path)
    section = page.split('<a id="table2_simplified"></a>')[1].split("<a id=")[0]
    lines = {tuple(c.strip() for c in line.split("|")[1:3]): line for line in section.splitlines()
             if line.startswith("| lstm")}
    assert "0.8500 +- 0.0707 (n=2)" in lines[("lstm", "eta0=1e-3")]  # mean and sample std of the two seeds
    assert "0.9816" in lines[("lstm", "eta0=1e-3")] and "-0.1316" in lines[("lstm", "eta0=1e-3")]  # published, delta
    assert "2.0 min" in lines[("lstm", "eta0=1e-3")] and "abc1234" in lines[("lstm", "eta0=1e-3")]
    assert "not run" in lines[("lstm", "eta0=1e-2")] and "not run" in lines[("lstm1", "eta0=1e-3")]
    assert "python reproduce/table2_simplified.py --preset quick --seeds 2" in section
    assert "`smoke` preset" not in section
    assert "[quick 1/" in status and "(docs/results.md#table2_simplified)" in status
    assert "smoke only" in status  # the other tables: built, no committed record


def test_a_failed_run_reads_failed(tmp_path):
    results.write_record(_record(status="failed", failure="non-finite training loss at epoch 2"), tmp_path)
    page, _ = report.build(tmp_path)
    line = next(x for x in page.split('<a id="table2_simplified"></a>')[1].splitlines()
                if x.startswith("| lstm | eta0=1e-3 |"))
    assert "failed" in line and "0.9000" not in line


def test_add_copies_the_newest_record_of_each_point_and_leaves_smoke_out(tmp_path):
    src, dst = tmp_path / "results", tmp_path / "records"
    old = results.write_record(_record(acc=0.7, created="2026-01-01T00:00:00"), src)
    new = results.write_record(_record(acc=0.9, created="2026-01-02T00:00:00"), src)
    results.write_record(_record(preset="smoke"), src)
    copied = report.add(src, dst)
    assert [p.name for p in copied] == [new.name] and old.name not in {p.name for p in dst.rglob("*.json")}
    assert json.loads(copied[0].read_text())["metrics"]["test/acc_best"] == 0.9
    assert report.add(src, dst) == []  # already there


def test_check_fails_when_a_page_is_stale(tmp_path, monkeypatch):
    stale = tmp_path / "results.md"
    stale.write_text("# typed by hand\n")
    monkeypatch.setattr(report, "RESULTS_MD", stale)
    assert report.main(["--check"]) == 1
    assert stale.read_text() == "# typed by hand\n"  # --check writes nothing


def test_the_readme_without_markers_is_refused():
    with pytest.raises(ValueError, match="markers"):
        report.readme_with("x", "# no markers here\n")
