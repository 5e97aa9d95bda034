"""Cluster grids: a table's grid as one Hydra ``--multirun`` of ``reproduce/job.py`` through the submitit launcher,
one job per (row, column, seed), then ``--collect``.

The submitit_local launcher runs a smoke table's whole grid here as separate processes, exactly as SLURM would run
its jobs; the SLURM launcher runs up to ``sbatch``, which a stand-in on PATH captures (there is no cluster here), so
the test reads the #SBATCH lines that partition, account, GPUs and time overrides produce."""
from __future__ import annotations

import re
import stat
import sys
from pathlib import Path

import pytest
import yaml

from reproduce import grid, results, runner

pytestmark = pytest.mark.slow  # end-to-end runs: `pytest -m "not slow"` leaves them out

NAME = "table2_simplified"  # smoke: rows lstm, lstm1 x one eta0 (row MNIST, a few batches)


@pytest.fixture
def workdir(workdir, monkeypatch):
    """conftest's workdir without torch.compile (the jobs inherit the environment)."""
    monkeypatch.setenv("GATEZOO_COMPILE", "0")
    return workdir


def use(monkeypatch, root: Path) -> Path:
    """Records and run folders under ``root`` from now on (the jobs inherit the environment)."""
    monkeypatch.setenv("GATEZOO_RESULTS", str(root / "results"))
    monkeypatch.setenv("GATEZOO_RUNS", str(root / "runs"))
    return root


def by_point(records) -> dict:
    return {(r["row"], r["column"], r["seed"]): r for r in records}


def test_submitit_local_runs_the_grid_as_one_job_per_point_and_collect_prints_it(workdir, monkeypatch, capsys):
    use(monkeypatch, workdir / "sequential")
    runner.main(NAME, ["--preset", "smoke", "--seeds", "2"])
    sequential = by_point(results.load_records(workdir / "sequential" / "results", table=NAME))
    assert len(sequential) == 4  # 2 rows x 1 column x 2 seeds

    grid = use(monkeypatch, workdir / "grid")
    capsys.readouterr()
    table = runner.main(NAME, ["--preset", "smoke", "--seeds", "2", "--launcher", "submitit_local"])
    assert "4 job(s) to run on submitit_local" in capsys.readouterr().out
    records = results.load_records(grid / "results", table=NAME)
    assert len(records) == 4 and by_point(records).keys() == sequential.keys()  # one record per point, none twice

    # one submitit job (its own process, log and result) and one Hydra job folder per (row, column, seed)
    sweep, = (grid / "runs" / NAME / "smoke" / "sweeps").iterdir()
    jobs = [d for d in (sweep / ".submitit").iterdir() if list(d.glob("*_result.pkl"))]
    assert len(jobs) == 4
    logs = [next(d.glob("*_log.out")).read_text() for d in jobs]
    trained = sorted(re.search(rf"\[1/1\] {NAME} (\S+) (\S+) seed (\d)", log).groups() for log in logs)
    assert trained == sorted((r, c, str(s)) for r, c, s in sequential)
    points = sorted(yaml.safe_load((sweep / str(i) / ".hydra" / "overrides.yaml").read_text()) for i in range(4))
    assert [[o for o in p if o.startswith("point=")] for p in points] == [[f"point={i}"] for i in range(4)]

    # a job trains its point as the sequential runner does: same folder layout, same numbers (CPU, same seed and data)
    for key, rec in by_point(records).items():
        ref = sequential[key]
        assert rec["status"] == "ok" and rec["metrics"] == ref["metrics"]
        assert rec["curve"].keys() == ref["curve"].keys()
        assert all(rec["curve"][k] == pytest.approx(v, rel=1e-6) for k, v in ref["curve"].items())
        assert Path(rec["run_dir"]).relative_to(grid) == Path(ref["run_dir"]).relative_to(workdir / "sequential")
        assert {k: v for k, v in rec["config"].items() if k != "paths"} == \
               {k: v for k, v in ref["config"].items() if k != "paths"}

    ok = [r for r in table if r["status"] == "ok"]
    assert len(ok) == 2 and all(r["n"] == 2 for r in ok)  # mean +- std of both seeds, in every point of the grid

    # submitted again: every point has its record, nothing is submitted; --collect prints the same table
    again = runner.main(NAME, ["--preset", "smoke", "--seeds", "2", "--launcher", "submitit_local"])
    assert "0 job(s) to run on submitit_local, 4 done already" in capsys.readouterr().out
    assert len(list((grid / "runs" / NAME / "smoke" / "sweeps").iterdir())) == 1 and again == table
    collected = runner.main(NAME, ["--preset", "smoke", "--seeds", "2", "--collect"])
    assert collected == table
    out = capsys.readouterr().out
    table_lines = [line for line in out.splitlines() if "│" in line]  # the printed table's rows (not the claims)
    assert all(f"{r} " in out for r in ("lstm", "lstm1")) and sum("(n=2)" in x for x in table_lines) == 2


def test_slurm_launcher_config_reaches_sbatch(workdir, monkeypatch, capfd):
    """The SLURM grid up to its submission: hydra.launcher.* overrides become #SBATCH lines, the preemption signal
    is the one the runs save on, --cells submits only its rows, the table's overrides reach every job."""
    bin_dir, captured = workdir / "bin", workdir / "sbatch-script"
    bin_dir.mkdir()
    stand_ins = {"srun": "exit 1",  # submitit only checks that it exists
                 "sbatch": f'cp "$1" {captured}; echo "sbatch: error: no cluster" >&2; exit 1'}
    for tool, body in stand_ins.items():
        (bin_dir / tool).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / tool).chmod(stat.S_IRWXU)
    monkeypatch.setenv("PATH", f"{bin_dir}:{Path(sys.executable).parent}:/usr/bin:/bin")
    monkeypatch.delenv("SUBMITIT_PREEMPT_SIGNAL", raising=False)

    with pytest.raises(SystemExit):  # argparse's error, exit 2
        runner.main(NAME, ["--preset", "smoke", "hydra.launcher.partition=gpu"])
    assert "hydra.* overrides configure a --launcher; none was chosen" in capfd.readouterr().err
    ddp = ["--preset", "smoke", "--launcher", "slurm", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]
    with pytest.raises(SystemExit, match="add hydra.launcher.tasks_per_node=2 hydra.launcher.nodes=1"):
        runner.main(NAME, ddp)  # DDP in a job: SLURM starts a process per device, so the job must ask for them
    with pytest.raises(SystemExit, match="not in submitit_local jobs"):
        runner.main(NAME, ddp[:3] + ["submitit_local"] + ddp[4:])
    assert not captured.exists()  # refused before anything was submitted
    args = ["--preset", "smoke", "--launcher", "slurm", "--seeds", "2", "--cells", "lstm1", "trainer.max_epochs=2",
            "hydra.launcher.partition=gpu-a100", "hydra.launcher.account=proj42", "hydra.launcher.gpus_per_node=2",
            "hydra.launcher.timeout_min=90"]
    with pytest.raises(SystemExit, match="the slurm multirun exited with 1"):
        runner.main(NAME, args)  # sbatch refused: the table is still printed (all "not run"), then the exit
    assert "no cluster" in capfd.readouterr().err  # sbatch's own message, through submitit and Hydra
    script = captured.read_text()
    sbatch = dict(re.findall(r"^#SBATCH --([\w-]+)(?:=(.*))?$", script, re.M))
    assert {k: sbatch.get(k) for k in ("partition", "account", "gpus-per-node", "time", "signal", "array",
                                       "ntasks-per-node", "nodes", "job-name")} == {
        "partition": "gpu-a100", "account": "proj42", "gpus-per-node": "2", "time": "90", "signal": "USR1@120",
        "array": "0-1%2", "ntasks-per-node": "1", "nodes": "1", "job-name": NAME}
    assert "srun --unbuffered" in script and "submitit.core._submit" in script
    assert not results.load_records(workdir / "results", table=NAME)

    # what the two jobs (one array) would run: points 1 and 3 of (lstm s0, lstm1 s0, lstm s1, lstm1 s1), lstm being
    # left out by --cells, each with the table's override
    multirun, = (workdir / "runs" / NAME / "smoke" / "sweeps").glob("*/multirun.yaml")
    task = yaml.safe_load(multirun.read_text())["hydra"]["overrides"]["task"]
    assert {"point=1,3", "seeds=2", "overrides=['trainer.max_epochs=2']", "table_preset=smoke"} <= set(task)


def test_a_job_runs_the_grid_point_of_its_index_in_every_table(workdir, monkeypatch):
    """``reproduce/job.py`` inside a Hydra app (as under the launcher): for every table, job ``point=i`` composes the
    table's config as the script does and hands the runner's own grid function exactly the i-th (row, column, seed)
    of the sequential order; a table made from another table's models goes to ``derive_grid``."""
    from hydra import compose, initialize_config_dir

    from reproduce import config, job, loop

    calls = []
    for kind in ("train_grid", "derive_grid"):
        monkeypatch.setattr(loop, kind, lambda cfg, name, points, seeds, root, force, kind=kind:
                            calls.append((kind, name, points, seeds, cfg.seed, force, cfg.trainer.max_epochs)))
    for name in config.experiments():
        cfg = config.compose(name, "smoke", ["seed=7"])
        expected = grid.grid_jobs(grid.grid_points(cfg), 7, 2)
        i = len(expected) - 1  # the last point: of the last row, column and seed (the first: the test above)
        with initialize_config_dir(config_dir=str(config.CONF), version_base=None):
            job.run_point(compose("job", [f"table={name}", "table_preset=smoke", "seeds=2", f"point={i}",
                                          "overrides=['seed=7','trainer.max_epochs=3']", "force=true"]))
        kind = "derive_grid" if cfg.table.get("source") else "train_grid"
        assert calls.pop() == (kind, name, [expected[i][0]], 1, expected[i][1], True, 3), name
    with initialize_config_dir(config_dir=str(config.CONF), version_base=None), \
            pytest.raises(ValueError, match="has 4 grid points under preset smoke with 2 seed"):
        job.run_point(compose("job", [f"table={NAME}", "table_preset=smoke", "seeds=2", "point=4"]))
