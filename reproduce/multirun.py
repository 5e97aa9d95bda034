"""A table's grid as cluster jobs: one Hydra ``--multirun`` of ``reproduce/job.py`` through Hydra's submitit
launcher, one job per (row, column, seed) that has no record yet (``--launcher slurm | submitit_local``).

Each job trains its point exactly as a sequential run would (``reproduce.loop``); the table script waits for the
jobs, then prints the table; ``--collect`` prints it again at any time from the records the jobs wrote.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

from reproduce import grid, results
from reproduce.console import console

REPO = Path(__file__).resolve().parents[1]
LAUNCHERS = ("slurm", "submitit_local")  # conf/hydra/launcher/slurm.yaml; submitit_local: the plugin's own


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
    jobs = grid.grid_jobs(grid.grid_points(cfg), cfg.seed, seeds)
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
