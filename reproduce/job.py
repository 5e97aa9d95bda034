"""One grid point of a table as a Hydra app: what Hydra's submitit launcher runs, one job per (row, column, seed).

    python reproduce/table2_simplified.py --launcher slurm --seeds 3 hydra.launcher.partition=gpu   # the whole grid
    python reproduce/table2_simplified.py --preset paper --seeds 3 --collect                        # later: the table
    python -m reproduce.job --multirun hydra/launcher=submitit_local table=table2_simplified table_preset=smoke \\
        point=0,1                                                                                   # what it runs

The table script (``reproduce/multirun.py``, ``submit_grid``) writes the ``--multirun`` command line: ``point`` sweeps
over the grid points that have no record yet (their indices in ``grid.grid_jobs``), ``overrides`` carries the
script's config overrides and ``hydra.*`` overrides choose and configure the launcher (``conf/hydra/launcher/``).
Each job composes the table's config exactly as the script did and trains its point through ``reproduce.loop``'s
``train_grid`` (``derive_grid`` for a table made from another table's models): the same run folder, run lock,
resume from ``last.ckpt`` and result record as a sequential run, so ``--collect`` finds it and two jobs never write
one folder. The job's Hydra config: ``conf/job.yaml``.
"""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable as a file too

import hydra  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402


@contextlib.contextmanager
def _table_hydra():
    """Room for ``reproduce.config.compose`` (Hydra's compose API) inside this Hydra app: the app's global Hydra
    state is set aside while the table's config is composed, then put back."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.initialize import get_gh_backup, restore_gh_from_backup

    backup = get_gh_backup()
    GlobalHydra.instance().clear()
    try:
        yield
    finally:
        restore_gh_from_backup(backup)


def run_point(job: DictConfig) -> None:
    """Train (or derive) grid point ``job.point`` of table ``job.table``: see the module's docstring."""
    from reproduce import config, grid, loop  # torch and lightning load in the job, not in the process that submits

    overrides = [str(o) for o in OmegaConf.to_container(job.overrides, resolve=False)]
    with _table_hydra():
        cfg = config.compose(job.table, job.table_preset, overrides)
    jobs = grid.grid_jobs(grid.grid_points(cfg), cfg.seed, job.seeds)
    if not 0 <= job.point < len(jobs):
        raise ValueError(f"point={job.point}: {job.table} has {len(jobs)} grid points under preset "
                         f"{job.table_preset} with {job.seeds} seed(s): 0 to {len(jobs) - 1}")
    point, seed = jobs[job.point]
    cfg = OmegaConf.merge(cfg, {"seed": seed})  # the runner's seed + 0: this point's seed
    run_grid = loop.derive_grid if cfg.table.get("source") else loop.train_grid
    run_grid(cfg, job.table, [point], 1, Path(cfg.paths.results), force=job.force)


@hydra.main(config_path="../conf", config_name="job", version_base=None)
def main(job: DictConfig) -> None:
    run_point(job)


if __name__ == "__main__":
    main()
