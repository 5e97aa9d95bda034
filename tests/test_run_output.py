"""What a researcher sees and logs: one W&B run per grid point, table files per preset, a line per epoch in a log,
curves that show a one-epoch run, no noise a user cannot act on."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from reproduce import compare, runner

REPO = Path(__file__).resolve().parents[1]
POINTS = ["--preset", "smoke", "--cells", "lstm", "lstm1", "grid.columns.values=[0.001]", "cell.hidden_size=8"]


@pytest.mark.slow
def test_every_grid_point_is_its_own_wandb_run_and_a_resumed_one_continues_it(workdir, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    runner.main("table2_simplified", [*POINTS, "logger=wandb"])
    runs = workdir / "runs" / "table2_simplified" / "smoke"
    files = {}
    for row, other in (("lstm", "lstm1"), ("lstm1", "lstm")):
        folder = runs / f"{row}__eta0=1e-3__s0"
        run_id = (folder / "wandb_id").read_text().strip()
        found = list(folder.glob(f"wandb/offline-run-*-{run_id}/run-{run_id}.wandb"))
        assert len(found) == 1, (row, sorted(p.name for p in (folder / "wandb").iterdir()))
        data = found[0].read_bytes()  # the run's own log: its name and its metrics, not the other point's
        assert f"table2_simplified/{row}/eta0=1e-3/s0".encode() in data
        assert f"table2_simplified/{other}/eta0=1e-3/s0".encode() not in data
        assert b"val/acc" in data and b"record_json" in data
        files[row] = found[0]
    # the table again: its records are found, nothing trains, and no W&B run is added anywhere
    runner.main("table2_simplified", [*POINTS, "logger=wandb"])
    assert [len(list((runs / f"{row}__eta0=1e-3__s0" / "wandb").glob("offline-run-*"))) for row in files] == [1, 1]


def test_a_killed_point_resumes_into_its_own_wandb_run(workdir, monkeypatch):
    """The W&B id is kept in the run folder: the logger of the same folder asks W&B for the same run."""
    from omegaconf import OmegaConf

    from reproduce import config, kit

    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = config.compose("table2_simplified", "smoke", ["logger=wandb"])
    run_dir = workdir / "runs" / "p"
    first = kit.build_logger(cfg, run_dir, "p", {"table": "table2_simplified", "column": "eta0=1e-3"})
    again = kit.build_logger(cfg, run_dir, "p", {"table": "table2_simplified", "column": "eta0=1e-3"})
    assert first.version == again.version == (run_dir / "wandb_id").read_text()
    assert first._wandb_init["group"] == "table2_simplified" and "anonymous" not in first._wandb_init
    assert set(first._wandb_init["tags"]) >= {"smoke", cfg.cell.name, "eta0=1e-3", f"seed {cfg.seed}"}
    assert OmegaConf.select(cfg, "logger.name") == "wandb"


@pytest.mark.slow
def test_a_log_file_gets_a_line_per_epoch_and_no_noise(tmp_path, data):
    env = dict(os.environ, PYTHONPATH=str(REPO), GATEZOO_DATA=str(data), GATEZOO_RESULTS=str(tmp_path / "results"),
               GATEZOO_RUNS=str(tmp_path / "runs"), WANDB_MODE="offline")
    with open(tmp_path / "log.txt", "w") as log:  # not a terminal: what a cluster job's log file gets
        subprocess.run([sys.executable, str(REPO / "reproduce" / "table2_simplified.py"), *POINTS,
                        "trainer.max_epochs=2", "logger=wandb"], cwd=tmp_path, env=env, stdout=log,
                       stderr=subprocess.STDOUT, timeout=600, check=True)
    text = (tmp_path / "log.txt").read_text()
    lines = [x for x in text.splitlines() if x.startswith("epoch ")]
    assert [x.split(":")[0] for x in lines] == ["epoch 1/2", "epoch 2/2"] * 2, text[-3000:]
    assert all("train/loss" in x and "val/acc" in x and "ETA" in x for x in lines)
    for noise in ("💡 Tip", "exists and is not empty", "anonymous setting", "wandb run already in progress"):
        assert noise not in text, noise
    assert "[2/2] table2_simplified lstm1 eta0=1e-3 seed 0 (table ETA " in " ".join(text.split())
    # table files per preset: the smoke run wrote under tables/smoke only
    assert sorted(p.relative_to(tmp_path / "results" / "tables").as_posix()
                  for p in (tmp_path / "results" / "tables").rglob("*.md")) == ["smoke/table2_simplified.md"]


def test_a_one_epoch_curve_is_drawn(tmp_path):
    """One epoch is one point: it must show (a marker), and large values print as they are (no offset)."""
    from matplotlib.image import imread

    rec = {"table": "t", "row": "lstm", "column": "c", "seed": 0, "preset": "quick", "metrics": {},
           "curve": {"epoch": [1], "val/ppl": [5817.0]}}
    png = compare.plot_curves("t", [rec], tmp_path, metric="val/ppl", rows=["lstm"], columns=["c"])
    pixels = (imread(png)[..., :3] * 255).round().astype(int)
    blue = np.array([31, 119, 180])  # matplotlib's first line colour: the marker
    assert (np.abs(pixels - blue).sum(axis=-1) < 30).sum() > 10
