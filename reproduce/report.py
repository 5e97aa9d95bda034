"""The report: a table from its records (what every table script prints at its end), and the project's results page.

    python -m reproduce.report               # docs/results.md and README.md's status table from results/records/
    python -m reproduce.report --check       # exit 1 when either differs from what the committed records give
    python -m reproduce.report --add results # copy the newest record of every grid point from a results folder in

``docs/results.md`` and the README's status block are generated here from the records committed under
``results/records/`` (small JSON files; checkpoints never), never typed by hand: a number in them is what a run
printed, beside its published value, delta, preset, wall time, git revision and the command that re-runs it; a grid
point without a record reads "not run". ``tests/test_report.py`` fails when the committed pages differ from what
this builds.
"""
from __future__ import annotations

import argparse
import io
import shutil
import sys
from pathlib import Path

from omegaconf import OmegaConf
from rich.console import Console

import cells
from fileio import atomic_write_text
from reproduce import compare, config, grid, kinds, results, stats, study
from reproduce.console import console

REPO = Path(__file__).resolve().parents[1]
RECORDS = REPO / "results" / "records"  # committed: the records behind every number of the docs
RESULTS_MD, README = REPO / "docs" / "results.md", REPO / "README.md"
FIGURES = REPO / "docs" / "figures"  # a figure's curves (fig_<what>_<key>.py), drawn by the report; linked from
# docs/results.md as figures/<preset>/<name>.<metric>.png
PAPERS = ("simplified", "slim", "odyssey", "jozefowicz", "g2lstm")  # the order of the docs
SHOWN_PRESETS = ("paper", "quick")  # smoke records are test runs, not results
BEGIN, END = "<!-- BEGIN generated: python -m reproduce.report (status) -->", "<!-- END generated -->"


# ---- one table ---------------------------------------------------------------------------------------------------

def seeds_only(cfg, records: list[dict]) -> list[dict]:
    """The architecture search's table shows its seeds (the candidates' trials are its leaderboard's); others: all."""
    return [r for r in records if "candidate" not in r] if cfg.get("search") else records


def table(cfg, name: str, points, records, preset: str, out_dir: Path | None, show: Console | None = console,
          curves: bool = True) -> list[dict]:
    """Published beside reproduced for table ``name`` at ``preset`` (``compare.compare``'s lines), printed to
    ``show`` and written to ``out_dir`` (None: not written), with the curves of every run as PNG."""
    t = cfg.table
    records = seeds_only(cfg, records)
    if cfg.get("study"):  # a table of random searches: per cell its best trial (and that setting's re-runs)
        records = study.best(cfg, records)
    spec = OmegaConf.to_container(t.expand) if t.get("expand") else None
    runs, trained = records, points  # one record per trained grid point: the curves, drawn on the grid's own axes
    # rows another program writes records of (never trained by the grid): reproduce/fairseq_baseline.py's
    points = list(points) + [(r, "run", {}) for r in (t.get("external_rows") or [])]
    if spec:  # the grid's rows are cells; the table's rows and columns are the expanded ones
        records = grid.expand(records, spec, t.metric)
        points = [(e["row"].format(row=r, column=c), e["column"].format(row=r, column=c), v)
                  for r, c, v in points for e in spec]
    rows = list(dict.fromkeys(p[0] for p in points))
    columns = list(dict.fromkeys(p[1] for p in points))
    published = results.published_values(t.paper, t.published)
    prow, pcol = results.published_grid(t.paper, t.published)
    # the paper's grid in its order ("not run" where this preset skipped it), then what the paper lacks
    rows = prow + [r for r in rows if r not in prow]
    columns = pcol + [c for c in columns if c not in pcol]
    params = {} if spec else kinds.of(cfg).table_params(cfg, rows, cfg.grid.rows.key)
    out = compare.compare(name, paper=t.paper, published=published, records=records, rows=rows, columns=columns,
                          preset=preset, metric=t.metric, notes=notes(cfg, preset, records), out_dir=out_dir,
                          console=show,
                          params=params, literature=results.literature_rows(t.paper, t.published))
    if curves and out_dir is not None and any(r.get("curve") for r in runs):
        curve_rows = list(dict.fromkeys(r for r, _, _ in trained)) if spec else rows
        curve_cols = list(dict.fromkeys(c for _, c, _ in trained)) if spec else columns
        for metric in curve_metrics(cfg):
            png = compare.plot_curves(name, runs, out_dir, metric=metric, preset=preset, rows=curve_rows,
                                      columns=curve_cols)
            if show is not None:
                show.print(f"curves: {png}")
    if show is not None:
        for c in claims(cfg, name, runs, preset, [(o["row"], o["column"]) for o in out]):
            show.print(f"claim: {c['says']}: {c['better']} vs {c['worse']}, p {stats.p_text(c['p'])}: "
                       f"[bold]{c['verdict']}[/]")
    return out


def curve_metrics(cfg) -> list[str]:
    """The metrics drawn per epoch (``table.curve``: one name or a list, e.g. a figure's [test/acc, train/acc])."""
    curve = cfg.table.get("curve", "test/acc")
    return [curve] if isinstance(curve, str) else list(curve)


def notes(cfg, preset: str, records) -> list[str]:
    """What a table's reader needs beside its numbers: the preset's protocol, the table's notes, the data's
    provenance."""
    t = cfg.table
    protocol = t.get("protocol_note") or ("best test accuracy over epochs (the authors' protocol)"
                                          if cfg.protocol == "paper" else
                                          "test accuracy at the epoch of best validation accuracy")
    return ([f"preset {preset}: {protocol}"] + list(t.notes or [])
            + sorted({r.get("provenance") for r in records if r.get("provenance")}))


def claims(cfg, name: str, records, preset: str, pairs) -> list[dict]:
    """The table's claims (``table.claims``), tested on the newest record of every seed (``reproduce.stats``);
    ``pairs``: the table's (row, column) lines, which a claim's sides must name."""
    spec = cfg.table.get("claims")
    if not spec:
        return []
    t, valid = cfg.table, set(pairs)
    if cfg.get("study") and any(r.get("role") == "trial" and "best_of" not in r for r in records):
        records = study.best(cfg, records)  # a study's cells: its best settings (over their seeds)
    for c in spec:
        for side in ("better", "worse"):
            where = (c[side]["row"], c[side]["column"])
            if where not in valid:
                raise ValueError(f"{name}: the claim {c['says']!r} names {side} = row {where[0]!r}, column "
                                 f"{where[1]!r}, not a line of the table; its rows: "
                                 f"{', '.join(dict.fromkeys(r for r, _ in pairs))}; its columns: "
                                 f"{', '.join(dict.fromkeys(col for _, col in pairs))}")
    recs = compare.select(name, grid.expand(records, OmegaConf.to_container(t.expand), t.metric)
                          if t.get("expand") else records, preset)
    values: dict[tuple[str, str], list[float]] = {}
    for r in recs:
        v = r["metrics"].get(t.metric)
        if not results.failure(r) and isinstance(v, (int, float)):
            values.setdefault((r["row"], r["column"]), []).append(float(v))
    return stats.check_claims(OmegaConf.to_container(spec), values)


def claims_table(tested: list[dict], ours: bool = False) -> list[str]:
    """The claims as a markdown table (empty when the table has none); ``ours``: a check against other code
    (parity_), whose claims are its own questions, not a paper's."""
    if not tested:
        return []
    headers = ["the question tested" if ours else "the paper's claim", "better side", "worse side",
               "p (Welch, Bonferroni)", "verdict"]
    rows = [[c["says"], c["better"], c["worse"], stats.p_text(c["p"]), c["verdict"]] for c in tested]
    return compare.markdown_table(headers, rows) + ["", "Welch's t-test, one-sided in the claim's direction, over the "
                                                        "seeds of each side; p x the table's number of claims; "
                                                        "reproduced when p < 0.05 (reproduce/stats.py)."]


def params_table(name: str, out_dir: Path | None, show: Console | None = console) -> list[dict]:
    """A table of parameter counts (Akandeh & Salem Tables 1-2): the paper's sizes, counted by the cells' formulas
    and checked against the parameters a built layer really allocates."""
    paper = name.rsplit("_", 1)[1]
    tab = results.published_table(paper, name)
    s = tab["setting"]
    rows, _ = results.published_grid(paper, name)
    counts = {}
    for row in rows:
        layer = cells.build(row, s["m"], s["n"], bidirectional=s.get("bidirectional", False))
        counts[row] = sum(p.numel() for p in layer.parameters())
        formula = cells.num_params(row, s["m"], s["n"], bidirectional=s.get("bidirectional", False))
        if counts[row] != formula:
            raise RuntimeError(f"{row}: {counts[row]} parameters allocated, the formula says {formula}")
    notes = [f"m={s['m']}, n={s['n']}" + (", bidirectional (both directions counted)" if s.get("bidirectional")
                                          else "")] + list(tab.get("notes") or [])
    return compare.compare(name, paper=paper, published=results.published_values(paper, name), records=[],
                           rows=rows, columns=["params"], metric="params", params=counts, notes=notes,
                           out_dir=out_dir, console=show)


# ---- the results page and the status table -------------------------------------------------------------------------

def _quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


def scripts() -> dict[str, list[str]]:
    """{paper: [table names with a script in reproduce/]}, tables in number order."""
    out: dict[str, list[str]] = {p: [] for p in PAPERS}
    experiments = set(config.experiments())
    for path in sorted((REPO / "reproduce").glob("*_*.py")):
        # the tables, and the figures, searches and checks against other code (parity_) with an experiment config
        if path.stem.startswith("table") or (path.stem.startswith(("fig_", "search_", "parity_"))
                                             and path.stem in experiments):
            paper = path.stem.rsplit("_", 1)[1]
            out.setdefault(paper, []).append(path.stem)
    return out


def paper_tables(paper: str) -> dict:
    """The tables of a paper's published yaml ({} for a paper without one yet)."""
    path = results.PUBLISHED_DIR / f"{paper}.yaml"
    return results.load_published(paper)["tables"] if path.exists() else {}


def _seeds(records) -> int:
    return max((len({r["seed"] for r in records if (r["row"], r["column"]) == key})
                for key in {(r["row"], r["column"]) for r in records}), default=1)


def _wall(seconds) -> str:
    return "—" if seconds is None else f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def _line(row: dict, decimals: int, whole: bool) -> list[str]:
    return ([*compare.line_cells(row, decimals)[:5], compare.params_text(row)]
            + ([row["params_total"] or ""] if whole else []) + [_wall(row["wall_s"]), row["git"] or ""])


def table_section(name: str, records: list[dict], figures: list | None = None) -> tuple[list[str], dict]:
    """The markdown of one table at every preset with committed records, and its status {preset: (done, points)};
    a figure's PNGs to draw are added to ``figures`` as (path, table, preset, metric, records, points)."""
    lines, status, figures = [], {}, ([] if figures is None else figures)
    for preset in SHOWN_PRESETS:
        recs = [r for r in records if r["preset"] == preset]
        if not recs:
            continue
        cfg = config.compose(name, preset)
        points = grid.grid_points(cfg)
        seeds = _seeds(recs)
        out = table(cfg, name, points, recs, preset, out_dir=None, show=_quiet(), curves=False)
        ran = [o for o in out if o["status"] == "ok"]
        status[preset] = (len({(r["row"], r["column"]) for r in seeds_only(cfg, recs)}), len(points))
        metric = cfg.table.metric
        decimals = compare.decimals(metric)
        # a study's wall time is that of all its trials; a grid's, that of the newest run of each point and seed
        ran_all = [r for r in recs if r.get("role")] if cfg.get("study") else compare.select(name, recs, preset)
        walls = [r["wall_s"] for r in ran_all if r.get("wall_s") is not None]
        gits = sorted({str(r.get("git")) for r in recs})
        command = f"python reproduce/{name}.py --preset {preset}" + (f" --seeds {seeds}" if seeds > 1 else "")
        lines += [f"#### `{preset}` preset", "",
                  f"`GATEZOO_DATA=../shared/data {command}`: {len(ran)} of {len(out)} lines reproduced; wall time "
                  f"{_wall(sum(walls) if walls else None)} over {len(walls)} run(s) (the runs' own sum); records at "
                  f"git {', '.join(gits)}.", "",
                  *compare.markdown_table([*compare.HEADERS[:5], "params of the recurrent layers (paper vs ours)"]
                                   + (["whole model"] if (whole := any(o["params_total"] for o in out)) else [])
                                   + ["wall (mean)", "git"], [_line(o, decimals, whole) for o in out]), "",
                  compare.legend(metric, "fraction" if compare.is_acc(metric) else ""), ""]
        lines += [f"- {n}" for n in notes(cfg, preset, recs)] + [""]
        if name.startswith("fig_") and not cfg.get("study"):  # a paper's figure: its curves, drawn
            drawn = [(m, compare.curves_png(FIGURES / preset, name, m)) for m in curve_metrics(cfg)]
            figures += [(png, name, preset, m, recs, points) for m, png in drawn]
            lines += [f"![{name}: {m} per epoch ({preset})]({png.relative_to(FIGURES.parent).as_posix()})"
                      for m, png in drawn] + [""]
        tested = claims(cfg, name, recs, preset, [(o["row"], o["column"]) for o in out])
        lines += (["Claims:", "", *claims_table(tested, ours=name.startswith("parity_")), ""] if tested else [])
        for what in cfg.table.get("analysis") or []:  # a study's further report
            lines += [f"`python reproduce/{analysis_script(cfg, what)}.py --preset {preset} --collect`:", "",
                      *analysis(cfg, what, recs, None), ""]
    return lines, status


def analysis_script(cfg, what: str) -> str:
    return f"search_{cfg.table.paper}" if what == "search" else f"fig_{what}_{cfg.table.paper}"


def analysis(cfg, what: str, recs: list[dict], out_dir: Path | None, overrides=()) -> list[str]:
    """A study table's further report (``table.analysis``): Greff et al.'s ``variants`` and ``importance``
    (reproduce/odyssey.py), the architecture search's leaderboard ``search`` (reproduce/arch_search.py); its figures
    go to ``out_dir`` (None: none, as for docs/results.md)."""
    if what == "search":
        from reproduce import arch_search

        rows = arch_search.leaderboard(cfg, recs)
        lines = arch_search.leaderboard_lines(cfg, rows) if rows else ["No finished baseline yet."]
        if out_dir is not None and rows:
            lines += ["", *(f"Figure: `{p}`" for p in arch_search.best_graphs(rows, out_dir, cfg.table.name))]
            top = next((r for r in rows if r["graph"]), None)
            if top:  # the best found graph drawn in the console too
                from cells import graph

                lines += ["", f"{top['cell']}:", "```", arch_search.text_picture(graph.parse(top["graph"])), "```"]
        cost = arch_search.cost_lines(cfg, recs)
        return [*lines, *([""] + cost if cost else [])]
    from reproduce import odyssey

    ccfg = study.column_config(cfg.table.name, cfg.preset, list(overrides), next(iter(cfg.study.columns)))
    return odyssey.analyse(ccfg, recs, out_dir, importance=what == "importance")


def _label(name: str, tab: dict) -> str:
    """"Table 3" for table3_<key> (the papers number in roman or arabic: the name decides), else the yaml's label."""
    return f"Table {name[5:].split('_')[0]}" if name.startswith("table") else tab.get("label") or name


def build(records_dir: Path = RECORDS, figures: list | None = None) -> tuple[str, str]:
    """(docs/results.md, the README's status block) from the records under ``records_dir``; the figures' PNGs it
    links are added to ``figures`` (``draw`` makes them)."""
    records = results.load_records(records_dir)
    page = ["# Results", "",
            "Generated by `python -m reproduce.report` from the records committed under `results/records/`; do not "
            "edit by hand. Every reproduced number is what a run printed (mean +- std over seeds, n = seeds); a grid "
            "point without a record reads \"not run\". Published numbers are from `reproduce/published/`.", ""]
    status: dict[str, dict[str, str]] = {}  # paper -> {table label: what exists}
    built = scripts()
    for paper in PAPERS:
        tables, mine = paper_tables(paper), built.get(paper, [])
        meta = results.load_published(paper) if tables else {}
        page += [f"## {paper}", "", f"*{meta['title']}* ({meta.get('authors', '')})" if meta else "", ""]
        status[paper] = {}
        names = sorted(set(mine) | set(tables), key=lambda n: (not n.startswith("table"), len(n), n))
        for name in names:
            tab, label = tables.get(name, {}), _label(name, tables.get(name, {}))
            page += [f'<a id="{name}"></a>', "", f"### {name}" + (f": {tab['title']}" if tab.get("title") else ""), ""]
            if name not in mine:
                what = "settings only" if tab.get("metric") is None else "not built"
                page += [("The paper's settings: no numbers to reproduce." if what == "settings only" else
                          "Not built yet."), ""]
                status[paper][label] = what
                continue
            if tab.get("metric") == "params":
                out = params_table(name, out_dir=None, show=_quiet())
                page += [f"`python reproduce/{name}.py`: counted by the cells' formulas and checked against what a "
                         "built layer allocates (instant; no training).", "",
                         *compare.markdown_table(["row", "published", "counted", "match"],
                                          [[o["row"], compare.fmt(o["published"], 0), str(o["params"]),
                                            "✓" if o["params"] == o["published"] else "✗"] for o in out]), ""]
                status[paper][label] = "counted"
                continue
            lines, done = table_section(name, [r for r in records if r["table"] == name], figures)
            page += lines or [f"Not run at `paper` or `quick` (only at `smoke`, in the tests): "
                              f"`GATEZOO_DATA=../shared/data python reproduce/{name}.py --preset quick`.", ""]
            text = ", ".join(f"{p} {d}/{n}" for p, (d, n) in done.items())
            status[paper][label] = f"[{text}](docs/results.md#{name})" if text else "smoke only"
    labels = sorted({lab for row in status.values() for lab in row if lab.startswith("Table ")},
                    key=lambda lab: int(lab.split()[1]))
    others = any(lab not in labels for row in status.values() for lab in row)
    head = ["paper", *labels] + (["figures, studies"] if others else [])
    matrix = []
    for paper, row in status.items():
        extra = "; ".join(f"{lab}: {what}" for lab, what in row.items() if lab not in labels)
        matrix.append([paper, *[row.get(lab, "") for lab in labels]] + ([extra] if others else []))
    legend = ("Points measured per preset (`quick 8/32`: 8 of the table's 32 grid points have a committed record); "
              "*smoke only*: built and run by the tests, no committed result; *counted*: a parameter table, computed; "
              "*not built*: no script yet. Generated by `python -m reproduce.report`.")
    return "\n".join(page).rstrip() + "\n", "\n".join(compare.markdown_table(head, matrix) + ["", legend])


def draw(figures: list) -> list[Path]:
    """The figures' PNGs ``build`` listed, drawn from their records (one line per row, one panel per column)."""
    for png, name, preset, metric, recs, points in figures:
        compare.plot_curves(name, recs, png.parent, metric=metric, preset=preset,
                            rows=list(dict.fromkeys(r for r, _, _ in points)),
                            columns=list(dict.fromkeys(c for _, c, _ in points)))
    return [f[0] for f in figures]


def readme_with(status: str, text: str) -> str:
    """``text`` (the README) with its generated status block replaced by ``status``."""
    if BEGIN not in text or END not in text:
        raise ValueError(f"README.md lacks the generated block's markers {BEGIN!r} ... {END!r}")
    head, rest = text.split(BEGIN, 1)
    return head + BEGIN + "\n" + status + "\n" + END + rest.split(END, 1)[1]


def add(source: Path, records_dir: Path = RECORDS) -> list[Path]:
    """Copy into ``records_dir`` the newest record of every (table, preset, row, column, seed) under ``source``
    (the records a later run replaced are left out); smoke records are tests, not results, and stay out."""
    newest: dict[tuple, dict] = {}
    for rec in results.load_records(source):
        if rec["preset"] in SHOWN_PRESETS and rec["table"] != "single":
            # a study's trials share a seed: each trial (and each re-run) is its own record
            newest[(rec["table"], rec["preset"], rec["row"], rec["column"], rec["seed"], rec.get("role"),
                    rec.get("trial"), rec.get("rerun_of"))] = rec
    copied = []
    for rec in newest.values():
        src = Path(rec["_path"])
        dst = records_dir / src.relative_to(Path(source))
        if not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
            copied.append(dst)
    return copied


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m reproduce.report", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="exit 1 when the committed pages differ from the records'")
    ap.add_argument("--add", type=Path, metavar="RESULTS", help="first copy the newest records from this folder")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    if args.add:
        copied = add(args.add)
        console.print(f"{len(copied)} record(s) added to {RECORDS.relative_to(REPO)}")
    figures: list = []
    page, status = build(figures=figures)
    readme = readme_with(status, README.read_text(encoding="utf-8"))
    stale = [p for p, text in ((RESULTS_MD, page), (README, readme))
             if not p.exists() or p.read_text(encoding="utf-8") != text]
    stale += [f[0] for f in figures if not f[0].exists()]  # a PNG's pixels are not compared (matplotlib versions)
    if args.check:
        for p in stale:
            console.print(f"[red]{p} differs from what the committed records give: run python -m reproduce.report[/]")
        return 1 if stale else 0
    for p, text in ((RESULTS_MD, page), (README, readme)):
        atomic_write_text(p, text)
    draw(figures)
    console.print(f"wrote {RESULTS_MD.relative_to(REPO)} and the status table of {README.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
