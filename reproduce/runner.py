"""What every ``reproduce/table<N>_<key>.py`` does: run the table's grid (or collect finished runs), then print the
published numbers beside the reproduced ones and draw the curves.

    python reproduce/table2_simplified.py                      # preset: paper if a GPU is visible, else quick
    python reproduce/table2_simplified.py --preset smoke --seeds 3 --cells lstm lstm1 trainer.max_epochs=2
    python reproduce/table2_simplified.py --collect            # the table from results/ without training
    python reproduce/table2_simplified.py --collect --wandb-project me/gatezoo
    python reproduce/table2_simplified.py --launcher slurm --seeds 3 hydra.launcher.partition=gpu   # one job a point
    python reproduce/table1_simplified.py --workers 2          # two local processes, one core each, one grid

A grid point that already has a record for this preset and seed is not run again (``--force`` reruns it); one that
was interrupted (killed, preempted: see ``lit_models.callbacks.Resume``) resumes from its ``last.ckpt``; one that
another live process is training (its ``run.lock``) is skipped, so several copies of a script can share one grid
(``--workers N`` starts N, each on its share of the cores); a
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
import os
import sys
from pathlib import Path

from reproduce import config, distributed, grid, multirun, report, results
from reproduce.console import console


def parse_args(argv, name: str):
    ap = argparse.ArgumentParser(prog=f"reproduce/{name}.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=config.PRESETS, help="default: paper when a GPU is visible, else quick")
    ap.add_argument("--seeds", type=int, default=1, help="seeds per grid point (mean +- std in the table)")
    ap.add_argument("--cells", nargs="+", metavar="ROW", help="run only these rows of the table: cells, or the names "
                    "of a table whose rows are configurations (parity_g2lstm, the figures)")
    ap.add_argument("--collect", action="store_true", help="build the table from finished runs, train nothing")
    ap.add_argument("--wandb-project", help="with --collect: read the records from this W&B project")
    ap.add_argument("--force", action="store_true", help="rerun grid points that already have a record")
    ap.add_argument("--launcher", choices=multirun.LAUNCHERS,
                    help="run the grid as Hydra multirun jobs, one per (row, column, seed): slurm submits them to "
                         "SLURM (default preset: paper), submitit_local runs them as local processes; hydra.launcher.* "
                         "overrides configure it (hydra.launcher.partition=gpu hydra.launcher.timeout_min=720)")
    ap.add_argument("--workers", type=int, default=1, metavar="N",
                    help="N processes on this machine, each on its share of the cores (one torch thread per core), "
                         "sharing the grid or the study; for a study, N jobs with --launcher")
    study = ap.add_argument_group("tables made of random-search studies (reproduce/study.py)")
    study.add_argument("--storage", metavar="URL", help="the Optuna storage: sqlite:///file.db (default: "
                       "results/studies/<table>.db), journal:/path/file.journal, or an RDB URL")
    study.add_argument("--worker", type=int, help=argparse.SUPPRESS)  # one of --workers' processes
    ap.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. trainer.max_epochs=2 cell.backend=eager")
    args = ap.parse_args(argv)
    if args.workers < 1:
        ap.error("--workers must be at least 1")
    if args.cells:  # `--cells lstm gru trainer.max_epochs=2`: argparse gives the overrides to --cells; a cell name
        args.overrides = [c for c in args.cells if "=" in c] + args.overrides  # never holds "=": back they go
        args.cells = [c for c in args.cells if "=" not in c] or ap.error("--cells: no cell named")
    if args.seeds < 1:
        ap.error("--seeds must be at least 1")
    args.hydra = [o for o in args.overrides if multirun.is_hydra_override(o)]  # the launcher's: for reproduce/job.py
    args.overrides = [o for o in args.overrides if not multirun.is_hydra_override(o)]
    if args.hydra and not args.launcher:
        ap.error(f"{' '.join(args.hydra)}: hydra.* overrides configure a --launcher; none was chosen")
    return args


def params_table(name: str, argv=None) -> list[dict]:
    """``reproduce/table1_slim.py``: a table of parameter counts, counted and checked (``report.params_table``)."""
    ap = argparse.ArgumentParser(prog=f"reproduce/{name}.py", description=report.params_table.__doc__)
    ap.parse_args(sys.argv[1:] if argv is None else argv)
    return report.params_table(name, out_dir=Path("results") / "tables")


def main(name: str, argv=None, analysis: str | None = None) -> list[dict]:
    """Run table ``name`` (its grid, or its studies), then print it; ``analysis``: a study's further report after the
    table (``variants`` or ``importance``: Greff et al.'s, ``reproduce.odyssey``)."""
    args = parse_args(sys.argv[1:] if argv is None else argv, name)
    preset = args.preset or config.default_preset(args.launcher)
    with config.usage_errors(f"reproduce/{name}.py"):  # a mistake in what was asked: its message, exit 2
        cfg = config.compose(name, preset, args.overrides)
        if extra := _extra_rows(cfg, args.cells):  # an override, so that every job and worker has the same grid
            console.print(f"[yellow]{', '.join(extra)}: not among this table's rows; trained as extra rows (no "
                          f"published number)[/]")
            args.overrides.append(config.override("grid.rows.values", [*cfg.grid.rows["values"], *extra]))
            cfg = config.compose(name, preset, args.overrides)
        points = grid.grid_points(cfg, args.cells)
        if not args.collect and not cfg.table.get("source"):  # what can fail before the data is read fails now
            from reproduce import train

            if cfg.get("study"):
                from reproduce import study

                study.check(cfg, name, preset, args.overrides, points)
            else:
                for _, _, values in points:
                    train.check(grid.point_config(cfg, values))
    if cfg.get("study"):
        return _study_table(name, preset, cfg, points, args, argv, analysis)
    if args.storage:
        raise SystemExit(f"reproduce/{name}.py: error: --storage is for tables made of studies; {name} is a grid")
    if args.workers > 1 and args.launcher:
        raise SystemExit(f"reproduce/{name}.py: error: a grid's --launcher runs one job per grid point; --workers N "
                         f"is for N processes on this machine")
    console.print(f"[bold]{name}[/]: preset [bold]{preset}[/] (protocol {cfg.protocol}), {args.seeds} seed(s)"
                  + (f", {args.workers} workers" if args.workers > 1 else ""))
    root = Path(cfg.paths.results)
    failed = None
    if not args.collect and args.launcher:
        failed = multirun.submit_grid(cfg, name, preset, points, args.seeds, root, args.force, args.launcher,
                                      args.overrides, args.hydra)
    elif not args.collect and args.workers > 1:
        # N copies of this command, each on its share of the cores with one torch thread per core (two processes
        # with 2 threads each on 2 cores slow each other down 20-200x); the run locks give each grid point to one
        from reproduce import study

        if study.run_workers(name, args.workers, _without_workers(sys.argv[1:] if argv is None else argv)):
            failed = f"reproduce/{name}.py: a worker failed; run the same command again to continue"
    elif not args.collect:
        if args.worker is not None:
            _worker_threads()
        import datamodules
        from reproduce import loop  # lightning and the data modules load only when training

        # a missing or corrupt data file: its message (the file and the fix), exit 2; finished points stay done
        with config.errors_as_messages(f"reproduce/{name}.py", (datamodules.DataError,), 2):
            (loop.derive_grid if cfg.table.get("source") else loop.train_grid)(cfg, name, points, args.seeds, root,
                                                                                 force=args.force)
    if not distributed.is_global_zero():  # a DDP rank other than 0: it trained; rank 0 prints the table
        return []
    if args.wandb_project:
        records = results.load_wandb(args.wandb_project, name, preset=preset, entity=cfg.logger.entity)
    else:
        records = results.load_records(root, table=name, preset=preset)
    # per preset: a smoke run never replaces the quick table a user waited for
    out = report.table(cfg, name, points, records, preset, out_dir=root / "tables" / preset)
    if failed:
        raise SystemExit(failed)
    return out


def _worker_threads() -> None:
    """In one of the ``--workers`` processes: torch's threads = the cores ``study.run_workers`` gave it."""
    import torch  # lightning and torch load only when training

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))


def _without_workers(argv: list[str]) -> list[str]:
    """The command line of one of the ``--workers`` processes: the same, less ``--workers N``."""
    return [a for i, a in enumerate(argv) if a != "--workers" and (i == 0 or argv[i - 1] != "--workers")
            and not a.startswith("--workers=")]


def _extra_rows(cfg, names) -> list[str]:
    """The cells of ``--cells`` that are registered but not among the rows of a table whose rows are cells (a cell
    found by the architecture search, one of cells/graphs.yaml): a researcher's own cell on a paper's table. A name
    that is no cell is left to ``grid.grid_points``' error (the table's rows listed)."""
    import cells

    rows = cfg.grid.rows
    if not names or rows.get("key") != "cell.name" or cfg.get("study"):  # configuration rows have no key
        return []
    return [c for c in names if c not in rows["values"] and c in cells.names()]


def _study_table(name: str, preset: str, cfg, points, args, argv, analysis: str | None = None) -> list[dict]:
    """A table whose cells are the best trials of random searches (``reproduce.study``)."""
    import datamodules
    from reproduce import study

    rows = args.cells
    prog = f"reproduce/{name}.py"
    if cfg.get("search"):  # the architecture search: its baselines are a study table, then the candidates
        from reproduce import arch_search

        work = arch_search.work
    else:
        work = study.work
    with config.usage_errors(prog), config.errors_as_messages(prog, (datamodules.DataError,), 2):
        if args.worker is not None:  # one of the --workers processes: its trials, then back
            _worker_threads()
            work(name, preset, args.overrides, rows, args.storage, args.worker)
            return []
        if not args.collect:
            console.print(f"[bold]{name}[/]: preset [bold]{preset}[/], {cfg.study.trials} trial(s) per cell and "
                          f"task ({cfg.study.sampler} search), {args.workers} worker(s)")
            if args.launcher:
                failed = study.submit(name, preset, args.overrides, rows, args.storage, args.workers, args.launcher,
                                      args.hydra, work)
            elif args.workers > 1:
                failed = study.run_workers(name, args.workers, _without_workers(sys.argv[1:] if argv is None else argv))
            else:
                work(name, preset, args.overrides, rows, args.storage)
                failed = 0
            if failed:
                raise SystemExit(f"{prog}: {failed} worker(s) failed; run the same command again to continue")
            if args.seeds > 1:
                study.rerun_best(name, preset, args.overrides, rows, args.seeds)
        study.summary(cfg, name, preset, args.storage, points)
    records = results.load_records(Path(cfg.paths.results), table=name, preset=preset)
    out_dir = Path(cfg.paths.results) / "tables" / preset
    out = report.table(cfg, name, points, records, preset, out_dir=out_dir)
    if analysis:
        from fileio import atomic_write_text

        lines = report.analysis(cfg, analysis, records, out_dir, args.overrides)
        path = atomic_write_text(out_dir / f"{name}.{analysis}.md", "\n".join(lines) + "\n")
        console.print("\n".join(lines), markup=False)
        console.print(f"written: {path} (figures beside it)")
    return out
