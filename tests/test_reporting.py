"""Reporting machinery: result records on disk, the published yaml, the comparison table and the curve plot."""
from __future__ import annotations

import csv
import json
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest
from rich.console import Console

import cells
from fileio import atomic_write_text
from reproduce.compare import compare, plot_curves
from reproduce.results import (
    column_name,
    load_published,
    load_records,
    load_wandb,
    parse_column,
    published_grid,
    published_values,
    write_record,
)

T2 = "table2_simplified"


def rec(row="lstm1", column="eta0=1e-3", seed=0, acc=0.975, preset="quick", table=T2, **kw):
    """A minimal record as the runner writes it."""
    return {"table": table, "paper": "simplified", "row": row, "column": column, "cell": row, "seed": seed,
            "preset": preset, "grid": {"cell": row, **parse_column(column)}, "metrics": {"test/acc_best": acc},
            "curve": {"epoch": [1, 2, 3], "test/acc": [acc - 0.1, acc - 0.05, acc]}, **kw}


def quiet():
    return Console(file=open("/dev/null", "w"), width=200)  # noqa: SIM115  (rich keeps the handle)


# ------------------------------------------------------------------------------------------ records
def test_column_name_is_canonical():
    assert column_name(eta0=0.001) == column_name(eta0=1e-3) == "eta0=1e-3"
    assert column_name(n=100, eta=1.25e-5) == "n=100,eta=1.25e-5"
    assert column_name(eta0=0.01, f=0.59) == "eta0=1e-2,f=0.59"
    assert parse_column("n=100,eta=2.5e-5") == {"n": 100, "eta": 2.5e-5}


def test_record_round_trip(tmp_path):
    r = rec(params=11600, config={"path": tmp_path})  # a Path in the config must not break json
    path = write_record(r, root=tmp_path)
    assert path.parent == tmp_path / T2 / "quick" and path.name.startswith("lstm1__eta0=1e-3__s0__")
    assert "created" not in r  # the caller's dict is left alone
    [back] = load_records(tmp_path, table=T2, preset="quick")
    assert {k: back[k] for k in r if k != "config"} == {k: r[k] for k in r if k != "config"}
    assert back["config"]["path"] == str(tmp_path) and back["created"] and back["host"]
    assert load_records(tmp_path, table="table1_simplified") == [] and load_records(tmp_path, preset="paper") == []


def test_write_record_rejects_incomplete(tmp_path):
    with pytest.raises(ValueError, match="seed"):
        write_record({k: v for k, v in rec().items() if k != "seed"}, root=tmp_path)


def test_concurrent_writers_never_clobber(tmp_path):
    big = {"blob": list(range(2000))}
    with ThreadPoolExecutor(8) as pool:  # the same grid point and seed 50 times: names must still differ
        paths = list(pool.map(lambda i: write_record(rec(acc=i / 100, config=big), root=tmp_path), range(50)))
    assert len(set(paths)) == 50
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any unreadable file would warn
        records = load_records(tmp_path)
    assert sorted(r["metrics"]["test/acc_best"] for r in records) == [i / 100 for i in range(50)]
    assert not [p for p in (tmp_path / T2 / "quick").iterdir() if p.name.startswith(".")]  # no temp files left


def test_a_write_that_dies_midway_leaves_the_old_file_and_no_partial_one(tmp_path, monkeypatch):
    target = atomic_write_text(tmp_path / "t.md", "old")

    def crash(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", crash)  # the process dies after writing the bytes, before the rename
    with pytest.raises(OSError):
        atomic_write_text(target, "new")
    with pytest.raises(OSError):
        write_record(rec(), root=tmp_path / "results")
    assert target.read_text() == "old" and [p for p in tmp_path.rglob("*") if p.is_file()] == [target]
    assert load_records(tmp_path / "results") == []


def test_corrupt_and_partial_files_are_skipped_with_a_warning(tmp_path):
    good = write_record(rec(), root=tmp_path)
    (good.parent / "truncated.json").write_text(good.read_text()[:40])
    (good.parent / "partial.json").write_text(json.dumps({"table": T2, "row": "lstm"}))
    with pytest.warns(UserWarning) as caught:
        records = load_records(tmp_path)
    assert len(records) == 1
    messages = " ".join(str(w.message) for w in caught)
    assert "truncated.json" in messages and "partial.json" in messages


def test_load_wandb_reads_records_and_skips_runs_without_one():
    good = SimpleNamespace(id="a1", summary={"record_json": json.dumps(rec())})
    crashed = SimpleNamespace(id="b2", summary={})
    api = SimpleNamespace(runs=lambda path, filters: [good, crashed])
    with pytest.warns(UserWarning, match="b2"):
        [r] = load_wandb("proj", T2, entity="me", api=api)
    assert r["row"] == "lstm1" and r["_wandb"] == "me/proj/a1"


def test_load_wandb_unreachable_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    for var in ("HOME", "WANDB_CONFIG_DIR", "WANDB_DIR"):
        monkeypatch.setenv(var, str(tmp_path))
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    with pytest.raises(RuntimeError, match="cannot read W&B project"):
        load_wandb("proj", T2)

    def broken(path, filters):
        raise ConnectionError("unreachable")

    with pytest.raises(RuntimeError, match="ConnectionError"):
        load_wandb("proj", T2, api=SimpleNamespace(runs=broken))


# ------------------------------------------------------------------------------------------ published yaml
COUNTS = {"simplified": {"table1_simplified": 4 * 2 + 4, T2: 4 * 4 + 4, "table3_simplified": 4 * 4 + 4,
                         "fig_lstm3_simplified": 2},
          "slim": {"table1_slim": 3, "table2_slim": 3, "table3_slim": 0, "table4_slim": 3 * 3 * 2,
                   "table5_slim": 4 * 3 * 2, "table6_slim": 0, "table7_slim": 3 * 3 * 2,
                   "fig_forget_slim": 0, "fig_c6forget_slim": 0, "fig_sigmoid_slim": 0}}


@pytest.mark.parametrize("paper", sorted(COUNTS))
def test_published_yaml_tables_entries_rows_and_columns(paper):
    data = load_published(paper)
    assert {k: len(t["entries"]) for k, t in data["tables"].items()} == COUNTS[paper]
    for tab in data["tables"].values():
        assert tab["title"] and tab["setting"] and "metric" in tab and "units" in tab
        for e in tab["entries"]:
            assert e["cell"] in cells.names(), e  # the row, or (slim Table 5: rows n=100..400) the entry's cell
            assert e["row"] == e["cell"] or e["row"] == column_name(**parse_column(e["row"])), e
            assert e["column"] == "params" or e["column"] == column_name(**parse_column(e["column"])), e
            assert isinstance(e["value"], (int, float)), e  # a YAML '1e-3' would silently be text
            assert (e["metric"] == "params") == (e["column"] == "params")


# the two brackets of the G2 paper that disagree with its own numbers (named in reproduce/published/g2lstm.yaml)
G2_DELTA_ERRATA = {("table4_g2lstm", "sharpened_lstm", "svd32"): -0.56, ("table5_g2lstm", "g2_lstm", "svd16"): -0.59}


@pytest.mark.parametrize("table", ["table3_g2lstm", "table4_g2lstm", "table5_g2lstm"])
def test_g2_printed_deltas_agree_with_the_printed_values_but_the_named_errata(table):
    entries = load_published("g2lstm")["tables"][table]["entries"]
    original = {e["row"]: e["value"] for e in entries if e["column"] == "original"}
    rest = [e for e in entries if e["column"] != "original"]
    assert len(rest) == 12 and all("printed_delta" in e for e in rest)
    for e in rest:
        computed = round(e["value"] - original[e["row"]], 2)
        erratum = G2_DELTA_ERRATA.get((table, e["row"], e["column"]))
        if erratum is None:
            assert float(e["printed_delta"]) == pytest.approx(computed, abs=1e-9), e
        else:  # the paper prints another number than its values give: the yaml keeps the print and says so
            assert computed == pytest.approx(erratum) and float(e["printed_delta"]) != pytest.approx(computed), e
            notes = " ".join(load_published("g2lstm")["tables"][table]["notes"])
            assert f"{e['printed_delta']}" in notes and f"{erratum:.2f}" in notes


def test_g2_table1_prints_a_size_for_every_row_and_no_added_citation():
    entries = load_published("g2lstm")["tables"]["table1_g2lstm"]["entries"]
    assert all(e.get("size") for e in entries)
    assert {e["size"] for e in entries if e["row"] == "Unregularized LSTM"} == {"7M"}
    assert {e["size"] for e in entries if not e.get("literature")} == {"24M"}


# (paper, table, m, n, directions): the sizes the captions and text give
SIZES = [("simplified", "table1_simplified", 1, 100, 1), ("simplified", T2, 28, 50, 1),
         ("simplified", "table3_simplified", 128, 128, 1), ("slim", "table1_slim", 32, 100, 1),
         ("slim", "table2_slim", 128, 128, 2)]


@pytest.mark.parametrize("paper,table,m,n,directions", SIZES)
def test_published_params_equal_the_cell_formulas(paper, table, m, n, directions):
    counts = {(r, c): v for (r, c, metric), v in published_values(paper, table).items() if metric == "params"}
    assert len(counts) >= 3
    for (row, _), value in counts.items():
        assert directions * cells.get(row).count(m, n) == value, row
        assert cells.num_params(row, m, n, bidirectional=directions == 2) == value, row
    setting = load_published(paper)["tables"][table]["setting"]
    assert (setting["m"], setting["n"]) == (m, n)


def test_published_values_units_and_grid():
    frac = published_values("simplified", T2)
    pct = published_values("simplified", T2, units="percent")
    assert frac[("lstm", "eta0=1e-3", "test/acc_best")] == 0.9816
    assert pct[("lstm", "eta0=1e-3", "test/acc_best")] == pytest.approx(98.16)
    assert pct[("lstm1", "params", "params")] == frac[("lstm1", "params", "params")] == 11600
    assert published_grid("simplified", T2) == (["lstm", "lstm1", "lstm2", "lstm3"],
                                                [column_name(eta0=e) for e in (1e-2, 1e-3, 1e-4, 1e-5)])
    assert published_grid("slim", "table5") == (["n=100", "n=200", "n=300", "n=400"],  # short name works too
                                                ["eta=5e-5", "eta=2.5e-5", "eta=1.25e-5"])
    slim4 = published_values("slim", "table4_slim")
    assert slim4[("lstm", "eta=1e-3", "train/acc_best")] == 1.0
    assert slim4[("lstm", "eta=1e-3", "test/acc_best")] == 0.8868


# ------------------------------------------------------------------------------------------ compare
def run_compare(records, tmp_path, **kw):
    rows, cols = published_grid("simplified", T2)
    args = dict(paper="simplified", published=published_values("simplified", T2), records=records, rows=rows,
                columns=cols, out_dir=tmp_path, console=quiet())
    return compare(T2, **{**args, **kw})


def test_no_records_reads_not_run_everywhere(tmp_path):
    out = run_compare([], tmp_path, notes=["GloVe 50d"])
    assert len(out) == 16 and all(r["status"] == "not run" for r in out)
    assert all(r["mean"] is None and r["delta"] is None and r["n"] == 0 and r["params"] is None for r in out)
    assert out[0]["published"] == 0.9506  # the published side is there ...
    md = (tmp_path / f"{T2}.md").read_text()
    assert md.count("not run") == 16 and "GloVe 50d" in md
    for line in csv.DictReader(open(tmp_path / f"{T2}.csv")):  # ... and never leaks into the reproduced side
        assert line["mean"] == line["std"] == line["delta"] == "" and line["n"] == "0"


def test_mean_std_over_seeds_delta_sign_and_params(tmp_path):
    records = [rec(seed=s, acc=a, params=11600, created=f"2026-01-0{s + 1}") for s, a in enumerate([.97, .98, .99])]
    records.append(rec(seed=2, acc=0.10, created="2000-01-01T00:00:00"))  # older run of seed 2: replaced, not averaged
    records += [rec(row="lstm2", column="eta0=1e-2", acc=0.99, params=999, created="2030-01-01T00:00:00")]
    records += [rec(row="gru", acc=0.5), rec(table="table1_simplified", acc=0.1)]  # not in the paper / other table
    out = run_compare(records, tmp_path)
    by = {(r["row"], r["column"]): r for r in out}
    r = by[("lstm1", "eta0=1e-3")]
    assert (r["n"], r["status"], r["presets"], r["seeds"]) == (3, "ok", "quick", "0 1 2")
    assert r["mean"] == pytest.approx(0.98) and r["std"] == pytest.approx(0.01)
    assert r["delta"] == pytest.approx(0.98 - 0.9821) and r["delta"] < 0
    assert r["params_published"] == r["params"] == 11600 and r["params_match"] is True
    r2 = by[("lstm2", "eta0=1e-2")]
    assert r2["delta"] == pytest.approx(0.99 - 0.9828) and r2["delta"] > 0 and r2["std"] is None
    assert r2["params_match"] is False
    assert out[-1]["row"] == "gru" and out[-1]["published"] is None and len(out) == 17
    md = (tmp_path / f"{T2}.md").read_text()
    assert "0.9800 +- 0.0100 (n=3)" in md and "-0.0021" in md and "11600 vs 11600 ✓" in md and "999 ✗" in md
    rows = list(csv.DictReader(open(tmp_path / f"{T2}.csv")))
    assert len(rows) == 17 and float(rows[5]["mean"]) == pytest.approx(0.98)


def test_preset_filter_and_computed_params(tmp_path):
    records = [rec(acc=0.9, preset="quick"), rec(acc=0.8, preset="paper")]
    out = run_compare(records, tmp_path, preset="paper", params={"lstm1": 11600, ("lstm3", "eta0=1e-3"): 4100})
    by = {(r["row"], r["column"]): r for r in out}
    assert by[("lstm1", "eta0=1e-3")]["mean"] == 0.8 and by[("lstm1", "eta0=1e-3")]["presets"] == "paper"
    assert by[("lstm1", "eta0=1e-2")]["params_match"] is True and by[("lstm3", "eta0=1e-3")]["params_match"] is True
    assert by[("lstm3", "eta0=1e-2")]["params"] is None


def test_percent_units_and_unit_mixups(tmp_path):
    out = run_compare([rec(acc=0.98)], tmp_path, units="percent")
    r = next(r for r in out if r["status"] == "ok")
    assert (r["published"], r["mean"], r["unit"]) == (pytest.approx(98.21), pytest.approx(98.0), "percent")
    assert "98.00 (n=1)" in (tmp_path / f"{T2}.md").read_text()
    with pytest.raises(ValueError, match="fractions"):  # published numbers in percent passed by mistake
        run_compare([], tmp_path, published=published_values("simplified", T2, units="percent"))
    with pytest.raises(ValueError, match="record"):
        run_compare([rec(acc=97.5)], tmp_path)


def test_plot_curves_writes_a_png(tmp_path):
    records = [rec(seed=0), rec(seed=1, acc=0.9), rec(row="lstm", column="eta0=1e-2")]
    records[1]["curve"] = {"epoch": [1, 2], "test/acc": [0.5, 0.9]}  # early-stopped seed: shorter curve
    path = plot_curves(T2, records, tmp_path, rows=["lstm", "lstm1"], columns=["eta0=1e-2", "eta0=1e-3"])
    data = path.read_bytes()
    assert path.suffix == ".png" and data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert plot_curves("table1_simplified", [], tmp_path).stat().st_size > 0  # no curves: still a PNG
