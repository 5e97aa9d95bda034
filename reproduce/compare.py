"""The one comparison printer: published numbers next to reproduced ones, per (row, column) of a paper's table.

    from reproduce.results import load_records, published_values, published_grid
    rows, cols = published_grid("simplified", "table2_simplified")
    compare("table2_simplified", paper="simplified", published=published_values("simplified", "table2_simplified"),
            records=load_records(table="table2_simplified"), rows=rows, columns=cols, preset="quick")

Nothing from ``published`` ever reaches the reproduced columns: a grid point without records reads "not run", one
with a failed run (a non-finite loss, ``results.failure``) reads "failed", whatever its other seeds gave.
"""
from __future__ import annotations

import csv
import io
import math
import re
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from fileio import atomic_write_bytes, atomic_write_text

from .results import failure

FIELDS = ["table", "row", "column", "metric", "unit", "published", "mean", "std", "n", "delta", "seeds", "presets",
          "status", "params_published", "params", "params_match", "params_total", "wall_s", "git", "trials"]


LOW_PRECISION = ("ppl", "bleu", "value")  # 2 decimals, as the papers print them (value: a table of mixed measures)


def is_acc(metric: str) -> bool:
    return "acc" in metric


def decimals(metric: str, units: str = "fraction") -> int:
    """Decimal places a metric is shown with: counts none, percents, perplexities and BLEU 2 (as the papers), else 4."""
    if metric == "params":
        return 0
    return 2 if (is_acc(metric) and units == "percent") or metric in LOW_PRECISION else 4


def select(table: str, records: Sequence[dict], preset: str | None) -> list[dict]:
    """The records of ``table`` (and ``preset``), one per (row, column, preset, seed): the newest wins, so a
    rerun of a seed replaces its earlier result instead of being averaged with it."""
    latest: dict[tuple, dict] = {}
    for rec in sorted(records, key=lambda r: str(r.get("created", ""))):
        if rec.get("table") == table and (preset is None or rec.get("preset") == preset):
            latest[(rec["row"], rec["column"], rec.get("preset"), rec.get("seed"))] = rec
    return list(latest.values())


def _pairs(rows: Sequence[str], columns: Sequence[str], recs: Sequence[dict]) -> list[tuple[str, str]]:
    """The grid in the given order, then (row, column) pairs seen only in records (cells or etas the paper lacks)."""
    grid = [(r, c) for r in rows for c in columns]
    extra = []
    for rec in recs:
        pair = (rec["row"], rec["column"])
        if pair not in grid and pair not in extra:
            extra.append(pair)
    rank = {name: i for i, name in enumerate(rows)}
    return grid + sorted(extra, key=lambda p: (rank.get(p[0], len(rank)), extra.index(p)))


def fmt(x, decimals: int, signed: bool = False) -> str:
    if x is None:
        return "—"
    return f"{x:+.{decimals}f}" if signed else f"{x:.{decimals}f}"


def params_text(row: dict) -> str:
    pub, rep = row["params_published"], row["params"]
    if pub is None and rep is None:
        return ""
    mark = "" if row["params_match"] is None else (" ✓" if row["params_match"] else " ✗")
    return f"{pub if pub is not None else '—'} vs {rep if rep is not None else '—'}{mark}"


def _reproduced_text(row: dict, decimals: int) -> str:
    if row["status"] != "ok":
        return row["status"]
    text = fmt(row["mean"], decimals)
    trials = f", best of {row['trials']} trials" if row.get("trials") else ""
    return (f"{text} +- {fmt(row['std'], decimals)}" if row["n"] > 1 else text) + f" (n={row['n']}{trials})"


def compare(table: str, *, paper: str, published: Mapping[tuple[str, str, str], float], records: Sequence[dict],
            rows: Sequence[str], columns: Sequence[str], preset: str | None = None, metric: str = "test/acc_best",
            units: str = "fraction", params: Mapping | None = None, notes: Sequence[str] = (),
            literature: Sequence[str] = (), out_dir: str | Path | None = "results/tables",
            console: Console | None = None) -> list[dict]:
    """Print and write the comparison of one table; return one dict per line (keys: ``FIELDS``).

    published: {(row, column, metric): value} with accuracies as fractions (``published_values`` default);
        (row, 'params', 'params') entries give the printed parameter counts.
    records:   result records, accuracies as fractions; other tables' records are ignored, and so are other
        presets' when ``preset`` is given (else every preset counts and each line lists the ones it used).
    units:     'fraction' or 'percent': the unit both sides are shown in (accuracy metrics only).
    params:    computed counts by row or by (row, column), used where no record carries ``params``.
    literature: rows that are other papers' numbers as this paper printed them: shown, never "not run".
    out_dir:   where <table>.md and <table>.csv go (atomically); None writes nothing.
    Mean and std are over seeds (sample std, n - 1); delta = reproduced mean - published.
    """
    if units not in ("fraction", "percent"):
        raise ValueError(f"units must be 'fraction' or 'percent', got {units!r}")
    acc = is_acc(metric)
    scale = 100.0 if acc and units == "percent" else 1.0
    places = decimals(metric, units)
    recs = select(table, records, preset)
    out = []
    for row, col in _pairs(rows, columns, recs):
        group = [r for r in recs if (r["row"], r["column"]) == (row, col)]
        failed = any(failure(r) for r in group)  # its last good epoch's numbers are not a result
        vals = [] if failed else [float(r["metrics"][metric]) for r in group
                                  if isinstance(r["metrics"].get(metric), (int, float))
                                  and not math.isnan(r["metrics"][metric])]
        if metric == "params" and not group and params is not None and params.get(row) is not None:
            vals = [float(params[row])]  # a parameter table is reproduced by counting, not by training
        pub = published.get((row, col, metric))
        for what, v in [("published", pub)] + [("record", v) for v in vals]:
            # Records and published_values() are fractions; a value above 1 means a percent slipped in.
            if acc and v is not None and v > 1.0 + 1e-9:
                raise ValueError(f"{table} {row} {col}: {what} {metric} = {v} > 1; accuracies must be fractions "
                                 "(use published_values(..., units='fraction'))")
        mean = statistics.fmean(vals) * scale if vals else None
        std = statistics.stdev(vals) * scale if len(vals) > 1 else None
        pub = pub * scale if pub is not None else None
        rep_params = sorted({r["params"] for r in group if r.get("params") is not None})
        if not rep_params and params is not None:
            computed = params.get((row, col), params.get(row))
            rep_params = [computed] if computed is not None else []
        pub_params = published.get((row, "params", "params"))
        out.append({
            "table": table, "row": row, "column": col, "metric": metric, "unit": units if acc else "",
            "published": pub, "mean": mean, "std": std, "n": len(vals),
            "delta": mean - pub if mean is not None and pub is not None else None,
            "seeds": " ".join(str(s) for s in sorted({r.get("seed") for r in group}, key=str)),
            "presets": " ".join(sorted({str(r.get("preset")) for r in group})),
            "status": "ok" if vals else ("literature" if row in literature and not group else
                                         "not run" if not group else "failed" if failed else f"no {metric}"),
            "params_published": pub_params,
            "params": rep_params[0] if len(rep_params) == 1 else (" ".join(map(str, rep_params)) or None),
            "params_match": pub_params == rep_params[0] if pub_params is not None and len(rep_params) == 1 else None,
            # the whole model (embeddings, output layer, attention), where the kind records it (LM, translation)
            "params_total": " ".join(map(str, sorted({r["params_total"] for r in group if r.get("params_total")})))
            or None,
            "wall_s": statistics.fmean(walls) if (walls := [r["wall_s"] for r in group if r.get("wall_s") is not None])
            else None,
            "git": " ".join(sorted({str(r["git"]) for r in group if r.get("git")})),
            # a study table (reproduce.study): how many trials the line's value is the best of
            "trials": max((r["best_of"] for r in group if r.get("best_of")), default=None),
        })
    title = f"{table} — {paper} — preset {preset or 'any'}"
    _print(out, title, metric, units if acc else "", notes, places, console)
    if out_dir is not None:
        _write(out, Path(out_dir), table, title, metric, units if acc else "", notes, places)
    return out


def line_cells(row: dict, decimals: int) -> list[str]:
    return [row["row"], row["column"], fmt(row["published"], decimals), _reproduced_text(row, decimals),
            fmt(row["delta"], decimals, signed=True), row["presets"], params_text(row)]


# params: the recurrent layers' parameters, as the papers count them (a bidirectional layer twice)
HEADERS = ["row", "column", "published", "reproduced", "delta", "preset", "params (recurrent layers)"]


def legend(metric: str, unit: str) -> str:
    return (f"{metric}" + (f" in {unit}" if unit else "") + "; reproduced = mean +- std over seeds (n); "
            "delta = reproduced - published; params = the recurrent layers' parameters (as the papers count them), "
            "paper vs ours")


def _print(out, title, metric, unit, notes, decimals, console):
    tab = Table(title=title, caption="\n".join([legend(metric, unit), *notes]), caption_justify="left")
    for h in HEADERS:
        tab.add_column(h, justify="left" if h in ("row", "column", "preset") else "right")
    for row in out:
        tab.add_row(*line_cells(row, decimals), style="dim" if row["status"] in ("not run", "literature") else None)
    (console or Console()).print(tab)


def markdown_table(headers, lines) -> list[str]:
    """A Markdown table: the header, its rule, one row per list of cells ("|" escaped)."""
    return (["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
            + ["| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |" for cells in lines])


def _write(out, out_dir: Path, table, title, metric, unit, notes, decimals):
    """<table>.md (readable, with title and notes) and <table>.csv (raw numbers, ``FIELDS``), both atomic."""
    lines = [f"# {title}", "", legend(metric, unit), "",
             *markdown_table(HEADERS, [line_cells(r, decimals) for r in out])]
    lines += [""] + [f"- {n}" for n in notes]
    atomic_write_text(out_dir / f"{table}.md", "\n".join(lines).rstrip() + "\n")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: ("" if r[k] is None else r[k]) for k in FIELDS} for r in out)
    atomic_write_text(out_dir / f"{table}.csv", buf.getvalue())


def curves_png(out_dir: str | Path, table: str, metric: str) -> Path:
    """Where ``plot_curves`` writes ``metric``'s curves of ``table``: out_dir/<table>.<metric, / as ->.png."""
    return Path(out_dir) / f"{table}.{re.sub(r'[^A-Za-z0-9_-]', '-', metric)}.png"


def plot_curves(table: str, records: Sequence[dict], out_dir: str | Path = "results/tables", metric: str = "test/acc",
                *, rows: Sequence[str] = (), columns: Sequence[str] = (), preset: str | None = None) -> Path:
    """PNG of ``metric`` per epoch as in the papers' figures: one panel per column (eta0), one line per row (cell),
    each line the mean over seeds at every epoch some seed reached (early stopping ends seeds at different
    epochs). Written atomically to out_dir/<table>.<metric>.png; returns its path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # no pyplot: no global backend state to change
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    recs = [r for r in select(table, records, preset) if metric in (r.get("curve") or {})]
    pairs = _pairs(rows, columns, recs)
    cols = [c for c in dict.fromkeys(c for _, c in pairs) if any(r["column"] == c for r in recs)] or ["(no curves)"]
    ncol = min(len(cols), 4)
    nrow = math.ceil(len(cols) / ncol)
    fig = Figure(figsize=(max(4.2 * ncol, 6.4), 3.2 * nrow), layout="constrained")  # one panel: room for the title
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrow, ncol, squeeze=False).ravel()
    for ax, col in zip(axes, cols):
        for row in dict.fromkeys(r for r, c in pairs if c == col):
            by_epoch: dict[float, list[float]] = {}
            group = [r for r in recs if (r["row"], r["column"]) == (row, col)]
            for rec in group:
                curve = rec["curve"]
                epochs = curve.get("epoch") or list(range(1, len(curve[metric]) + 1))
                for e, v in zip(epochs, curve[metric]):
                    if v is not None:
                        by_epoch.setdefault(e, []).append(v)
            if by_epoch:
                xs = sorted(by_epoch)
                # markers: a one-epoch curve is one point, which a bare line would not draw
                ax.plot(xs, [statistics.fmean(by_epoch[x]) for x in xs], marker="o", markersize=3,
                        label=f"{row} (n={len(group)})")
        ax.ticklabel_format(axis="y", useOffset=False)  # 5817 reads as 5817, not "+5.817e3" and 0
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole
        ax.set_title(col)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
    for ax in axes[len(cols):]:
        ax.set_visible(False)
    fig.suptitle(f"{table}: {metric} per epoch" + (f" (preset {preset})" if preset else ""))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return atomic_write_bytes(curves_png(out_dir, table, metric), buf.getvalue())
