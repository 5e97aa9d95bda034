"""What every ``reproduce/table<N>_<key>.py`` does: run the table's grid (or collect finished runs), then print the
published numbers beside the reproduced ones and draw the curves.

    python reproduce/table2_simplified.py                      # preset: paper if a GPU is visible, else quick
    python reproduce/table2_simplified.py --preset smoke --seeds 3 --cells lstm lstm1 trainer.max_epochs=2
    python reproduce/table2_simplified.py --collect            # the table from results/ without training
    python reproduce/table2_simplified.py --collect --wandb-project me/gatezoo

A grid point that already has a record for this preset and seed is not run again (``--force`` reruns it); one that
was interrupted resumes from its ``last.ckpt``. Under the ``quick`` and ``smoke`` presets the reported test accuracy
is the one at the epoch of best VALIDATION accuracy (a split of train); under ``paper`` it is the best test accuracy
over epochs, as the authors' code early-stopped and checkpointed on the test set.
"""
from __future__ import annotations

import argparse
import itertools
import shutil
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf
from rich.console import Console

import cells
from reproduce import compare, config, results

console = Console()


def label(axis, value) -> str:
    """A grid value's row/column name: a cell's own name, else ``<label>=<value>`` (``eta0=1e-3``, ``n=100``)."""
    if axis.key == "cell.name":
        return str(value)
    return results.column_name(**{axis.get("label") or axis.key.rsplit(".", 1)[-1]: value})


def grid_points(cfg, only_rows=None) -> list[tuple[str, str, dict]]:
    """(row, column, {config key: value}) of every point of the table's grid, rows first."""
    rows, cols = cfg.grid.rows, cfg.grid.columns
    values = list(rows["values"])
    if only_rows:
        if rows.key != "cell.name":
            raise ValueError(f"--cells: the rows of {cfg.table.name} are {rows.key}, not cells")
        unknown = [c for c in only_rows if c not in values]
        if unknown:
            raise ValueError(f"--cells: {', '.join(unknown)} not in this table's rows for this preset: "
                             f"{', '.join(map(str, values))} (override grid.rows.values to add cells)")
        values = [v for v in values if v in only_rows]
    return [(label(rows, r), label(cols, c), {rows.key: r, cols.key: c}) for r, c in itertools.product(values,
                                                                                                       cols["values"])]


def cell_input_size(cfg) -> int:
    """The recurrent layer's input size, from the config alone (no data needed)."""
    front = cfg.task.net.front
    return cfg.task.input_size if front == "none" else cfg.task.net.embed_dim if front == "embedding" else 128


def row_params(cfg, rows) -> dict[str, int]:
    """The paper's parameter count of the recurrent layer for every row (a bidirectional layer counts twice)."""
    out, c, m, key = {}, cfg.cell, cell_input_size(cfg), cfg.grid.rows.key
    for row in rows:
        name, n = c.name, c.hidden_size
        if key == "cell.name":
            name = row
        elif key == "cell.hidden_size":
            n = int(next(iter(results.parse_column(row).values())))
        if name in cells.names():
            out[row] = cells.num_params(name, m, n, num_layers=c.num_layers, bidirectional=c.bidirectional)
    return out


def parse_args(argv, name: str):
    ap = argparse.ArgumentParser(prog=f"reproduce/{name}.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=config.PRESETS, help="default: paper when a GPU is visible, else quick")
    ap.add_argument("--seeds", type=int, default=1, help="seeds per grid point (mean +- std in the table)")
    ap.add_argument("--cells", nargs="+", metavar="CELL", help="run only these rows of the table")
    ap.add_argument("--collect", action="store_true", help="build the table from finished runs, train nothing")
    ap.add_argument("--wandb-project", help="with --collect: read the records from this W&B project")
    ap.add_argument("--force", action="store_true", help="rerun grid points that already have a record")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. trainer.max_epochs=2 cell.backend=eager")
    args = ap.parse_args(argv)
    if args.seeds < 1:
        ap.error("--seeds must be at least 1")
    return args


def params_table(name: str, argv=None) -> list[dict]:
    """A table of parameter counts (Akandeh & Salem Tables 1-2): the paper's sizes, counted by the cells' formulas
    and checked against the parameters a built layer really allocates."""
    ap = argparse.ArgumentParser(prog=f"reproduce/{name}.py", description=params_table.__doc__)
    ap.parse_args(sys.argv[1:] if argv is None else argv)
    paper = name.rsplit("_", 1)[1]
    tab = results.published_table(paper, name)
    s = tab["setting"]
    rows, _ = results.published_grid(paper, name)
    counts = {}
    for row in rows:
        layer = cells.build(row, s["m"], s["n"], bidirectional=s.get("bidirectional", False))
        counts[row] = sum(p.numel() for p in layer.parameters())
        assert counts[row] == cells.num_params(row, s["m"], s["n"], bidirectional=s.get("bidirectional", False))
    notes = [f"m={s['m']}, n={s['n']}" + (", bidirectional (both directions counted)" if s.get("bidirectional")
                                          else "")] + list(tab.get("notes") or [])
    return compare.compare(name, paper=paper, published=results.published_values(paper, name), records=[],
                           rows=rows, columns=["params"], metric="params", params=counts, notes=notes,
                           out_dir=Path("results") / "tables", console=console)


def main(name: str, argv=None) -> list[dict]:
    args = parse_args(sys.argv[1:] if argv is None else argv, name)
    preset = args.preset or ("paper" if torch.cuda.is_available() else "quick")
    cfg = config.compose(name, preset, args.overrides)
    console.print(f"[bold]{name}[/]: preset [bold]{preset}[/] (protocol {cfg.protocol}), {args.seeds} seed(s)")
    points = grid_points(cfg, args.cells)
    if cfg.grid.rows.key == "cell.name":
        for row, _, _ in points:
            cells.get(row)  # an unknown cell fails now, with the valid names, not after the data is prepared
    root = Path(cfg.paths.results)
    if not args.collect:
        train_grid(cfg, name, points, args.seeds, root, force=args.force)
    if args.wandb_project:
        records = results.load_wandb(args.wandb_project, name, preset=preset, entity=cfg.logger.entity)
    else:
        records = results.load_records(root, table=name, preset=preset)
    return report(cfg, name, points, records, preset)


def train_grid(cfg, name: str, points, seeds: int, root: Path, force: bool) -> None:
    from reproduce.train import run  # lightning and the data modules load only when training

    done = {(r["row"], r["column"], r["seed"]) for r in results.load_records(root, table=name, preset=cfg.preset)}
    jobs = [(p, cfg.seed + s) for s in range(seeds) for p in points]
    for i, ((row, col, values), seed) in enumerate(jobs, 1):
        tag = f"[{i}/{len(jobs)}] {name} {row} {col} seed {seed}"
        if (row, col, seed) in done and not force:
            console.print(f"{tag}: done already (a record exists; --force reruns it)")
            continue
        point = OmegaConf.merge(cfg, {"seed": seed})
        for key, value in values.items():
            OmegaConf.update(point, key, value)
        run_dir = Path(cfg.paths.runs) / name / cfg.preset / f"{row}__{col}__s{seed}".replace("/", "_")
        if force and run_dir.exists():
            shutil.rmtree(run_dir)
        console.rule(tag)
        record = run(point, run_dir, name=f"{name}/{row}/{col}/s{seed}")
        record.update(table=name, paper=cfg.table.paper, row=row, column=col, grid=dict(values),
                      notes="; ".join(cfg.table.notes or []))
        path = results.write_record(record, root)
        if cfg.logger.name == "wandb":
            results.log_record_wandb(record)
        m = record["metrics"]
        console.print(f"{tag}: test acc {m['test/acc_best']:.4f} (epoch {m['best_epoch']} of {m['epochs']}), "
                      f"{record['wall_s']:.0f} s -> {path}")


def report(cfg, name: str, points, records, preset: str) -> list[dict]:
    t = cfg.table
    rows = list(dict.fromkeys(p[0] for p in points))
    columns = list(dict.fromkeys(p[1] for p in points))
    published = results.published_values(t.paper, t.published)
    prow, pcol = results.published_grid(t.paper, t.published)
    # the paper's grid in its order ("not run" where this preset skipped it), then what the paper lacks
    rows = prow + [r for r in rows if r not in prow]
    columns = pcol + [c for c in columns if c not in pcol]
    notes = [f"preset {preset}: " + ("best test accuracy over epochs (the authors' protocol)" if cfg.protocol ==
                                     "paper" else "test accuracy at the epoch of best validation accuracy")]
    notes += list(t.notes or []) + sorted({r.get("provenance") for r in records if r.get("provenance")})
    out_dir = Path(cfg.paths.results) / "tables"
    out = compare.compare(name, paper=t.paper, published=published, records=records, rows=rows, columns=columns,
                          preset=preset, metric=t.metric, notes=notes, out_dir=out_dir, console=console,
                          params=row_params(cfg, rows))
    if any(r.get("curve") for r in records):
        png = compare.plot_curves(name, records, out_dir, metric="test/acc", rows=rows, columns=columns,
                                  preset=preset)
        console.print(f"curves: {png}")
    return out
