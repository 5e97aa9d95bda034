"""A table's grid: its points (row, column, config values) from ``grid:`` of ``conf/experiment/<table>.yaml``, the
order its runs go in (seeds), and the table cells a run fills when one run gives several (``table.expand``)."""
from __future__ import annotations

import itertools
from collections.abc import Mapping

from omegaconf import OmegaConf

from reproduce import results


def label(axis, value) -> str:
    """A grid value's row/column name: a cell's own name, else ``<label>=<value>`` (``eta0=1e-3``, ``n=100``)."""
    if axis.key == "cell.name" or axis.get("label") == "":  # label "": the value is the name (round, 5M)
        return str(value)
    return results.column_name(**{axis.get("label") or axis.key.rsplit(".", 1)[-1]: value})


def grid_points(cfg, only_rows=None) -> list[tuple[str, str, dict]]:
    """(row, column, {config key: value}) of every point of the table's grid, rows first. A table without a column
    axis (``grid.columns: null``: one run per row fills several columns, see ``expand``) has the one column "run"."""
    rows, cols = cfg.grid.rows, cfg.grid.get("columns")
    values = list(rows["values"])
    if values and isinstance(values[0], Mapping):  # rows that set several keys each: {name: ..., <key>: value}
        named = [(r["name"], {k: v for k, v in r.items() if k != "name"}) for r in values]
        if only_rows:  # configurations chosen by their names
            unknown = [c for c in only_rows if c not in {name for name, _ in named}]
            if unknown:
                raise ValueError(f"--cells: {', '.join(unknown)} not among the rows of {cfg.table.name}, which are "
                                 f"configurations: {'; '.join(name for name, _ in named)}")
            named = [(name, keys) for name, keys in named if name in only_rows]
    else:
        if only_rows:
            if rows.key != "cell.name":
                raise ValueError(f"--cells: the rows of {cfg.table.name} are {rows.key}, not cells")
            unknown = [c for c in only_rows if c not in values]
            if unknown:
                raise ValueError(f"--cells: {', '.join(unknown)} not in this table's rows for this preset: "
                                 f"{', '.join(map(str, values))}; on a grid table, a registered cell (`python -m "
                                 f"cells` lists them) runs as an extra row")
            values = [v for v in values if v in only_rows]
        # per-row settings (e.g. a learning rate that suits one cell): grid.rows.overrides.<row value>.<config key>
        extra = {r: dict(rows.get("overrides", None) or {}).get(r) or {} for r in values}
        named = [(label(rows, r), {rows.key: r, **extra[r]}) for r in values]
    if cols is None:
        return [(name, "run", keys) for name, keys in named]
    # a column value is a scalar for cols.key, or {name: ..., <config key>: value, ...} setting several keys
    columns = [(c["name"], {k: v for k, v in c.items() if k != "name"}) if isinstance(c, Mapping) else
               (label(cols, c), {cols.key: c}) for c in cols["values"]]
    if cols.get("only"):  # a preset's subset of the columns, by name (e.g. quick: only [5M])
        columns = [c for c in columns if c[0] in cols.only]
    return [(row, col, {**row_keys, **col_keys})
            for (row, row_keys), (col, col_keys) in itertools.product(named, columns)]


def point_config(cfg, values: dict, seed: int | None = None):
    """The config of one grid point: the table's, with the point's ``values`` (and ``seed``) set."""
    point = OmegaConf.merge(cfg, {"seed": cfg.seed if seed is None else seed})
    for key, value in values.items():
        # a cell option a row sets (cell.options.forget) may be new to the config: cells.build checks it by name
        OmegaConf.update(point, key, value, force_add=key.startswith("cell.options."))
    return point


def grid_jobs(points, seed: int, seeds: int) -> list[tuple[tuple[str, str, dict], int]]:
    """(grid point, seed) of every run of a table, in the order the runs go (seed-major, rows first); a cluster
    job's ``point`` is its index here (in the grid of all rows: ``--cells`` only chooses which are submitted)."""
    return [(p, seed + s) for s in range(seeds) for p in points]


def expand(records, spec, metric: str) -> list[dict]:
    """One run fills several cells of a published table (``table.expand`` in the experiment file): each entry
    ``{row: "{row} + cache", column: test, metric: test/ppl_cache}`` makes, from every record, a record of that row
    and column whose ``metrics[metric]`` (the table's metric) is the run's ``metrics[<entry's metric>]``; ``{row}``
    and ``{column}`` stand for the run's own row and column (``{column}-tst`` -> ``5M-tst``). ``<name>@<k>`` reads
    the run's curve of ``<name>`` at epoch k (``val/ppl@2``; none when the run stopped before)."""
    return [{**rec, "row": e["row"].format(row=rec["row"], column=rec["column"]),
             "column": e["column"].format(row=rec["row"], column=rec["column"]),
             "metrics": {metric: value_of(rec, e["metric"])},
             **({"status": "failed", "failure": results.failure(rec)} if results.failure(rec) else {})}
            for rec in records for e in spec]


def value_of(record: dict, name: str):
    """``record["metrics"][name]`` (else the record's own field ``name``, as ``epoch_s``), or for ``<curve>@<epoch>``
    the curve's value at that epoch (None if absent)."""
    if "@" not in name:
        return record["metrics"].get(name, record.get(name))
    key, epoch = name.rsplit("@", 1)
    curve = record.get("curve") or {}
    epochs = curve.get("epoch") or list(range(1, len(curve.get(key) or []) + 1))
    values = dict(zip(epochs, curve.get(key) or []))
    return values.get(int(epoch))


def summary(cfg, record) -> str:
    """The line printed after a grid point's run: the table's metrics of this record."""
    m, spec = record["metrics"], cfg.table.get("expand")
    if results.failure(record):
        return f"FAILED, {results.failure(record)}"
    if spec:
        shown = ", ".join(f"{e['row'].format(row='', column='').strip() or 'final'} "
                          f"{e['column'].format(row=record['row'], column=record['column'])} "
                          f"{value_of(record, e['metric']):.2f}"
                          for e in spec if isinstance(value_of(record, e["metric"]), (int, float)))
        pairs = f", trained on {m['train_pairs']:,} pairs" if m.get("train_pairs") else ""  # BLEU: never without it
        return f"{shown} (epochs {m.get('epochs')}{pairs})"
    return f"test acc {m['test/acc_best']:.4f} (epoch {m['best_epoch']} of {m['epochs']})"
