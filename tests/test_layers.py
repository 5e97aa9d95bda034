"""The code's layers and lint, as CI checks them: import-linter's contracts (pyproject.toml: ``bench`` on
``reproduce`` on ``lit_models`` on ``cells`` and ``datamodules``; ``fileio`` importable by all; no import cycle inside
any package) and ruff's rules. Run here too, so the README's test command alone catches a broken layer."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv's entry points (ruff, lint-imports) beside its python


def _run(tool: str, *args: str) -> subprocess.CompletedProcess:
    exe = BIN / tool
    assert exe.exists(), f"{exe} is missing: pip install -e '.[dev]' installs ruff and import-linter"
    return subprocess.run([str(exe), *args], cwd=REPO, capture_output=True, text=True, timeout=300)


def test_the_import_contracts_are_kept():
    out = _run("lint-imports")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout


def test_ruff_finds_nothing():
    out = _run("ruff", "check", ".")
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]


def test_a_cycle_inside_reproduce_breaks_a_contract(tmp_path):
    """The acyclic contract can fail: a copy of the packages where ``reproduce.results`` imports back from
    ``reproduce.report`` (which imports results) is refused."""
    import shutil

    for pkg in ("cells", "datamodules", "lit_models", "reproduce", "bench", "fileio"):
        shutil.copytree(REPO / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    results = tmp_path / "reproduce" / "results.py"
    results.write_text(results.read_text() + "\nfrom reproduce import report  # noqa: E402,F401\n")
    exe = BIN / "lint-imports"
    out = subprocess.run([str(exe)], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env={"PATH": str(BIN), "PYTHONPATH": str(tmp_path)})
    assert out.returncode != 0 and "No cycles are allowed in reproduce" in out.stdout, out.stdout[-3000:]
