"""No secret ever reaches a file the project writes: a W&B API key in the environment and in ~/.netrc (where `wandb
login` puts it) must appear in none of the records, checkpoints, logs, configs, W&B run files or printed output of a
real run with the W&B logger."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # end-to-end runs: `pytest -m "not slow"` leaves them out

REPO = Path(__file__).resolve().parents[1]
SECRET = "gz0secret" + "7f3a9c" * 5 + "x"  # 40 characters, like a W&B key


def test_a_wandb_key_is_written_nowhere(workdir):
    home = workdir / "home"
    home.mkdir()
    (home / ".netrc").write_text(f"machine api.wandb.ai\n  login user\n  password {SECRET}\n")
    (home / ".netrc").chmod(0o600)
    env = dict(os.environ, PYTHONPATH=str(REPO), HOME=str(home), WANDB_API_KEY=SECRET, WANDB_MODE="offline",
               WANDB_DIR=str(workdir / "wandb"), GATEZOO_COMPILE="0", OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, str(REPO / "reproduce" / "table2_simplified.py"), "--preset", "smoke",
                          "--cells", "lstm", "logger=wandb"], env=env, capture_output=True, text=True, timeout=300,
                         cwd=workdir)
    assert res.returncode == 0, res.stderr[-3000:]
    written = [p for p in workdir.rglob("*") if p.is_file() and home not in p.parents]
    assert any(p.suffix == ".json" for p in (workdir / "results").rglob("*"))  # a record was written ...
    assert any("wandb" in p.parts for p in written)                              # ... and W&B's run files
    leaks = [str(p.relative_to(workdir)) for p in written if SECRET.encode() in p.read_bytes()]
    assert leaks == []
    assert SECRET not in res.stdout and SECRET not in res.stderr
