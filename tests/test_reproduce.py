"""Every reproduction script end to end on real data (``--preset smoke``), ``--collect``, resuming, parameter tables."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from reproduce import config, grid, kinds, loop, results, runner
from reproduce.train import run

REPO = Path(__file__).resolve().parents[1]
# the classification tables (the parameter tables have no experiment file; the language-model tables:
# tests/test_lm_tables.py; the translation tables: tests/test_translation.py)
TRAINED = [n for n in config.experiments() if kinds.of(config.compose(n, "smoke")).name == "classification"]


@pytest.fixture
def workdir(workdir, monkeypatch):
    """conftest's workdir without torch.compile (auto then picks the fused kernel or eager: seconds, not a compile
    per smoke run)."""
    monkeypatch.setenv("GATEZOO_COMPILE", "0")
    return workdir


@pytest.mark.slow
@pytest.mark.parametrize("name", TRAINED)
def test_table_script_runs_end_to_end_with_smoke(name, workdir):
    out = runner.main(name, ["--preset", "smoke"])
    ran = [r for r in out if r["status"] == "ok"]
    cfg = config.compose(name, "smoke")
    assert len(ran) == len(grid.grid_points(cfg)) >= 1
    for r in ran:
        assert r["n"] == 1 and 0.0 <= r["mean"] <= 1.0 and r["presets"] == "smoke"
        assert r["params_match"] in (True, None)
    published = {(r, c) for r, c, _ in results.published_values(cfg.table.paper, cfg.table.published)}
    untrained = published - {(o["row"], o["column"]) for o in ran}  # a figure may print no numbers: none
    if untrained:
        assert any(r["status"] == "not run" for r in out)  # the rest of the paper's grid is shown, and says so
    assert all(r["mean"] is None for r in out if r["status"] == "not run")  # nothing flows from the paper
    records = results.load_records(workdir / "results", table=name)
    assert len(records) == len(ran)
    rec = records[0]
    # wall_s: the whole run, its data set-up and final test included (rounded to 0.1 s)
    assert rec["git"] and rec["wall_s"] > 0 and rec["provenance"] and rec["preset"] == "smoke"
    assert rec["curve"]["epoch"] == [1] and "test/acc" in rec["curve"]
    tables = workdir / "results" / "tables" / "smoke"
    assert (tables / f"{name}.md").read_text().count("not run") >= (1 if untrained else 0)
    assert (tables / f"{name}.csv").is_file() and (tables / f"{name}.test-acc.png").stat().st_size > 1000
    if name.startswith("fig_"):  # a paper's figure: training and test accuracy per epoch, as the paper draws them
        assert (tables / f"{name}.train-acc.png").stat().st_size > 1000
    if name == "table7_slim":
        assert any("GloVe 50d" in line for line in (tables / f"{name}.md").read_text().splitlines())


@pytest.mark.slow
def test_collect_rebuilds_the_table_without_training(workdir, monkeypatch):
    first = runner.main("table2_simplified", ["--preset", "smoke", "--seeds", "2"])

    def no_training(*args, **kwargs):
        raise AssertionError("--collect must not train")

    monkeypatch.setattr(loop, "train_grid", no_training)
    again = runner.main("table2_simplified", ["--preset", "smoke", "--collect"])
    assert again == first
    ok = [r for r in again if r["status"] == "ok"]
    assert ok and all(r["n"] == 2 and r["std"] is not None for r in ok)  # mean +- std over the two seeds


@pytest.mark.slow
def test_a_finished_point_is_not_rerun_and_force_reruns_it(workdir, capsys):
    runner.main("table2_simplified", ["--preset", "smoke", "--cells", "lstm"])
    first = results.load_records(workdir / "results", table="table2_simplified")
    runner.main("table2_simplified", ["--preset", "smoke", "--cells", "lstm"])
    assert "done already" in capsys.readouterr().out
    assert len(results.load_records(workdir / "results", table="table2_simplified")) == len(first) == 1
    runner.main("table2_simplified", ["--preset", "smoke", "--cells", "lstm", "--force"])
    assert len(results.load_records(workdir / "results", table="table2_simplified")) == 2


@pytest.mark.slow
def test_an_interrupted_run_resumes_from_its_last_checkpoint(workdir):
    cfg = config.compose("table2_simplified", "smoke", ["cell.name=lstm1", "optim.eta0=0.001"])
    run_dir = workdir / "runs" / "one"
    first = run(cfg, run_dir)  # "interrupted" after one epoch: last.ckpt is there
    cfg.trainer.max_epochs = 2
    second = run(cfg, run_dir)
    assert first["curve"]["epoch"] == [1] and second["curve"]["epoch"] == [1, 2]  # the first epoch was not redone
    assert second["curve"]["test/acc"][0] == first["curve"]["test/acc"][0]


@pytest.mark.parametrize("name", ["table1_slim", "table2_slim"])
def test_parameter_tables_print_the_papers_counts(name, workdir):
    out = runner.params_table(name, [])
    assert len(out) == 3 and all(r["params_match"] and r["delta"] == 0 for r in out)


@pytest.mark.parametrize("name", ["table1_simplified", "table2_simplified", "table3_simplified"])
def test_simplified_tables_print_the_params_column_exactly(name, workdir):
    out = runner.main(name, ["--preset", "smoke", "--collect"])
    assert {r["row"] for r in out} == {"lstm", "lstm1", "lstm2", "lstm3"}
    assert all(r["params_match"] is True for r in out)


@pytest.mark.slow
def test_scripts_run_as_files_and_unknown_input_lists_the_valid_choices(workdir, capsys):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    res = subprocess.run([sys.executable, str(REPO / "reproduce" / "table1_slim.py")], env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "53200" in res.stdout and "13300" in res.stdout and "3400" in res.stdout
    for args, message in [(["cell.hiden_size=3"], "valid keys under cell"),
                          (["--cells", "gruu"], "gruu not in this table"),  # a registered cell would be an extra row
                          (["task.name=mnist"], "Valid tasks"),
                          (["grid.rows.values=[lstmx]"], "Valid cells"),
                          (["optim.name=adamw"], "unknown optimizer 'adamw'; valid: ")]:
        with pytest.raises(SystemExit) as stop:  # a user's mistake: the message alone, exit status 2, no traceback
            runner.main("table2_simplified", ["--preset", "smoke", *args])
        assert stop.value.code == 2, args
        err = capsys.readouterr().err
        assert message in err and err.startswith("reproduce/table2_simplified.py: error: "), (args, err)


@pytest.mark.slow
def test_single_runs_started_in_the_same_second_get_their_own_folders(workdir, monkeypatch):
    import time
    from types import SimpleNamespace

    from reproduce import train

    # both runs "start" in the same second (only train.py's view of the clock is changed)
    monkeypatch.setattr(train, "time", SimpleNamespace(strftime=lambda fmt: "20260101-000000", time=time.time))
    args = ["--preset", "smoke", "task=row_mnist", "cell.hidden_size=8", "+task.data.limit_train=64",
            "+task.data.limit_test=32"]
    first, second = train.main(args), train.main(args)
    assert first["run_dir"] != second["run_dir"]
    assert Path(first["run_dir"]).is_dir() and Path(second["run_dir"]).is_dir()
    assert len(results.load_records(workdir / "results", table="single")) == 2


@pytest.mark.slow
@pytest.mark.parametrize("command", [["-m", "reproduce.train"], [str(REPO / "reproduce" / "table2_simplified.py")]])
def test_a_missing_data_file_is_a_message_naming_it_and_the_fix(tmp_path, command):
    """No data and no network (downloads refused at once by a closed proxy port): the file, where it was looked
    for and the fix, exit status 2, no traceback; nothing left behind (no result, no run folder, no empty data
    folder)."""
    env = dict(os.environ, GATEZOO_DATA=str(tmp_path / "empty"), HOME=str(tmp_path / "home"),
               GATEZOO_CACHE=str(tmp_path / "cache"), GATEZOO_RESULTS=str(tmp_path / "results"),
               GATEZOO_RUNS=str(tmp_path / "runs"), https_proxy="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9",
               PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, *command, "--preset", "smoke", "task=row_mnist", "cell.hidden_size=8"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "mnist/train-images-idx3-ubyte.gz not found in" in out.stderr and "Fix: copy" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "results").exists() and not (tmp_path / "runs").exists()
    assert not (tmp_path / "empty").exists()  # the download's folders went with it


@pytest.mark.slow
def test_a_grid_shared_by_two_workers_runs_every_point_once(workdir):
    """``--workers 2`` on a grid table: two processes of the script, each pinned to its share of the cores with one
    torch thread, take the grid points under their run locks; every point ends with exactly one record."""
    out = runner.main("table2_simplified", ["--preset", "smoke", "--workers", "2"])
    points = grid.grid_points(config.compose("table2_simplified", "smoke"))
    records = results.load_records(workdir / "results", table="table2_simplified")
    assert sorted((r["row"], r["column"]) for r in records) == sorted((row, col) for row, col, _ in points)
    assert len([r for r in out if r["status"] == "ok"]) == len(points)
    with pytest.raises(SystemExit, match="--storage is for tables made of studies"):
        runner.main("table2_simplified", ["--preset", "smoke", "--storage", "sqlite:///x.db"])
