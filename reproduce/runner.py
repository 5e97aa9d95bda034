"""What every ``reproduce/table<N>_<key>.py`` does: run the table's grid (or collect finished runs), then print the
published numbers beside the reproduced ones and draw the curves.

    python reproduce/table2_simplified.py                      # preset: paper if a GPU is visible, else quick
    python reproduce/table2_simplified.py --preset smoke --seeds 3 --cells lstm lstm1 trainer.max_epochs=2
    python reproduce/table2_simplified.py --collect            # the table from results/ without training
    python reproduce/table2_simplified.py --collect --wandb-project me/gatezoo
    python reproduce/table2_simplified.py --launcher slurm --seeds 3 hydra.launcher.partition=gpu   # one job a point

A grid point that already has a record for this preset and seed is not run again (``--force`` reruns it); one that
was interrupted (killed, preempted: see ``lit_models.callbacks.Resume``) resumes from its ``last.ckpt``; one that
another live process is training (its ``run.lock``) is skipped, so several copies of a script can share one grid; a
failed one (non-finite loss) reads "failed" in the table. Under the ``quick`` and ``smoke`` presets the reported test
accuracy is the one at the epoch of best VALIDATION accuracy (a split of train); under ``paper`` it is the best test
accuracy over epochs, as the authors' code early-stopped and checkpointed on the test set.

``--launcher slurm`` (or ``submitit_local``: the same grid as local processes) runs the grid as one Hydra
``--multirun`` of ``reproduce/job.py``, one job per (row, column, seed) that has no record yet, through Hydra's
submitit launcher (``conf/hydra/launcher/slurm.yaml``; ``hydra.launcher.*`` overrides set partition, account, GPUs,
time); each job trains its point exactly as a sequential run would. The script waits for the jobs, then prints the
table; ``--collect`` prints it again at any time from the records the jobs wrote.
"""
from __future__ import annotations

import argparse
import itertools
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import torch
from omegaconf import OmegaConf
from rich.console import Console

import cells
from reproduce import compare, config, results

console = Console(width=max(Console().width, 120))  # tables stay readable in logs (no terminal: 80)
REPO = Path(__file__).resolve().parents[1]
LAUNCHERS = ("slurm", "submitit_local")  # conf/hydra/launcher/slurm.yaml; submitit_local: the plugin's own


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
    if only_rows:
        if rows.key != "cell.name":
            raise ValueError(f"--cells: the rows of {cfg.table.name} are {rows.key}, not cells")
        unknown = [c for c in only_rows if c not in values]
        if unknown:
            raise ValueError(f"--cells: {', '.join(unknown)} not in this table's rows for this preset: "
                             f"{', '.join(map(str, values))} (override grid.rows.values to add cells)")
        values = [v for v in values if v in only_rows]
    # per-row settings (e.g. a learning rate that suits one cell): grid.rows.overrides.<row value>.<config key>
    extra = {r: dict(rows.get("overrides", None) or {}).get(r) or {} for r in values}
    if cols is None:
        return [(label(rows, r), "run", {rows.key: r, **extra[r]}) for r in values]
    # a column value is a scalar for cols.key, or {name: ..., <config key>: value, ...} setting several keys
    columns = [(c["name"], {k: v for k, v in c.items() if k != "name"}) if isinstance(c, Mapping) else
               (label(cols, c), {cols.key: c}) for c in cols["values"]]
    if cols.get("only"):  # a preset's subset of the columns, by name (e.g. quick: only [5M])
        columns = [c for c in columns if c[0] in cols.only]
    return [(label(rows, r), name, {rows.key: r, **extra[r], **keys})
            for r, (name, keys) in itertools.product(values, columns)]


def expand(records, spec, metric: str) -> list[dict]:
    """One run fills several cells of a published table (``table.expand`` in the experiment file): each entry
    ``{row: "{row} + cache", column: test, metric: test/ppl_cache}`` makes, from every record, a record of that row
    and column whose ``metrics[metric]`` (the table's metric) is the run's ``metrics[<entry's metric>]``; ``{row}``
    and ``{column}`` stand for the run's own row and column (``{column}-tst`` -> ``5M-tst``)."""
    return [{**rec, "row": e["row"].format(row=rec["row"]), "column": e["column"].format(column=rec["column"]),
             "metrics": {metric: rec["metrics"].get(e["metric"])},
             **({"status": "failed", "failure": results.failure(rec)} if results.failure(rec) else {})}
            for rec in records for e in spec]


def summary(cfg, record) -> str:
    """The line printed after a run: the table's metrics of this record."""
    m, spec = record["metrics"], cfg.table.get("expand")
    if results.failure(record):
        return f"FAILED, {results.failure(record)}"
    if spec:
        shown = ", ".join(f"{e['row'].format(row='').strip() or 'final'} {e['column'].format(column=record['column'])} "
                          f"{m.get(e['metric']):.2f}"
                          for e in spec if isinstance(m.get(e["metric"]), (int, float)))
        pairs = f", trained on {m['train_pairs']:,} pairs" if m.get("train_pairs") else ""  # BLEU: never without it
        return f"{shown} (epochs {m.get('epochs')}{pairs})"
    return f"test acc {m['test/acc_best']:.4f} (epoch {m['best_epoch']} of {m['epochs']})"


def cell_input_size(cfg) -> int:
    """The recurrent layer's input size, from the config alone (no data needed)."""
    front = cfg.task.net.get("front", "none")
    return cfg.task.input_size if front == "none" else cfg.task.net.embed_dim if front == "embedding" else 128


def row_params(cfg, rows) -> dict[str, int]:
    """The paper's parameter count of the recurrent layer for every row (a bidirectional layer counts twice)."""
    if cfg.table.get("expand") or cfg.task.get("kind"):  # sizes from the task's model: records carry params
        return {}
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
    ap.add_argument("--launcher", choices=LAUNCHERS,
                    help="run the grid as Hydra multirun jobs, one per (row, column, seed): slurm submits them to "
                         "SLURM (default preset: paper), submitit_local runs them as local processes; hydra.launcher.* "
                         "overrides configure it (hydra.launcher.partition=gpu hydra.launcher.timeout_min=720)")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. trainer.max_epochs=2 cell.backend=eager")
    args = ap.parse_args(argv)
    if args.cells:  # `--cells lstm gru trainer.max_epochs=2`: argparse gives the overrides to --cells; a cell name
        args.overrides = [c for c in args.cells if "=" in c] + args.overrides  # never holds "=": back they go
        args.cells = [c for c in args.cells if "=" not in c] or ap.error("--cells: no cell named")
    if args.seeds < 1:
        ap.error("--seeds must be at least 1")
    args.hydra = [o for o in args.overrides if is_hydra_override(o)]  # the launcher's: for reproduce/job.py
    args.overrides = [o for o in args.overrides if not is_hydra_override(o)]
    if args.hydra and not args.launcher:
        ap.error(f"{' '.join(args.hydra)}: hydra.* overrides configure a --launcher; none was chosen")
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
    preset = args.preset or ("paper" if torch.cuda.is_available() or args.launcher == "slurm" else "quick")
    cfg = config.compose(name, preset, args.overrides)
    console.print(f"[bold]{name}[/]: preset [bold]{preset}[/] (protocol {cfg.protocol}), {args.seeds} seed(s)")
    points = grid_points(cfg, args.cells)
    if cfg.grid.rows.key == "cell.name":
        for row, _, _ in points:
            cells.get(row)  # an unknown cell fails now, with the valid names, not after the data is prepared
    root = Path(cfg.paths.results)
    failed = None
    if not args.collect and args.launcher:
        failed = submit_grid(cfg, name, preset, points, args.seeds, root, args.force, args.launcher,
                             args.overrides, args.hydra)
    elif not args.collect and cfg.table.get("source"):
        derive_grid(cfg, name, points, args.seeds, root, force=args.force)
    elif not args.collect:
        train_grid(cfg, name, points, args.seeds, root, force=args.force)
    from reproduce import distributed
    if not distributed.is_global_zero():  # a DDP rank other than 0: it trained; rank 0 prints the table
        return []
    if args.wandb_project:
        records = results.load_wandb(args.wandb_project, name, preset=preset, entity=cfg.logger.entity)
    else:
        records = results.load_records(root, table=name, preset=preset)
    out = report(cfg, name, points, records, preset)
    if failed:
        raise SystemExit(failed)
    return out


def train_grid(cfg, name: str, points, seeds: int, root: Path, force: bool) -> None:
    from reproduce import distributed
    from reproduce.train import LOCK, RunBusy, run, run_lock  # lightning and the data modules load only when training

    distributed.launch(cfg)  # trainer=ddp, devices > 1: every process runs this grid; rank 0 decides (agree), writes

    def done():
        return distributed.agree({(r["row"], r["column"], r["seed"])
                                  for r in results.load_records(root, table=name, preset=cfg.preset)})

    finished = done()
    jobs = [(p, cfg.seed + s) for s in range(seeds) for p in points]
    for i, ((row, col, values), seed) in enumerate(jobs, 1):
        tag = f"[{i}/{len(jobs)}] {name} {row} {col} seed {seed}"
        if (row, col, seed) in finished and not force:
            console.print(f"{tag}: done already (a record exists; --force reruns it)")
            continue
        point = OmegaConf.merge(cfg, {"seed": seed})
        for key, value in values.items():
            OmegaConf.update(point, key, value)
        run_dir = Path(cfg.paths.runs) / name / cfg.preset / f"{row}__{col}__s{seed}".replace("/", "_")
        try:
            with distributed.held(run_lock, run_dir):
                if not force and (row, col, seed) in done():  # finished by another process since this one started
                    console.print(f"{tag}: done already (by another process)")
                    continue
                if force and distributed.is_global_zero():  # the folder's contents; the lock stays
                    for old in run_dir.iterdir():
                        if old.name != LOCK:
                            shutil.rmtree(old) if old.is_dir() else old.unlink()
                console.rule(tag)
                record = run(point, run_dir, name=f"{name}/{row}/{col}/s{seed}")
                if record is None:  # a DDP rank other than 0: it trained, rank 0 writes the record
                    continue
                record.update(table=name, paper=cfg.table.paper, row=row, column=col, grid=dict(values),
                              notes="; ".join(cfg.table.notes or []))
                path = results.write_record(record, root)
        except RunBusy as busy:
            console.print(f"{tag}: skipped, {busy}")
            continue
        if cfg.logger.name == "wandb":
            results.log_record_wandb(record)
        console.print(f"{tag}: {summary(cfg, record)}, {record['wall_s']:.0f} s -> {path}")


# ---- cluster grids: the grid as Hydra multirun jobs (reproduce/job.py), one per (row, column, seed) ---------------

def grid_jobs(points, seed: int, seeds: int) -> list[tuple[tuple[str, str, dict], int]]:
    """(grid point, seed) of every run of a table, in the order ``train_grid`` runs them (seed-major, rows first);
    a job's ``point`` is its index here (in the grid of all rows: ``--cells`` only chooses which are submitted)."""
    return [(p, seed + s) for s in range(seeds) for p in points]


def is_hydra_override(override: str) -> bool:
    """``hydra.launcher.partition=gpu``, ``hydra/launcher=...``: for the job's Hydra, not the table's config."""
    return override.lstrip("+~").startswith(("hydra.", "hydra/"))


def hydra_quote(text) -> str:
    """``text`` as one quoted string of Hydra's override grammar: a quote, and the backslashes before a quote or the
    end, escaped (``it's`` -> ``'it\\'s'``)."""
    return "'" + re.sub(r"(\\*)('|$)", lambda m: m.group(1) * 2 + ("\\'" if m.group(2) else ""), str(text)) + "'"


def hydra_list(items) -> str:
    """Strings as a list of Hydra's override grammar: ``['trainer.max_epochs=2','grid.rows.values=[lstm,gru]']``."""
    return "[" + ",".join(hydra_quote(s) for s in items) + "]"


def check_job_processes(cfg, launcher: str, hydra_overrides) -> None:
    """Several devices per run (``trainer=ddp trainer.devices=N trainer.num_nodes=M``) in grid jobs: SLURM must start
    the N x M processes (``srun``, which Lightning joins), so the job asks for N tasks per node on M nodes; Lightning's
    own way on one machine, starting the command line again per device, would start submitit's job runner again."""
    devices, nodes = cfg.trainer.devices, cfg.trainer.num_nodes
    if not ((isinstance(devices, int) and devices > 1) or nodes > 1):
        return
    if launcher != "slurm":
        raise SystemExit(f"trainer.devices={devices} trainer.num_nodes={nodes}: several processes per run work in "
                         f"SLURM grid jobs (--launcher slurm) or without --launcher, not in {launcher} jobs")
    given = dict(o.split("=", 1) for o in hydra_overrides if "=" in o)
    want = {"hydra.launcher.tasks_per_node": str(devices), "hydra.launcher.nodes": str(nodes)}
    if any(given.get(k, "1") != v for k, v in want.items()):
        raise SystemExit(f"trainer.devices={devices} trainer.num_nodes={nodes} in SLURM jobs: srun starts the "
                         f"processes, one per device, so add " + " ".join(f"{k}={v}" for k, v in want.items())
                         + f" hydra.launcher.gpus_per_node={devices}")


def submit_grid(cfg, name: str, preset: str, points, seeds: int, root: Path, force: bool, launcher: str,
                overrides, hydra_overrides) -> str | None:
    """Run the grid points of ``points`` (all seeds) that have no record (all with ``force``) as one Hydra multirun
    of ``reproduce/job.py`` on ``launcher``, one job per point, and wait for them. Returns None when every job
    finished, else what went wrong (the table is printed all the same: from the records there are)."""
    check_job_processes(cfg, launcher, hydra_overrides)
    done = {(r["row"], r["column"], r["seed"]) for r in results.load_records(root, table=name, preset=preset)}
    chosen = {(row, col) for row, col, _ in points}  # --cells: a subset of the rows
    jobs = grid_jobs(grid_points(cfg), cfg.seed, seeds)
    todo = [i for i, ((row, col, _), seed) in enumerate(jobs)
            if (row, col) in chosen and (force or (row, col, seed) not in done)]
    skipped = len(points) * seeds - len(todo)
    console.print(f"{name}: {len(todo)} job(s) to run on {launcher}" +
                  (f", {skipped} done already (a record exists; --force reruns them)" if skipped else ""))
    if not todo:
        return None
    sweep = Path(cfg.paths.runs).absolute() / name / preset / "sweeps" / time.strftime("%Y%m%d-%H%M%S")
    cmd = [sys.executable, "-m", "reproduce.job", "--multirun", f"hydra/launcher={launcher}",
           f"table={name}", f"table_preset={preset}", f"seeds={seeds}", "point=" + ",".join(map(str, todo)),
           f"overrides={hydra_list(overrides)}", f"force={str(force).lower()}",
           f"hydra.sweep.dir={hydra_quote(sweep)}", *hydra_overrides]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))
    # the signal submitit has the scheduler send before the time limit: the one lit_models.callbacks.Resume saves a
    # checkpoint on and stops (submitit's default, USR2, would end the run mid-step, losing the steps since the last
    # checkpoint)
    env.setdefault("SUBMITIT_PREEMPT_SIGNAL", "USR1")
    console.print(f"jobs' logs: {sweep}/.submitit; the table when they are done: "
                  + shlex.join(["python", f"reproduce/{name}.py", "--preset", preset,
                                *(["--seeds", str(seeds)] if seeds > 1 else []), "--collect", *overrides]))
    rc = subprocess.run(cmd, env=env, cwd=Path.cwd()).returncode
    if rc == 0:
        return None
    why = (f"{name}: the {launcher} multirun exited with {rc}: a job failed, was preempted or did not start (its "
           f"logs: {sweep}/.submitit). Run the same command again: finished points are skipped, interrupted ones "
           f"resume from their last.ckpt")
    console.print(f"[red]{why}[/]")
    return why


def derive_grid(cfg, name: str, points, seeds: int, root: Path, force: bool) -> None:
    """A table made from another table's trained models (``table.source``), e.g. G2 Table 3: each grid point takes
    the source run of its row and seed, transforms a copy of its model (``compress.<column>``) and evaluates it."""
    if cfg.task.get("kind") == "translation":  # each task kind knows how to evaluate its own models
        from reproduce.train_mt import evaluate_compressed
    else:
        from reproduce.train_lm import evaluate_compressed

    source, column = cfg.table.source, cfg.table.get("source_column")  # column: one task of a two-task table
    runs = {(r["row"], r["seed"]): r for r in sorted(results.load_records(root, table=source, preset=cfg.preset),
                                                      key=lambda r: str(r.get("created", "")))
            if column is None or r["column"] == column}
    done = {(r["row"], r["column"], r["seed"]) for r in results.load_records(root, table=name, preset=cfg.preset)}
    jobs = [(p, cfg.seed + s) for s in range(seeds) for p in points]
    missing = sorted({(row, seed) for (row, _, _), seed in jobs if (row, seed) not in runs})
    if missing:
        raise SystemExit(f"{name} compresses the models of {source}" + (f" ({column})" if column else "")
                         + f", and {source} has no run for "
                         + ", ".join(f"{row} seed {seed}" for row, seed in missing) + f" under preset {cfg.preset}. "
                         f"Train them first: python reproduce/{source}.py --preset {cfg.preset}"
                         + (f" --seeds {seeds}" if seeds > 1 else ""))
    for i, ((row, col, values), seed) in enumerate(jobs, 1):
        tag = f"[{i}/{len(jobs)}] {name} {row} {col} seed {seed}"
        if (row, col, seed) in done and not force:
            console.print(f"{tag}: done already (a record exists; --force reruns it)")
            continue
        src = runs[(row, seed)]
        spec = cfg.compress.get(col)
        t0 = time.time()
        limit = {"limit": cfg.table.eval_limit} if cfg.table.get("eval_limit") else {}  # e.g. quick: fewer pairs
        value, report_ = evaluate_compressed(src, None if spec is None else OmegaConf.to_container(spec),
                                             cfg.table.evaluate, **limit)
        record = {"table": name, "paper": cfg.table.paper, "row": row, "column": col, "grid": dict(values),
                  "seed": seed, "preset": cfg.preset, "protocol": cfg.protocol,
                  "metrics": {cfg.table.metric: value, cfg.table.evaluate: value}, "compression": report_,
                  "params": src.get("params"), "wall_s": round(time.time() - t0, 1), "git": src.get("git"),
                  "provenance": src.get("provenance", ""), "source_run": src.get("run_dir"),
                  "notes": "; ".join(cfg.table.notes or []), "config": OmegaConf.to_container(cfg, resolve=True)}
        path = results.write_record(record, root)
        ratio = f", gates compressed {report_['ratio']:.1f}x" if report_ else ""
        console.print(f"{tag}: {cfg.table.evaluate} {value:.2f}{ratio} -> {path}")


def report(cfg, name: str, points, records, preset: str) -> list[dict]:
    t = cfg.table
    spec = OmegaConf.to_container(t.expand) if t.get("expand") else None
    runs, grid = records, points  # one record per trained grid point: the curves, drawn on the grid's own axes
    if spec:  # the grid's rows are cells; the table's rows and columns are the expanded ones
        records = expand(records, spec, t.metric)
        points = [(e["row"].format(row=r), e["column"].format(column=c), v) for r, c, v in points for e in spec]
    rows = list(dict.fromkeys(p[0] for p in points))
    columns = list(dict.fromkeys(p[1] for p in points))
    published = results.published_values(t.paper, t.published)
    prow, pcol = results.published_grid(t.paper, t.published)
    # the paper's grid in its order ("not run" where this preset skipped it), then what the paper lacks
    rows = prow + [r for r in rows if r not in prow]
    columns = pcol + [c for c in columns if c not in pcol]
    protocol = t.get("protocol_note") or ("best test accuracy over epochs (the authors' protocol)"
                                          if cfg.protocol == "paper" else
                                          "test accuracy at the epoch of best validation accuracy")
    notes = [f"preset {preset}: {protocol}"] + list(t.notes or [])
    notes += sorted({r.get("provenance") for r in records if r.get("provenance")})
    out_dir = Path(cfg.paths.results) / "tables"
    out = compare.compare(name, paper=t.paper, published=published, records=records, rows=rows, columns=columns,
                          preset=preset, metric=t.metric, notes=notes, out_dir=out_dir, console=console,
                          params=row_params(cfg, rows), literature=results.literature_rows(t.paper, t.published))
    if any(r.get("curve") for r in runs):
        curve_rows = list(dict.fromkeys(r for r, _, _ in grid)) if spec else rows
        curve_cols = list(dict.fromkeys(c for _, c, _ in grid)) if spec else columns
        png = compare.plot_curves(name, runs, out_dir, metric=t.get("curve", "test/acc"), preset=preset,
                                  rows=curve_rows, columns=curve_cols)
        console.print(f"curves: {png}")
    return out
