"""A table's grid run point by point in this process: ``train_grid`` trains every point that has no record yet,
``derive_grid`` evaluates the models of another table (``table.source``: G2 Tables 3-5 compress Tables 1-2's).

A point with a record for this preset and seed is not run again (``force`` reruns it); an interrupted one resumes
from its ``last.ckpt``; one that another live process trains (its ``run.lock``) is skipped, so several copies of a
script (or cluster jobs, ``reproduce/job.py``) share one grid."""
from __future__ import annotations

import shutil
import time
from pathlib import Path

from omegaconf import OmegaConf

from lit_models.callbacks import duration
from reproduce import distributed, grid, kinds, kit, results, train
from reproduce.console import console
from reproduce.locks import LOCK, RunBusy, run_lock


def run_dir(cfg, name: str, row: str, col: str, seed: int) -> Path:
    return Path(cfg.paths.runs) / name / cfg.preset / f"{row}__{col}__s{seed}".replace("/", "_")


def train_grid(cfg, name: str, points, seeds: int, root: Path, force: bool) -> None:
    # trainer=ddp, devices > 1: every process runs this grid; rank 0 decides (agree) and writes
    distributed.launch(cfg, kinds.of(cfg).single_device)

    def done():
        return distributed.agree({(r["row"], r["column"], r["seed"])
                                  for r in results.load_records(root, table=name, preset=cfg.preset)})

    finished = done()
    jobs = grid.grid_jobs(points, cfg.seed, seeds)
    todo = sum(1 for (row, col, _), seed in jobs if force or (row, col, seed) not in finished)
    walls: list[float] = []  # the runs this process trained: the table's ETA at their mean pace
    for i, ((row, col, values), seed) in enumerate(jobs, 1):
        tag = f"[{i}/{len(jobs)}] {name} {row} {col} seed {seed}"
        if (row, col, seed) in finished and not force:
            console.print(f"{tag}: done already (a record exists; --force reruns it)")
            continue
        point = grid.point_config(cfg, values, seed)
        folder = run_dir(cfg, name, row, col, seed)
        try:
            with distributed.held(run_lock, folder):
                if not force and (row, col, seed) in done():  # finished by another process since this one started
                    console.print(f"{tag}: done already (by another process)")
                    continue
                if force and distributed.is_global_zero():  # the folder's contents; the lock stays
                    for old in folder.iterdir():
                        if old.name != LOCK:
                            shutil.rmtree(old) if old.is_dir() else old.unlink()
                eta = f" (table ETA {duration(sum(walls) / len(walls) * (todo - len(walls)))})" if walls else ""
                console.rule(tag + eta)
                labels = {"table": name, "paper": cfg.table.paper, "row": row, "column": col, "grid": dict(values),
                          "notes": "; ".join(cfg.table.notes or [])}
                record = train.run(point, folder, name=f"{name}/{row}/{col}/s{seed}", labels=labels)
                if record is None:  # a DDP rank other than 0: it trained, rank 0 writes the record
                    continue
                path = results.write_record(record, root)
                walls.append(record["wall_s"])
        except RunBusy as busy:
            console.print(f"{tag}: skipped, {busy}")
            continue
        console.print(f"{tag}: {grid.summary(cfg, record)}, {record['wall_s']:.0f} s -> {path}")


def derive_grid(cfg, name: str, points, seeds: int, root: Path, force: bool) -> None:
    """A table made from another table's trained models (``table.source``), e.g. G2 Table 3: each grid point takes
    the source run of its row and seed, transforms a copy of its model (``compress.<column>``) and evaluates it
    through the source's task kind."""
    kind = kinds.of(cfg)
    source, column = cfg.table.source, cfg.table.get("source_column")  # column: one task of a two-task table
    runs = {(r["row"], r["seed"]): r for r in sorted(results.load_records(root, table=source, preset=cfg.preset),
                                                      key=lambda r: str(r.get("created", "")))
            if column is None or r["column"] == column}
    done = {(r["row"], r["column"], r["seed"]) for r in results.load_records(root, table=name, preset=cfg.preset)}
    jobs = grid.grid_jobs(points, cfg.seed, seeds)
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
        key = cfg.grid.rows.key  # the row's cell; the column is a compression, not a config key
        point = grid.point_config(cfg, {key: values[key]}, seed)
        t0 = time.time()
        limit = cfg.table.get("eval_limit")  # e.g. quick: fewer pairs
        value, report = kind.evaluate_compressed(src, None if spec is None else OmegaConf.to_container(spec),
                                                 cfg.table.evaluate, **({"limit": limit} if limit else {}))
        record = kit.record(point, metrics={cfg.table.metric: value, cfg.table.evaluate: value},
                            params=src.get("params"), wall=time.time() - t0, compression=report,
                            git=src.get("git"), provenance=src.get("provenance", ""), source_run=src.get("run_dir"))
        record.update(table=name, paper=cfg.table.paper, row=row, column=col, grid=dict(values),
                      notes="; ".join(cfg.table.notes or []))
        path = results.write_record(record, root)
        ratio = f", gates compressed {report['ratio']:.1f}x" if report else ""
        console.print(f"{tag}: {cfg.table.evaluate} {value:.2f}{ratio} -> {path}")
